"""The GRM judge: score parsing, order shuffling mapped back, vote arithmetic, failures, meta filter."""

import math

import pytest
from conftest import ROOT, run_stage

from cai import backends
from cai.config import RunConfig
from cai.core.inputs import Prompt, prompt_id
from cai.core.records import Failure
from cai.judges import grm
from cai.judges.grm import GrmSample


@pytest.mark.parametrize(
    "text,expected",
    [
        ("7, 3]]", (7, 3)),
        (" 10,1]] because", (10, 1)),
        ("1, 10], [1", (1, 10)),
        ("7 and 3", None),
        ("10, 10, ", None),
        ("0, 5]]", None),
        ("11, 2]]", None),
    ],
)
def test_parse_scores(text, expected):
    got = grm.parse_scores(text)
    assert got == expected if expected else isinstance(got, Failure)


def _sample(first, second, kept):
    return GrmSample(0, True, "", first, second, None, kept)


def test_vote_sums_the_kept_samples_scores():
    samples = [_sample(8, 3, True), _sample(5, 5, True), _sample(2, 9, True), _sample(9, 1, False)]
    # sums 15 vs 17 over the kept three: the second wins although the first won more samples
    assert grm.vote(samples) == (pytest.approx(15 / 32), 3)
    assert grm.vote([_sample(6, 4, True), _sample(4, 6, True)]) == (0.5, 2)
    assert grm.vote([_sample(6, 4, False)]) == (0.5, 0)


def _reply(scores):
    """A judge that scores by content, whatever position the answer is shown in; `scores` maps a
    response text to its score, or None to write something unparseable."""

    def reply(chat, sampling, seed, index):
        last = chat[-1]["content"]
        if not last.endswith("[["):
            return " principles and critiques."
        question = chat[0]["content"]
        r1 = question.split("[Response 1]\n", 1)[1].split("\n", 1)[0]
        r2 = question.split("[Response 2]\n", 1)[1].split("\n", 1)[0]
        if scores.get(r1) is None or scores.get(r2) is None:
            return "I cannot decide."
        return f"{scores[r1]}, {scores[r2]}]]"

    return reply


def _run(tmp_path, engine, k=4, meta=False, pair=("bad", "good"), scores="parse"):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(f'{{"prompt": "q1", "responses": ["{pair[0]}", "{pair[1]}"]}}\n')
    config = RunConfig(
        prompts=str(pairs),
        out=str(tmp_path / "run"),
        stage="rl",
        pairs="file",
        judge="grm",
        grm_samples=k,
        grm_meta=meta,
        grm_scores=scores,
    )
    prompt = Prompt(prompt_id([{"role": "user", "content": "q1"}]), ({"role": "user", "content": "q1"},))
    return run_stage("rl", config, engine, [prompt])


def test_scores_are_mapped_back_through_the_shuffle(tmp_path):
    engine = backends.get("scripted")(reply=_reply({"good": 9, "bad": 2}))
    (row,) = _run(tmp_path, engine, k=8).rows
    assert row["chosen"][0]["content"] == "good" and row["judge"] == "grm"
    assert row["p_chosen"] == pytest.approx(8 * 9 / (8 * 9 + 8 * 2)) and not row["tie"]
    assert len(row["grm"]) == 8 and all(s["score_chosen"] == 9 and s["score_rejected"] == 2 for s in row["grm"])
    assert {s["chosen_first"] for s in row["grm"]} == {True, False}  # both orders were drawn
    assert [n for n, s in engine.calls if s.stop] == [8]  # all k samples in one engine call


def test_unparseable_samples_are_recorded_and_excluded(tmp_path):
    calls = {"n": 0}
    base = _reply({"good": 6, "bad": 6})

    def flaky(chat, sampling, seed, index):
        if chat[-1]["content"].endswith("[["):
            calls["n"] += 1
            if calls["n"] % 2:
                return "no scores here"
        return base(chat, sampling, seed, index)

    (row,) = _run(tmp_path, backends.get("scripted")(reply=flaky), k=4).rows
    assert len(row["grm"]) == 2 and len(row["failed_votes"]) == 2
    assert all(f["reason"].startswith("scores: not two integers") for f in row["failed_votes"])
    assert row["tie"] and row["p_chosen"] == 0.5


def test_no_parseable_sample_skips_the_pair_with_reasons(tmp_path):
    result = _run(tmp_path, backends.get("scripted")(reply=_reply({})), k=3)
    assert result.rows == [] and "no parseable GRM judgement" in result.skips[0].reason


def test_meta_filter_keeps_the_top_half(tmp_path):
    def judge(chat, options):  # this meta judge trusts judgements that show "good" first, and no others
        trusted = "[Response 1]\ngood" in chat[0]["content"]
        p = 0.9 if trusted else 0.2
        return {options[0]: math.log(p), options[1]: math.log(1 - p)}

    engine = backends.get("scripted")(reply=_reply({"good": 9, "bad": 2}), judge=judge)
    (row,) = _run(tmp_path, engine, k=6, meta=True).rows
    kept = [s for s in row["grm"] if s["kept"]]
    dropped = [s for s in row["grm"] if not s["kept"]]
    assert len(kept) == 3 and len(dropped) == 3
    assert min(s["meta"] for s in kept) >= max(s["meta"] for s in dropped)
    shown_first = sum(s["chosen_first"] for s in row["grm"])  # "good" is chosen
    assert sum(s["chosen_first"] for s in kept) == min(3, shown_first)


