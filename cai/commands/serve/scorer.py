"""One item's reward and what made it: the constitution's rules, a trained PM and a PRM, combined by weights.

The rules read the response with the reference the request gives (a label), bounded in time as everywhere
(cai.core.rules: a check that cannot finish is unknown, with its reason, and left out). The PM and PRM run batched
across concurrent requests (cai.commands.serve.batcher). The reward is the weighted mean of the components present, each
on [0, 1] (cai.signals.ranking: a PM's z through the logistic); a component that failed is left out and its reason is
in the item's `errors`, so a reward is never silently a default. Model output is only ever read as text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field

from cai.commands.serve.batcher import Batcher
from cai.core import answer
from cai.core.constitution import Constitution
from cai.core.rules import Rule, check_all, mean_score
from cai.signals import ranking
from cai.signals import steps as steps_mod

SIGNALS = ("rules", "pm", "prm", "p_true", "grm")


@dataclass(frozen=True)
class Item:
    prompt: list[dict]  # chat messages
    response: str
    reference: str | None = None


@dataclass
class Scored:
    reward: float | None
    components: dict[str, float | None]
    rules: list[dict] = field(default_factory=list)  # every rule's result: rule, principle, passed, score, error
    errors: list[str] = field(default_factory=list)

    def json(self) -> dict:
        return {"reward": self.reward, "components": self.components, "rules": self.rules, "errors": self.errors}


class Scorer:
    def __init__(
        self,
        constitution: Constitution,
        pm: str | None = None,
        prm: str | None = None,
        weights: str = "rules=1,pm=1,prm=1,p_true=1,grm=1",
        separator: str = "line",
        aggregate: str = "product",
        max_batch: int = 64,
        deadline: float = 0.005,
        judged: Judged | None = None,
    ):
        self.constitution = constitution
        self.judged = judged  # the model's own judgements (P(True), GRM), through one engine
        self.rules: dict[str, Rule] = {r.id: r for r in constitution.rules}
        self.pm, self.prm = pm, prm
        self.weights = ranking.parse_weights(weights)
        other = [k for k in self.weights if k not in SIGNALS]
        if other:
            raise ValueError(f"{weights!r}: {other[0]} is not a signal of the reward service ({', '.join(SIGNALS)})")
        self.separator, self.aggregate = separator, aggregate
        self.pm_batcher = Batcher(self._pm, max_batch, deadline) if pm else None
        self.prm_batcher = Batcher(self._prm, max_batch, deadline) if prm else None

    @property
    def signals(self) -> list[str]:
        on = {
            "rules": True,
            "pm": bool(self.pm),
            "prm": bool(self.prm),
            "p_true": bool(self.judged and self.judged.p_true),
            "grm": bool(self.judged and self.judged.grm),
        }
        return [s for s in SIGNALS if on[s]]

    def check_weights(self, weights: dict[str, float]) -> dict[str, float]:
        """A request's weights: only signals this server computes (ValueError naming the first other)."""
        for name in weights:
            if name not in self.signals:
                raise ValueError(f"weights: {name!r} is not a signal of this server (it has {', '.join(self.signals)})")
        return weights

    def warm(self) -> None:
        """Load the models before the first request (so no request pays for it)."""
        from cai.signals.rewardmodels import PM, PRM, load

        if self.pm:
            load(self.pm, PM)
        if self.prm:
            load(self.prm, PRM)

    def _pm(self, items: list[Item]) -> list[float]:
        from cai.signals.rewardmodels import rewards

        assert self.pm is not None
        scope = self.constitution.scope  # `scope: answer`: the PM grades the answer after the reasoning, as locally
        return rewards(self.pm, [(i.prompt, answer.scoped(i.response, scope)) for i in items])["scores"]

    def _prm(self, items: list[Item]) -> list[float | None]:
        from cai.signals.rewardmodels import StepRow, solution_score, step_scores

        assert self.prm is not None
        scope = self.constitution.scope
        rows = [
            StepRow(
                "",
                steps_mod.prompt_text(i.prompt),
                steps_mod.split(answer.scoped(i.response, scope), self.separator),
                None,
            )
            for i in items
        ]
        scored = [r for r in rows if r.steps]
        got = iter(step_scores(self.prm, scored)["steps"]) if scored else iter(())
        return [solution_score(next(got), self.aggregate) if r.steps else None for r in rows]

    def _rules(self, items: list[Item]) -> list[tuple[dict[str, float | None], list[str], list[dict]]]:
        """Per item: the rules' component, the reasons of checks that could not finish, and every rule's result."""
        out = []
        for i in items:
            checked = check_all(self.constitution.rules, i.response, i.reference)
            rows = [dict(r.row(), principle=r.rule.split(".")[0]) for r in checked]
            errors = [f"{r.rule}: {r.error}" for r in checked if r.error]
            out.append(({"rules": mean_score(checked, self.rules) if checked else None}, errors, rows))
        return out

    async def _model(self, name: str, batcher: Batcher, items: list[Item]) -> list[tuple[dict, list[str], list]]:
        values = await batcher.submit(items)
        why = f"{name}: no score (no steps after splitting by {self.separator!r})"
        return [({name: v}, [why] if v is None else [], []) for v in values]

    def _judged(self, items: list[Item]) -> list[tuple[dict, list[str], list]]:
        assert self.judged is not None
        scores, errors = self.judged.score(items)
        return [(sc, er, []) for sc, er in zip(scores, errors, strict=True)]

    async def score(self, items: list[Item], weights: dict[str, float] | None = None) -> list[Scored]:
        """Every source of this server on all items at once (the rules in a thread, the models batched, the
        engine's judgements in a thread); a source that fails leaves its components out, with its reason."""
        sources: dict[tuple[str, ...], Awaitable[list[tuple[dict, list[str], list]]]] = {
            ("rules",): asyncio.to_thread(self._rules, items)
        }
        if self.pm_batcher is not None:
            sources[("pm",)] = self._model("pm", self.pm_batcher, items)
        if self.prm_batcher is not None:
            sources[("prm",)] = self._model("prm", self.prm_batcher, items)
        if self.judged is not None:
            sources[tuple(self.judged.signals)] = asyncio.to_thread(self._judged, items)
        done = await asyncio.gather(*sources.values(), return_exceptions=True)
        out = [Scored(None, {}) for _ in items]
        for names, got in zip(sources, done, strict=True):
            if isinstance(got, BaseException):
                for s in out:
                    s.components.update(dict.fromkeys(names))
                    s.errors.append(f"{'/'.join(names)}: {type(got).__name__}: {str(got)[:200]}")
                continue
            for s, (components, errors, rows) in zip(out, got, strict=True):
                s.components.update(components)
                s.errors += errors
                s.rules += rows
        for s in out:
            s.reward = ranking.combined(s.components, weights or self.weights)
        return out

    async def close(self) -> None:
        for b in (self.pm_batcher, self.prm_batcher):
            if b is not None:
                await b.close()


