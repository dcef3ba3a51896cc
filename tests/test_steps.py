"""Process supervision: step splitting, the step-label arithmetic, the steps stage, the soft-label PRM and its
scoring, bad input, and TRL's PRMTrainer reading the steps split of a real run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_stage, write

from cai.backends.scripted import ScriptedBackend
from cai.config import RunConfig
from cai.core import steps
from cai.errors import CaiError

REASONING = ROOT / "constitution" / "reasoning.yaml"
MATH = ROOT / "data" / "prompts" / "math.jsonl"


# -- splitting and arithmetic -----------------------------------------------------------------------------------
def test_split_by_line_paragraph_and_literal_separator():
    text = "<think>\nAdd 2 and 3.\n\n  That is 5.  \n</think>\nAnswer: 5"
    assert steps.split(text) == ["<think>", "Add 2 and 3.", "That is 5.", "Answer: 5"][1:]
    assert steps.split("a\nb\n\n\nc\nd", "paragraph") == ["a\nb", "c\nd"]
    assert steps.split("one;; two ;;;;three", ";;") == ["one", "two", "three"]
    assert steps.split("x\n\ny", "\\n\\n") == ["x", "y"]  # typed in a shell: the escapes arrive as text
    assert steps.split("  \n\n </think> \n") == []
    with pytest.raises(ValueError):
        steps.split("a", "")


def test_labels_first_error_and_solution_score_by_hand():
    p = [0.9, 0.5, 0.49, 0.8]
    assert steps.labels(p) == [True, True, False, True]  # 0.5 counts as good: TRL's labels are p >= 0.5
    assert steps.first_error(steps.labels(p)) == 2
    assert steps.first_error([True, True]) is None
    assert steps.aggregate(p, "product") == pytest.approx(0.9 * 0.5 * 0.49 * 0.8)
    assert steps.aggregate(p, "min") == 0.49
    with pytest.raises(ValueError):
        steps.aggregate([], "product")


def test_three_classes_from_the_neutral_band_and_labels_up_to_the_first_mistake():
    band = steps.band("0.4,0.6")
    assert band == (0.4, 0.6) and steps.band(" 0.5 , 0.5 ") == (0.5, 0.5)
    assert [steps.classify(p, band) for p in (0.39, 0.4, 0.5, 0.6, 0.61)] == [
        "negative", "neutral", "neutral", "neutral", "positive"
    ]  # fmt: skip
    # PRM800K: a neutral step does not stop the labels; the first negative one does, and nothing after it is labelled
    got = steps.label([0.9, 0.5, 0.1, 0.8, 0.05], band)
    assert got.classes == ["positive", "neutral", "negative", None, None]
    assert got.labels == [True, False, False] and got.first_error == 2 and got.labelled == 3  # neutral: not positive
    kept = steps.label([0.9, 0.5, 0.1, 0.8, 0.05], band, after_error=True)
    assert kept.classes == ["positive", "neutral", "negative", "positive", "negative"]
    assert kept.labels == [True, False, False, True, False] and kept.first_error == 2 and kept.labelled == 5
    clean = steps.label([0.7, 0.45], band)
    assert clean.first_error is None and clean.labelled == 2 and clean.labels == [True, False]
    # a step nobody labelled ends the labels before it (a person marked the first mistake right, read no further)
    assert steps.labelling(["positive", "positive", None, "negative"]).labelled == 2
    for bad in ("1.2,0.3", "-0.1,0.5", "0.7,0.3", "0.5", "a,b", "0.1,0.2,0.3", "nan,0.5"):
        with pytest.raises(ValueError):
            steps.band(bad)


def test_step_votes_from_reads_both_orders_and_principles():
    """P(A) with Yes first is P(Yes); with No first it is P(No). Two principles: the step's p is their mean."""
    from cai.core.inputs import Prompt
    from cai.core.records import Failure
    from cai.judges.step import Solution, StepVerdict
    from cai.judges.step_logprob import StepQuestion, verdicts
    from cai.signals.reads import TwoOrders, from_asks

    sol = Solution(Prompt("p1", ({"role": "user", "content": "q"},)), 0, "file", ("s1", "s2"))
    asked = [StepQuestion(0, step, pr, TwoOrders([], [])) for step in (0, 1) for pr in ("a", "b")]

    def reads(p_a):  # P(A) asked with Yes first, then with No first, for each question in turn
        return [from_asks(p_a[i], p_a[i + 1]) for i in range(0, len(p_a), 2)]

    # step 0: a reads 0.8 / 0.3 -> P(Yes) 0.8 and 0.7 -> 0.75; b reads 0.6 / 0.6 -> 0.6 and 0.4 -> 0.5
    # step 1: a reads 0.2 / 0.9 -> 0.2 and 0.1 -> 0.15; b fails in one order, so only a counts
    answers = reads([0.8, 0.3, 0.6, 0.6, 0.2, 0.9, 0.4, Failure("engine: boom")])
    (v,) = verdicts([sol], [("a", "b")], asked, answers)
    assert isinstance(v, StepVerdict)
    assert v.step_p == pytest.approx((0.625, 0.15))
    got = v.labelled((0.4, 0.6))  # 0.625 above the neutral band: positive; 0.15 below: negative, the first mistake
    assert got.classes == ["positive", "negative"] and got.labels == [True, False] and got.first_error == 1
    assert v.solution_p == pytest.approx(0.625 * 0.15)
    assert [(x.step, x.principle, x.reason) for x in v.failed] == [(1, "b", "engine: boom")]
    # A step that no principle read in both orders leaves the solution unlabelled, with the reason.
    (lost,) = verdicts([sol], [("a",)], asked[:3], reads([0.8, 0.3, 0.6, 0.6, 0.2, Failure("context: long")]))
    assert isinstance(lost, Failure) and lost.reason.startswith("step 2: no principle was read in both orders")


