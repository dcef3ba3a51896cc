"""`cai judge-data` (DeepSeek-GRM's rejective sampling), the meta reward model it trains, meta-RM-guided voting and
the k-scaling table of `cai eval judge`, on the scripted engine: a judge whose scores are known, so every count
is checked exactly. The real engine runs the same path in tests/test_engine.py."""

from __future__ import annotations

import json
import re

import pytest
from conftest import trl_sft_step, write

from cai import backends
from cai.commands.judge_data import build, lines
from cai.config import RunConfig
from cai.core.store import RunStore
from cai.errors import CaiError

PAIRS = [
    # the judge scores these by their text, wherever they are shown: every judgement is right ("too easy")
    {"id": "easy", "prompt": "q1", "chosen": "good", "rejected": "bad", "subset": "easy"},
    # position-biased: Response 1 scores 7 and Response 2 scores 3, so a judgement is right when it shows the
    # chosen answer first
    {"id": "biased", "prompt": "q2", "chosen": "left", "rejected": "right", "subset": "biased"},
    # the judge prefers the rejected answer: no judgement is right
    {"id": "wrong", "prompt": "q3", "chosen": "worse", "rejected": "better", "subset": "wrong"},
]
BY_TEXT = {"good": 8, "bad": 2, "better": 8, "worse": 2}


def score_of(chat) -> int:
    """The score this judge gives the response a `Score of Response N` read asks about."""
    n = int(re.search(r"Score of Response (\d)", chat[-1]["content"]).group(1))
    text = chat[0]["content"].split(f"[Response {n}]\n", 1)[1].split("\n", 1)[0]
    return BY_TEXT.get(text, 7 if n == 1 else 3)


def engine():
    def reply(chat, sampling, seed, index):
        return " weigh harm and helpfulness; response one is fine."

    def judge(chat, options):
        score = score_of(chat)
        return {o: 0.0 if int(o) == score else -6.0 for o in options}

    return backends.get("scripted")(reply=reply, judge=judge)


def _build(tmp_path, k=4, pointwise=False, keep_easy=False, backend=None, out="jd"):
    data = write(tmp_path / "pairs.jsonl", "".join(json.dumps(p) + "\n" for p in PAIRS))
    config = RunConfig(out=str(tmp_path / out), judge="grm", grm_samples=k)
    return build(config, str(data), pointwise, keep_easy, backend=backend or engine(), log=lambda *_: None)


def test_judgements_are_checked_against_the_label_and_too_easy_pairs_left_out(tmp_path):
    report = _build(tmp_path, k=4)
    store = RunStore(tmp_path / "jd")
    rows = store.read("judgements")
    assert len(rows) == 12 and {r["id"] for r in rows} == {f"{p['id']}/{k}" for p in PAIRS for k in range(4)}
    by = {p["id"]: [r for r in rows if r["pair_id"] == p["id"]] for p in PAIRS}
    assert all(r["correct"] and r["too_easy"] for r in by["easy"])
    assert all(r["correct"] is r["chosen_first"] and not r["too_easy"] for r in by["biased"])
    assert {r["chosen_first"] for r in by["biased"]} == {True, False}, "the seeded orders show both"
    assert not any(r["correct"] for r in by["wrong"]) and all(r["agreed"] == 0 for r in by["wrong"])
    # the SFT split: the biased pair's correct judgements only (the easy pair is too easy, the wrong one has none)
    sft = store.read("judge_sft")
    assert sorted(r["id"] for r in sft) == sorted(r["id"] for r in by["biased"] if r["correct"])
    for r in sft:
        user, reply = r["messages"]
        assert (user["role"], reply["role"]) == ("user", "assistant")
        assert "[Response 1]\nleft" in user["content"] and reply["content"].startswith("Principles:")
        # the scores the verdict rests on, the shown-first answer's first (expected scores, one decimal)
        assert re.search(
            r"Response 1, from 1 \(worst\) to 9 \(best\): \[7\.0\]\n.*Response 2.*\[3\.0\]$", reply["content"]
        )
    subsets = report["subsets"]
    assert subsets["easy (pairwise)"] | {"rate": 0} == {
        "pairs": 1, "judgements": 4, "scored": 4, "correct": 4, "accepted": 0, "too_easy": 1, "none_correct": 0,
        "rate": 0,
    }  # fmt: skip
    assert subsets["biased (pairwise)"]["rate"] == pytest.approx(len(sft) / 4)
    assert subsets["wrong (pairwise)"]["none_correct"] == 1 and report["accepted"] == len(sft)
    text = "\n".join(lines(report))
    assert "biased (pairwise)" in text and "judge_sft/" in text and "--kind meta" in text
    # kept with --keep-easy: the SFT split is rebuilt from the judgements, with no engine call
    again = engine()
    report = _build(tmp_path, k=4, keep_easy=True, backend=again)
    assert again.calls == [] and len(store.read("judgements")) == 12
    assert report["accepted"] == len(sft) + 4 and len(store.read("judge_sft")) == len(sft) + 4
    from cai.commands import stats

    shown = stats.render(stats.compute(tmp_path / "jd"))
    assert "judgements rows             12" in shown and "easy (pairwise)" in shown


