"""The log-prob step judge: each step asked under sampled principles as a Yes/No question, read in both orders.

For step k the model sees the problem, steps 1..k and then the principle's question about step k, with
"(A) Yes (B) No" and then "(A) No (B) Yes"; P(Yes) is read from the option log-probs of the next token
(cai.signals.reads) and the two orders are averaged. The question comes after the steps, so every read of a solution
(each step, principle and order) starts with the text of the steps before it: with vLLM's prefix cache the
solution's steps are prefilled about once, not once per step (bench/steps.py measures it; sending each
solution's longest read first computed exactly as many tokens as one call on vLLM's CPU build, so the reads go
in one call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cai.core import steps as steps_mod
from cai.core.context import RunContext
from cai.core.prompts import SAMPLE_CONVERSATION, TemplateSpec
from cai.core.records import ChunkResult, Failure, continued
from cai.core.sampling import sample_principles
from cai.errors import CaiError
from cai.judges.step import Solution, StepFailure, StepJudge, StepVerdict, StepVote
from cai.settings import setting
from cai.signals import reads

if TYPE_CHECKING:
    from cai.config import RunConfig

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
class StepPrincipleOptions:
    step_principles: int = setting(
        1,
        "Principles sampled per solution to judge its steps; a step's label is the mean over them. Each costs "
        "two one-token reads per step on the shared prefix.",
        identity=True,
        minimum=1,
    )


@dataclass(frozen=True)
class StepQuestion:
    """Step `step` of solution `solution` under `principle`, in both orders (Yes shown as (A), then as (B))."""

    solution: int
    step: int
    principle: str
    chats: reads.TwoOrders


def question(principle) -> str:
    """What a step is asked under `principle`: its step question, else its critique request."""
    return principle.step or principle.critique


class LogprobStepJudge(StepJudge):
    name = "logprob"
    settings = (StepPrincipleOptions,)
    templates = TEMPLATES

    def __init__(self, config: RunConfig):
        super().__init__(config)
        self.k = config.options(StepPrincipleOptions).step_principles

    def check(self, ctx: RunContext) -> None:
        c = ctx.constitution
        if not c.steppable:
            raise CaiError(
                f"{c.path}: no principle has a 'step' question or a critique request: nothing can judge the steps"
            )
        if self.k > len(c.steppable):
            raise CaiError(
                f"{c.path}: --step-principles {self.k} but only {len(c.steppable)} principles can judge a step"
            )

    def judge(self, ctx: RunContext, solutions: list[Solution], result: ChunkResult) -> list[StepVerdict | Failure]:
        """Every step of every solution under k principles sampled per solution, both orders, in one engine call.
        A solution with a step that no principle read in both orders is a Failure naming the step and the
        reasons."""
        asked, chosen = self.questions(ctx, solutions)
        answers = reads.ask_both(ctx.engine, [q.chats for q in asked], result, label="step judge", what="step")
        return verdicts(solutions, chosen, asked, answers)

    def questions(self, ctx: RunContext, solutions: list[Solution]) -> tuple[list[StepQuestion], list[tuple[str, ...]]]:
        """The question of every (solution, step, principle), and each solution's sampled principles."""
        answer = ctx.templates.render("step_answer.j2")
        out: list[StepQuestion] = []
        chosen: list[tuple[str, ...]] = []
        for i, s in enumerate(solutions):
            principles = sample_principles(
                ctx.constitution.steppable, self.k, ctx.config.run.seed, s.prompt.id, f"steps-judge-{s.index}"
            )
            chosen.append(tuple(p.id for p in principles))
            for step in range(len(s.steps)):
                for p in principles:
                    values = {
                        "conversation": list(s.prompt.messages),
                        "steps": list(s.steps[: step + 1]),
                        "question": question(p),
                    }
                    both = reads.TwoOrders(
                        continued(ctx.templates.render("step.j2", **values, option_a="Yes", option_b="No"), answer),
                        continued(ctx.templates.render("step.j2", **values, option_a="No", option_b="Yes"), answer),
                    )
                    out.append(StepQuestion(i, step, p.id, both))
        return out, chosen

    def describe(self) -> str:
        return (
            f"every step was judged by the model under {self.k} sampled principle(s) as a Yes/No question read from "
            "the log-probabilities of one token, in both option orders"
        )


def verdicts(
    solutions: list[Solution],
    chosen: list[tuple[str, ...]],
    asked: list[StepQuestion],
    answers: list[reads.TwoOrderRead],
) -> list[StepVerdict | Failure]:
    """Each solution's step labels from its questions' two-order reads of P(Yes)."""
    got: list[dict[tuple[int, str], reads.TwoOrderRead]] = [{} for _ in solutions]
    failed: list[list[StepFailure]] = [[] for _ in solutions]
    for q, read in zip(asked, answers, strict=True):
        for order, f in read.failures:
            failed[q.solution].append(
                StepFailure(q.step, q.principle, "yes-first" if order == "ab" else "no-first", f.reason)
            )
        got[q.solution][(q.step, q.principle)] = read
    out: list[StepVerdict | Failure] = []
    for i, s in enumerate(solutions):
        votes, step_p, missing = [], [], None
        for step in range(len(s.steps)):
            here = [
                StepVote(step, pid, r.p_ab, r.p_ba)
                for pid in chosen[i]
                if (r := got[i].get((step, pid))) is not None
                and isinstance(r.p_ab, float)
                and isinstance(r.p_ba, float)
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