def test_soft_bce_against_hand_values_and_keeps_soft_labels():
    import torch

    from cai.train.loss import soft_bce

    logits = torch.tensor([[0.0, 5.0, 2.0]])
    targets = torch.tensor([[0.7, -1.0, 0.2]])
    mask = targets >= 0
    # -(0.7 log σ(0) + 0.3 log σ(-0)) = log 2; -(0.2 log σ(2) + 0.8 log σ(-2)) = 1.726928...
    hand = (math.log(2) + -(0.2 * math.log(1 / (1 + math.exp(-2))) + 0.8 * math.log(1 / (1 + math.exp(2))))) / 2
    assert soft_bce(logits, targets, mask).item() == pytest.approx(hand, rel=1e-6)
    # The loss is lowest where σ(logit) equals the soft label (0.7), not at int(0.7) = 0.
    grid = torch.linspace(-4, 4, 801)
    losses = [soft_bce(torch.tensor([[x]]), torch.tensor([[0.7]]), torch.tensor([[True]])).item() for x in grid]
    best = grid[min(range(len(losses)), key=losses.__getitem__)].item()
    assert 1 / (1 + math.exp(-best)) == pytest.approx(0.7, abs=0.01)


def test_prm_metrics_by_hand():
    from cai.signals.rewardmodels import step_metrics as metrics

    m = metrics([[0.9, 0.2], [0.6]], [[1.0, 0.0], [0.4]])
    assert m["step_accuracy"] == pytest.approx(2 / 3)
    assert m["first_error_accuracy"] == pytest.approx(0.5)  # 1 == 1; None (0.6 good) != 0 (0.4 bad)
    assert m["step_brier"] == pytest.approx((0.01 + 0.04 + 0.04) / 3)
    assert m["steps"] == 3


def test_step_encoder_puts_each_label_on_the_steps_last_token_and_counts_cuts():
    from transformers import AutoTokenizer

    from cai.backends.models import resolve_backbone
    from cai.signals.rewardmodels import StepEncoder

    tok = AutoTokenizer.from_pretrained(resolve_backbone("all-minilm-l6-v2"))
    enc = StepEncoder(tok, "\n", 512)
    ids, ends = enc("what is two plus two", ["two plus two", "is four"])
    assert len(ends) == 2 and all(ids[e] == tok.sep_token_id for e in ends)  # BERT drops "\n": its [SEP] marks ends
    assert ids[0] == tok.cls_token_id and ends[-1] == len(ids) - 1
    short = StepEncoder(tok, "\n", ends[0] + 1)
    ids2, ends2 = short("what is two plus two", ["two plus two", "is four"])
    assert ends2 == ends[:1] and len(ids2) == ends[0] + 1 and short.cut_steps == 1
    # scoring reads a cut step in a window of its own: [CLS] prompt, the tail of the steps before it, up to its end
    prompt = tok("what is two plus two", add_special_tokens=False)["input_ids"]
    win = short.window("what is two plus two", ["two plus two", "is four"], 1)
    assert (
        len(win) <= short.max_length
        and win[-1] == tok.sep_token_id
        and win[: 1 + len(prompt)] == ids[: 1 + len(prompt)]
    )
    assert win[-3:] == ids[ends[1] - 2 : ends[1] + 1]
    tiny = StepEncoder(tok, "\n", 4)  # a step too long to sit beside the prompt: the last tokens up to its end
    alone = tiny.window("what is two plus two", ["two plus two", "is four"], 1)
    assert len(alone) == 4 and alone[0] == tok.cls_token_id and alone[1:] == ids[ends[1] - 2 : ends[1] + 1]


# -- the stage on the scripted engine (structure, batching, failures) -------------------------------------------
def _solutions_file(tmp_path, records):
    return write(tmp_path / "solutions.jsonl", "".join(json.dumps(r) + "\n" for r in records))


def _config(tmp_path, data, **extra):
    return RunConfig(
        constitution=str(REASONING),
        prompts=str(data),
        out=str(tmp_path / "run"),
        stage="steps",
        backend="scripted",
        solutions="file",
        **extra,
    )


