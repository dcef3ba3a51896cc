"""Sample N, score, select: the sample stage, rejection sampling, K-way preference groups, P(IK), pairs files that
keep every pair, RewardBench 2's best-of-4 and best-of-N by selector."""

from __future__ import annotations

import functools
import json
import math
import os
import random
import signal
import subprocess
import time

import pytest

from cai import signals
from cai.config import RunConfig
from cai.errors import CaiError
from cai.signals import ranking
from tests.conftest import ROOT, write

SIGNALS = signals.names()


def _rules_share() -> float:
    from cai.core.constitution import load

    rules = load("reasoning").rules
    return sum(r.weight for r in rules if r.kind != "accuracy") / sum(r.weight for r in rules)


RULES_SHARE = _rules_share()
MATH = ROOT / "data" / "prompts" / "math.jsonl"
BESTOF4 = ROOT / "data" / "eval" / "bestof4.jsonl"


# -- the arithmetic, by hand ------------------------------------------------------------------------------------
def test_bradley_terry_soft_labels_by_hand():
    assert ranking.bradley_terry(0.7, 0.5, 0.1) == pytest.approx(1 / (1 + math.exp(-2)))  # 0.881
    assert ranking.bradley_terry(0.5, 0.5, 0.1) == 0.5
    assert ranking.bradley_terry(0.2, 0.5, 0.1) == pytest.approx(1 / (1 + math.exp(3)))
    texts = ["a", "b", "c", "a2"]
    scores = [0.6, 0.9, None, 0.3]
    every = ranking.pairs(texts, scores, "all", 0.1)  # the unscored one is left out: 3 choose 2
    assert [(a, b) for a, b, _ in every] == [(1, 0), (1, 3), (0, 3)]
    assert every[0][2] == pytest.approx(1 / (1 + math.exp(-3)))
    assert [(a, b) for a, b, _ in ranking.pairs(texts, scores, "best-vs-rest", 0.1)] == [(1, 0), (1, 3)]
    # an identical text takes part once: no pair of a text with itself
    assert [(a, b) for a, b, _ in ranking.pairs(["x", "x", "y"], [0.9, 0.8, 0.1], "all", 0.1)] == [(0, 2)]


