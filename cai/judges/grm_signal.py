"""The GRM signal: a DeepSeek-GRM judgement of a prompt's answers shown together (the model writes principles and a
critique), each answer's 1-9 score read from the score token's probabilities (their expectation, as G-Eval)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cai.core.inputs import Prompt, prompt_id
from cai.core.records import Failure
from cai.judges.grm import GROUP_TEMPLATES, GrmJudge
from cai.settings import setting
from cai.signals.base import Item, Score, Signal, by_prompt

if TYPE_CHECKING:
    from cai.core.context import RunContext
    from cai.core.prompts import TemplateSpec
    from cai.core.records import ChunkResult


@dataclass(frozen=True)
class GrmSignalOptions:
    sample_grm: bool = setting(
        False,
        "Score every answer by a DeepSeek-GRM judgement: the model writes principles and a critique of a prompt's "
        "answers shown together, then each answer's 1-9 score is read from the next token's probabilities (their "
        "expectation).",
        identity=True,
    )


class GrmSignal(Signal):
    """A DeepSeek-GRM judgement of a prompt's answers together, each one's 1-9 score read (--sample-grm)."""

    name = "grm"
    label = "GRM judgement"
    settings = (GrmSignalOptions,)
    switch = "sample_grm"
    uses_engine = True
    order = 40

    def enabled(self) -> bool:
        return self.config.options(GrmSignalOptions).sample_grm

    def template_specs(self) -> tuple[TemplateSpec, ...]:
        return GROUP_TEMPLATES

    def score(self, ctx: RunContext, items: list[Item], result: ChunkResult) -> list[Score | Failure]:
        """One judgement per prompt of all its answers among the items (a GRPO group, a prompt's N samples)."""
        groups = by_prompt(items)
        shown = []
        for group in groups:
            first = items[group[0]]
            messages = tuple(first.prompt)
            shown.append((Prompt(prompt_id(list(messages)), messages, first.reference), [items[i].text for i in group]))
        judged = GrmJudge(ctx.config).sampled_group(ctx, shown, result, 1, "sample-grm", "sample grm judgements")
        out: list[Score | Failure] = [Failure("not judged")] * len(items)
        for group, j in zip(groups, judged, strict=True):
            for n, i in enumerate(group):
                out[i] = Failure(j.error or "no scores") if j.soft is None else Score(j.soft[n])
        return out

    def unit(self, value: float) -> float:
        return (value - 1) / 8