def test_stage_reads_every_step_in_one_call(tmp_path):
    data = _solutions_file(
        tmp_path,
        [
            {"prompt": "What is 2 + 3?", "reference": "5", "solution": "Add 2 and 3.\nThat is 5.\nAnswer: 5"},
            {"prompt": "What is 4 * 2?", "solutions": [["Multiply 4 by 2.", "Answer: 8"], "Answer: 6"]},
        ],
    )
    engine = ScriptedBackend()
    from cai.core.inputs import load

    prompts, _ = load(str(data))
    result = run_stage("steps", _config(tmp_path, data, step_principles=2), engine, prompts, REASONING)
    assert [len(r["steps"]) for r in result.rows] == [3, 2, 1]
    # one call for the chunk's reads: 6 steps x 2 principles x 2 orders
    assert [n for n, _ in engine.calls] == [6 * 2 * 2]
    for row in result.rows:
        assert len(row["votes"]) == 2 * len(row["steps"]) and len(row["principles"]) == 2
        # PRM800K's labels: three classes by the neutral band, up to and including the first negative step
        want = steps.label(row["step_p"], steps.band(steps.NEUTRAL_BAND))
        assert row["step_class"] == want.classes and row["labels"] == want.labels
        assert row["first_error"] == want.first_error and row["labelled_after_error"] is False
        assert row["completions"] == row["steps"][: want.labelled]
        assert row["solution_p"] == pytest.approx(math.prod(row["step_p"]))  # the judge's read of every step
        for k, p in enumerate(row["step_p"]):
            here = [(v["p_yes_ab"] + v["p_yes_ba"]) / 2 for v in row["votes"] if v["step"] == k]
            assert p == pytest.approx(sum(here) / len(here))
    first = result.rows[0]
    assert first["prompt"] == "What is 2 + 3?" and first["messages"][0]["content"] == "What is 2 + 3?"
    assert first["correct"] is True and first["reference"] == "5"  # the accuracy rule on the final answer
    assert result.rows[1]["correct"] is None  # no reference: not graded


def test_label_after_first_error_keeps_every_step_in_the_training_columns(tmp_path):
    data = _solutions_file(tmp_path, [{"prompt": "What is 2 + 3?", "solution": "Add.\nThat is 6.\nNo, 5.\nAnswer: 5"}])
    from cai.core.inputs import load

    prompts, _ = load(str(data))

    def run(**flags):
        config = _config(tmp_path, data, neutral_band="0.5,0.5", **flags)
        (row,) = run_stage("steps", config, ScriptedBackend(), prompts, REASONING).rows
        return row

    cut, kept = run(), run(label_after_first_error=True)
    assert cut["step_p"] == kept["step_p"] and cut["steps"] == kept["steps"] and len(cut["steps"]) == 4
    want = steps.label(cut["step_p"], (0.5, 0.5), after_error=True)
    assert kept["completions"] == kept["steps"] and kept["step_class"] == want.classes and kept["labelled_after_error"]
    assert kept["labels"] == want.labels and kept["first_error"] == want.first_error
    n = steps.label(cut["step_p"], (0.5, 0.5)).labelled
    assert cut["first_error"] is not None and n < 4  # the scripted judge finds a mistake before the last step
    assert cut["completions"] == cut["steps"][:n] and cut["step_class"][n:] == [None] * (4 - n)


def test_a_persons_first_wrong_step_labels_up_to_it_and_leaves_the_rest_unlabelled():
    """The review page's "first wrong step" sends the steps before it right and it wrong; publish then labels the
    row by PRM800K's rule: nothing after the first mistake (unless the row was labelled past it)."""
    from cai.core.views import StepsView

    row = {
        "id": "a",
        "steps": ["s1", "s2", "s3", "s4"],
        "completions": ["s1", "s2", "s3"],
        "labels": [True, False, False],
        "step_class": ["positive", "neutral", "negative", None],
        "step_p": [0.9, 0.5, 0.1, 0.8],
        "first_error": 2,
        "labelled_after_error": False,
    }
    first_wrong = StepsView().relabel(row, {0: True, 1: False})  # the person: step 2 is the first mistake
    assert first_wrong["step_class"] == ["positive", "negative", None, None] and first_wrong["first_error"] == 1
    assert first_wrong["completions"] == ["s1", "s2"] and first_wrong["labels"] == [True, False]
    assert first_wrong["step_p"] == [1.0, 0.0, 0.1, 0.8] and first_wrong["ai_step_p"] == row["step_p"]
    # the labeller's mistake marked right: the labels reach as far as someone labelled, no mistake found
    right = StepsView().relabel(row, {2: True})
    assert right["step_class"] == ["positive", "neutral", "positive", None] and right["first_error"] is None
    assert right["completions"] == ["s1", "s2", "s3"] and right["labels"] == [True, False, True]
    none_wrong = StepsView().relabel(row, {i: True for i in range(4)})
    assert none_wrong["labels"] == [True] * 4 and none_wrong["completions"] == row["steps"]
    # a row labelled past its first mistake keeps the labeller's labels after the person's first mistake
    past = {**row, "step_class": ["positive", "neutral", "negative", "positive"], "labelled_after_error": True}
    kept = StepsView().relabel(past, {0: False})
    assert kept["step_class"] == ["negative", "neutral", "negative", "positive"] and kept["first_error"] == 0
    assert kept["completions"] == row["steps"] and kept["labels"] == [False, False, False, True]


