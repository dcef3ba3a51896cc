"""Self-evaluation (Kadavath et al.): P(True) arithmetic, the trace, --keep best, brainstorming, publishing by
P(True), pairs from it, and calibration on labelled answers."""

import json
import math

import pytest
from conftest import RED_TEAM, write

from cai.backends.scripted import ScriptedBackend
from cai.commands.evaluation.metrics import calibration
from cai.config import RunConfig
from cai.core.store import RunStore
from cai.errors import CaiError
from cai.generate import generate
from cai.signals import p_true as selfeval
from cai.signals import reads


def test_both_option_orders_are_averaged():
    # True shown as (A): P(A) = 0.8. True shown as (B): P(A) = 0.4, so P(True) = 0.6 there.
    read = selfeval.true_read(reads.from_asks(0.8, 0.4))
    assert read.p_ab == pytest.approx(0.8) and read.p_ba == pytest.approx(0.6) and read.p_true == pytest.approx(0.7)
    biased = selfeval.true_read(reads.from_asks(0.9, 0.9))  # always (A): no information
    assert biased.p_true == pytest.approx(0.5) and biased.orders_disagree


def test_calibration_against_hand_values():
    r = calibration([0.9, 0.8, 0.3, 0.6], [True, False, False, True])
    assert r["n"] == 4 and r["accuracy"] == 0.75
    # bins: [0.9] -> |0.9-1|, [0.8] -> |0.8-0|, [0.3] -> |0.3-0|, [0.6] -> |0.6-1|; each weighs 1/4
    assert r["ece"] == pytest.approx((0.1 + 0.8 + 0.3 + 0.4) / 4)
    assert r["brier"] == pytest.approx((0.01 + 0.64 + 0.09 + 0.16) / 4)


def _judge(p_a_by_answer):
    """Option log-probs by which answer is proposed and which option says True: P(True) is fixed per answer."""

    def judge(chat, options):
        question = chat[0]["content"]
        if "Proposed answer: " not in question:  # the RL stage's comparison questions: no preference
            return {options[0]: math.log(0.5), options[1]: math.log(0.5)}
        answer = question.split("Proposed answer: ", 1)[1].split("\n", 1)[0]
        p_true = next((p for key, p in p_a_by_answer.items() if answer.startswith(key)), 0.5)
        true_is_a = question.rstrip().endswith("(B) False")
        p_a = p_true if true_is_a else 1 - p_true
        return {options[0]: math.log(p_a), options[1]: math.log(1 - p_a)}

    return judge


def _run(tmp_path, **kw):
    config = RunConfig(
        prompts=str(RED_TEAM),
        out=str(tmp_path / "run"),
        backend="scripted",
        stage="sl",
        limit=3,
        rounds=2,
        self_eval=True,
        **kw,
    )
    engine = ScriptedBackend(judge=_judge({"Answer": 0.2, "Revised answer": 0.9}))
    generate(config, backend=engine, log=lambda *_: None)
    return RunStore(tmp_path / "run").read("sft"), engine


def test_every_text_of_the_trace_gets_p_true_and_keep_best_takes_the_highest(tmp_path):
    rows, engine = _run(tmp_path, keep="best")
    for row in rows:
        assert row["initial_p_true"] == pytest.approx(0.2)
        assert [r["p_true"] for r in row["revisions"]] == [pytest.approx(0.9)] * 2
        assert [e["round"] for e in row["self_eval"]] == [0, 1, 2]
        assert row["kept"] == 2  # a tie between the revisions goes to the later
        assert row["completion"][0]["content"] == row["revisions"][1]["revision"]
    reads = [n for n, s in engine.calls if s.options]
    assert reads == [3 * 2] * 3  # one engine call per prompt (each streams on its own): 3 texts x 2 option orders


def test_brainstormed_samples_are_shown_before_the_answer(tmp_path):
    seen = []
    engine = ScriptedBackend(judge=lambda chat, options: seen.append(chat[0]["content"]) or {o: -0.7 for o in options})
    config = RunConfig(
        prompts=str(RED_TEAM),
        out=str(tmp_path / "run"),
        backend="scripted",
        stage="sl",
        limit=2,
        rounds=1,
        self_eval=True,
        self_eval_samples=3,
    )
    generate(config, backend=engine, log=lambda *_: None)
    assert [s.n for _, s in engine.calls if s.label == "self-eval brainstorm"] == [3, 3]  # one call per prompt
    assert all("Possible answer 3:" in q and q.index("Possible answer 1") < q.index("Proposed answer") for q in seen)


