"""One soft label from the judge's verdict and the rules' votes (pure arithmetic, tested against hand values).

Rules vote where they tell the two answers apart. A hard rule that one answer keeps and the other breaks
decides the pair on its own. Otherwise the label is the weighted mean of the judge (weight: its number of
votes, one per principle read in both orders, or 1 for a judge without votes) and the rules' votes (weight:
each rule's weight): rules and the model speak in one currency, the probability that the first answer is
better.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cai import judges
from cai.core.columns import listed
from cai.core.records import ChunkResult, Failure
from cai.core.rules import Rule, RuleResult, check_all
from cai.errors import CaiError
from cai.judges.base import FailedRead, Judge, Pair, Verdict, Vote, VoteRow
from cai.settings import setting

if TYPE_CHECKING:
    from cai.config import RunConfig
    from cai.core.context import RunContext


@dataclass(frozen=True)
class LabelOptions:
    """How a pair is labelled, wherever its answers come from: the RL stage and `cai eval judge`."""

    judge: str = setting(
        "logprob",
        "The judge that labels the pairs (registered under the 'cai.judges' entry points).",
        identity=True,
        selects="judge",
    )
    hard_rule_p: float = setting(
        1.0,
        "P(chosen is better) for a pair that a hard rule decides (one answer keeps it, the other breaks it).",
        identity=True,
        minimum=0.5,
        maximum=1.0,
    )


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
        if b is None or not a.known or not b.known or a.score == b.score:
            continue
        p = 0.5 + (a.score - b.score) / 2
        votes.append(Vote(a.rule, p, p, kind="rule", weight=rules[a.rule].weight))
    return votes


def hard_winner(first: list[RuleResult], second: list[RuleResult], rules: dict[str, Rule]) -> int:
    """+1 if the first answer keeps more (by weight) of the hard rules checked on both, -1 if the second does,
    0 if the hard rules do not tell them apart. A check that could not finish on either answer is left out: an
    unknown is never a win for the other side."""
    both = {r.rule for r in first if r.known} & {r.rule for r in second if r.known}

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


@dataclass(frozen=True)
class Judged:
    """A labelled pair: the label, the judge's verdict behind it (None when no judge was asked), the reads that
    failed, and the rules' results on (first, second)."""

    pair: Pair
    label: Label
    verdict: Verdict | None
    failed: tuple[FailedRead, ...]
    rules: tuple[list[RuleResult], list[RuleResult]]

    def votes(self, first_wins: bool) -> list[VoteRow]:
        return [x.row(first_wins) for x in self.label.votes]

    def failed_votes(self, first_wins: bool) -> list[FailedRead]:
        return [x.row(first_wins) for x in self.failed]

    def evidence(self, first_wins: bool, judge: Judge) -> dict[str, list[dict]]:
        """The judge's own columns (`Judge.evidence`), seen from one side (the first candidate's when
        `first_wins`)."""
        got = self.verdict.evidence if self.verdict is not None else {}
        return {name: listed([e.row(first_wins) for e in got.get(name, ())]) for name in judge.evidence}


class Labeller:
    """Labels pairs: the constitution's rules on both answers, the judge on the pairs no hard rule decides, and
    one label from both (`blend`). The RL stage and `cai eval judge` label through it, so the evaluation
    measures the labels a run makes."""

    def __init__(self, config: RunConfig):
        o = config.options(LabelOptions)
        self.name = o.judge
        self.hard_p = o.hard_rule_p
        self.judge: Judge = judges.get(o.judge)(config)

    def check(self, ctx: RunContext) -> None:
        """What labelling pairs needs, whatever their source."""
        if ctx.constitution.comparable:
            self.judge.check(ctx)
        elif not ctx.constitution.rules:
            raise CaiError(
                f"{ctx.constitution.path}: no principle has a 'compare' question or rules: nothing can judge the pairs"
            )

    def needs_engine(self, ctx: RunContext) -> bool:
        return bool(ctx.constitution.comparable) and self.judge.needs_engine()

    def label(self, ctx: RunContext, pairs: list[Pair], result: ChunkResult) -> list[Judged]:
        """The rules on both answers of every pair (pure, fast), then the judge on the pairs that no hard rule
        decided (one batched call), then one label per pair from both. A pair that nothing could label is
        skipped in `result` with the judge's reason."""
        const = ctx.constitution
        rules = {r.id: r for r in const.rules}
        checked = [
            (check_all(const.rules, p.first, p.prompt.reference), check_all(const.rules, p.second, p.prompt.reference))
            for p in pairs
        ]
        hard = [hard_winner(a, b, rules) for a, b in checked]
        verdicts: list[Verdict | Failure | None] = [None] * len(pairs)
        if const.comparable:
            ask = [i for i, h in enumerate(hard) if not h]
            for i, answer in zip(ask, self.judge.judge(ctx, [pairs[i] for i in ask], result), strict=True):
                verdicts[i] = answer
        out = []
        for pair, (a, b), h, judged in zip(pairs, checked, hard, verdicts, strict=True):
            votes = rule_votes(a, b, rules)
            failed: tuple[FailedRead, ...] = ()
            verdict = judged if isinstance(judged, Verdict) else None
            if isinstance(judged, Failure):
                if not votes:  # nothing else can label the pair: on record with the judge's reason
                    result.skip(pair.prompt.id, judged.reason)
                    continue
                failed = (FailedRead("judge", "", judged.reason),)
            label = blend(verdict, votes, h, self.hard_p)
            out.append(Judged(pair, label, verdict, (*(verdict.failed if verdict else ()), *failed), (a, b)))
        return out