def test_step_reads_share_the_text_of_the_steps_before_them(tmp_path):
    """The read of step k starts with everything the read of step k+1 has up to its own step: the prefix the
    engine caches once per solution."""
    from cai.core.constitution import load
    from cai.core.context import RunContext
    from cai.core.inputs import Prompt
    from cai.core.prompts import Templates
    from cai.core.store import RunStore
    from cai.judges.step import Solution
    from cai.judges.step_logprob import LogprobStepJudge

    config = RunConfig(constitution=str(REASONING), stage="steps", prompts="-", out=str(tmp_path))
    ctx = RunContext(config, load(REASONING), Templates(), RunStore(tmp_path))
    sol = Solution(Prompt("p", ({"role": "user", "content": "q?"},)), 0, "file", ("one", "two", "three"))
    asked, _ = LogprobStepJudge(config).questions(ctx, [sol])
    texts = [q.chats.first[0]["content"] for q in asked]
    for k in range(2):
        head = texts[k][: texts[k].index("Judge only step")]
        assert texts[k + 1].startswith(head.rstrip("\n"))
        assert "Step 3" not in texts[k]


def test_a_failed_or_too_long_step_loses_only_its_solution_with_the_reason(tmp_path):
    data = _solutions_file(
        tmp_path,
        [
            {"prompt": "First?", "solutions": ["Fine step.\nAnswer: 1", "A BROKEN step.\nAnswer: 2"]},
            {"prompt": "Second?", "solution": "word " * 400},
        ],
    )
    from cai.core.inputs import load

    prompts, _ = load(str(data))
    engine = ScriptedBackend(fail_on="BROKEN", max_model_len=300)
    result = run_stage("steps", _config(tmp_path, data), engine, prompts, REASONING)
    assert [(r["prompt"], r["solution"]) for r in result.rows] == [("First?", 0)]
    reasons = {s.id: s.reason for s in result.skips}
    assert len(reasons) == 2
    assert any("solution 1: step 1:" in r and "scripted failure" in r for r in reasons.values())
    assert any("solution 0: step 1:" in r and "max_model_len 300" in r for r in reasons.values())


def test_sampled_solutions_without_steps_are_on_record(tmp_path):
    def reply(chat, sampling, seed, index):
        return "   " if index == 1 else "Step one.\nStep two."

    from cai.core.inputs import load

    prompts, _ = load(str(MATH), limit=2)
    config = RunConfig(
        constitution=str(REASONING),
        prompts=str(MATH),
        out=str(tmp_path / "run"),
        stage="steps",
        backend="scripted",
        solutions_per_prompt=2,
    )
    result = run_stage("steps", config, ScriptedBackend(reply=reply), prompts, REASONING)
    assert len(result.rows) == 2 and all(r["source"] == "sampled" and r["solution"] == 0 for r in result.rows)
    assert all("solution 1 (sampled): no steps after splitting by 'line'" in s.reason for s in result.skips)


def test_solutions_from_an_sl_run(tmp_path):
    from cai import backends
    from cai.core.store import RunStore
    from cai.generate import generate

    out = tmp_path / "run"
    base = dict(constitution=str(REASONING), prompts=str(MATH), out=str(out), backend="scripted", limit=3)
    generate(RunConfig(stage="sl", rounds=2, **base), backend=backends.get("scripted")(), log=lambda *_: None)
    config = RunConfig(stage="steps", solutions="sl", rounds=2, **base)
    summary = generate(config, backend=backends.get("scripted")(), log=lambda *_: None)
    rows = RunStore(out).read("steps")
    assert summary.rows["steps"] == 9 == len(rows)  # 3 prompts x (initial + 2 revisions)
    assert sorted({r["source"] for r in rows}) == ["sl initial", "sl revision 1", "sl revision 2"]
    assert "steps" in summary.stats and any(line.startswith("step labels") for line in summary.lines)