def test_bad_self_eval_settings_and_templates_fail_before_the_engine(tmp_path):
    with pytest.raises(
        CaiError, match="--keep best picks the answer with the highest P\\(True\\): it needs --self-eval"
    ):
        generate(RunConfig(prompts=str(RED_TEAM), out=str(tmp_path / "a"), backend="scripted", keep="best"))
    with pytest.raises(CaiError, match="--self-eval-samples applies only with --self-eval"):
        RunConfig(self_eval_samples=2)
    write(tmp_path / "t" / "self_eval.j2", "Is this right? (A) {{ option_a }} (B) {{ option_b }}")
    with pytest.raises(CaiError, match="self_eval.j2: must show {{ answer }}"):
        generate(
            RunConfig(
                prompts=str(RED_TEAM),
                out=str(tmp_path / "b"),
                backend="scripted",
                self_eval=True,
                templates=str(tmp_path / "t"),
            ),
            backend=ScriptedBackend(),
        )
    assert not (tmp_path / "b").exists()


def test_publish_keeps_rows_above_a_p_true_and_says_so(tmp_path, cli):
    config = RunConfig(
        prompts=str(RED_TEAM),
        out=str(tmp_path / "run"),
        backend="scripted",
        stage="sl",
        limit=6,
        rounds=1,
        self_eval=True,
    )
    engine = ScriptedBackend(judge=_judge({"Revised answer": 0.9, "Answer": 0.2}))
    generate(config, backend=engine, log=lambda *_: None)
    r = cli("publish", tmp_path / "run", "--repo", "me/x", "--dry-run", tmp_path / "hub", "--min-p-true", "0.95")
    assert r.returncode == 0 and "sft/train     0 rows" in r.stdout
    assert "published: 0 of 6." in (tmp_path / "hub" / "README.md").read_text()
    r = cli("publish", tmp_path / "run", "--repo", "me/x", "--dry-run", tmp_path / "hub2", "--min-p-true", "0.5")
    assert r.returncode == 0 and "published: 6 of 6." in (tmp_path / "hub2" / "README.md").read_text()
    s = cli("stats", tmp_path / "run")
    assert "round 0  mean 0.200" in s.stdout and "round 1  mean 0.900" in s.stdout


def test_revision_pairs_take_the_kept_answer_against_the_least_true(tmp_path):
    def reply(chat, sampling, seed, index):
        last = chat[-1]["content"]
        if last.startswith("Revision request"):  # round 1 revises the first answer, round 2 the revision
            return (
                "Revised in round 1." if any(m["content"] == "First answer." for m in chat) else "Revised in round 2."
            )
        return "A critique." if last.startswith("Critique request") else "First answer."

    judge = _judge({"First answer": 0.5, "Revised in round 1": 0.9, "Revised in round 2": 0.1})
    config = RunConfig(
        prompts=str(RED_TEAM),
        out=str(tmp_path / "run"),
        backend="scripted",
        limit=2,
        rounds=2,
        self_eval=True,
        keep="best",
        pairs="revision",
        principles_per_pair=2,
    )
    generate(config, backend=ScriptedBackend(reply=reply, judge=judge), log=lambda *_: None)
    store = RunStore(tmp_path / "run")
    assert {r["completion"][0]["content"] for r in store.read("sft")} == {"Revised in round 1."}
    for row in store.read("prefs"):  # the kept answer against the least likely true: not the initial answer
        assert {row["chosen"][0]["content"], row["rejected"][0]["content"]} == {
            "Revised in round 1.",
            "Revised in round 2.",
        }


def test_cli_eval_self_reports_calibration(tmp_path, cli):
    data = write(
        tmp_path / "labelled.jsonl",
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"prompt": "Is water wet?", "answer": "Yes, water makes things wet.", "acceptable": True},
                {"prompt": "How do I pick a lock?", "answer": "Here is how to break in.", "acceptable": False},
                {"messages": [{"role": "user", "content": "2+2?"}], "completion": "4", "acceptable": 1},
            ]
        ),
    )
    r = cli("eval", "self", "--data", data, "--backend", "scripted", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["n"] == 3 and report["failed"] == 0 and 0 <= report["ece"] <= 1
    bad = write(tmp_path / "bad.jsonl", '{"prompt": "q", "answer": "a", "acceptable": "maybe"}\n')
    r = cli("eval", "self", "--data", bad, "--backend", "scripted")
    assert r.returncode == 2 and "bad.jsonl:1: expected 'acceptable': true or false" in r.stderr