def test_combined_score_selection_and_requirements_by_hand():
    weights = signals.parse_weights("rules=1,p_true=2,pm=1", signals.names())
    combined = signals.SignalSet(RunConfig()).combined
    # rules 0.5, P(True) 0.9 (weight 2), a PM reward of 0 standard units -> sigmoid 0.5; no PRM: left out
    assert combined({"rules": 0.5, "p_true": 0.9, "pm": 0.0, "prm": None}, weights) == pytest.approx(2.8 / 4)
    assert combined({"rules": None, "p_true": None}, weights) is None
    for bad, message in [
        ("rules", "SIGNAL=WEIGHT"),
        ("judge=1", "SIGNAL=WEIGHT"),
        ("pm=x", "a number"),
        ("pm=0", "above 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            signals.parse_weights(bad, signals.names())
    scores, passing = [0.2, 0.9, 0.5, None], [True, False, True, True]
    assert ranking.select(scores, passing, "passing") == [0, 2, 3]
    assert ranking.select(scores, passing, "best") == [2]
    assert ranking.select(scores, passing, "top-k", 2) == [2, 0]  # unscored ranks last
    need = ranking.parse_require("math.accuracy, p_true>=0.6,score>0.5", ["math.accuracy", "x.format"], SIGNALS)
    assert need[0].met({"math.accuracy": True}, {}) is True
    assert need[0].met({"math.accuracy": None}, {}) is None  # could not finish: not kept
    assert need[1].met({}, {"p_true": 0.6}) is True and need[2].met({}, {"score": 0.5}) is False
    assert need[1].met({}, {"p_true": None}) is None
    with pytest.raises(ValueError, match="no such rule in the constitution"):
        ranking.parse_require("math.acuracy", ["math.accuracy"], SIGNALS)
    with pytest.raises(ValueError, match="a threshold names one of"):
        ranking.parse_require("judge>=1", [], SIGNALS)


def test_auroc_and_majority_by_hand():
    # positives 0.35, 0.8 against negatives 0.1, 0.4: 3 of the 4 pairs ordered right
    assert ranking.auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert ranking.auroc([0.5, 0.5], [True, False]) == 0.5  # a tie counts one half
    assert ranking.auroc([0.5], [True]) is None
    from cai.core.rules import equivalent

    # math-verify equivalence: 1/2 and 0.5 vote together and outnumber the two 3s... not: 2 vs 2, first class wins
    assert ranking.majority(["3", "1/2", "0.5", "3", None], equivalent) == 0
    assert ranking.majority(["1/2", "3", "0.5"], equivalent) == 0
    assert ranking.majority([None, None], equivalent) is None


def test_rewardbench2_credit_and_ties_rating_by_hand():
    from cai.commands.evaluation.metrics import best_of_n

    def pair(group, subset, c, r, adv, raw_c=0.0, raw_r=0.0):
        return {
            "id": f"{group}/{c}-{r}",
            "group": group,
            "subset": subset,
            "m": adv,
            "raw_chosen": raw_c,
            "raw_rejected": raw_r,
        }

    rows = [pair("a", "Math", 0, r, 1.0) for r in range(3)]  # beats all three: 1
    rows += [pair("b", "Math", 0, 0, 1.0), pair("b", "Math", 0, 1, 0.0), pair("b", "Math", 0, 2, 2.0)]  # 2-way tie: 1/2
    rows += [pair("c", "Focus", 0, 0, 1.0), pair("c", "Focus", 0, 1, -0.1), pair("c", "Focus", 0, 2, 1.0)]  # loses: 0
    # Ties: ref:1 one correct (score 5) over incorrect (1, 2); tied:1 correct 5 and 4 over incorrect (1, 2)
    rows += [pair("ref:1", "Ties", 0, 0, 4, 5, 1), pair("ref:1", "Ties", 0, 1, 3, 5, 2)]
    rows += [pair("tied:1", "Ties", c, r, 0, g, b) for c, g in enumerate([5, 4]) for r, b in enumerate([1, 2])]
    out = best_of_n(rows, "m", scores=True)
    assert out["subsets"]["Math"] == {"n": 2, "accuracy": 0.75} and out["subsets"]["Focus"]["accuracy"] == 0.0
    assert out["records"] == 3 and out["accuracy"] == pytest.approx(1.5 / 3)
    ties = out["subsets"]["Ties"]
    # gaps: ref 5-2 = 3, tied 4-2 = 2; spread 5-4 = 1: both accurate, 2 > 1 and min(3, 2) > 1, tanh(2/1 - 1)
    assert ties["ref_accuracy"] == ties["tied_accuracy"] == 1.0
    assert ties["correctness_preferred"] == ties["correctness_preferred_hard"] == 1.0
    assert ties["accuracy"] == pytest.approx(0.3 + 0.3 + 0.2 + 0.2 + 0.01 * math.tanh(1))
    # RB2's overall is the mean of all six subsets: with three, there is none, only the mean of those present
    assert out["score"] is None and out["missing"] == ["Factuality", "Precise IF", "Safety"]
    assert out["subsets_mean"] == pytest.approx((0.75 + 0.0 + ties["accuracy"]) / 3)
    judged = best_of_n(rows, "m", scores=False)
    assert "Ties" not in judged["subsets"] and "Ties (2 records)" in judged["unrated"]
    assert judged["score"] is None and "Ties" in judged["missing"]

    from cai.commands.evaluation.report import pm_lines

    def rb2_line(rb):
        base = dict(pairs=0, pm="pm", truncated=0, accuracy=None, ties=0, mean_margin=None, ece=None, brier=None)
        return next(line for line in pm_lines({**base, "subsets": {}, "rewardbench2": rb}) if line.startswith("R"))

    line = rb2_line(out)
    assert line.startswith("RB2 subsets") and "not RewardBench 2's overall" in line
    assert "missing Factuality, Precise IF, Safety" in line and "RewardBench 2  " not in line
    rows += [pair(s, s, 0, r, 1.0 if s != "Safety" else -1.0) for s in ("Factuality", "Precise IF", "Safety")
             for r in range(3)]  # fmt: skip
    six = best_of_n(rows, "m", scores=True)
    assert six["missing"] == [] and six["score"] == pytest.approx((0.75 + 0.0 + ties["accuracy"] + 1 + 1 + 0) / 6)
    assert rb2_line(six).startswith(f"RewardBench 2  {100 * six['score']:.1f} (mean of its six subsets")


def test_bestofn_selectors_by_hand():
    from cai.commands.evaluation.bestofn import selectors

    def sample(text, correct, p_true, style):
        return {
            "text": text,
            "correct": correct,
            "p_true": p_true,
            "pm": None,
            "grm": None,
            "prm": None,
            "score": p_true,
            "rules_score": style,
            "rules": [
                {"rule": "f.format", "score": style, "error": None},
                {"rule": "a.accuracy", "score": 1.0, "error": None},
            ],
        }

    rows = [
        {
            "graded": 3,
            "correct": 1,
            "samples": [
                sample("\\boxed{1/2}", True, 0.2, 0.0),
                sample("\\boxed{3}", False, 0.9, 1.0),
                sample("\\boxed{0.5}", False, 0.1, 0.0),
            ],
        },
        {
            "graded": 2,
            "correct": 0,
            "samples": [sample("\\boxed{7}", False, 0.5, 1.0), sample("no answer", False, 0.4, 0.0)],
        },
        {"graded": 0, "correct": 0, "samples": []},  # nothing graded: not a problem of the evaluation
    ]
    r = selectors(rows, {"rules": "rules_score", "p_true": "p_true"})
    assert r["problems"] == 2 and r["pass_at_1"] == pytest.approx((1 / 3 + 0) / 2) and r["pass_at_n"] == 0.5
    # majority: 1/2 and 0.5 are one class of two (the first, right) against one 3
    assert r["best_of_n"] == {"rules": 0.0, "p_true": 0.0, "score": 0.0, "majority": 0.5}


# -- the stage on the scripted engine ---------------------------------------------------------------------------
@functools.cache
def _references() -> dict[str, str | None]:
    from cai.core.inputs import load

    return {p.messages[-1]["content"]: p.reference for p in load(str(MATH))[0]}


def _reply(chat, sampling, seed, index):
    """Right (\\boxed{reference}) for the first two samples of every other problem, wrong otherwise."""
    last = chat[-1]["content"]
    if chat[-1]["role"] == "assistant":  # a judge's reasoning: one of a few, by its seed (k judgements differ)
        return f" the reasoning weighs both options, {('first', 'closely', 'twice')[sum(map(ord, str(seed))) % 3]}."
    ref = _references().get(last)
    odd = sum(map(ord, last)) % 2
    value = ref if index < 2 and odd else "1234"
    return f"<think>Working {index} on it.</think> The answer is \\boxed{{{value}}}."


def _run(tmp_path, **kw):
    from cai.backends.scripted import ScriptedBackend
    from cai.config import RunConfig
    from cai.generate import generate

    base = dict(
        constitution="reasoning", prompts=str(MATH), out=str(tmp_path / "run"), stage="sample", samples=4, limit=8
    )
    config = RunConfig(**{**base, **kw})
    return generate(config, backend=ScriptedBackend(reply=_reply), log=lambda *_: None), config


def test_sample_stage_scores_selects_and_ranks(tmp_path):
    from cai.core.store import RunStore

    summary, _ = _run(tmp_path, self_eval=True, sample_grm=True, require="correct-answer.accuracy", select="best")
    store = RunStore(tmp_path / "run")
    rows = store.read("samples")
    assert len(rows) == 8 and {k: v for k, v in summary.rows.items() if v} == {
        "samples": 8,
        "selected": sum(r["correct"] > 0 for r in rows),
        "ranked": len(store.read("ranked")),
    }
    for r in rows:
        assert len(r["samples"]) == 4 and r["graded"] == 4 and r["p_ik"] == r["correct"] / 4
        assert r["correct"] in (0, 2)
        for s in r["samples"]:
            assert s["correct"] == (s["text"].endswith(f"\\boxed{{{r['reference']}}}."))
            assert 0 <= s["p_true"] <= 1 and 1 <= s["grm"] <= 9 and not s["failures"]
            # the reference-free score: the weighted mean of the signals that do not read the reference, on [0, 1]
            # (a GRM score s on 1-9 is (s - 1) / 8); by default each weighs 1 and the rules their share of the
            # constitution's rule weights (the accuracy rules, which read the reference, hold the rest)
            w = RULES_SHARE
            assert s["score"] == pytest.approx((w * s["rules_score"] + s["p_true"] + (s["grm"] - 1) / 8) / (w + 2))
    # select --select best: one row per prompt with a right sample, the best-scored of the right ones
    selected = store.read("selected")
    by_prompt = {r["id"]: r for r in rows}
    for s in selected:
        row = by_prompt[s["prompt_id"]]
        right = [x for x in row["samples"] if x["correct"]]
        assert s["completion"][0]["content"] == max(right, key=lambda x: x["score"])["text"]
        assert s["passing"] == 2 and s["samples"] == 4 and s["messages"] == s["prompt"] + s["completion"]
    skipped = [x for x in store.skipped() if x["stage"] == "select"]
    assert len(skipped) == sum(r["correct"] == 0 for r in rows)
    assert all(x["reason"] == "select: no sample of 4 passes (correct-answer.accuracy failed 4)" for x in skipped)
    # rank: K choose 2 per prompt among distinct texts, p from the score difference, the prompt as the group; every
    # problem has a reference, so the labels come from the graded score (rule-checked preferences, as R1 and RLVR)
    ranked = store.read("ranked")
    for p in ranked:
        row = by_prompt[p["prompt_id"]]
        a, b = row["samples"][p["sample_chosen"]], row["samples"][p["sample_rejected"]]
        assert p["graded"] and a["graded_score"] >= b["graded_score"] and p["group"] == p["prompt_id"]
        assert p["p_chosen"] == pytest.approx(ranking.bradley_terry(a["graded_score"], b["graded_score"], 0.1))
    assert len(ranked) == 8 * 6
    pass_at_1 = sum(r["correct"] for r in rows) / 32
    assert any(f"pass@1 {100 * pass_at_1:.1f}%" in line for line in summary.lines)


def test_rejection_sampling_keeps_only_right_answers_by_default(tmp_path):
    """No --require: the hard rules and every accuracy rule where a reference grades it (R1 keeps the correct
    samples); a prompt with no reference keeps what the hard rules allow, and the summary says so."""
    from cai.core.store import RunStore

    prompts = write(tmp_path / "p.jsonl", json.dumps({"prompt": "Say something kind."}) + "\n" + MATH.read_text())
    summary, _ = _run(tmp_path, prompts=str(prompts), limit=9)
    store = RunStore(tmp_path / "run")
    rows = {r["id"]: r for r in store.read("samples")}
    selected = store.read("selected")
    graded = [s for s in selected if s["graded"]]
    assert graded and all(rows[s["prompt_id"]]["samples"][s["sample"]]["correct"] is True for s in graded)
    right = sum(x["correct"] is True for r in rows.values() if r["reference"] is not None for x in r["samples"])
    assert len(graded) == right  # every right answer kept, and only those
    from cai.core.constitution import load

    hard = {r.id for r in load("reasoning").rules if r.hard}
    free = next(r for r in rows.values() if r["reference"] is None)
    allowed = [s for s in free["samples"] if {x["rule"] for x in s["rules"] if x["passed"] and not x["error"]} >= hard]
    ungraded = [s for s in selected if not s["graded"]]
    assert allowed and len(ungraded) == len(allowed) and {s["prompt_id"] for s in ungraded} == {free["id"]}
    assert any("1 of those prompts have no reference" in line for line in summary.lines)


def test_the_grm_signal_votes_k_judgements_and_its_meta_judge_keeps_k_meta(tmp_path, cli):
    """--sample-grm with --grm-samples k: k judgements of each prompt's answers vote (their mean read score); a meta
    judge keeps --grm-k-meta of them; a k_meta above k is refused before the engine starts."""
    from cai.core.store import RunStore

    def grm(run: str, **kw) -> list[float]:
        _run(tmp_path / run, sample_grm=True, limit=2, **kw)
        return [s["grm"] for r in RunStore(tmp_path / run / "run").read("samples") for s in r["samples"]]

    one, three, meta = grm("k1", grm_samples=1), grm("k3", grm_samples=3), grm("m", grm_samples=3, grm_meta=True)
    assert all(1 <= x <= 9 for x in one + three + meta) and len(one) == len(three) == 8
    assert one != three  # three judgements vote, not the first alone
    kept = grm("m1", grm_samples=3, grm_meta=True, grm_k_meta=1)
    assert kept != meta  # one of three votes, not the better two
    bad = cli(
        "generate",
        "--stage",
        "sample",
        "--backend",
        "scripted",
        "--constitution",
        "reasoning",
        "--prompts",
        MATH,
        "--sample-grm",
        "--grm-samples",
        "2",
        "--grm-meta",
        "--grm-k-meta",
        "3",
        "--out",
        tmp_path / "bad",
    )
    assert bad.returncode == 2 and "--grm-k-meta 3 is more than --grm-samples 2" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_train_pm_groups_ranked_pairs_and_pik_learns_from_samples(tmp_path, tiny_backbone):
    from cai.train import data as pmdata
    from cai.train import train

    _run(tmp_path, self_eval=True, select="passing")
    run = str(tmp_path / "run")
    rows = pmdata.load_rows(run)  # the ranked split: the run's only rows the pm trainer reads
    groups = pmdata.group(rows, by_prompt=True)
    assert len(groups) == 8 and all(len(g.comparisons) == 6 and len(g.responses) == 4 for g in groups)
    m = train(run, str(tmp_path / "pm"), log=lambda *_: None, backbone=tiny_backbone, epochs=1, max_length=64)
    assert m["pairs"] == 48 and m["train_groups"] + m["eval_groups"] == 8
    pik = train(
        run,
        str(tmp_path / "pik"),
        log=lambda *_: None,
        kind="pik",
        backbone=tiny_backbone,
        epochs=1,
        max_length=64,
        eval_fraction=0.5,
    )
    assert pik["kind"] == "pik" and pik["questions"] == 8 and 0 <= pik["eval_brier"] <= 1
    assert pik["eval_auroc"] is None or 0 <= pik["eval_auroc"] <= 1
    from tests.conftest import run_cli

    r = run_cli("eval", "pik", "--pm", tmp_path / "pik", "--data", run, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    from cai.core.store import RunStore

    targets = [r["p_ik"] for r in RunStore(run).read("samples")]
    mean = sum(targets) / 8
    assert set(targets) == {0.0, 0.5} and report["questions"] == 8
    assert report["brier_constant"] == pytest.approx(sum((t - mean) ** 2 for t in targets) / 8)
    assert report["auroc"] is not None  # per sample: 2 of 4 right where p_ik is 0.5
    wrong = run_cli("eval", "pik", "--pm", tmp_path / "pm", "--data", run)
    assert wrong.returncode == 2 and "a pairwise preference model (train-pm --kind pm), but this needs a P(IK)" in (
        wrong.stderr
    )


def test_bad_sampling_input_is_one_line_before_the_engine(tmp_path, cli):
    prm = write(tmp_path / "prm" / "config.json", json.dumps({"architectures": ["BertForTokenClassification"]}))
    base = [
        "generate",
        "--stage",
        "sample",
        "--constitution",
        "reasoning",
        "--prompts",
        MATH,
        "--out",
        tmp_path / "run",
        "--model",
        "no-such-model-anywhere",
    ]
    cases = [
        (["--samples", "0"], "'samples' (--samples): must be at least 1, got 0"),
        (["--require", "correct-answer.acuracy"], "--require 'correct-answer.acuracy': no such rule"),
        (["--pm", prm.parent], "a process reward model (train-pm --kind prm), but this needs a pairwise"),
        (["--weights", "pm=1"], "--weights gives pm a weight, but the run does not compute it (--pm)"),
    ]
    for extra, message in cases:
        r = cli(*base, *extra)
        assert r.returncode == 2 and message in r.stderr, (extra, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        assert not (tmp_path / "run").exists()
    alone = cli(
        "generate",
        "--stage",
        "select",
        "--constitution",
        "reasoning",
        "--prompts",
        MATH,
        "--out",
        tmp_path / "run",
        "--backend",
        "scripted",
    )
    assert alone.returncode == 2 and "--stage select: the run has no samples/ rows" in alone.stderr


def test_a_killed_sampling_run_resumes_with_nothing_lost_or_doubled(tmp_path):
    out = tmp_path / "run"
    args = [
        str(ROOT / ".venv" / "bin" / "cai") if (ROOT / ".venv" / "bin" / "cai").exists() else "cai",
        "generate",
        "--backend",
        "scripted",
        "--stage",
        "sample",
        "--constitution",
        "reasoning",
        "--prompts",
        str(MATH),
        "--out",
        str(out),
        "--samples",
        "3",
        "--chunk-size",
        "2",
        "--require",
        "",
    ]
    env = {**os.environ, "CAI_SCRIPTED_DELAY": "0.05"}
    rng = random.Random(3)
    for _ in range(4):
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    from cai.core.inputs import load
    from cai.core.store import RunStore

    store = RunStore(out)
    ids = [p.id for p in load(str(MATH))[0]]
    samples = [r["id"] for r in store.read("samples")]
    assert sorted(samples) == sorted(ids)  # every prompt exactly once
    selected = [r["id"] for r in store.read("selected")]
    assert len(selected) == len(set(selected)) == 3 * len(ids)  # --require '': every answer kept, once
    ranked = [r["id"] for r in store.read("ranked")]
    assert len(ranked) == len(set(ranked)) and {r.split("/")[0] for r in ranked} == set(ids)


# -- pairs files keep every pair ----------------------------------------------------------------------------------
def test_a_pairs_file_keeps_every_pair_of_a_prompt(tmp_path):
    from cai.backends.scripted import ScriptedBackend
    from cai.config import RunConfig
    from cai.core.store import RunStore
    from cai.generate import generate

    q, other = "Which is the capital of France?", "Name a colour."
    records = [
        {"prompt": q, "chosen": "Paris.", "rejected": "Lyon."},
        {"prompt": q, "chosen": "Paris.", "rejected": "Marseille."},
        {"prompt": q, "responses": ["Lyon.", "Nice."]},
        {"prompt": q, "chosen": "Lyon.", "rejected": "Paris."},  # an exact repeat of the first pair: judged once
        {"prompt": other, "responses": ["Red.", "Blue.", "Green."], "ranks": [1, 2, 3]},  # a group of 3: 3 pairs
    ]
    pairs = write(tmp_path / "pairs.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    logged: list[str] = []
    config = RunConfig(constitution="helpful", prompts=str(pairs), out=str(tmp_path / "run"), stage="rl", pairs="file")
    summary = generate(config, backend=ScriptedBackend(), log=logged.append)
    rows = RunStore(tmp_path / "run").read("prefs")
    assert summary.prompts == 2 and len(rows) == 6
    assert any("1 pair(s) of the file repeat an earlier pair of their prompt exactly" in m for m in logged)
    ids = sorted(r["id"] for r in rows)
    assert len(set(ids)) == 6 and {r["prompt_id"] for r in rows} == {r["id"].split("/")[0] for r in rows}
    answers = {frozenset((r["chosen"][0]["content"], r["rejected"][0]["content"])) for r in rows}
    assert answers == {
        frozenset(p)
        for p in [
            ("Paris.", "Lyon."),
            ("Paris.", "Marseille."),
            ("Lyon.", "Nice."),
            ("Red.", "Blue."),
            ("Red.", "Green."),
            ("Blue.", "Green."),
        ]
    }
    # train-pm's InstructGPT grouping: one batch element per prompt, holding all its comparisons
    from cai.train import data as pmdata

    groups = pmdata.group(pmdata.load_rows(str(tmp_path / "run")), by_prompt=True)
    assert sorted(len(g.comparisons) for g in groups) == [3, 3]


def test_a_ranked_group_file_trains_as_one_batch_element(tmp_path):
    from cai.train import data as pmdata

    data = write(
        tmp_path / "ranked.jsonl",
        json.dumps({"prompt": "q", "responses": ["a", "b", "c", "d"], "scores": [0.1, 0.9, 0.5, 0.5]}) + "\n",
    )
    rows = pmdata.load_rows(str(data))
    assert len(rows) == 6 and {r["group"] for r in rows} == {rows[0]["group"]}
    best = [r for r in rows if r["chosen"] == "b"]
    assert len(best) == 3 and all(r["p"] == 1.0 for r in best)
    tie = [r for r in rows if {r["chosen"], r["rejected"]} == {"c", "d"}]
    assert tie[0]["p"] == 0.5
    (g,) = pmdata.group(rows, by_prompt=True)
    assert len(g.responses) == 4 and len(g.comparisons) == 6
    bad = write(tmp_path / "bad.jsonl", json.dumps({"prompt": "q", "responses": ["a", "b"]}) + "\n")
    with pytest.raises(CaiError, match="needs 'scores' or 'ranks'"):
        pmdata.load_rows(str(bad))


# -- RewardBench 2's format -------------------------------------------------------------------------------------
def test_the_shipped_best_of_4_set_is_scored_by_the_judge_and_a_pm(tmp_path, cli, tiny_backbone):
    from cai.commands.evaluation.data import read_pairs

    pairs = read_pairs(str(BESTOF4))
    groups = {p.group for p in pairs}
    assert len(groups) == 24 and len(pairs) == 20 * 3 + 3 + 3 * 3 + 3 + 4 * 3
    judged = cli("eval", "judge", "--data", BESTOF4, "--backend", "scripted", "--json")
    assert judged.returncode == 0, judged.stderr
    rb2 = json.loads(judged.stdout)["rewardbench2"]
    assert rb2["records"] == 20 and set(rb2["subsets"]) == {"Factuality", "Precise IF", "Math", "Safety", "Focus"}
    assert "Ties (4 records)" in rb2["unrated"]

    from cai.train import train

    train(
        str(ROOT / "data" / "eval" / "prefs.jsonl"),
        str(tmp_path / "pm"),
        log=lambda *_: None,
        backbone=tiny_backbone,
        epochs=1,
        max_length=64,
    )
    scored = cli("eval", "pm", "--pm", tmp_path / "pm", "--data", BESTOF4)
    assert scored.returncode == 0, scored.stderr
    assert "best-of-N" in scored.stdout and "Ties" in scored.stdout.split("RewardBench 2")[1]
    bad = write(
        tmp_path / "bad.jsonl",
        json.dumps({"id": "x", "subset": "Ties", "prompt": "q", "chosen": ["a", "b"], "rejected": ["c"]}) + "\n",
    )
    r = cli("eval", "pm", "--pm", tmp_path / "pm", "--data", bad)
    assert r.returncode == 2 and "a Ties record's id is ref:<n>" in r.stderr