# -- bad input: one line, exit 2, nothing written ----------------------------------------------------------------
@pytest.mark.parametrize(
    "records, flags, message",
    [
        ([{"prompt": "q"}], [], r"solutions.jsonl:1: a solutions record needs exactly one of 'solution'"),
        ([{"prompt": "q", "solution": "ok"}, {"prompt": "r", "steps": []}], [], r"solutions.jsonl:2: steps must be"),
        ([{"prompt": "q", "solution": " \n </think>\n"}], [], r"solutions.jsonl:1: solution has no steps after"),
        ([{"prompt": "q", "steps": ["a", " "]}], [], r"solutions.jsonl:1: steps: a step is empty"),
        ([{"solution": "a"}], [], r"solutions.jsonl:1: missing field 'prompt' or 'messages'"),
        ([{"prompt": "q", "solution": "a"}], ["--step-principles", "3"], r"--step-principles 3 but only 2 principles"),
        ([{"prompt": "q", "solution": "a"}], ["--solutions-per-prompt", "2"], r"--solutions-per-prompt applies to"),
        ([{"prompt": "q", "solution": "a"}], ["--neutral-band", "1.2,0.3"], r"--neutral-band '1.2,0.3': both ends"),
        ([{"prompt": "q", "solution": "a"}], ["--neutral-band", "0.7,0.3"], r"--neutral-band '0.7,0.3': LOW is above"),
        ([{"prompt": "q", "solution": "a"}], ["--neutral-band", "half"], r"--neutral-band 'half': expected LOW,HIGH"),
    ],
)
def test_bad_steps_input_is_one_line_and_writes_nothing(tmp_path, cli, records, flags, message):
    import re

    data = _solutions_file(tmp_path, [{**r, "reference": "1"} for r in records])
    out = tmp_path / "run"
    r = cli(
        "generate", "--stage", "steps", "--solutions", "file", "--constitution", REASONING, "--prompts", data,
        "--backend", "scripted", "--out", out, *flags,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert re.search(message, r.stderr), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not out.exists()


def test_steps_needs_a_principle_that_can_judge_a_step(tmp_path, cli):
    const = write(tmp_path / "c.yaml", "name: c\nprinciples:\n  - id: short\n    rules:\n      - max_words: 5\n")
    data = _solutions_file(tmp_path, [{"prompt": "q", "solution": "a"}])
    r = cli("generate", "--stage", "steps", "--solutions", "file", "--constitution", const, "--prompts", data,
            "--backend", "scripted", "--out", tmp_path / "run")  # fmt: skip
    assert r.returncode == 2 and "no principle has a 'step' question or a critique request" in r.stderr


# -- the PRM: train, score, and the wrong kind of model ----------------------------------------------------------
@pytest.fixture(scope="module")
def steps_file(tmp_path_factory):
    """A small labelled steps file in TRL's format with soft labels: bad steps mention 'wrong'."""
    folder = tmp_path_factory.mktemp("steps")
    rows = []
    for i in range(24):
        completions = [f"step one of problem {i}", f"step two is {'wrong' if i % 3 == 0 else 'right'}", "the end"]
        step_p = [0.9, 0.1 if i % 3 == 0 else 0.8, 0.7]
        rows.append({"prompt": f"problem {i}", "completions": completions, "labels": [p >= 0.5 for p in step_p],
                     "step_p": step_p})  # fmt: skip
    return write(folder / "steps.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def trained_prm(steps_file, tmp_path_factory):
    from cai.train import train

    out = tmp_path_factory.mktemp("prm") / "prm"
    metrics = train(str(steps_file), str(out), log=lambda *_: None, kind="prm", epochs=3, lr=1e-4, batch_size=4)
    return out, metrics


def test_train_prm_writes_a_token_classification_model_and_step_metrics(trained_prm):
    out, m = trained_prm
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"][0].endswith("ForTokenClassification") and config["cai_kind"] == "prm"
    assert m["kind"] == "prm" and m["solutions"] == 24 and m["steps"] == 72 and m["train_steps"] > 0
    assert 0 <= m["eval_step_accuracy"] <= 1 and 0 <= m["eval_first_error_accuracy"] <= 1
    assert 0 <= m["eval_step_ece"] <= 1 and m["eval_solutions"] + m["train_solutions"] == 24


def test_score_a_prm_gives_step_scores_and_the_solution_score(trained_prm, steps_file, tmp_path, cli):
    out, _ = trained_prm
    for how in ("product", "min"):
        r = cli("score", "--pm", out, "--data", steps_file, "--out", tmp_path / f"{how}.jsonl", "--aggregate", how)
        assert r.returncode == 0, r.stderr
        assert "scored the steps of 24 solutions" in r.stdout and "step accuracy" in r.stdout
        lines = [json.loads(x) for x in (tmp_path / f"{how}.jsonl").read_text().splitlines()]
        for line in lines:
            assert len(line["step_scores"]) == 3 and all(0 < p < 1 for p in line["step_scores"])
            want = math.prod(line["step_scores"]) if how == "product" else min(line["step_scores"])
            assert line["score"] == pytest.approx(want)
    # A whole solution text is split by line to be scored.
    text = write(tmp_path / "texts.jsonl", json.dumps({"prompt": "q", "solution": "a\nb\n\nc"}) + "\n")
    r = cli("score", "--pm", out, "--data", text, "--out", tmp_path / "t.jsonl")
    assert r.returncode == 0, r.stderr
    assert len(json.loads((tmp_path / "t.jsonl").read_text())["step_scores"]) == 3


def test_a_solution_longer_than_the_prm_reads_is_scored_to_its_last_step(trained_prm):
    """A product that left out the steps past max_length would only grow with them: every step is scored."""
    from cai.signals.rewardmodels import StepRow, solution_score, step_scores

    out, _ = trained_prm
    long = [f"step {i} is wrong: it adds {i} to the running total" for i in range(12)]
    row = StepRow("p", "problem 3", long, None)
    full, short = step_scores(str(out), [row], max_length=512), step_scores(str(out), [row], max_length=48)
    assert full["windowed_steps"] == 0 and short["windowed_steps"] > 0
    (ps,) = short["steps"]
    n = len(long) - short["windowed_steps"]
    assert len(ps) == len(long) and all(0 < p < 1 for p in ps) and n >= 1
    score = solution_score(ps, "product")
    assert score == pytest.approx(math.prod(ps)) and score < math.prod(ps[:n])


def test_prm_data_from_a_steps_split_trains_the_labelled_steps_and_scores_all(tmp_path):
    from cai.train.prm import load_rows

    row = {"prompt": "q", "steps": ["a", "b", "c", "d"], "completions": ["a", "b"], "labels": [True, False],
           "step_p": [0.9, 0.2, 0.7, 0.1]}  # fmt: skip
    data = write(tmp_path / "s.jsonl", json.dumps(row) + "\n")
    (train_row,) = load_rows(str(data))
    assert train_row.steps == ["a", "b"] and train_row.targets == [0.9, 0.2]  # up to the first mistake
    (score_row,) = load_rows(str(data), need_labels=False)
    assert score_row.steps == ["a", "b", "c", "d"] and score_row.targets == [0.9, 0.2, 0.7, 0.1]


def test_the_wrong_kind_of_model_is_one_line(trained_prm, steps_file, tiny_backbone, tmp_path, cli):
    prm, _ = trained_prm
    pairs = write(tmp_path / "pairs.jsonl", json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    cases = [
        (("eval", "pm", "--pm", prm, "--data", pairs), "a process reward model (train-pm --kind prm), but this needs"),
        (("score", "--pm", tiny_backbone, "--data", steps_file, "--out", tmp_path / "x.jsonl", "--aggregate", "min"),
         "--aggregate applies to a process reward model"),
        (("score", "--pm", tiny_backbone, "--data", steps_file, "--out", tmp_path / "y.jsonl"),
         "a pairwise preference model (train-pm --kind pm), but this data has steps"),
    ]  # fmt: skip
    for args, message in cases:
        r = cli(*args)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "y.jsonl").exists()


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "q", "completions": ["a"]}, "no 'labels' or 'step_p'"),
        ({"prompt": "q", "completions": ["a", "b"], "labels": [True]}, "2 steps but 1 labels"),
        ({"prompt": "q", "completions": ["a"], "step_p": [1.5]}, "step_p value 1.5 is not a probability"),
        ({"prompt": "", "completions": ["a"], "labels": [True]}, "'prompt' must be text"),
        ({"prompt": "q", "completions": [], "labels": []}, "'completions' must be a non-empty list"),
    ],
)
def test_bad_prm_training_data_is_one_line(tmp_path, cli, row, message):
    data = write(tmp_path / "bad.jsonl", json.dumps(row) + "\n")
    r = cli("train-pm", data, "--kind", "prm", "--out", tmp_path / "m")
    assert r.returncode == 2 and f"bad.jsonl:1: {message}" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()
    flag = cli("train-pm", data, "--kind", "prm", "--center-rewards", "0.1", "--out", tmp_path / "m")
    assert flag.returncode == 2 and "--center-rewards applies only with --kind pm" in flag.stderr


