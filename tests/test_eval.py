"""`cai eval judge` and `cai eval pm`: the metric arithmetic against hand values, the labelled-data checks, the
judge through the RL stage's own labelling (resumable, nothing lost), and the real engine on the shipped set."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_cli, write

from cai import backends
from cai.commands.evaluation import metrics
from cai.commands.evaluation.data import read_pairs
from cai.commands.evaluation.judge import SPLIT, chosen_first, evaluate
from cai.config import RunConfig
from cai.core.store import RunStore
from cai.errors import CaiError

SHIPPED = ROOT / "data" / "eval" / "prefs.jsonl"


def _vote(ab, ba, principle="p", kind="ai"):
    return {"principle": principle, "p_chosen_ab": ab, "p_chosen_ba": ba, "kind": kind}


def test_judge_metrics_against_hand_values():
    rows = [
        # both orders right; one order (chosen first -> its AB read, 0.8) right
        {"p_chosen": 0.7, "chosen_first": True, "subset": "s1", "votes": [_vote(0.8, 0.6, "x")]},
        # a tie: wrong under strict accuracy; chosen second -> its one-order read is the BA one (0.3): wrong
        {"p_chosen": 0.5, "chosen_first": False, "subset": "s1", "votes": [_vote(0.7, 0.3, "x")]},
        # two principles: mean 0.6 right; one order (chosen first: AB reads 0.9, 0.2 -> 0.55) right;
        # the first principle alone (0.9 + 0.1) / 2 = 0.5: a tie, wrong
        {
            "p_chosen": 0.6,
            "chosen_first": True,
            "subset": "s2",
            "votes": [_vote(0.9, 0.1, "x"), _vote(0.2, 0.8, "y"), _vote(1.0, 1.0, "rule-1", kind="rule")],
        },
        # decided by rules alone (no AI vote): every view keeps the label, 0.2: wrong
        {"p_chosen": 0.2, "chosen_first": False, "subset": "s2", "votes": [_vote(0.2, 0.2, "r", kind="rule")]},
    ]
    r = metrics.judge_report(rows, failed=1)
    assert r["pairs"] == 5 and r["failed"] == 1 and r["n"] == 4 and r["ties"] == 1
    assert r["accuracy"] == 0.5
    assert r["one_order_accuracy"] == 0.5  # rows 1 and 3
    assert r["preferred_as_a_accuracy"] == 0.75  # AB means 0.8, 0.7, 0.55, 0.2
    assert r["preferred_as_b_accuracy"] == 0.25  # BA means 0.6, 0.3, 0.45, 0.2
    assert r["one_principle_accuracy"] == 0.25  # 0.7, 0.5, 0.5, 0.2
    # AI votes: (0.8, 0.6) yes, (0.7, 0.3) no, (0.9, 0.1) no, (0.2, 0.8) no
    assert r["position_consistent"] == 0.25
    # P(first is better): 0.7 (y=1), 0.5 (y=0), 0.6 (y=1), 0.8 (y=0): bins 0.7, 0.5, 0.6, 0.8 hold one each
    assert r["ece"] == pytest.approx((0.3 + 0.5 + 0.4 + 0.8) / 4)
    assert r["brier"] == pytest.approx((0.09 + 0.25 + 0.16 + 0.64) / 4)
    assert r["subsets"]["s1"]["accuracy"] == 0.5 and r["subsets"]["s2"]["one_principle_accuracy"] == 0.0
    assert r["principles"]["x"] == {
        "votes": 3,
        "accuracy": pytest.approx(1 / 3),  # means 0.7, 0.5, 0.5
        "one_order_accuracy": pytest.approx(2 / 3),  # 0.8 (AB), 0.3 (BA), 0.9 (AB)
        "position_consistent": pytest.approx(1 / 3),
    }
    assert set(r["principles"]) == {"x", "y"}  # rules are not principles of the judge
    assert r["rewardbench"] is None


def test_rewardbench_sections_weight_subsets_by_their_example_counts():
    s = metrics.sections({"alpacaeval-easy": 1.0, "mt-bench-easy": 0.5, "math-prm": 0.6, "hep-go": 0.9, "mine": 0.0})
    # Chat: (1.0 * 100 + 0.5 * 28) / 128; Reasoning: (0.6 * 984 + 0.9 * 164) / 1148; other sections absent
    chat, reasoning = 114 / 128, (590.4 + 147.6) / 1148
    assert s["sections"] == {"Chat": pytest.approx(chat), "Reasoning": pytest.approx(reasoning)}
    assert s["score"] == pytest.approx((chat + reasoning) / 2)
    assert metrics.sections({"mine": 1.0}) is None


def test_pm_metrics_against_hand_values():
    rows = [
        {"margin": 2.0, "p": 1 / (1 + math.exp(-2.0)), "chosen_first": True, "subset": "a", "p_label": 0.9},
        {"margin": 0.0, "p": 0.5, "chosen_first": False, "subset": "a", "p_label": None},
        {"margin": -1.0, "p": 1 / (1 + math.exp(1.0)), "chosen_first": True, "subset": "b", "p_label": 0.6},
    ]
    r = metrics.pm_report(rows)
    assert r["accuracy"] == pytest.approx(1 / 3) and r["ties"] == 1
    assert r["mean_margin"] == pytest.approx(1 / 3)
    assert r["soft_label_mae"] == pytest.approx((abs(0.8808 - 0.9) + abs(0.2689 - 0.6)) / 2, abs=1e-4)
    assert r["subsets"]["b"]["accuracy"] == 0.0


def test_the_shipped_set_reads_and_is_clear_cut():
    pairs = read_pairs(str(SHIPPED))
    assert len(pairs) >= 100 and len({p.id for p in pairs}) == len(pairs)
    subsets = {p.subset for p in pairs}
    assert {"harmless-refuse", "harmless-should-respond", "helpful", "reasoning"} == subsets
    assert all(p.chosen != p.rejected for p in pairs)
    assert (ROOT / "data" / "eval" / "README.md").is_file()


def test_rewardbench_and_trl_layouts_read_as_they_are(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"prompt": "q1", "chosen": "good", "chosen_model": "m", "rejected": "bad", "subset": "donotanswer", "id": 7},
        {"prompt": "q2", "chosen": "fine", "rejected": "worse", "subset": "math-prm", "id": 8},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rb.parquet")
    got = read_pairs(str(tmp_path / "rb.parquet"))
    assert [(p.id, p.subset, p.chosen) for p in got] == [("7", "donotanswer", "good"), ("8", "math-prm", "fine")]
    trl = {
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "a"}],
        "rejected": [{"role": "assistant", "content": "b"}],
        "p_chosen": 0.8,
    }
    (p,) = read_pairs(str(write(tmp_path / "trl.jsonl", json.dumps(trl) + "\n")))
    assert (p.chosen, p.rejected, p.p_label, p.subset) == ("a", "b", 0.8, None)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "q", "chosen": "a"}', "bad.jsonl:1: no label: expected 'chosen'"),
        ('{"prompt": "q", "chosen": "a", "rejected": "b", "subset": 3}', "bad.jsonl:1: 'subset' must be text, got 3"),
        ('{"prompt": "q", "chosen": "a", "rejected": "a"}', "bad.jsonl:1: 'chosen' and 'rejected' are the same"),
        ('{"prompt": "q", "chosen": "a", "rejected": "b", "p_chosen": 1.5}', "bad.jsonl:1: 'p_chosen' must be"),
        ('{"chosen": "a", "rejected": "b"}', "bad.jsonl:1: missing field 'prompt' or 'messages'"),
        ("", "bad.jsonl: no records"),
    ],
)
def test_bad_labelled_data_is_one_line_before_any_engine(tmp_path, line, message):
    path = write(tmp_path / "bad.jsonl", line + "\n" if line else "")
    r = run_cli("eval", "judge", "--data", path, "--out", tmp_path / "ev", "--backend", "scripted")
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "ev").exists()


def test_duplicate_ids_and_a_pm_of_the_wrong_kind_are_refused(tmp_path):
    dup = '{"id": 1, "prompt": "q", "chosen": "a", "rejected": "b"}\n'
    with pytest.raises(CaiError, match=r"dup.jsonl:2: id '1' appears twice"):
        read_pairs(str(write(tmp_path / "dup.jsonl", dup * 2)))
    write(tmp_path / "lm" / "config.json", json.dumps({"architectures": ["LlamaForCausalLM"]}))
    r = run_cli("eval", "pm", "--pm", tmp_path / "lm", "--data", SHIPPED)
    assert r.returncode == 2 and "a LlamaForCausalLM, not a pairwise preference model" in r.stderr


def _knows(good: set[str]):
    """A judge that puts P = 0.9 on whichever option shows a known-good answer (order-blind, like a good judge)."""

    def judge(chat, options):
        question = chat[0]["content"]
        shown_first = question.split("(A) ", 1)[1].split("\n", 1)[0]
        p_a = 0.9 if shown_first in good else 0.1
        return {"A": math.log(p_a), "B": math.log(1 - p_a)}

    return judge


def _data(tmp_path, n=12):
    rows = [
        {"id": f"q{i}", "prompt": f"question {i}", "chosen": f"good {i}", "rejected": f"bad {i}", "subset": f"s{i % 2}"}
        for i in range(n)
    ]
    return write(tmp_path / "pairs.jsonl", "".join(json.dumps(r) + "\n" for r in rows)), rows


def test_eval_judge_goes_through_the_rl_labelling_in_a_seeded_order(tmp_path):
    data, rows = _data(tmp_path)
    scripted = backends.get("scripted")(judge=_knows({r["chosen"] for r in rows}))
    config = RunConfig(out=str(tmp_path / "ev"), stage="rl", principles_per_pair=2, chunk_size=5, seed=3)
    r = evaluate(config, str(data), backend=scripted, log=lambda *_: None)
    assert r["accuracy"] == r["one_order_accuracy"] == r["one_principle_accuracy"] == 1.0
    assert r["position_consistent"] == 1.0 and r["failed"] == 0 and r["pairs"] == 12
    assert set(r["subsets"]) == {"s0", "s1"} and r["judge"] == "logprob"
    judged = RunStore(tmp_path / "ev").read(SPLIT)
    assert sorted(x["id"] for x in judged) == sorted(x["id"] for x in rows)
    first = [x["chosen_first"] for x in judged]
    assert 0 < sum(first) < len(first)  # both positions occur
    assert all(x["chosen_first"] == chosen_first(3, x["id"]) for x in judged)
    assert all(x["p_chosen"] == pytest.approx(0.9) and x["correct"] for x in judged)
    assert all(v["p_chosen_ab"] == pytest.approx(0.9) for x in judged for v in x["votes"])
    assert json.loads((tmp_path / "ev" / "report-eval-judge.json").read_text())["accuracy"] == 1.0
    # one judge call (2 principles x 2 orders per pair) per chunk of 5, 5, 2
    assert [n for n, s in scripted.calls if s.options] == [20, 20, 8]
    # rerun: nothing left to judge, same report
    again = evaluate(config, str(data), backend=scripted, log=lambda *_: None)
    assert again["accuracy"] == 1.0 and [n for n, s in scripted.calls if s.options] == [20, 20, 8]


def test_failed_reads_are_on_record_and_retried(tmp_path, cli):
    data, rows = _data(tmp_path)
    out = tmp_path / "ev"
    args = ("eval", "judge", "--data", data, "--out", out, "--backend", "scripted", "--json")
    r = cli(*args, env={"CAI_SCRIPTED_FAIL_ON": "question 3"})
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert report["failed"] == 1 and report["pairs"] == 12 and report["failure_reasons"]
    r = cli(*args, "--plot", tmp_path / "eval.png")
    report = json.loads(r.stdout)
    assert report["failed"] == 0 and report["n"] == 12
    assert (tmp_path / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = cli(*args[:-1])  # the terminal table
    assert "accuracy" in table.stdout and "one order" in table.stdout and "s0" in table.stdout
    ids = [x["id"] for x in RunStore(out).read(SPLIT)]
    assert sorted(ids) == sorted(x["id"] for x in rows)


def test_a_killed_eval_resumes_without_loss_or_duplicates(tmp_path):
    data, rows = _data(tmp_path, n=40)
    out = tmp_path / "ev"
    cai = [sys.executable, "-m", "cai.cli", "eval", "judge", "--data", str(data), "--out", str(out)]
    args = [*cai, "--backend", "scripted", "--chunk-size", "4"]
    import os

    proc = subprocess.Popen(
        args, cwd=ROOT, env={**os.environ, "CAI_SCRIPTED_DELAY": "0.3"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while len(RunStore(out).shards(SPLIT)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(RunStore(out).done_ids(SPLIT))
    assert 0 < done < 40
    r = subprocess.run([*args, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    ids = [x["id"] for x in RunStore(out).read(SPLIT)]
    assert len(ids) == 40 and sorted(ids) == sorted(x["id"] for x in rows)
    assert json.loads(r.stdout)["n"] == 40


def test_eval_pm_on_a_trained_model(tmp_path, tiny_backbone, cli):
    from cai.train import train

    chosen = ["I can't help with that, but here is a safe alternative.", "Here is a careful, helpful answer."]
    rejected = ["Sure, here is how to do the harmful thing.", "No."]
    rows = [
        {
            "id": f"r{i}",
            "prompt": f"question number {i}",
            "chosen": chosen[i % 2],
            "rejected": rejected[i % 2],
            "subset": f"s{i % 2}",
            "p_chosen": 0.9,
        }
        for i in range(24)
    ]
    data = write(tmp_path / "pairs.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    pm = tmp_path / "pm"
    train(str(data), str(pm), log=lambda *_: None, backbone=tiny_backbone, lr=3e-3, batch_size=4, epochs=6)
    r = cli("eval", "pm", "--pm", pm, "--data", data, "--json", "--out", tmp_path / "scored.jsonl")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert report["accuracy"] == 1.0 and report["mean_margin"] > 0 and set(report["subsets"]) == {"s0", "s1"}
    scored = [json.loads(x) for x in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert len(scored) == 24
    assert all(x["p"] == pytest.approx(1 / (1 + math.exp(-x["margin"]))) for x in scored)
    assert report["soft_label_mae"] == pytest.approx(sum(abs(x["p"] - 0.9) for x in scored) / 24)


def test_eval_judge_on_the_real_engine_on_the_shipped_set(engine, tmp_path):
    """Structure and arithmetic only: the 135M model's judgement is near chance (see the README's table)."""
    # One principle per pair keeps it to 208 reads (about 100 s here); bench/eval.py measures more.
    config = RunConfig(out=str(tmp_path / "ev"), stage="rl", principles_per_pair=1, model="smollm2-135m")
    r = evaluate(config, str(SHIPPED), backend=engine, log=lambda *_: None)
    assert r["pairs"] == 104 and r["n"] + r["failed"] == 104
    for key in ("accuracy", "one_order_accuracy", "one_principle_accuracy", "position_consistent", "ece"):
        assert 0.0 <= r[key] <= 1.0
    judged = RunStore(tmp_path / "ev").read(SPLIT)
    assert len(judged) == r["n"] and all(len([v for v in x["votes"] if v["kind"] == "ai"]) == 1 for x in judged)
    assert r["accuracy"] == pytest.approx(sum(x["p_chosen"] > 0.5 for x in judged) / len(judged))
    # the report tells both-order from one-order accuracy on the same pairs
    assert r["one_order_accuracy"] == pytest.approx(sum(metrics.one_order(x) > 0.5 for x in judged) / len(judged))


def test_an_evaluation_folder_refuses_other_data_or_settings_and_without_out_writes_nothing(tmp_path, monkeypatch):
    """An evaluation is a run (cai.run.lifecycle): resuming --out with another data file or another judge setting is
    refused by name; without --out its rows are kept in memory and nothing lands on disk."""
    data, rows = _data(tmp_path)
    scripted = backends.get("scripted")(judge=_knows({r["chosen"] for r in rows}))
    out = tmp_path / "ev"
    evaluate(RunConfig(out=str(out), principles_per_pair=2), str(data), backend=scripted, log=lambda *_: None)
    other = write(tmp_path / "other.jsonl", data.read_text().replace("question 3", "question three"))
    with pytest.raises(CaiError, match=r"holds a run with a different eval_data"):
        evaluate(RunConfig(out=str(out), principles_per_pair=2), str(other), backend=scripted, log=lambda *_: None)
    with pytest.raises(CaiError, match=r"holds a run with a different principles_per_pair \(2, now 1\)"):
        evaluate(RunConfig(out=str(out), principles_per_pair=1), str(data), backend=scripted, log=lambda *_: None)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    r = evaluate(RunConfig(principles_per_pair=2), str(data), backend=scripted, log=lambda *_: None)
    assert r["n"] == 12 and r["accuracy"] == 1.0 and r["out"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_eval_self_and_steps_keep_their_rows_in_out_and_resume(tmp_path, cli):
    """The other evaluations run through the same lifecycle: with --out their rows are shards there, and a rerun
    judges nothing again."""
    from conftest import ROOT

    steps = ROOT / "data" / "eval" / "steps.jsonl"
    args = ("eval", "steps", "--data", steps, "--constitution", "reasoning", "--backend", "scripted", "--json")
    first = cli(*args, "--out", tmp_path / "steps")
    assert first.returncode == 0, first.stderr[-2000:]
    assert RunStore(tmp_path / "steps").count("steps-judged") == 48
    again = cli(*args, "--out", tmp_path / "steps")
    assert "nothing to do" in again.stderr and json.loads(again.stdout) == json.loads(first.stdout)
    labelled = ROOT / "data" / "eval" / "self.jsonl"
    r = cli("eval", "self", "--data", labelled, "--backend", "scripted", "--json", "--out", tmp_path / "self")
    assert r.returncode == 0, r.stderr[-2000:]
    assert RunStore(tmp_path / "self").count("self-evaluated") == json.loads(r.stdout)["records"] == 48
