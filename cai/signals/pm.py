"""The preference-model signal: a PM trained by `cai train-pm`, its reward in standard units on the part of the
answer the constitution's scope names (`scope: answer` grades the answer after the reasoning, as R1's helpfulness
reward reads the final summary only)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cai.core import answer
from cai.settings import setting
from cai.signals import rewardmodels
from cai.signals.base import Item, Score, Signal

if TYPE_CHECKING:
    from cai.core.context import RunContext
    from cai.core.records import ChunkResult, Failure


@dataclass(frozen=True)
class PmOptions:
    pm: str | None = setting(
        None,
        "Score every answer with this preference model (a folder `cai train-pm --kind pm` wrote): its reward in "
        "standard units (0 an average answer), sigmoid(z) in the combined score.",
        identity=True,
        path=True,
    )


class PmSignal(Signal):
    """A trained preference model's reward of each answer, in standard units (--pm)."""

    name = "pm"
    label = "preference model"
    settings = (PmOptions,)
    switch = "pm"
    batches = True
    order = 20
    reward_name = "preference_model"

    def __init__(self, config):
        super().__init__(config)
        self.pm = config.options(PmOptions).pm

    def enabled(self) -> bool:
        return bool(self.pm)

    def check(self, ctx: RunContext) -> None:
        assert self.pm is not None
        rewardmodels.check_pm(self.pm, "--pm", rewardmodels.PM)

    def warm(self) -> None:
        assert self.pm is not None
        rewardmodels.load(self.pm, rewardmodels.PM)

    def score(self, ctx: RunContext, items: list[Item], result: ChunkResult) -> list[Score | Failure]:
        assert self.pm is not None
        scope = ctx.constitution.scope
        with rewardmodels.TORCH:
            z = rewardmodels.rewards(self.pm, [(list(i.prompt), answer.scoped(i.text, scope)) for i in items])
        return [Score(v) for v in z["scores"]]

    def unit(self, value: float) -> float:
        return 1 / (1 + math.exp(-value))