# -- the real engine end to end, and TRL's PRMTrainer on the split --------------------------------------------
TRL_PRM = """
import sys

import datasets
import trl
from transformers import AutoModelForTokenClassification, AutoTokenizer
from trl.experimental.prm import PRMConfig, PRMTrainer

from cai.backends.models import resolve_backbone

path = resolve_backbone("all-minilm-l6-v2")
ds = datasets.load_dataset("parquet", data_files=sys.argv[2:], split="train")
trainer = PRMTrainer(
    model=AutoModelForTokenClassification.from_pretrained(path, num_labels=2),
    args=PRMConfig(output_dir=sys.argv[1], max_steps=2, per_device_train_batch_size=2, report_to=[], use_cpu=True,
                   save_strategy="no"),
    processing_class=AutoTokenizer.from_pretrained(path),
    train_dataset=ds,
)
result = trainer.train()
print(trl.__version__, result.global_step, result.training_loss)
"""


def test_real_engine_steps_split_trains_trl_prm_trainer_and_ours(engine, tmp_path):
    from cai.commands import stats
    from cai.core.store import RunStore
    from cai.generate import generate
    from cai.train import train

    out = tmp_path / "run"
    config = RunConfig(
        constitution="reasoning",
        prompts=str(MATH),
        out=str(out),
        stage="steps",
        limit=3,
        solutions_per_prompt=2,
        max_tokens=48,
        model="smollm2-135m",
    )
    summary = generate(config, backend=engine, log=lambda *_: None)
    rows = RunStore(out).read("steps")
    assert rows and summary.rows["steps"] == len(rows)
    assert len(rows) + sum(r["reason"].count("solution ") for r in RunStore(out).skipped()) == 6
    for r in rows:
        assert isinstance(r["prompt"], str) and len(r["completions"]) == len(r["labels"])
        assert len(r["steps"]) == len(r["step_p"]) == len(r["step_class"]) >= len(r["completions"])
        assert r["completions"] == r["steps"][: len(r["labels"])]  # up to the first mistake
        assert all(isinstance(x, bool) for x in r["labels"]) and all(0 <= p <= 1 for p in r["step_p"])
        assert r["judge"] == "logprob" and r["model"] == "smollm2-135m" and r["correct"] in (True, False)
        assert len(r["votes"]) == len(r["steps"])  # 1 principle per solution, both orders in each vote
    s = stats.compute(out)["steps"]
    assert s["solutions"] == len(rows) and s["steps"] == sum(len(r["steps"]) for r in rows)
    assert s["labelled"] == sum(len(r["labels"]) for r in rows) == s["steps"] - s["classes"]["unlabelled"]

    # TRL's PRMTrainer reads the split as it is (it drops the evidence columns itself) and trains 2 steps. It
    # left TRL after 1.12: `make setup` puts that TRL in a folder of its own, imported here in a child process.
    trl_prm = Path(sys.prefix) / "trl-prm"
    assert (trl_prm / "trl").is_dir(), f"{trl_prm}: TRL 1.12 for PRMTrainer is missing: run `make setup`"
    shards = [str(p) for p in RunStore(out).shards("steps")]
    child = subprocess.run(
        [sys.executable, "-c", TRL_PRM, str(tmp_path / "trl"), *shards],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(trl_prm), "TRL_EXPERIMENTAL_SILENCE": "1"},
    )
    assert child.returncode == 0, child.stderr[-3000:]
    version, steps, loss = child.stdout.split()[-3:]
    assert version == "1.12.0" and steps == "2" and math.isfinite(float(loss))

    m = train(str(out), str(tmp_path / "prm"), log=lambda *_: None, kind="prm", epochs=1)
    assert m["solutions"] == len(rows) and m["train_steps"] >= 1
    assert m["steps"] == sum(len(r["labels"]) for r in rows)  # the steps after a first mistake are not trained on