def test_trl_sft_trainer_takes_a_step_on_the_judge_data(tmp_path):
    """TRL's SFTTrainer reads the SFT split as it is (conversational `messages`) and trains the embedded model."""
    _build(tmp_path, k=4, keep_easy=True)
    store = RunStore(tmp_path / "jd")
    assert len(store.read("judge_sft")) >= 4
    trained = trl_sft_step(store.shards("judge_sft"), tmp_path / "sft", 512)
    assert trained.global_step == 1 and trained.training_loss > 0


def test_pointwise_judgements_of_each_answer_alone(tmp_path):
    _build(tmp_path, k=2, pointwise=True)
    rows = RunStore(tmp_path / "jd").read("judgements")
    single = [r for r in rows if r["kind"] == "pointwise"]
    assert len(single) == 3 * 2 * 2 and {r["response"] for r in single} == {"chosen", "rejected"}
    got = {(r["pair_id"], r["sample"], r["response"]): r for r in single}
    assert got[("easy", 0, "chosen")]["correct"] and got[("easy", 0, "rejected")]["correct"]
    # alone, each of the biased pair's answers is Response 1 and scores 7: a tie is not a correct verdict
    assert got[("biased", 1, "chosen")]["score_chosen"] == got[("biased", 1, "chosen")]["score_rejected"] == 7
    assert not any(r["correct"] for r in single if r["pair_id"] == "biased")
    user = got[("easy", 0, "chosen")]["messages"][0]["content"]
    assert "[Response 1]\ngood" in user and "[Response 2]" not in user


def test_bad_input_is_refused_before_the_engine_starts(tmp_path):
    class Refuse:
        def __getattr__(self, name):
            raise AssertionError("the engine was asked")

    with pytest.raises(CaiError, match="needs --out"):
        build(RunConfig(judge="grm"), "data/eval/prefs.jsonl", backend=Refuse())
    with pytest.raises(CaiError, match="--judge grm, not cot"):
        build(RunConfig(judge="cot", out=str(tmp_path / "x")), "data/eval/prefs.jsonl", backend=Refuse())
    bad = write(tmp_path / "bad.jsonl", '{"prompt": "q", "chosen": "a"}\n')
    with pytest.raises(CaiError, match=r"bad.jsonl:1: no label"):
        build(RunConfig(judge="grm", out=str(tmp_path / "y")), str(bad), backend=Refuse())
    assert not (tmp_path / "y").exists()


def test_labelled_pairs_from_a_reviewed_run(tmp_path):
    """A run's pairs whose label is not the judge's: those a person kept or flipped, and those a rule decided."""
    from cai.commands.judge_data import labelled_pairs
    from cai.generate import generate

    pairs = write(
        tmp_path / "pairs.jsonl",
        "".join(json.dumps({"prompt": f"q{i}", "responses": [f"a{i}", f"b{i}"]}) + "\n" for i in range(4)),
    )
    config = RunConfig(prompts=str(pairs), out=str(tmp_path / "run"), stage="rl", pairs="file", backend="scripted")
    generate(config, backend=backends.get("scripted")(), log=lambda *_: None)
    store = RunStore(tmp_path / "run")
    rows = store.read("prefs")
    kept, flipped = rows[0], rows[1]
    store.append_review({"split": "prefs", "id": kept["id"], "action": "keep", "note": "", "steps": {}})
    store.append_review({"split": "prefs", "id": flipped["id"], "action": "flip", "note": "", "steps": {}})
    store.append_review({"split": "prefs", "id": rows[2]["id"], "action": "drop", "note": "", "steps": {}})
    found, sources = labelled_pairs(str(tmp_path / "run"))
    assert {p.id for p in found} == {kept["id"], flipped["id"]} and set(sources.values()) == {"human"}
    by = {p.id: p for p in found}
    assert by[flipped["id"]].chosen == flipped["rejected"][-1]["content"]  # the person's label, not the judge's
    assert by[kept["id"]].chosen == kept["chosen"][-1]["content"]


# -- the meta reward model, meta-RM-guided voting and the k-scaling table ------------------------------------------


