"""Self-evaluation (Kadavath et al. 2022): the model's own P(True) that an answer is right, from option log-probs.

The model sees the constitution's principles, the conversation, optionally K of its own other samples
("brainstorming"), then the proposed answer and "(A) True (B) False". P(True) is read from the next token's
log-probs in one forward pass, in both option orders (True shown as (A), then as (B)), and the two are
averaged as the pairwise judge does: a model that always says (A) gets 0.5, not 1.0. All answers to one
prompt share everything before the proposed answer, so the engine prefills that once.
"""

from __future__ import annotations

from dataclasses import dataclass

from cai.backends import Sampling
from cai.core import answer
from cai.core.constitution import Constitution
from cai.core.context import RunContext
from cai.core.prompts import SAMPLE_CONVERSATION, TemplateSpec
from cai.core.records import ChunkResult, continued, with_system
from cai.core.sampling import request_seed
from cai.settings import setting
from cai.signals import reads

TEMPLATES = (
    TemplateSpec(
        "self_eval.j2",
        {
            "conversation": SAMPLE_CONVERSATION,
            "principles": ["p"],
            "samples": ["s"],
            "answer": "\u2063the-answer\u2063",
            "option_a": "True",
            "option_b": "False",
        },
        requires=("answer",),
    ),
    TemplateSpec("self_eval_answer.j2", ends_with="("),
)


@dataclass(frozen=True)
class SelfEvalOptions:
    self_eval: bool = setting(
        False,
        "Score every answer of the trace with the model's own P(True) (Kadavath et al.), "
        "one forward pass per answer and option order.",
        identity=True,
    )
    self_eval_samples: int = setting(
        0,
        "Brainstorm: show K other samples of the model before the answer under evaluation (Kadavath et al.'s variant).",
        identity=True,
        minimum=0,
        when=("self_eval", (True,)),
    )


@dataclass(frozen=True)
class SelfEvalRow:
    """P(True) of one text of a trace as the sft split stores it (round 0: the initial answer)."""

    round: int
    p_true: float | None
    p_true_ab: float | None
    p_true_ba: float | None
    error: str | None


@dataclass(frozen=True)
class TrueRead:
    """P(True) of one answer: `p_ab` with True shown as (A), `p_ba` with True shown as (B), and their mean;
    None with the reason in `error` when a read failed."""

    p_true: float | None
    p_ab: float | None = None
    p_ba: float | None = None
    error: str | None = None

    @property
    def orders_disagree(self) -> bool:
        return self.p_ab is not None and self.p_ba is not None and (self.p_ab > 0.5) != (self.p_ba > 0.5)

    def row(self, round: int) -> SelfEvalRow:
        return SelfEvalRow(round, self.p_true, self.p_ab, self.p_ba, self.error)


def true_read(read: reads.TwoOrderRead) -> TrueRead:
    """P(True) from both orders' reads; a failed read keeps the first failure's reason, never a silent default."""
    if isinstance(read.p_ab, float) and isinstance(read.p_ba, float):
        return TrueRead(read.p, read.p_ab, read.p_ba)
    return TrueRead(None, error=read.failures[0][1].reason)


def principles_of(constitution: Constitution) -> list[str]:
    """What the answer is evaluated against: each principle's question, else its critique request."""
    return [text for p in constitution.principles if (text := p.compare or p.critique)]


def brainstorm(ctx: RunContext, prompts: list, k: int, result: ChunkResult) -> dict[str, list[str]]:
    """K samples of the model per prompt (one request with n=K each), shown before the answer evaluated."""
    if k < 1 or not prompts:
        return {}
    s, seed = ctx.config.sampling, ctx.config.run.seed
    sampling = Sampling(
        max_tokens=s.max_tokens, temperature=max(s.temperature, 0.7), top_p=s.top_p, n=k, label="self-eval brainstorm"
    )
    seeds = [request_seed(seed, p.id, "self-eval-samples") for p in prompts]
    outs = ctx.engine.generate([with_system(ctx.constitution, p.messages) for p in prompts], sampling, seeds)
    samples = {}
    for p, got in zip(prompts, outs, strict=True):
        for out in got:
            result.tally(out)
        samples[p.id] = [out.text.strip() for out in got if out.ok and out.text.strip()]
    return samples


def evaluate(ctx: RunContext, items: list[tuple[list[dict], str, list[str]]], result: ChunkResult) -> list[TrueRead]:
    """P(True) for every (conversation, answer, brainstormed samples), both orders, in one engine call."""
    principles = principles_of(ctx.constitution)
    prefix = ctx.templates.render("self_eval_answer.j2")

    def chat(conversation: list[dict], answer: str, samples: list[str], shown: tuple[str, str]) -> list[dict]:
        question = ctx.templates.render(
            "self_eval.j2",
            conversation=conversation,
            principles=principles,
            samples=samples,
            answer=answer,
            option_a=shown[0],
            option_b=shown[1],
        )
        return continued(question, prefix)

    scope = ctx.constitution.scope  # `scope: answer`: the model rates the answer after its reasoning only
    items = [(conversation, answer.scoped(text, scope), samples) for conversation, text, samples in items]
    questions = [reads.TwoOrders(chat(*item, ("True", "False")), chat(*item, ("False", "True"))) for item in items]
    return [
        true_read(r) for r in reads.ask_both(ctx.engine, questions, result, label="self-eval P(True)", what="self-eval")
    ]
