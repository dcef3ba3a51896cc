"""The rules signal: the weighted mean score of the constitution's rules that apply to an answer and finish.

Each rule reads the part of the text its own scope names (cai.core.rules); the accuracy rules read the reference,
so this signal reads the answer key where the constitution has one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cai.core.rules import RuleResult, check_all, mean_score
from cai.signals.base import Item, Score, Signal

if TYPE_CHECKING:
    from cai.core.context import RunContext
    from cai.core.records import ChunkResult, Failure


class RulesSignal(Signal):
    name = "rules"
    label = "rules"
    column = "rules_score"
    detail_column = "rules"
    detail_type = list[RuleResult]
    reads_reference = True
    order = 0

    def enabled(self) -> bool:
        return True  # a constitution without rules gives every item None: nothing to say, not a failure

    def score(self, ctx: RunContext, items: list[Item], result: ChunkResult) -> list[Score | Failure]:
        rules = {r.id: r for r in ctx.constitution.rules}
        out: list[Score | Failure] = []
        for item in items:
            checked = check_all(ctx.constitution.rules, item.text, item.reference)
            notes = tuple(f"{r.rule}: {r.error}" for r in checked if r.error)
            out.append(Score(mean_score(checked, rules) if checked else None, checked, notes))
        return out
