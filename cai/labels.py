"""One soft label from the judge's verdict and the rules' votes (pure arithmetic, tested against hand values).

Rules vote where they tell the two answers apart. A hard rule that one answer keeps and the other breaks
decides the pair on its own. Otherwise the label is the weighted mean of the judge (weight: its number of
votes, one per principle read in both orders, or 1 for a judge without votes) and the rules' votes (weight:
each rule's weight): rules and the model speak in one currency, the probability that the first answer is
better.
"""

from __future__ import annotations

from dataclasses import dataclass

from cai.judges.base import Verdict, Vote
from cai.rules import Rule, RuleResult


@dataclass(frozen=True)
class Label:
    p_first: float
    votes: tuple[Vote, ...]  # the judge's and the rules'
    decided_by: str  # "judge", "rules", "judge+rules", "hard rule" or "none" (nothing told them apart)


def rule_votes(first: list[RuleResult], second: list[RuleResult], rules: dict[str, Rule]) -> list[Vote]:
    """A vote for every rule that scores the two answers differently: P(first is better) = 0.5 + (s1 - s2) / 2.
    A rule that could not be checked on either answer (timed out, failed) does not vote."""
    other = {r.rule: r for r in second}
    votes = []
    for a in first:
        b = other.get(a.rule)
        if b is None or a.error or b.error or a.score == b.score:
            continue
        p = 0.5 + (a.score - b.score) / 2
        votes.append(Vote(a.rule, p, p, kind="rule", weight=rules[a.rule].weight))
    return votes


def hard_winner(first: list[RuleResult], second: list[RuleResult], rules: dict[str, Rule]) -> int:
    """+1 if the first answer keeps more (by weight) of the hard rules checked on both, -1 if the second does,
    0 if the hard rules do not tell them apart."""
    both = {r.rule for r in first} & {r.rule for r in second}

    def kept(results: list[RuleResult]) -> float:
        return sum(rules[r.rule].weight for r in results if r.rule in both and rules[r.rule].hard and r.passed)

    a, b = kept(first), kept(second)
    return (a > b) - (a < b)


def blend(verdict: Verdict | None, votes: list[Vote], hard: int = 0, hard_p: float = 1.0) -> Label:
    """The pair's label from the judge's verdict (None: no judge asked), the rule votes and the hard-rule
    winner; `hard_p` is P(the hard rules' winner is better)."""
    ai = verdict.votes if verdict is not None else ()
    if hard:
        return Label(hard_p if hard > 0 else 1 - hard_p, (*ai, *votes), "hard rule")
    if verdict is None and not votes:
        return Label(0.5, (), "none")
    ai_weight = (len(verdict.votes) or 1) if verdict is not None else 0
    p_ai = verdict.p_first if verdict is not None else 0.0
    rule_weight = sum(v.weight for v in votes)
    p = (ai_weight * p_ai + sum(v.weight * v.p_ab for v in votes)) / (ai_weight + rule_weight)
    source = "judge" if not votes else "rules" if verdict is None else "judge+rules"
    return Label(p, (*ai, *votes), source)
