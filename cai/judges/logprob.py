"""The log-prob judge: one forward pass per question, P(A) / (P(A) + P(B)) from the next token's log-probs."""

from __future__ import annotations

from cai.backends import Sampling
from cai.judges.base import Description
from cai.judges.pairwise import OPTIONS, PairwiseJudge, Question, Read, read_options
from cai.prompts import SAMPLE_CONVERSATION, SAMPLE_PRINCIPLE, TemplateSpec
from cai.records import ChunkResult, continued
from cai.run import RunContext

_PAIR = {"conversation": SAMPLE_CONVERSATION, "principle": SAMPLE_PRINCIPLE, "response_a": "a", "response_b": "b"}


class LogprobJudge(PairwiseJudge):
    name = "logprob"
    templates = (TemplateSpec("compare.j2", _PAIR), TemplateSpec("compare_answer.j2", ends_with="("))

    def read(self, ctx: RunContext, questions: list[Question], result: ChunkResult) -> list[Read]:
        answer = ctx.templates.render("compare_answer.j2")
        chats = [continued(q.text, answer) for q in questions]
        outs = ctx.engine.generate(chats, Sampling(options=OPTIONS, continue_final=True, label="rl judge"))
        return [Read(read_options(c, result)) for (c,) in outs]

    def describe(self) -> Description:
        return Description(
            label_source="the model compared the two answers as a multiple-choice question under sampled "
            "principles; `p_chosen` is read from the log-probabilities of (A) and (B) in one forward "
            "pass, averaged over both orders and the principles (`votes`).",
            failures="failed reads",
            pairwise_votes=True,
        )