class Judged:
    """The model's own judgements of items through one engine (started by `cai serve --model`): P(True) (both
    option orders, cai.signals.p_true) and a DeepSeek-GRM judgement of a prompt's responses together with each one's 1-9
    score read from token probabilities: the sample stage's own scorers, so a served reward is the one a run writes.
    Items of one request that share a prompt (a GRPO group) are judged together by the GRM."""

    def __init__(self, ctx, p_true: bool, grm: bool):
        from cai.stages.sample import SampleStage

        self.ctx, self.p_true, self.grm = ctx, p_true, grm
        self.signals = [name for name, on in (("p_true", p_true), ("grm", grm)) if on]
        self.stage = SampleStage(ctx.config)  # a config with self_eval / sample_grm set as asked

    def score(self, items: list[Item]) -> tuple[list[dict[str, float | None]], list[list[str]]]:
        from cai.core.inputs import Prompt, prompt_id
        from cai.core.records import ChunkResult
        from cai.stages.sample import Draft

        groups: dict[str, tuple[Prompt, list[tuple[int, Draft]]]] = {}
        for k, item in enumerate(items):
            pid = prompt_id(item.prompt)
            members = groups.setdefault(pid, (Prompt(pid, tuple(item.prompt), item.reference), []))[1]
            members.append((k, Draft(len(members), item.response)))
        prompts = [p for p, _ in groups.values()]
        drafts = [[d for _, d in ds] for _, ds in groups.values()]
        result = ChunkResult()
        if self.p_true:
            self.stage.score_p_true(self.ctx, prompts, drafts, result)
        if self.grm:
            self.stage.score_grm(self.ctx, prompts, drafts, result)
        scores: list[dict[str, float | None]] = [{} for _ in items]
        errors: list[list[str]] = [[] for _ in items]
        for _, ds in groups.values():
            for k, d in ds:
                scores[k] = {"p_true": d.p_true, "grm": d.grm}
                errors[k] = [f"{f.signal}: {f.reason}" for f in d.failures] + ([d.error] if d.error else [])
        return scores, errors
