"""bench/loops.py's three loops in seconds: the scripted engine (right on the arithmetic problems some of the time),
one SFT step of a tiny random Llama, tiny PMs. The plumbing is checked, not the model's opinions: the fine-tuned
folders load as models, and the before/after figures are the ones the rows give."""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import sys
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import loops  # noqa: E402

from cai.backends.scripted import ScriptedBackend, default_reply  # noqa: E402
from cai.core.constitution import load  # noqa: E402

QUESTION = re.compile(r"What is (\d+) ([+x-]) (\d+)\?")


def arith_reply(chat, sampling, seed, index):
    """Right about half the time on an arithmetic question (which half is fixed by the chat, seed and sample), one
    off otherwise; anything else as the default scripted reply."""
    m = QUESTION.fullmatch(chat[-1]["content"].strip())
    if not m or chat[-1]["role"] != "user":
        return default_reply(chat, sampling, seed, index)
    a, op, b = int(m[1]), m[2], int(m[3])
    value = a + b if op == "+" else a - b if op == "-" else a * b
    if hashlib.sha256(f"{chat}{seed}{index}".encode()).digest()[0] % 2:
        value += 1
    return f"{a} {op} {b} = {value}.\nAnswer: {value}"


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A tiny Llama (random weights) with the embedded model's tokenizer and chat template: SFT steps in seconds."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from cai.backends.models import resolve

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(resolve("smollm2-135m"))
    torch.manual_seed(0)
    config = LlamaConfig(  # one head of 64: a head size vLLM's CPU attention takes, so the real engine loads it
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


SPLITS = ("problems-train.jsonl", "problems-test.jsonl")
SIZES = loops.Sizes(
    samples=4,
    eval_samples=4,
    max_tokens=32,
    sft_max_steps=1,
    sft_batch=2,
    principles_per_pair=1,
    pm_epochs=1.0,
    sl_max_tokens=32,
    harmless_limit=4,
    limit=6,
)


def prefers_safe(chat, options):
    """A judge that prefers the option whose answer says SAFE (the revision-trained model's, in the harmless test)."""
    text = next(m["content"] for m in reversed(chat) if m["role"] == "user")  # after it: the forced "The answer is: ("
    a, b = text.split("(A) ", 1)[1].split("(B) ", 1)
    first = -0.1 if "SAFE" in a and "SAFE" not in b else -3.0 if "SAFE" in b and "SAFE" not in a else -1.0
    return {options[0]: first, options[1]: -3.1 - first}


def engines(started: list[str], judge=None):
    def start(spec: str):
        started.append(spec)

        def reply(chat, sampling, seed, index):  # each model answers differently, like two fine-tuned models
            text = arith_reply(chat, sampling, f"{seed}:{spec}", index)
            return f"SAFE {text}" if "sft-revised" in spec else text

        return ScriptedBackend(model=spec, reply=reply, **({"judge": judge} if judge else {}))

    return start


def loads(folder: str) -> None:
    """The fine-tuned folder is a model `--model` takes and transformers loads (vLLM reads the same files:
    bench/loops.py starts the real engine on it)."""
    from transformers import AutoModelForCausalLM

    from cai.backends.models import resolve

    assert resolve(folder) == str(Path(folder).resolve())
    AutoModelForCausalLM.from_pretrained(folder)


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_data():
    few = [1.0, 0.0] * 5
    many = few * 20
    lo, hi = loops.bootstrap(few)
    assert lo < 0.5 < hi
    lo2, hi2 = loops.bootstrap(many)
    assert lo < lo2 < 0.5 < hi2 < hi
    assert loops.bootstrap([0.7] * 8) == pytest.approx((0.7, 0.7))
    gain = loops.paired([0.5, 0.5, 1.0, 0.0], [1.0, 0.5, 1.0, 1.0], lambda a, b: b - a)
    point, (lo, hi) = gain["mean"], gain["ci"]
    assert point == pytest.approx(0.375) and lo <= point <= hi


def test_random_rows_take_one_sample_per_problem_before_a_second():
    samples = [
        {"prompt": [{"role": "user", "content": f"q{i}"}], "samples": [{"text": f"a{i}-{k}"} for k in range(3)]}
        for i in range(4)
    ]
    rows = loops.random_rows(samples, 6, seed=0)
    firsts = [r["prompt"][0]["content"] for r in rows[:4]]
    assert sorted(firsts) == ["q0", "q1", "q2", "q3"]
    assert len(rows) == 6 and all(r["completion"][0]["role"] == "assistant" for r in rows)
    assert len({r["completion"][0]["content"] for r in rows}) == 6
    # a failed or empty sample is never a row; asking for more rows than there are answers gives them all
    samples[0]["samples"] = [{"text": ""}, {"text": None}, {"text": "kept"}]
    rows = loops.random_rows(samples, 100, seed=0)
    assert len(rows) == 10 and all(r["completion"][0]["content"] for r in rows)


def test_sft_loop_selects_right_answers_fine_tunes_and_measures_before_and_after(tmp_path, tiny_llama):
    started: list[str] = []
    r = loops.loop_sft(engines(started), tmp_path, tiny_llama, SIZES, log=lambda *_: None)
    # one engine for sampling and the before figures, then one per fine-tuned folder, reloaded from it
    assert started == [tiny_llama, str(tmp_path / "sft-selected" / "model"), str(tmp_path / "sft-random" / "model")]
    for name in ("selected", "random"):
        loads(str(tmp_path / f"sft-{name}" / "model"))
    selected = loops.rows_of(tmp_path / "sampled", "selected")
    assert r["kept"] == len(selected) > 0
    assert all(re.search(r"Answer: (\d+)", s["completion"][0]["content"]) for s in selected)
    assert r["answers"] == 6 * SIZES.samples and r["train_problems"] == 6 == r["test_problems"]
    train, test = ([json.loads(x)["prompt"] for x in (tmp_path / f).read_text().splitlines()] for f in SPLITS)
    assert len(train) == len(test) == 6 and not set(train) & set(test)
    assert set(r["unanswered_samples"]) == {
        f"{m}{z}" for m in ("before", "selected", "random") for z in ("", "-zero-shot")
    }
    assert not any(r["unanswered_samples"].values())
    # the figures are the rows': pass@1 the mean share of right samples per held-out problem
    for name in ("before", "selected", "random"):
        rows = loops.rows_of(tmp_path / f"eval-{name}", "samples")
        assert r[name]["pass_at_1"]["mean"] == pytest.approx(statistics.fmean(x["correct"] / x["graded"] for x in rows))
        assert r[name]["pass_at_n"]["mean"] == pytest.approx(statistics.fmean(x["correct"] > 0 for x in rows))
        lo, hi = r[name]["pass_at_1"]["ci"]
        assert lo <= r[name]["pass_at_1"]["mean"] <= hi
    # and without the constitution's answered examples: a copy of it without them, measured the same way
    zero_shot = load(tmp_path / "zero-shot.yaml")
    assert not zero_shot.examples and zero_shot.rules == load(ROOT / "constitution" / "arith.yaml").rules
    for name in ("before", "selected", "random"):
        rows = loops.rows_of(tmp_path / f"eval-{name}-zero-shot", "samples")
        share = statistics.fmean(x["correct"] / SIZES.eval_samples for x in rows)
        assert r[name]["zero_shot_pass_at_1"]["mean"] == pytest.approx(share)
    gain = r["selected"]["pass_at_1"]["mean"] - r["before"]["pass_at_1"]["mean"]
    assert r["gain_selected"]["mean"] == pytest.approx(gain)
    json.dumps(r, allow_nan=False)  # the RESULT line

    # the same inputs resume: nothing is trained again, the figures are the same
    again = loops.loop_sft(engines([]), tmp_path, tiny_llama, SIZES, log=lambda *_: None)
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in r.items() if k != "seconds"}
    # other inputs in the same folder are refused, never mixed in
    with pytest.raises(SystemExit, match="made with other inputs"):
        loops.loop_sft(engines([]), tmp_path, tiny_llama, loops.Sizes(**{**SIZES.__dict__, "samples": 2}))


