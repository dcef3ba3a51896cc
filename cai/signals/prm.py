"""The process-reward-model signal: a PRM trained by `cai train-pm --kind prm` scores each step of the answer (the
part the constitution's scope names, split by --step-separator); the solution's score is their product
(P(every step is right), Lightman et al.) or minimum. The step scores are kept beside it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cai.core import answer, steps
from cai.core.records import Failure
from cai.settings import setting
from cai.signals import rewardmodels
from cai.signals.base import Item, Score, Signal

if TYPE_CHECKING:
    from cai.core.context import RunContext
    from cai.core.records import ChunkResult


@dataclass(frozen=True)
class PrmOptions:
    prm: str | None = setting(
        None,
        "Score every answer with this process reward model (`cai train-pm --kind prm`): the product (or, with "
        "--prm-aggregate min, the minimum) of its step scores, the steps split by --step-separator.",
        identity=True,
        path=True,
    )
    prm_aggregate: str = setting(
        "product",
        "How a PRM's step scores make the answer's: product (P(every step is right), Lightman et al.) or min.",
        identity=True,
        choices=lambda: steps.AGGREGATES,
    )


class PrmSignal(Signal):
    """A trained process reward model's solution score: the product (or minimum) of its step scores (--prm)."""

    name = "prm"
    label = "process reward model"
    detail_column = "prm_steps"
    detail_type = list[float]
    settings = (PrmOptions, steps.SeparatorOptions)
    switch = "prm"
    batches = True
    order = 30

    def __init__(self, config):
        super().__init__(config)
        self.o = config.options(PrmOptions)
        self.separator = config.options(steps.SeparatorOptions).step_separator

    def enabled(self) -> bool:
        return bool(self.o.prm)

    def check(self, ctx: RunContext) -> None:
        assert self.o.prm is not None
        rewardmodels.check_pm(self.o.prm, "--prm", rewardmodels.PRM)

    def warm(self) -> None:
        assert self.o.prm is not None
        rewardmodels.load(self.o.prm, rewardmodels.PRM)

    def score(self, ctx: RunContext, items: list[Item], result: ChunkResult) -> list[Score | Failure]:
        assert self.o.prm is not None
        scope = ctx.constitution.scope
        split = [steps.split(answer.scoped(i.text, scope), self.separator) for i in items]
        rows = [
            rewardmodels.StepRow("", steps.prompt_text(i.prompt), s, None)
            for i, s in zip(items, split, strict=True)
            if s
        ]
        with rewardmodels.TORCH:
            scored = iter(rewardmodels.step_scores(self.o.prm, rows)["steps"] if rows else ())
        out: list[Score | Failure] = []
        for found in split:
            if not found:
                out.append(Failure(f"no steps after splitting by {self.separator!r}"))
                continue
            step_p = next(scored)
            value = rewardmodels.solution_score(step_p, self.o.prm_aggregate)
            out.append(Failure("every step lay past the PRM's max length") if value is None else Score(value, step_p))
        return out
