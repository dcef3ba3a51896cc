"""The constitution as reward functions for online RL: TRL GRPOTrainer's reward-function signature.

    from trl import GRPOConfig, GRPOTrainer
    from cai.rewards import reward_funcs

    trainer = GRPOTrainer(model=..., reward_funcs=reward_funcs("reasoning", pm="runs/pm"),
                          args=GRPOConfig(...), train_dataset=dataset_with_a_reference_column)

One function per principle that carries rules (its rules' weighted mean score in [0, 1], None where none of
them applies, e.g. accuracy for a prompt without a reference), then one per other signal the settings turn on
(cai.signals: a PM with `pm=`, a PRM with `prm=`, a plug-in's signal with its own setting), each the value the
sample stage and `cai serve` give the same item (a PM's reward in standard units). Dataset columns reach the
functions as keyword arguments, so a `reference` column feeds the accuracy rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cai.config import RunConfig
from cai.core.columns import text_of
from cai.core.constitution import Constitution, Principle, load
from cai.core.context import RunContext
from cai.core.inputs import tests as tests_json
from cai.core.prompts import Templates
from cai.core.records import ChunkResult, Failure
from cai.core.rules import check_all, mean_score, require_sandbox
from cai.errors import CaiError
from cai.signals import Item, Signal, SignalSet, score_with

RewardFunc = Callable[..., list[float | None]]


def _text(completion: Any) -> str:
    """A completion as TRL passes it: text, or a list of messages whose last one is the answer."""
    text = text_of(completion)
    if text is None:
        raise CaiError(f"a completion must be text or chat messages, got {type(completion).__name__}")
    return text


def _messages(prompt: Any) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]


def _references(n: int, reference: Sequence[Any] | None, tests: Sequence[Any] | None) -> list[str | None]:
    """Each completion's reference: the `reference` column, or a code problem's `tests` column (its reference for
    accuracy: code)."""
    refs: list[Any] = list(reference) if reference is not None else [None] * n
    if tests is not None:
        refs = [tests_json(t, "tests") if t is not None else r for t, r in zip(tests, refs, strict=True)]
    return [None if r is None else str(r) for r in refs]


def _reward(name: str, score: Callable[[list[Item]], list[float | None]]) -> RewardFunc:
    """A TRL reward function (TRL logs it by `name`) of `score`, a batch of items' values: dataset columns reach it
    as keyword arguments, a `reference` column (or a code problem's `tests`) as each item's reference."""

    def reward(
        prompts: Sequence[Any],
        completions: Sequence[Any],
        reference: Sequence[Any] | None = None,
        tests: Sequence[Any] | None = None,
        **_: Any,
    ) -> list[float | None]:
        refs = _references(len(completions), reference, tests)
        return score([Item(_messages(p), _text(c), r) for p, c, r in zip(prompts, completions, refs, strict=True)])

    reward.__name__ = reward.__qualname__ = name
    return reward


def principle_reward(principle: Principle, weight: float = 1.0) -> RewardFunc:
    """The reward of one principle's rules: the weighted mean of their scores on each completion (the rules signal,
    one principle at a time, so TRL logs each principle's reward); None where none applies or finishes."""
    rules = {r.id: r for r in principle.rules}

    def score(items: list[Item]) -> list[float | None]:
        means = [mean_score(check_all(principle.rules, i.text, i.reference), rules) for i in items]
        return [None if m is None else weight * m for m in means]

    return _reward(principle.id.replace("-", "_").replace(".", "_"), score)


def signal_reward(signal: Signal, ctx: RunContext, weight: float = 1.0) -> RewardFunc:
    """A signal (cai.signals) as a TRL reward function: its value for each completion, None where it failed."""

    def score(items: list[Item]) -> list[float | None]:
        got = score_with(signal, ctx, items, ChunkResult())
        return [None if isinstance(g, Failure) or g.value is None else weight * g.value for g in got]

    return _reward(signal.reward_name or signal.name, score)


def reward_funcs(
    constitution: str | Path | Constitution,
    pm: str | None = None,
    weights: dict[str, float] | None = None,
    **settings: Any,
) -> list[RewardFunc]:
    """Reward functions for TRL's GRPOTrainer from `constitution` (a file, a shipped name or a loaded one): one per
    principle with rules, then one per other signal `settings` turn on (`pm=`, `prm=`, a plug-in signal's own
    setting; a signal that asks the model needs its engine: serve it with `cai serve` and use
    `remote_reward_funcs`). `weights` scales a function's output by its name (a principle id, or a signal's
    name); GRPOConfig's reward_weights works as well."""
    const = constitution if isinstance(constitution, Constitution) else load(constitution)
    config = RunConfig(constitution=str(const.path), pm=pm, **settings)
    ctx = RunContext(config, const, Templates(config.run.templates), None)
    signals = SignalSet(config)
    # the rules, accuracy among them, come one function per principle (TRL logs each principle's reward)
    others = [s for s in signals.active if s.name not in ("rules", "accuracy")]
    for s in others:
        if s.needs_engine(ctx):
            raise CaiError(
                f"signal {s.name}: asks the model, which a reward function has no engine for: serve it with "
                f"`cai serve --{s.switch.replace('_', '-') if s.switch else s.name}` and use remote_reward_funcs"
            )
        s.check(ctx)
        s.warm()
    require_sandbox(const.rules)  # a code rule's sandbox works here, or the trainer does not start
    weights = dict(weights or {})
    ruled = [p for p in const.principles if p.rules]
    known = {p.id for p in ruled} | {s.name for s in others}
    unknown = sorted(set(weights) - known)
    if unknown:
        raise CaiError(
            f"weights: {unknown[0]!r} is neither a principle with rules in {const.path} nor a signal given "
            f"(known: {', '.join(sorted(known))})"
        )
    funcs = [principle_reward(p, weights.get(p.id, 1.0)) for p in ruled]
    funcs += [signal_reward(s, ctx, weights.get(s.name, 1.0)) for s in others]
    if not funcs:
        raise CaiError(f"{const.path}: no principle carries rules, and no other signal was given")
    return funcs


def remote_reward_funcs(urls: str | Sequence[str] | None = None, token: str | None = None, weights=None) -> list:
    """The same constitution served by `cai serve` on other machines, as TRL reward functions (async: TRL awaits
    them concurrently), spread over `urls` with failover (cai.commands.serve.client)."""
    from cai.commands.serve.client import remote_reward_funcs as remote

    return remote(urls, token, weights)


async def verl_compute_score(
    data_source: Any, solution_str: str, ground_truth: Any, extra_info: dict | None = None, **kwargs: Any
) -> dict[str, float]:
    """verl's custom reward function backed by `cai serve`: a coroutine function verl awaits, the calls that arrive
    together sent as one batched request (cai.commands.serve.verl; docs/serve.md has the two Hydra overrides). A
    reward file of one line: `from cai.rewards import verl_compute_score as compute_score`."""
    from cai.commands.serve.verl import compute_score

    return await compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
