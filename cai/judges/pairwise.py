"""Pairwise multiple-choice judging: each pair under K sampled principles, in both orders, averaged.

The shared half of the log-prob and CoT judges: which questions are asked, and how the two-order reads
(cai.signals.reads) become one soft label. Averaging the two orders cancels the judge's position bias (Lee et al.
2023); the mean over principles is the ensemble (Bai et al. 2022). A subclass says how a question is read in
both orders (`read`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cai.core import answer
from cai.core.context import RunContext
from cai.core.records import ChunkResult, Failure
from cai.core.sampling import sample_principles
from cai.errors import CaiError
from cai.judges.base import FailedRead, Judge, Pair, Verdict, Vote
from cai.settings import setting
from cai.signals.reads import TwoOrderRead


@dataclass(frozen=True)
class PairwiseOptions:
    principles_per_pair: int = setting(
        4,
        "Principles sampled to judge each pair (an ensemble; Bai et al. ensembled over 16).",
        identity=True,
        minimum=1,
    )


@dataclass(frozen=True)
class Question:
    """One (pair, principle) question: `ab` shows the first candidate as (A), `ba` shows it as (B)."""

    pair: int
    prompt_id: str
    principle: str
    ab: str
    ba: str


@dataclass(frozen=True)
class Read:
    """A question's two-order read of P(first candidate is better), and what the judge wrote first in each
    order (None where it wrote nothing)."""

    read: TwoOrderRead
    reasoning: tuple[str | None, str | None] = (None, None)


@dataclass(frozen=True)
class Reasoning:
    """Evidence: what the judge wrote before its choice, for one principle and order (the split's row type)."""

    principle: str
    order: str
    text: str

    def row(self, first_wins: bool) -> Reasoning:
        return self


def combine(votes: list[Vote], clamp: float | None = None) -> Verdict:
    """One soft label from per-principle two-order votes: the mean over principles of the mean of both
    orders. `clamp` (chain-of-thought mode) bounds each read into [clamp, 1 - clamp], because CoT answers
    are over-confident."""
    if not votes:
        raise ValueError("no votes to combine")
    if clamp is not None:
        votes = [
            Vote(v.principle, min(max(v.p_ab, clamp), 1 - clamp), min(max(v.p_ba, clamp), 1 - clamp)) for v in votes
        ]
    q = sum((v.p_ab + v.p_ba) / 2 for v in votes) / len(votes)
    return Verdict(q, votes=tuple(votes))


class PairwiseJudge(Judge):
    """Asks `question_template` for every (pair, principle) of a chunk in both orders and combines the reads.
    Subclasses implement `read`."""

    settings: ClassVar[tuple[type, ...]] = (PairwiseOptions,)
    question_template = "compare.j2"
    clamp: float | None = None

    def check(self, ctx: RunContext) -> None:
        k, eligible = ctx.config.options(PairwiseOptions).principles_per_pair, ctx.constitution.comparable
        if k > len(eligible):
            raise CaiError(
                f"{ctx.constitution.path}: --principles-per-pair {k} but only {len(eligible)} "
                "principles have a 'compare' question"
            )

    def read(self, ctx: RunContext, questions: list[Question], result: ChunkResult) -> list[Read]:
        """P(first candidate is better) for every question in both orders, in one batched pass, in order."""
        raise NotImplementedError

    def judge(self, ctx: RunContext, pairs: list[Pair], result: ChunkResult) -> list[Verdict | Failure]:
        k, seed = ctx.config.options(PairwiseOptions).principles_per_pair, ctx.config.run.seed
        questions = []
        for i, pair in enumerate(pairs):
            conversation = list(pair.prompt.messages)
            for principle in sample_principles(ctx.constitution.comparable, k, seed, pair.prompt.id, "rl-judge"):
                # the principle's scope: `scope: answer` shows the answers after their reasoning only
                first, second = (answer.scoped(t, principle.scope) for t in (pair.first, pair.second))
                ab, ba = (
                    ctx.templates.render(
                        self.question_template,
                        conversation=conversation,
                        principle=principle,
                        response_a=a,
                        response_b=b,
                    )
                    for a, b in ((first, second), (second, first))
                )
                questions.append(Question(i, pair.prompt.id, principle.id, ab, ba))
        reads = self.read(ctx, questions, result)  # the whole chunk goes to the engine in one call

        votes: list[list[Vote]] = [[] for _ in pairs]
        failed: list[list[FailedRead]] = [[] for _ in pairs]
        reasoning: list[list[Reasoning]] = [[] for _ in pairs]
        for q, r in zip(questions, reads, strict=True):
            failed[q.pair] += [FailedRead(q.principle, order, f.reason) for order, f in r.read.failures]
            reasoning[q.pair] += [
                Reasoning(q.principle, order, text)
                for order, text in zip(("ab", "ba"), r.reasoning, strict=True)
                if text is not None
            ]
            # A principle counts only when both orders were read: one order alone is position-biased.
            if isinstance(r.read.p_ab, float) and isinstance(r.read.p_ba, float):
                votes[q.pair].append(Vote(q.principle, r.read.p_ab, r.read.p_ba))
        verdicts: list[Verdict | Failure] = []
        for i in range(len(pairs)):
            if not votes[i]:
                reasons = "; ".join(sorted({f.reason for f in failed[i]})) or "no judgement"
                verdicts.append(Failure(f"judge: no principle was read in both orders ({reasons})"))
                continue
            v = combine(votes[i], self.clamp)
            evidence = {"reasoning": tuple(reasoning[i])} if reasoning[i] else {}
            verdicts.append(Verdict(v.p_first, votes=v.votes, failed=tuple(failed[i]), evidence=evidence))
        return verdicts
