"""Step-level AI feedback: each step of a solution judged under sampled principles with one token read.

For step k the model sees the problem, steps 1..k and then the principle's question about step k, with
"(A) Yes (B) No" and then "(A) No (B) Yes"; P(Yes) is read from the option log-probs of the next token and the
two orders are averaged (`StepVote.p`). The question comes after the steps, so every read of a
solution (each step, principle and order) starts with the text of the steps before it: with vLLM's prefix
cache the solution's steps are prefilled about once, not once per step (bench/steps.py measures it; sending
each solution's longest read first, so its prefix is cached before the others are scheduled, computed exactly
as many tokens as one call on vLLM's CPU build, so the reads go in one call). Used by the steps stage and by
`cai eval steps`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cai import steps as steps_mod
from cai.backends import Sampling
from cai.inputs import Prompt
from cai.judges.pairwise import read_options
from cai.prompts import SAMPLE_CONVERSATION, TemplateSpec
from cai.records import ChunkResult, Failure, continued
from cai.run import RunContext
from cai.sampling import sample_principles

OPTIONS = ("A", "B")
ORDERS = (("yes-first", ("Yes", "No")), ("no-first", ("No", "Yes")))
TEMPLATES = (
    TemplateSpec(
        "step.j2",
        {
            "conversation": SAMPLE_CONVERSATION,
            "steps": ["\u2063step-one\u2063", "\u2063step-two\u2063"],
            "question": "\u2063the-question\u2063",
            "option_a": "Yes",
            "option_b": "No",
        },
        requires=("question",),
    ),
    TemplateSpec("step_answer.j2", ends_with="("),
)


@dataclass(frozen=True)
class Solution:
    """One solution to a prompt, already split into steps. `index` tells a prompt's solutions apart;
    `source` says where it came from (sampled, sl initial, sl revision 2, file)."""

    prompt: Prompt
    index: int
    source: str
    steps: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.steps)


@dataclass(frozen=True)
class StepVote:
    """One principle's read of one step in both orders: P(Yes) with Yes shown as (A) (`p_ab`), and with Yes
    shown as (B) (`p_ba`)."""

    step: int
    principle: str
    p_ab: float
    p_ba: float

    @property
    def p(self) -> float:
        return (self.p_ab + self.p_ba) / 2

    def row(self) -> dict:
        return {"step": self.step, "principle": self.principle, "p_yes_ab": self.p_ab, "p_yes_ba": self.p_ba}


@dataclass(frozen=True)
class StepFailure:
    step: int
    principle: str
    order: str
    reason: str

    def row(self) -> dict:
        return {"step": self.step, "principle": self.principle, "order": self.order, "reason": self.reason}


@dataclass(frozen=True)
class StepVerdict:
    """A judged solution: `step_p[k]` is the mean over principles of step k's two-order P(Yes)."""

    solution: Solution
    principles: tuple[str, ...]
    step_p: tuple[float, ...]
    votes: tuple[StepVote, ...]
    failed: tuple[StepFailure, ...]

    @property
    def labels(self) -> list[bool]:
        return steps_mod.labels(self.step_p)

    @property
    def first_error(self) -> int | None:
        return steps_mod.first_error(self.labels)

    @property
    def solution_p(self) -> float:
        return steps_mod.aggregate(self.step_p, "product")


@dataclass(frozen=True)
class Read:
    """One question: step `step` of solution `solution` under `principle`, with Yes shown first or second."""

    solution: int
    step: int
    principle: str
    order: str
    chat: list[dict]


def question(principle) -> str:
    """What a step is asked under `principle`: its step question, else its critique request."""
    return principle.step or principle.critique


def judge(ctx: RunContext, solutions: list[Solution], k: int, result: ChunkResult) -> list[StepVerdict | Failure]:
    """Every step of every solution under k principles sampled per solution, both orders, in one engine call.
    A solution with a step that no principle read in both orders is a Failure naming the step and the
    reasons."""
    asked, chosen = reads(ctx, solutions, k)
    return verdicts(solutions, chosen, asked, ask(ctx, asked, result))


def reads(ctx: RunContext, solutions: list[Solution], k: int) -> tuple[list[Read], list[tuple[str, ...]]]:
    """The reads of every (solution, step, principle, order), and each solution's sampled principles."""
    answer = ctx.templates.render("step_answer.j2")
    out: list[Read] = []
    chosen: list[tuple[str, ...]] = []
    for i, s in enumerate(solutions):
        principles = sample_principles(
            ctx.constitution.steppable, k, ctx.config.seed, s.prompt.id, f"steps-judge-{s.index}"
        )
        chosen.append(tuple(p.id for p in principles))
        conversation = list(s.prompt.messages)
        for step in range(len(s.steps)):
            for p in principles:
                for order, (a, b) in ORDERS:
                    text = ctx.templates.render(
                        "step.j2",
                        conversation=conversation,
                        steps=list(s.steps[: step + 1]),
                        question=question(p),
                        option_a=a,
                        option_b=b,
                    )
                    out.append(Read(i, step, p.id, order, continued(text, answer)))
    return out, chosen


def verdicts(
    solutions: list[Solution], chosen: list[tuple[str, ...]], asked: list[Read], answers: list[float | Failure]
) -> list[StepVerdict | Failure]:
    """Each solution's step labels from its reads' P(A)."""
    got: list[dict[tuple[int, str, str], float]] = [{} for _ in solutions]
    failed: list[list[StepFailure]] = [[] for _ in solutions]
    for r, q in zip(asked, answers, strict=True):
        if isinstance(q, Failure):
            failed[r.solution].append(StepFailure(r.step, r.principle, r.order, q.reason))
        else:
            got[r.solution][(r.step, r.principle, r.order)] = q
    out: list[StepVerdict | Failure] = []
    for i, s in enumerate(solutions):
        votes, step_p, missing = [], [], None
        for step in range(len(s.steps)):
            # P(A) read with No shown as (A) is P(No): the vote keeps P(Yes) of both orders.
            here = [
                StepVote(step, pid, got[i][(step, pid, "yes-first")], 1.0 - got[i][(step, pid, "no-first")])
                for pid in chosen[i]
                if (step, pid, "yes-first") in got[i] and (step, pid, "no-first") in got[i]
            ]
            if not here:  # one order alone is position-biased; a step with no two-order read has no label
                missing = step
                break
            votes += here
            step_p.append(steps_mod.mean([v.p for v in here]))
        if missing is not None:
            reasons = "; ".join(sorted({f.reason for f in failed[i] if f.step == missing})) or "no read"
            out.append(Failure(f"step {missing + 1}: no principle was read in both orders ({reasons})"))
        else:
            out.append(StepVerdict(s, chosen[i], tuple(step_p), tuple(votes), tuple(failed[i])))
    return out


def ask(ctx: RunContext, asked: list[Read], result: ChunkResult, share_prefix: bool = True) -> list[float | Failure]:
    """P(A) of every read, in one engine call. `share_prefix=False` (benchmarks only) keeps every read from
    reusing another's cached prefix: the cost of judging each step on its own."""
    sampling = Sampling(options=OPTIONS, continue_final=True, share_prefix=share_prefix, label="step judge")
    completions = ctx.engine.generate([r.chat for r in asked], sampling)
    return [
        read_options(c, result, OPTIONS, f"step {r.step + 1} {r.order}")
        for r, (c,) in zip(asked, completions, strict=True)
    ]