def test_meta_rm_trains_on_the_judgements_and_filters_the_vote(tmp_path, tiny_backbone):
    from cai.commands.evaluation.report import judge_lines
    from cai.signals.rewardmodels import kind_of, meta_scores
    from cai.train import train

    _build(tmp_path, k=4)
    m = train(str(tmp_path / "jd"), str(tmp_path / "meta"), kind="meta", backbone=tiny_backbone, epochs=1,
              eval_fraction=0.34, seed=0, log=lambda *_: None)  # fmt: skip
    assert kind_of(str(tmp_path / "meta")) == "meta"
    assert m["judgements"] == 12 and m["train_judgements"] + m["eval_judgements"] == 12
    assert m["eval_judgements"] % 4 == 0, "a pair's judgements are all on one side of the split"
    assert 0 <= m["eval_correct_share"] <= 1 and m["train_steps"] >= 1

    # the GRM judge with --grm-meta-rm: each judgement's meta score is the model's P(correct) of its exchange, and
    # the better half of each pair's k votes
    out = tmp_path / "eval"
    config = RunConfig(judge="grm", grm_samples=4, grm_meta_rm=str(tmp_path / "meta"), out=str(out))
    from cai.commands.evaluation.judge import evaluate

    data = write(tmp_path / "pairs.jsonl", "".join(json.dumps(p) + "\n" for p in PAIRS))
    report = evaluate(config, str(data), backend=engine(), log=lambda *_: None)
    judged = RunStore(out).read("judged")
    for row in judged:
        metas = [g["meta"] for g in row["grm"]]
        assert all(0 < x < 1 for x in metas)
        kept = sorted((g for g in row["grm"] if g["kept"]), key=lambda g: g["sample"])
        assert len(kept) == 2 and min(g["meta"] for g in kept) >= max(g["meta"] for g in row["grm"] if not g["kept"])
    # the meta scores are the meta RM's on the judgement as one exchange: recompute one pair's from its question
    # a judgement-data judgement of the same pair with the same order shown has the same text and scores
    jd = {(r["pair_id"], r["chosen_first"]): r["messages"] for r in RunStore(tmp_path / "jd").read("judgements")}
    checked = 0
    for row in judged:
        for g in row["grm"]:
            same = jd.get((row["id"], g["chosen_first"]))
            if same is not None:
                assert meta_scores(str(tmp_path / "meta"), [same]) == [pytest.approx(g["meta"], abs=1e-5)]
                checked += 1
    assert checked >= 6
    table = {(x["k"], x["meta"]): x["accuracy"] for x in report["grm_scaling"]}
    assert set(table) == {(1, False), (1, True), (4, False), (4, True)}
    # all four vote: the easy pair is right, the wrong one wrong, the biased one right when shown chosen-first more
    biased = next(r for r in judged if r["id"] == "biased")["grm"]
    right = sum(g["soft_chosen"] for g in biased) > sum(g["soft_rejected"] for g in biased)
    assert table[(4, False)] == pytest.approx((1 + right) / 3)
    assert "GRM voting" in "\n".join(judge_lines(report)) and "meta-RM vote" in "\n".join(judge_lines(report))


def test_meta_rm_is_checked_before_the_engine_starts(tmp_path, tiny_backbone):
    from cai.commands.evaluation.judge import evaluate

    data = write(tmp_path / "pairs.jsonl", json.dumps(PAIRS[0]) + "\n")
    for folder, message in (
        (str(tmp_path), "not a trained preference model folder"),
        (tiny_backbone, "a pairwise preference model .*but this needs a meta reward model"),
    ):
        with pytest.raises(CaiError, match=message):
            evaluate(RunConfig(judge="grm", grm_meta_rm=folder), str(data), backend=None, log=lambda *_: None)
    with pytest.raises(CaiError, match="--grm-meta-rm is a setting of the grm judge"):
        RunConfig(judge="logprob", grm_meta_rm=tiny_backbone)


def test_grm_scaling_table_from_one_set_of_samples():
    from cai.commands.evaluation.metrics import grm_scaling

    def g(k, c, r, meta):
        return {"sample": k, "score_chosen": c, "score_rejected": r, "soft_chosen": None, "soft_rejected": None,
                "meta": meta}  # fmt: skip

    # k=1: the first judgement is wrong; all 4 sum 2+9+9+2 = 22 vs 9+2+2+9 = 22: a tie, wrong; the meta RM trusts
    # the two right ones, so its half votes right at k=4 and k=1 alike (one judgement: it is the only one)
    row = {"grm": [g(0, 2, 9, 0.1), g(1, 9, 2, 0.9), g(2, 9, 2, 0.8), g(3, 2, 9, 0.2)]}
    table = {(x["k"], x["meta"]): x["accuracy"] for x in grm_scaling([row], 4)}
    assert table == {(1, False): 0.0, (1, True): 0.0, (4, False): 0.0, (4, True): 1.0}
    assert [x["k"] for x in grm_scaling([row], 8)] == [1, 1, 4, 4, 8, 8]
    assert all(not x["meta"] for x in grm_scaling([{"grm": [g(0, 3, 2, None)]}], 1))


def test_the_retired_grm_meta_pm_says_why(tmp_path, cli):
    with pytest.raises(CaiError, match="--grm-meta-pm was retired: it gave every judgement of a pair the same"):
        RunConfig(grm_meta_pm="x")
    from cai.config import load

    cfg = write(tmp_path / "run.yaml", "judge: grm\ngrm_meta_pm: pm/\n")
    with pytest.raises(CaiError, match=r"run.yaml:2: --grm-meta-pm was retired.*--grm-meta-rm"):
        load(cfg)
    r = cli("eval", "judge", "--data", "data/eval/prefs.jsonl", "--judge", "grm", "--grm-meta-pm", "x")
    assert r.returncode == 2 and "retired" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