def test_a_failed_meta_read_is_recorded_not_scored_zero(tmp_path):
    def judge(chat, options):  # the meta judge answers only for judgements that show "good" first
        if "[Response 1]\ngood" in chat[0]["content"]:
            return {options[0]: math.log(0.9), options[1]: math.log(0.1)}
        return {"Maybe": -0.1}

    engine = backends.get("scripted")(reply=_reply({"good": 9, "bad": 2}), judge=judge)
    (row,) = _run(tmp_path, engine, k=6, meta=True).rows
    unscored = [s for s in row["grm"] if s["meta"] is None]
    scored = [s for s in row["grm"] if s["meta"] is not None]
    assert unscored and scored and all(s["meta"] == pytest.approx(0.9) for s in scored)
    meta_failures = [f for f in row["failed_votes"] if f["principle"].startswith("grm-meta-")]
    assert len(meta_failures) == len(unscored)
    assert all("no log-prob for" in f["reason"] for f in meta_failures)
    # an unscored sample ranks below every scored one: the kept half takes scored samples first
    assert sum(s["kept"] for s in scored) == min(3, len(scored))


# -- scores read from token probabilities (the default) -------------------------------------------------------
def test_soft_and_hard_scores_from_the_score_tokens():
    lp = {"3": math.log(0.2), "7": math.log(0.5), "8": math.log(0.3)}
    soft, hard = grm.read_score(lp)
    assert soft == pytest.approx(0.2 * 3 + 0.5 * 7 + 0.3 * 8) and hard == 7
    # renormalised over the scale's tokens that came back (a server's top-k may leave some out)
    soft, hard = grm.read_score({"2": math.log(0.1), "4": math.log(0.1), "A": math.log(0.8)})
    assert soft == pytest.approx(3.0) and hard == 2  # equal probabilities: the lower score, conservatively
    assert isinstance(grm.read_score({"A": -0.1}), Failure)
    # the vote sums soft scores: two samples (7.2 vs 3.1) and (4.0 vs 4.5)
    samples = [
        GrmSample(0, True, "", 7, 3, None, True, 7.2, 3.1, "read"),
        GrmSample(1, False, "", 4, 5, None, True, 4.0, 4.5, "read"),
    ]
    assert grm.vote(samples) == (pytest.approx(11.2 / (11.2 + 7.6)), 2)


def _score_judge(scores):
    """Score-token log-probs by which response the read is about: a peaked distribution around `scores[text]`."""

    def judge(chat, options):
        question, prefix = chat[0]["content"], chat[1]["content"]
        n = prefix.rsplit("Score of Response ", 1)[1][0]
        shown = question.split(f"[Response {n}]\n", 1)[1].split("\n", 1)[0]
        centre = scores[shown]
        weights = {o: math.exp(-abs(int(o) - centre)) for o in options}
        total = sum(weights.values())
        return {o: math.log(w / total) for o, w in weights.items()}

    return judge


def test_read_scores_label_every_pair_whatever_the_model_writes(tmp_path):
    """The model's text never says a score (it copies the placeholder, or rambles): every sample still counts."""
    engine = backends.get("scripted")(reply=lambda *a: " N1, N2]] 1, 2, 3,", judge=_score_judge({"good": 8, "bad": 3}))
    (row,) = _run(tmp_path, engine, k=4, scores="read").rows
    assert row["chosen"][0]["content"] == "good" and row["failed_votes"] == []
    assert len(row["grm"]) == 4 and all(s["path"] == "read" for s in row["grm"])
    weights = {s: math.exp(-abs(s - 8)) for s in range(1, 10)}
    soft_good = sum(s * w for s, w in weights.items()) / sum(weights.values())
    assert all(s["score_chosen"] == 8 and s["soft_chosen"] == pytest.approx(soft_good) for s in row["grm"])
    soft_bad = row["grm"][0]["soft_rejected"]
    assert row["p_chosen"] == pytest.approx(soft_good / (soft_good + soft_bad))
    reads = [n for n, s in engine.calls if s.options == grm.SCALE]
    assert reads == [8]  # one engine call: 4 samples x 2 responses


def test_rb2_ties_is_rated_for_the_grm_judge(cli):
    """The GRM scores each answer, so RewardBench 2's Ties subset (which rates the answers' own scores) is rated for
    it, an answer's score averaged over its pairs; with all six subsets rated, RB2's overall is their mean."""
    import json

    from cai.commands.evaluation.metrics import RB2_SUBSETS, _pointwise

    pairs = [
        {"id": "t/0-2", "raw_chosen": 7.0, "raw_rejected": 3.0},
        {"id": "t/0-3", "raw_chosen": 6.0, "raw_rejected": 2.0},  # answer 0 judged afresh: its mean is 6.5
        {"id": "t/1-2", "raw_chosen": None, "raw_rejected": None},  # a failed judgement gives no score
    ]
    assert _pointwise(pairs) == ([6.5], [3.0, 2.0])
    r = cli(
        "eval",
        "judge",
        "--judge",
        "grm",
        "--backend",
        "scripted",
        "--data",
        "data/eval/bestof4.jsonl",
        "--grm-samples",
        "2",
        "--constitution",
        "harmless",
        "--json",
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    rb2 = json.loads(r.stdout)["rewardbench2"]
    assert "Ties" in rb2["subsets"] and rb2["unrated"] is None and rb2["missing"] == []
    assert rb2["score"] == pytest.approx(sum(rb2["subsets"][s]["accuracy"] for s in RB2_SUBSETS) / 6)