def test_prm_data_errors_name_the_run(tmp_path):
    from cai.train.prm import load_rows

    with pytest.raises(CaiError, match="missing.jsonl: file not found"):
        load_rows(str(tmp_path / "missing.jsonl"))


# -- cai eval steps -----------------------------------------------------------------------------------------------
def test_eval_steps_figures_by_hand():
    from cai.commands.evaluation.data import LabelledSolution
    from cai.commands.evaluation.steps import report
    from cai.core.inputs import Prompt

    def sol(i, labels, subset):
        return LabelledSolution(
            Prompt(f"s{i}", ({"role": "user", "content": "q"},)), ("a",) * len(labels), labels, subset
        )

    records = [sol(0, (True, False), "x"), sol(1, (True, True, True), "y"), sol(2, (True,), "y")]
    r = report(records, [[0.8, 0.6], [0.9, 0.7, 0.2], None], ["step 1: engine down"])
    assert r["solutions"] == 3 and r["failed"] == 1 and r["steps"] == 5
    assert r["accuracy"] == pytest.approx(3 / 5)  # 0.8 ok, 0.6 wrong, 0.9 ok, 0.7 ok, 0.2 wrong
    assert r["first_error_accuracy"] == 0.0  # predicted no error vs 1; predicted 2 vs none
    assert r["mean_p_good"] == pytest.approx((0.8 + 0.9 + 0.7 + 0.2) / 4) and r["mean_p_bad"] == pytest.approx(0.6)
    assert r["subsets"]["x"]["accuracy"] == 0.5 and r["subsets"]["y"]["accuracy"] == pytest.approx(2 / 3)
    assert r["failure_reasons"] == ["step 1: engine down"]
    # per class of the default neutral band 0.4,0.6: 0.8, 0.9, 0.7 positive; 0.6 neutral; 0.2 negative
    assert r["neutral_band"] == [0.4, 0.6]
    assert r["classes"] == {
        "positive": {"steps": 3, "share": pytest.approx(3 / 5), "good": 1.0},
        "neutral": {"steps": 1, "share": pytest.approx(1 / 5), "good": 0.0},
        "negative": {"steps": 1, "share": pytest.approx(1 / 5), "good": 1.0},
    }
    assert r["subsets"]["x"]["classes"]["neutral"]["steps"] == 1
    # the first mistake is the first step read negative: with a band of 0.65,0.65, 0.6 is solution 0's first
    narrow = report(records, [[0.8, 0.6], [0.9, 0.7, 0.2], None], [], (0.65, 0.65))
    assert narrow["first_error_accuracy"] == 0.5 and narrow["classes"]["neutral"]["steps"] == 0
    from cai.commands.evaluation.report import steps_lines

    shown = "\n".join(steps_lines({**r, "judge": "logprob", "model": "m"}))
    assert "read below 0.4 negative, above 0.6 positive" in shown and "neutral         1 steps" in shown


