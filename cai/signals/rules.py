"""The constitution's rules as two signals: `rules` (every rule but accuracy: format, language, length; what a
policy or an inference-time selector can be scored by without the answer key) and `accuracy` (the accuracy rules,
which grade the answer against the reference: the answer key).

Each is the weighted mean score of its rules that apply to an answer and finish (cai.core.rules); each rule reads
the part of the text its own scope names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cai.core.rules import RuleResult, check_all, mean_score
from cai.signals.base import Item, Score, Signal

if TYPE_CHECKING:
    from cai.core.constitution import Constitution
    from cai.core.context import RunContext
    from cai.core.records import ChunkResult, Failure

ACCURACY = "accuracy"  # the rule kind that reads the reference


class _Rules(Signal):
    detail_type = list[RuleResult]
    graded: bool  # whether this signal's rules are the accuracy rules

    def enabled(self) -> bool:
        return True  # a constitution without such rules gives every item None: nothing to say, not a failure

    def default_weight(self, constitution: Constitution) -> float:
        """Its rules' share of the constitution's rule weight: the two rule signals weigh 1 together, and where both
        have a value their graded mean is the weighted mean of all the rules, as the constitution weighs them."""
        total = sum(r.weight for r in constitution.rules)
        mine = sum(r.weight for r in constitution.rules if (r.kind == ACCURACY) == self.graded)
        return mine / total if total else 0.0

    def score(self, ctx: RunContext, items: list[Item], result: ChunkResult) -> list[Score | Failure]:
        mine = tuple(r for r in ctx.constitution.rules if (r.kind == ACCURACY) == self.graded)
        weights = {r.id: r for r in mine}
        out: list[Score | Failure] = []
        for item in items:
            checked = check_all(mine, item.text, item.reference) if mine else []
            notes = tuple(f"{r.rule}: {r.error}" for r in checked if r.error)
            out.append(Score(mean_score(checked, weights) if checked else None, checked, notes))
        return out


class RulesSignal(_Rules):
    """The weighted mean score of the constitution's rules other than accuracy (reference-free)."""

    name = "rules"
    label = "rules without accuracy"
    column = "rules_score"
    detail_column = "rules"
    graded = False
    order = 0


class AccuracySignal(_Rules):
    """The weighted mean score of the accuracy rules: each answer graded against its reference (the answer key)."""

    name = ACCURACY
    label = "accuracy (reads the reference)"
    detail_column = "accuracy_rules"
    reads_reference = True
    graded = True
    order = 1
