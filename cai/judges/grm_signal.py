"""The GRM signal: DeepSeek-GRM judgements of a prompt's answers shown together (the model writes principles and a
critique), each answer's 1-9 score read from the score token's probabilities (their expectation, as G-Eval).

As the paper scales it at inference time: k judgements (--grm-samples) vote, an answer's value is its mean score
over the voting ones; with a meta judge (--grm-meta-rm, a meta reward model trained by `cai train-pm --kind
meta`, or --grm-meta) only the k_meta it rates most likely correct vote (--grm-k-meta, default half)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cai.core.inputs import Prompt, prompt_id
from cai.core.records import Failure
from cai.judges.grm import GROUP_TEMPLATES, GrmJudge, GrmOptions
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
    settings = (GrmSignalOptions, GrmOptions)
    switch = "sample_grm"
    uses_engine = True
    order = 40

    def enabled(self) -> bool:
        return self.config.options(GrmSignalOptions).sample_grm

    def template_specs(self) -> tuple[TemplateSpec, ...]:
        return GROUP_TEMPLATES + (GrmJudge.templates if self.config.options(GrmOptions).grm_meta else ())

    def check(self, ctx: RunContext) -> None:
        GrmJudge(ctx.config).check(ctx)  # the meta judge and k_meta, as the judge checks them

    def warm(self) -> None:
        meta_rm = self.config.options(GrmOptions).grm_meta_rm
        if meta_rm:
            from cai.signals.rewardmodels import META, load

            load(meta_rm, META)

    def score(self, ctx: RunContext, items: list[Item], result: ChunkResult) -> list[Score | Failure]:
        """One judgement per prompt of all its answers among the items (a GRPO group, a prompt's N samples)."""
        groups = by_prompt(items)
        shown = []
        for group in groups:
            first = items[group[0]]
            messages = tuple(first.prompt)
            shown.append((Prompt(prompt_id(list(messages)), messages, first.reference), [items[i].text for i in group]))
        judge = GrmJudge(ctx.config)
        k = judge.o.grm_samples
        judged = judge.sampled_group(ctx, shown, result, k, "sample-grm", f"sample grm judgements (k={k})")
        voters = judge.voters(ctx, [j for j in judged if j.soft is not None], result)
        out: list[Score | Failure] = [Failure("not judged")] * len(items)
        for g, group in enumerate(groups):
            mine = [j for j in judged if j.pair == g]
            votes = [j.soft for j in mine if id(j) in voters and j.soft is not None]
            if not votes:
                why = "; ".join(sorted({j.error or "no scores" for j in mine}))
                for i in group:
                    out[i] = Failure(f"no GRM judgement scored ({why})")
                continue
            for n, i in enumerate(group):
                out[i] = Score(sum(v[n] for v in votes) / len(votes))
        return out

    def unit(self, value: float) -> float:
        return (value - 1) / 8
