"""One item's reward and what made it: every signal the server computes (cai.signals), combined by weights.

The signals are the ones a run's sample stage computes, built from the same settings: the constitution's rules
(with the reference a request gives, bounded in time as everywhere), a trained PM and PRM (batched across
concurrent requests: cai.commands.serve.batcher), the model's own P(True) and a GRM judgement (through the engine,
a request's items that share a prompt judged together), and any signal a plug-in registers. So a served reward
is the one a run writes. The reward is the weighted mean of the values present, each on [0, 1]; a signal that
failed is left out and its reason is in the item's `errors`, so a reward is never silently a default. Model
output is only ever read as text.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field

from cai.commands.serve.batcher import Batcher
from cai.core.context import RunContext
from cai.core.records import ChunkResult, Failure
from cai.signals import Item, Scored, Signal, SignalSet, score_with

__all__ = ["Item", "Reward", "Scorer"]


@dataclass
class Reward:
    reward: float | None
    components: dict[str, float | None]
    rules: list[dict] = field(default_factory=list)  # every rule's result: rule, principle, passed, score, error
    errors: list[str] = field(default_factory=list)

    def json(self) -> dict:
        return {"reward": self.reward, "components": self.components, "rules": self.rules, "errors": self.errors}

    @classmethod
    def of(cls, scored: Scored, order: dict[str, int]) -> Reward:
        """`order`: each rule's place in the constitution (the two rule signals' results, in that order)."""
        checked = sorted(
            scored.details.get("rules", []) + scored.details.get("accuracy", []), key=lambda r: order[r.rule]
        )
        rules = [dict(r.row(), principle=r.rule.split(".")[0]) for r in checked]
        errors = [f"{f.signal}: {f.reason}" for f in scored.failures] + scored.notes
        # an RL reward grades with the reference the request gives: the graded score (the answer key counts)
        return cls(scored.graded, dict(scored.values), rules, errors)


class Scorer:
    """The signals of one server, over one context (the engine in it when a signal asks the model)."""

    def __init__(self, ctx: RunContext, max_batch: int = 64, deadline: float = 0.005):
        self.ctx = ctx
        self.set = SignalSet(ctx.config)
        self.set.check(ctx)
        self.weights = self.set.weights(ctx)
        self.batchers = {
            s.name: Batcher(functools.partial(self._run, s), max_batch, deadline) for s in self.set.active if s.batches
        }

    @property
    def signals(self) -> list[str]:
        """The names of the signals this server computes: the components of every reward."""
        return self.set.names

    def check_weights(self, weights: dict[str, float]) -> dict[str, float]:
        """A request's weights: only signals this server computes (ValueError naming the first other)."""
        for name in weights:
            if name not in self.signals:
                raise ValueError(f"weights: {name!r} is not a signal of this server (it has {', '.join(self.signals)})")
        return weights

    def warm(self) -> None:
        """Load the models before the first request (so no request pays for it)."""
        self.set.warm()

    def _run(self, signal: Signal, items: list[Item]) -> list:
        return score_with(signal, self.ctx, items, ChunkResult())

    async def score(self, items: list[Item], weights: dict[str, float] | None = None) -> list[Reward]:
        """Every signal on all items at once (batched ones through their batcher, the others in a thread); a signal
        that fails leaves its component None, with its reason."""
        names = self.signals
        runs = [
            self.batchers[s.name].submit(items) if s.name in self.batchers else asyncio.to_thread(self._run, s, items)
            for s in self.set.active
        ]
        done = await asyncio.gather(*runs, return_exceptions=True)
        out = [Scored() for _ in items]
        for name, got in zip(names, done, strict=True):
            if isinstance(got, BaseException):
                got = [Failure(f"{type(got).__name__}: {str(got)[:200]}")] * len(items)
            SignalSet.fold(name, got, out)
        for s in out:
            self.set.combine(s, weights or self.weights)
        order = {r.id: i for i, r in enumerate(self.ctx.constitution.rules)}
        return [Reward.of(s, order) for s in out]

    async def close(self) -> None:
        for b in self.batchers.values():
            await b.close()
