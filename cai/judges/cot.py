"""The chain-of-thought judge: the model reasons first, then its choice is read; labels clamped (Bai et al.)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cai.backends import Sampling
from cai.judges.base import Description
from cai.judges.pairwise import OPTIONS, PairwiseJudge, PairwiseOptions, Question, Read, read_options
from cai.prompts import SAMPLE_CONVERSATION, SAMPLE_PRINCIPLE, TemplateSpec
from cai.records import ChunkResult, Failure, continued
from cai.run import RunContext
from cai.sampling import request_seed
from cai.settings import setting

if TYPE_CHECKING:
    import pyarrow as pa

_PAIR = {"conversation": SAMPLE_CONVERSATION, "principle": SAMPLE_PRINCIPLE, "response_a": "a", "response_b": "b"}


@dataclass(frozen=True)
class ReasoningOptions:
    """Shared by the judges that write before they decide (cot, grm)."""

    cot_max_tokens: int = setting(
        256, "Max tokens of a judge's written reasoning (CoT) or judgement (GRM).", identity=True, minimum=1
    )


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
    settings = (PairwiseOptions, ReasoningOptions, CotOptions)
    templates = (
        TemplateSpec("compare_cot.j2", _PAIR),
        TemplateSpec("compare_cot_reasoning.j2"),
        TemplateSpec("compare_cot_answer.j2", {"reasoning": "r"}, ends_with="("),
    )
    question_template = "compare_cot.j2"

    def __init__(self, config):
        super().__init__(config)
        self.clamp = config.options(CotOptions).cot_clamp
        self.max_tokens = config.options(ReasoningOptions).cot_max_tokens

    def evidence_fields(self) -> list[pa.Field]:
        import pyarrow as pa

        return [
            pa.field(
                "reasoning",
                pa.list_(pa.struct([("principle", pa.string()), ("order", pa.string()), ("text", pa.string())])),
            )
        ]

    def read(self, ctx: RunContext, questions: list[Question], result: ChunkResult) -> list[Read]:
        """Reason first (one generation), then read the choice after the reasoning (one forward pass)."""
        c = ctx.config
        opening = ctx.templates.render("compare_cot_reasoning.j2")
        chats = [continued(q.text, opening) for q in questions]
        seeds = [request_seed(c.seed, q.prompt_id, f"cot-{q.principle}-{q.order}") for q in questions]
        sampling = Sampling(
            max_tokens=self.max_tokens,
            temperature=c.temperature,
            top_p=c.top_p,
            continue_final=True,
            label="rl judge reasoning",
        )
        reads: list[Read] = []
        follow, where = [], []
        for i, (q, (out,)) in enumerate(zip(questions, ctx.engine.generate(chats, sampling, seeds), strict=True)):
            result.tally(out)
            text = out.text.strip()
            if not out.ok:
                reads.append(Read(Failure(f"reasoning: {out.error}")))
            elif out.finish_reason == "length":
                reads.append(
                    Read(Failure(f"reasoning: stopped at {self.max_tokens} tokens without reaching a choice"), text)
                )
            elif not text:
                reads.append(Read(Failure("reasoning: the model wrote no reasoning")))
            else:
                reads.append(Read(Failure("unread"), text))  # replaced by the choice read below
                answer = ctx.templates.render("compare_cot_answer.j2", reasoning=text)
                follow.append(continued(q.text, answer))
                where.append(i)
        if follow:
            outs = ctx.engine.generate(follow, Sampling(options=OPTIONS, continue_final=True, label="rl judge choice"))
            for i, (out,) in zip(where, outs, strict=True):
                reads[i] = Read(read_options(out, result), reads[i].reasoning)
        return reads

    def describe(self) -> Description:
        clamp = self.config.options(CotOptions).cot_clamp
        return Description(
            label_source="the model first wrote its reasoning about the two answers under a sampled principle, "
            "then `p_chosen` was read from the log-probabilities of (A) and (B) after it, each read "
            f"clamped into [{clamp:g}, {1 - clamp:g}] and averaged over both orders and the "
            "principles (`votes`); the reasoning is in `reasoning`.",
            failures="failed CoT votes",
            pairwise_votes=True,
        )
