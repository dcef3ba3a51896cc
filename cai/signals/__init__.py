"""Signals, found by name through the `cai.signals` entry-point group, and the weighted set of them a run computes.

A signal is anything that scores an answer (cai.signals.base). `SignalSet` is what every consumer holds: the
signals a run (or `cai serve`) computes, their weights from --weights, and one pass that scores a batch of items
with each of them, a failure recorded per item and signal with its reason, never a default. A combined score is
the weighted mean of the values present, each on [0, 1] (`Signal.unit`); a failed or absent signal is left out of
that item's mean, never counted as 0. There are two, named:

- the **score** (reference-free): the signals that do not read the reference, what a policy or an inference-time
  selector could see; best-of-N, AUROC and `select best` go by it;
- the **graded score**: every signal, the accuracy rules (the answer key) too; an RL reward with a reference and
  the K-way labels of prompts with one go by it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cai import plugins
from cai.errors import CaiError
from cai.settings import setting
from cai.signals.base import Item, Score, Signal

if TYPE_CHECKING:
    from cai.config import RunConfig
    from cai.core.context import RunContext
    from cai.core.prompts import TemplateSpec
    from cai.core.records import ChunkResult

__all__ = [
    "Item",
    "Score",
    "Scored",
    "Signal",
    "SignalFailure",
    "SignalSet",
    "WeightOptions",
    "get",
    "names",
    "score_with",
]


def names() -> list[str]:
    """Every registered signal's name, in report order."""
    return sorted(plugins.names("signal"), key=lambda n: (get(n).order, n))


def get(name: str) -> type[Signal]:
    cls: type[Signal] = plugins.get("signal", name)
    return cls


@dataclass(frozen=True)
class WeightOptions:
    weights: str = setting(
        "",
        "Weights of the combined score, SIGNAL=W,... (the signals: `cai plugins` lists them; rules is the "
        "constitution's rules' weighted mean score); empty: every signal the run computes, weight 1.",
        identity=True,
    )


def parse_weights(text: str, known: Sequence[str]) -> dict[str, float]:
    """`rules=1,p_true=0.5`: each signal's weight (ValueError naming a bad piece); {} for an empty text."""
    out: dict[str, float] = {}
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        name, sep, value = piece.partition("=")
        name = name.strip()
        if not sep or name not in known:
            raise ValueError(f"{piece!r}: expected SIGNAL=WEIGHT with SIGNAL one of {', '.join(known)}")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"{piece!r}: the weight must be a number") from None
        if not weight >= 0 or math.isinf(weight):
            raise ValueError(f"{piece!r}: the weight must be a finite number of at least 0")
        out[name] = weight
    if out and not any(out.values()):
        raise ValueError(f"{text!r}: at least one signal needs a weight above 0")
    return out


@dataclass(frozen=True)
class SignalFailure:
    """A signal that gave an item no value, and why."""

    signal: str
    reason: str


@dataclass
class Scored:
    """Every signal's value for one item (None where it failed or had nothing to say), what each was made of, the
    failures with their reasons, and the combined score."""

    values: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    failures: list[SignalFailure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    score: float | None = None  # reference-free: the signals that do not read the reference
    graded: float | None = None  # every signal, the answer key too


class SignalSet:
    """The signals a run computes (those its settings turn on), weighted by --weights."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.registered = [get(n)(config) for n in names()]
        self.active = [s for s in self.registered if s.enabled()]
        self.by_name = {s.name: s for s in self.registered}
        text = config.options(WeightOptions).weights
        try:
            given = parse_weights(text, [s.name for s in self.registered])
        except ValueError as e:
            raise CaiError(f"--weights {e}") from None
        self.given = given  # --weights as given; empty: each signal's default weight (`Signal.default_weight`)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.active]

    def weights(self, ctx: RunContext) -> dict[str, float]:
        """Each signal's weight in the combined scores: --weights, else each active signal's default (the rules and
        the accuracy rules by their share of the constitution's rule weights, together 1; any other signal 1)."""
        return self.given or {s.name: s.default_weight(ctx.constitution) for s in self.active}

    def describe_weights(self) -> str:
        if self.given:
            return ",".join(f"{k}={w:g}" for k, w in self.given.items())
        return "each signal 1, the rules' 1 shared by their weights in the constitution"

    def template_specs(self) -> tuple[TemplateSpec, ...]:
        return tuple(spec for s in self.active for spec in s.template_specs())

    def needs_engine(self, ctx: RunContext) -> bool:
        return any(s.needs_engine(ctx) for s in self.active)

    def check(self, ctx: RunContext | None = None) -> None:
        """Each signal's own checks, and no weight for a signal the run does not compute (a weight given for
        nothing is a mistake, not a default)."""
        for s in self.active:
            if ctx is not None:
                s.check(ctx)
        unused = [n for n, w in self.given.items() if w > 0 and n not in self.names]
        if unused:
            switch = self.by_name[unused[0]].switch
            how = f" (--{switch.replace('_', '-')})" if switch else ""
            raise CaiError(f"--weights gives {unused[0]} a weight, but the run does not compute it{how}")

    def warm(self) -> None:
        for s in self.active:
            s.warm()

    def score(
        self, ctx: RunContext, items: list[Item], result: ChunkResult, only: Sequence[str] | None = None
    ) -> list[Scored]:
        """Every active signal (or those named in `only`) on every item; the combined score of each."""
        out = [Scored() for _ in items]
        for s in self.active:
            if only is not None and s.name not in only:
                continue
            self.fold(s.name, score_with(s, ctx, items, result), out)
        weights = self.weights(ctx)
        for scored in out:
            self.combine(scored, weights)
        return out

    def combine(self, scored: Scored, weights: dict[str, float]) -> None:
        """Set both named scores of `scored` from its values."""
        scored.score = self.combined(scored.values, weights, graded=False)
        scored.graded = self.combined(scored.values, weights)

    @staticmethod
    def fold(name: str, got: Sequence[Score | Any], out: list[Scored]) -> None:
        """One signal's results (Score or Failure per item) into the items' records."""
        from cai.core.records import Failure

        for scored, g in zip(out, got, strict=True):
            if isinstance(g, Failure):
                scored.values[name] = None
                scored.failures.append(SignalFailure(name, g.reason))
            else:
                scored.values[name] = g.value
                if g.detail is not None:
                    scored.details[name] = g.detail
                scored.notes += g.notes

    def combined(self, values: dict[str, float | None], weights: dict[str, float], graded: bool = True) -> float | None:
        """The weighted mean on [0, 1] of the signals present (with `graded` False, of those that do not read the
        reference); None when no weighted signal has a value."""
        present = [
            (weights[k], self.by_name[k].unit(v))
            for k, v in values.items()
            if v is not None
            and weights.get(k, 0) > 0
            and k in self.by_name
            and (graded or not self.by_name[k].reads_reference)
        ]
        total = sum(w for w, _ in present)
        return sum(w * v for w, v in present) / total if total else None


def score_with(signal: Signal, ctx: RunContext, items: list[Item], result: ChunkResult) -> list[Any]:
    """`signal.score`, with a signal that raises on this input recorded as a failure of each item (a model that
    fails on one batch loses no prompt)."""
    from cai.core.records import Failure

    if not items:
        return []
    try:
        got = signal.score(ctx, items, result)
    except CaiError:
        raise
    except Exception as e:
        return [Failure(f"{type(e).__name__}: {str(e)[:200]}")] * len(items)
    if len(got) != len(items):
        raise CaiError(f"signal {signal.name}: {len(got)} values for {len(items)} items")
    return got
