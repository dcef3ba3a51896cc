"""The RL label arithmetic against hand-computed values, directly and through the RL stage."""

import math

import pytest
from conftest import HARMLESS, run_stage

from cai import backends, stages
from cai.commands.evaluation.metrics import consistent
from cai.config import RunConfig
from cai.core.columns import listed
from cai.core.inputs import Prompt, prompt_id
from cai.judges import Vote
from cai.judges.pairwise import combine


def votes(verdict):
    """The votes as the preference row stores them: seen from the chosen answer."""
    return listed([v.row(verdict.first_wins) for v in verdict.votes])


def test_two_orders_are_averaged():
    label = combine([Vote("p", 0.8, 0.6)])
    assert label.first_wins and label.p_chosen == pytest.approx(0.7)
    assert votes(label) == [{"principle": "p", "p_chosen_ab": 0.8, "p_chosen_ba": 0.6, "kind": "ai", "weight": 1.0}]


def test_second_candidate_wins_and_votes_are_seen_from_chosen():
    # first candidate: 0.3 when shown first, 0.2 when shown second -> mean 0.25 -> second wins with 0.75
    label = combine([Vote("p", 0.3, 0.2)])
    assert not label.first_wins and label.p_chosen == pytest.approx(0.75)
    # chosen (second) shown first is the BA order: P = 1 - 0.2; shown second is the AB order: 1 - 0.3
    assert votes(label)[0]["p_chosen_ab"] == pytest.approx(0.8)
    assert votes(label)[0]["p_chosen_ba"] == pytest.approx(0.7)


def test_principle_ensemble_is_the_mean():
    label = combine([Vote("a", 0.9, 0.7), Vote("b", 0.4, 0.2), Vote("c", 0.6, 0.6)])
    assert label.p_chosen == pytest.approx((0.8 + 0.3 + 0.6) / 3)


def test_position_bias_cancels():
    # A judge that always prefers (A) by the same margin gives no information: a tie.
    label = combine([Vote("p", 0.8, 0.2)])
    assert label.p_chosen == 0.5 and label.first_wins


def test_cot_clamp():
    label = combine([Vote("p", 0.99, 0.95)], clamp=0.4)
    assert label.p_chosen == pytest.approx(0.6)
    label = combine([Vote("p", 0.01, 0.55)], clamp=0.4)
    assert label.p_chosen == pytest.approx(1 - (0.4 + 0.55) / 2)


def test_consistency_and_stats():
    import polars as pl

    assert consistent({"p_chosen_ab": 0.7, "p_chosen_ba": 0.6})
    assert not consistent({"p_chosen_ab": 0.7, "p_chosen_ba": 0.4})
    failed = {"principle": "p", "order": "ab", "reason": "read: no log-prob for option A"}
    rows = [
        {
            "p_chosen": 0.5,
            "tie": True,
            "failed_votes": [],
            "votes": [{"principle": "p", "p_chosen_ab": 0.8, "p_chosen_ba": 0.2, "kind": "ai", "weight": 1.0}],
        },
        {
            "p_chosen": 0.95,
            "tie": False,
            "failed_votes": [failed],
            "votes": [
                {"principle": "p", "p_chosen_ab": 0.9, "p_chosen_ba": 0.99, "kind": "ai", "weight": 1.0},
                {"principle": "r", "p_chosen_ab": 1.0, "p_chosen_ba": 1.0, "kind": "rule", "weight": 1.0},
            ],
        },
    ]
    stats = stages.get("rl")(RunConfig()).report().stats(pl.DataFrame(rows).lazy())
    assert stats["ties"] == 1 and stats["failed_votes"] == 1 and stats["position_consistent"] == 0.5
    histogram = {r["bin"]: r["len"] for r in stats["p_chosen_histogram"]}
    assert histogram == {0.5: 1, 0.9: 1}


def _judge_from_table(table):
    """Log-probs for (A) and (B) chosen by which answer is shown as (A)."""

    def judge(chat, options):
        question = chat[0]["content"]
        shown_first = question.split("(A) ", 1)[1].split("\n", 1)[0]
        p_a = table[shown_first]
        return {"A": math.log(p_a), "B": math.log(1 - p_a)}

    return judge


def test_rl_stage_computes_labels_from_engine_logprobs(tmp_path):
    # P(A) is 0.9 when "good" is shown first and 0.4 when "bad" is shown first (so "good" gets 0.6 then).
    scripted = backends.get("scripted")(judge=_judge_from_table({"good": 0.9, "bad": 0.4}))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "q1", "responses": ["bad", "good"]}\n')
    config = RunConfig(prompts=str(pairs), out=str(tmp_path / "run"), stage="rl", pairs="file", principles_per_pair=3)
    prompt = Prompt(id=prompt_id([{"role": "user", "content": "q1"}]), messages=({"role": "user", "content": "q1"},))
    result = run_stage("rl", config, scripted, [prompt])
    (row,) = result.rows
    assert row["chosen"][0]["content"] == "good" and row["rejected"][0]["content"] == "bad"
    assert row["p_chosen"] == pytest.approx((0.9 + 0.6) / 2)
    assert len(row["votes"]) == 3 and len({v["principle"] for v in row["votes"]}) == 3
    assert all(v["p_chosen_ab"] == pytest.approx(0.9) and v["p_chosen_ba"] == pytest.approx(0.6) for v in row["votes"])
    # one engine call for all 3 principles x 2 orders
    assert [n for n, s in scripted.calls if s.options] == [6]


def test_cot_mode_clamps_and_records_unfinished_reasoning(tmp_path):
    def reply(chat, sampling, seed, index):
        # the reasoning for one principle never ends
        return "word " * 50 if "more honest and direct" in chat[0]["content"] else " B is safer."

    scripted = backends.get("scripted")(reply=reply, judge=_judge_from_table({"good": 0.99, "bad": 0.01}))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "q1", "chosen": "good", "rejected": "bad"}\n')
    from cai.core.constitution import load

    const = load(HARMLESS)
    config = RunConfig(
        prompts=str(pairs),
        out=str(tmp_path / "run"),
        stage="rl",
        pairs="file",
        judge="cot",
        principles_per_pair=len(const.comparable),
        cot_max_tokens=20,
    )
    prompt = Prompt(id=prompt_id([{"role": "user", "content": "q1"}]), messages=({"role": "user", "content": "q1"},))
    (row,) = run_stage("rl", config, scripted, [prompt]).rows
    assert row["p_chosen"] == pytest.approx(0.6)  # 0.99 clamped to 0.6 in both orders
    assert row["judge"] == "cot"
    assert {f["order"] for f in row["failed_votes"]} == {"ab", "ba"}
    assert all("without reaching a choice" in f["reason"] for f in row["failed_votes"])
    assert len(row["votes"]) == len(const.comparable) - 1
    assert all(r["text"] for r in row["reasoning"])