def test_eval_steps_with_a_prm_on_the_shipped_set(trained_prm, tmp_path, cli):
    out, _ = trained_prm
    r = cli("eval", "steps", "--data", ROOT / "data" / "eval" / "steps.jsonl", "--pm", out, "--json",
            "--plot", tmp_path / "s.png")  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["solutions"] == 48 and report["steps"] == 160 and report["failed"] == 0
    assert sorted(report["subsets"]) == ["algebra", "arithmetic", "setup", "units"]
    assert 0 <= report["accuracy"] <= 1 and 0 <= report["ece"] <= 1
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    table = cli("eval", "steps", "--data", ROOT / "data" / "eval" / "steps.jsonl", "--pm", out)
    assert "step accuracy" in table.stdout and "first error" in table.stdout


def test_eval_steps_bad_data_is_one_line(tmp_path, cli):
    data = write(tmp_path / "s.jsonl", json.dumps({"prompt": "q", "completions": ["a", "b"], "labels": [True]}) + "\n")
    r = cli("eval", "steps", "--data", data, "--constitution", "reasoning")
    assert r.returncode == 2 and "s.jsonl:1: 2 steps but 1 labels" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    good = ROOT / "data" / "eval" / "steps.jsonl"
    band = cli("eval", "steps", "--data", good, "--constitution", "reasoning", "--neutral-band", "0.2,1.5")
    assert band.returncode == 2 and "--neutral-band '0.2,1.5': both ends must lie in [0, 1]" in band.stderr
    assert len(band.stderr.strip().splitlines()) == 1


def test_eval_steps_judge_on_the_real_engine(engine, tmp_path):
    from cai.commands.evaluation.steps import evaluate

    lines = (ROOT / "data" / "eval" / "steps.jsonl").read_text().splitlines()[:4]
    path = write(tmp_path / "four.jsonl", "\n".join(lines) + "\n")
    config = RunConfig(constitution="reasoning", stage="steps", step_principles=2, model="smollm2-135m")
    r = evaluate(config, str(path), backend=engine, log=lambda *_: None)
    assert r["solutions"] == 4 and r["failed"] == 0
    assert r["steps"] == sum(len(json.loads(x)["labels"]) for x in lines)
    assert 0 <= r["accuracy"] <= 1 and r["judge"] == "logprob" and r["step_principles"] == 2


def test_stats_review_and_card_cover_the_steps_split(tmp_path, cli):
    from cai import backends
    from cai.generate import generate

    out = tmp_path / "run"
    config = RunConfig(
        constitution=str(REASONING), prompts=str(MATH), out=str(out), stage="steps", backend="scripted", limit=6,
        solutions_per_prompt=2,
    )  # fmt: skip
    engine = backends.get("scripted")(reply=lambda *a: "First.\nSecond.\nAnswer: 8")
    generate(config, backend=engine, log=print)
    again = generate(config, backend=engine, log=print)  # resume goes by prompt_id: nothing redone or duplicated
    assert again.new_rows == {} and again.rows["steps"] == 12
    r = cli("stats", out)
    assert r.returncode == 0, r.stderr
    assert "steps per solution" in r.stdout and "first error at step" in r.stdout and "per principle" in r.stdout
    stats = json.loads(cli("stats", out, "--json").stdout)
    assert stats["rows"] == {"steps": 12} and stats["steps"]["steps"] == 36
    folder = tmp_path / "hub"
    p = cli("publish", out, "--repo", "me/steps", "--dry-run", folder, "--test-fraction", "0.25")
    assert p.returncode == 0, p.stderr
    import datasets
    from huggingface_hub import DatasetCard

    ds = datasets.load_dataset(str(folder), "steps")
    assert ds["train"].num_rows + ds["test"].num_rows == 12
    card = DatasetCard.load(folder / "README.md")
    assert "token-classification" in card.data.task_categories and "process supervision" in card.text
    assert "PRMTrainer" in card.text

    from cai.commands.review.query import Filters, page, row
    from cai.core.store import RunStore

    got = page(RunStore(out), Filters("steps", limit=5))
    assert got["total"] == 12 and len(got["rows"]) == 5 and len({r["id"] for r in got["rows"]}) == 5
    full = row(RunStore(out), "steps", got["rows"][0]["id"])
    assert full["steps"] == ["First.", "Second.", "Answer: 8"]
    labelled = 3 if full["first_error"] is None else full["first_error"] + 1  # up to the first mistake
    assert full["completions"] == full["steps"][:labelled] and len(full["labels"]) == labelled