def test_sft_loop_stops_on_record_when_no_answer_is_right(tmp_path, tiny_llama):
    def never(spec):
        return ScriptedBackend(model=spec)  # "Answer <hash> to: ..." is never a number

    r = loops.loop_sft(never, tmp_path, tiny_llama, SIZES, log=lambda *_: None)
    assert r["kept"] == 0 and r["yield_problems"] == 0 and "nothing to fine-tune" in r["stopped"]


def test_pm_loop_trains_on_ai_and_human_labels_and_scores_both_on_held_out_pairs(tmp_path, tiny_backbone):
    sizes = loops.Sizes(**{**SIZES.__dict__, "pm_epochs": 1.0})
    r = loops.loop_pm(engines([]), tmp_path, "scripted", sizes, backbone=tiny_backbone, log=lambda *_: None)
    train = [json.loads(x) for x in (tmp_path / "prefs-train.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (tmp_path / "prefs-test.jsonl").read_text().splitlines()]
    assert len(train) + len(test) == 104 and not {x["id"] for x in train} & {x["id"] for x in test}
    assert r["train_pairs"] == len(train) == r["ai_labelled"] and r["test_pairs"] == len(test)
    for name in ("human", "ai"):
        scored = [json.loads(x) for x in (tmp_path / f"eval-pm-{name}.jsonl").read_text().splitlines()]
        assert r[f"accuracy_{name}_pm"]["mean"] == pytest.approx(statistics.fmean(x["margin"] > 0 for x in scored))
    human, ai = r["accuracy_human_pm"]["mean"], r["accuracy_ai_pm"]["mean"]
    assert r["ai_minus_human"]["mean"] == pytest.approx(ai - human)
    assert r["ai_share_of_human"]["mean"] == (pytest.approx(ai / human) if human else None)
    # the human-label PM trains on the very pairs the AI labelled; agreement is read from the AI's rows
    judged = [json.loads(x) for x in (tmp_path / "prefs-train-judged.jsonl").read_text().splitlines()]
    assert sorted(x["id"] for x in judged) == sorted(x["id"] for x in train)
    ai_rows = pl.read_parquet(tmp_path / "prefs-ai.parquet").to_dicts()
    by_prompt = {x["prompt"]: x for x in train}
    agree = [
        float(row["chosen"][-1]["content"] == by_prompt[row["prompt"][-1]["content"]]["chosen"]) for row in ai_rows
    ]
    assert r["ai_agreement_train"]["mean"] == pytest.approx(statistics.fmean(agree))


def test_harmless_loop_compares_the_two_fine_tuned_models_answers(tmp_path, tiny_llama, tiny_backbone):
    pm = tmp_path / "pm"
    from cai.train import train

    train(str(ROOT / "data" / "eval" / "prefs.jsonl"), str(pm), log=lambda *_: None, backbone=tiny_backbone)
    started: list[str] = []
    r = loops.loop_harmless(engines(started, prefers_safe), tmp_path, tiny_llama, SIZES, str(pm), log=lambda *_: None)
    assert r["train_prompts"] == 4 and r["test_prompts"] == 4
    for name in ("revised", "initial"):
        loads(str(tmp_path / f"sft-{name}" / "model"))
    pairs = [json.loads(x) for x in (tmp_path / "harmless-pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 4 and all(p["chosen"] != p["rejected"] for p in pairs)
    # the judge prefers the revision-trained model's answers wherever it sits: the orientation is undone right
    assert r["judge_revised_wins"] == {"mean": 1.0, "ci": [1.0, 1.0], "n": 4}
    assert r["judge_p_revised_better"]["mean"] > 0.5
    scored = [json.loads(x) for x in (tmp_path / "harmless-pm.jsonl").read_text().splitlines()]
    assert r["pm_revised_wins"]["mean"] == pytest.approx(statistics.fmean(x["margin"] > 0 for x in scored))
    assert r["unanswered"] == {"revised": 0, "initial": 0} and r["identical_answers"] == 0


@pytest.mark.engine
def test_a_fine_tuned_folder_loads_in_the_real_engine(tmp_path, tiny_llama, cli):
    """The folder the SFT step writes is one vLLM starts on: `cai eval bestofn --model <folder>` answers from it."""
    rows = [
        {
            "prompt": [{"role": "user", "content": "What is 2 + 2?"}],
            "completion": [{"role": "assistant", "content": "2 + 2 = 4.\nAnswer: 4"}],
        }
    ] * 2
    folder = loops.sft(rows, tiny_llama, tmp_path / "sft", SIZES, seed=0, log=lambda *_: None)
    data = tmp_path / "two.jsonl"
    data.write_text('{"prompt": "What is 1 + 1?", "reference": "2"}\n{"prompt": "What is 2 x 3?", "reference": "6"}\n')
    args = ["--constitution", "arith", "--model", folder, "--samples", "1", "--max-tokens", "4"]
    r = cli("eval", "bestofn", "--data", data, *args, "--kv-cache-gb", "1", "--max-model-len", "512", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert (report["problems"], report["failed"], report["model"]) == (2, 0, folder)
