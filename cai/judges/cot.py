"""The chain-of-thought judge: the model reasons first, then its choice is read; labels clamped (Bai et al.)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from cai.core.context import RunContext
from cai.core.prompts import SAMPLE_CONVERSATION, SAMPLE_PRINCIPLE, TemplateSpec
from cai.core.records import ChunkResult, Failure, continued
from cai.judges import reasoning
from cai.judges.base import Description
from cai.judges.pairwise import PairwiseJudge, PairwiseOptions, Question, Read, Reasoning
from cai.settings import setting
from cai.signals import reads

if TYPE_CHECKING:
    from cai.config import RunConfig

_PAIR = {"conversation": SAMPLE_CONVERSATION, "principle": SAMPLE_PRINCIPLE, "response_a": "a", "response_b": "b"}


@dataclass(frozen=True)
class CotOptions:
    cot_clamp: float = setting(
        0.4,
        "CoT labels are clamped into [c, 1-c]: chain-of-thought answers are over-confident (Bai et al.).",
        identity=True,
        minimum=0,
        maximum=0.5,
    )


class CotJudge(PairwiseJudge):
    name = "cot"
    settings = (PairwiseOptions, reasoning.ReasoningOptions, CotOptions)
    templates = (
        TemplateSpec("compare_cot.j2", _PAIR),
        TemplateSpec("compare_cot_reasoning.j2"),
        TemplateSpec("compare_cot_answer.j2", {"reasoning": "r"}, ends_with="("),
    )
    evidence: ClassVar[dict[str, type]] = {"reasoning": Reasoning}
    question_template = "compare_cot.j2"

    def __init__(self, config: RunConfig):
        super().__init__(config)
        self.clamp: float = config.options(CotOptions).cot_clamp
        self.max_tokens = config.options(reasoning.ReasoningOptions).cot_max_tokens

    def read(self, ctx: RunContext, questions: list[Question], result: ChunkResult) -> list[Read]:
        """Reason first (one generation per order), then read the choice after the reasoning (one forward pass)."""
        opening = ctx.templates.render("compare_cot_reasoning.j2")
        texts = [text for q in questions for text in (q.ab, q.ba)]
        keys = [(q.prompt_id, f"cot-{q.principle}-{order}") for q in questions for order in ("ab", "ba")]
        outs = reasoning.write(ctx, [continued(t, opening) for t in texts], keys, result, label="rl judge reasoning")
        written: list[str | None] = []
        follow: list[list[dict] | Failure] = []
        for text, out in zip(texts, outs, strict=True):
            thought = out.text.strip()
            written.append(thought or None)
            if not out.ok:
                follow.append(Failure(f"reasoning: {out.error}"))
            elif out.finish_reason == "length":
                follow.append(Failure(f"reasoning: stopped at {self.max_tokens} tokens without reaching a choice"))
            elif not thought:
                follow.append(Failure("reasoning: the model wrote no reasoning"))
            else:
                follow.append(continued(text, ctx.templates.render("compare_cot_answer.j2", reasoning=thought)))
        asked = [reads.TwoOrders(follow[2 * i], follow[2 * i + 1]) for i in range(len(questions))]
        got = reads.ask_both(ctx.engine, asked, result, label="rl judge choice")
        return [Read(r, (written[2 * i], written[2 * i + 1])) for i, r in enumerate(got)]

    def describe(self) -> Description:
        return Description(
            label_source="the model first wrote its reasoning about the two answers under a sampled principle, "
            "then `p_chosen` was read from the log-probabilities of (A) and (B) after it, each read "
            f"clamped into [{self.clamp:g}, {1 - self.clamp:g}] and averaged over both orders and the "
            "principles (`votes`); the reasoning is in `reasoning`.",
            failures="failed CoT votes",
            pairwise_votes=True,
        )
