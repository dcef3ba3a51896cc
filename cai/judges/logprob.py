"""The log-prob judge: one forward pass per question and order, P(A) / (P(A) + P(B)) from the next token's log-probs."""

from __future__ import annotations

from cai.core.context import RunContext
from cai.core.prompts import SAMPLE_CONVERSATION, SAMPLE_PRINCIPLE, TemplateSpec
from cai.core.records import ChunkResult, continued
from cai.judges.base import Description
from cai.judges.pairwise import PairwiseJudge, Question, Read
from cai.signals import reads

_PAIR = {"conversation": SAMPLE_CONVERSATION, "principle": SAMPLE_PRINCIPLE, "response_a": "a", "response_b": "b"}


class LogprobJudge(PairwiseJudge):
    name = "logprob"
    templates = (TemplateSpec("compare.j2", _PAIR), TemplateSpec("compare_answer.j2", ends_with="("))

    def read(self, ctx: RunContext, questions: list[Question], result: ChunkResult) -> list[Read]:
        answer = ctx.templates.render("compare_answer.j2")
        asked = [reads.TwoOrders(continued(q.ab, answer), continued(q.ba, answer)) for q in questions]
        return [Read(r) for r in reads.ask_both(ctx.engine, asked, result, label="rl judge")]

    def describe(self) -> Description:
        return Description(
            label_source="the model compared the two answers as a multiple-choice question under sampled "
            "principles; `p_chosen` is read from the log-probabilities of (A) and (B) in one forward "
            "pass, averaged over both orders and the principles (`votes`).",
            failures="failed reads",
            pairwise_votes=True,
        )
