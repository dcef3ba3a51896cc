"""The constitution as reward functions for online RL: TRL GRPOTrainer's reward-function signature.

    from trl import GRPOConfig, GRPOTrainer
    from cai.rewards import reward_funcs

    trainer = GRPOTrainer(model=..., reward_funcs=reward_funcs("reasoning", pm="runs/pm"),
                          args=GRPOConfig(...), train_dataset=dataset_with_a_reference_column)

One function per principle that carries rules (its rules' weighted mean score in [0, 1], None where none of
them applies, e.g. accuracy for a prompt without a reference), plus one for a preference model trained by
`cai train-pm` (its reward in standard units). Dataset columns reach the functions as keyword arguments,
so a `reference` column feeds the accuracy rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cai.core import answer
from cai.core.constitution import Constitution, Principle, load
from cai.core.inputs import tests as tests_json
from cai.core.rules import check_all, mean_score
from cai.errors import CaiError

RewardFunc = Callable[..., list[float | None]]


def _text(completion: Any) -> str:
    """A completion as TRL passes it: text, or a list of messages whose last one is the answer."""
    if isinstance(completion, str):
        return completion
    return str(completion[-1]["content"])


def _messages(prompt: Any) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]


def principle_reward(principle: Principle, weight: float = 1.0) -> RewardFunc:
    """The reward of one principle's rules: the weighted mean of their scores on each completion."""

    rules = {r.id: r for r in principle.rules}

    def reward(
        prompts: Sequence[Any],
        completions: Sequence[Any],
        reference: Sequence[Any] | None = None,
        tests: Sequence[Any] | None = None,
        **_: Any,
    ) -> list[float | None]:
        refs: list[Any] = list(reference) if reference is not None else [None] * len(completions)
        if tests is not None:  # a code problem's tests (a `tests` column) are its reference for accuracy: code
            refs = [tests_json(t, "tests") if t is not None else r for t, r in zip(tests, refs, strict=True)]
        out: list[float | None] = []
        for completion, ref in zip(completions, refs, strict=True):
            results = check_all(principle.rules, _text(completion), None if ref is None else str(ref))
            score = mean_score(results, rules)  # the known results' weighted mean; None if none applied or finished
            out.append(None if score is None else weight * score)
        return out

    reward.__name__ = principle.id.replace("-", "_").replace(".", "_")  # TRL logs rewards by function name
    reward.__qualname__ = reward.__name__
    return reward


def pm_reward(pm: str, weight: float = 1.0, batch_size: int = 16, scope: str = "all") -> RewardFunc:
    """The reward of a preference model from `cai train-pm`: (r - mean) / std of its held-out rewards, on the part
    of each completion `scope` names (the constitution's `scope: answer` grades the answer only, as R1's
    helpfulness reward looks at the final summary only)."""
    from cai.signals.rewardmodels import check_pm, rewards

    check_pm(pm, "pm")

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float | None]:
        items = [(_messages(p), answer.scoped(_text(c), scope)) for p, c in zip(prompts, completions, strict=True)]
        return [weight * s for s in rewards(pm, items, batch_size=batch_size)["scores"]]

    reward.__name__ = reward.__qualname__ = "preference_model"
    return reward


def reward_funcs(
    constitution: str | Path | Constitution, pm: str | None = None, weights: dict[str, float] | None = None
) -> list[RewardFunc]:
    """Reward functions for TRL's GRPOTrainer from `constitution` (a file, a shipped name or a loaded one):
    one per principle with rules, then one for the preference model `pm` if given. `weights` scales a
    function's output by its name (a principle id, or "pm"); GRPOConfig's reward_weights works as well."""
    const = constitution if isinstance(constitution, Constitution) else load(constitution)
    weights = dict(weights or {})
    ruled = [p for p in const.principles if p.rules]
    known = {p.id for p in ruled} | {"pm"}
    unknown = sorted(set(weights) - known)
    if unknown:
        raise CaiError(
            f"weights: {unknown[0]!r} is neither a principle with rules in {const.path} nor 'pm' "
            f"(known: {', '.join(sorted(known))})"
        )
    funcs = [principle_reward(p, weights.get(p.id, 1.0)) for p in ruled]
    if pm is not None:
        funcs.append(pm_reward(pm, weights.get("pm", 1.0), scope=const.scope))
    if not funcs:
        raise CaiError(f"{const.path}: no principle carries rules, and no preference model was given")
    return funcs


def remote_reward_funcs(urls: str | Sequence[str] | None = None, token: str | None = None, weights=None) -> list:
    """The same constitution served by `cai serve` on other machines, as TRL reward functions (async: TRL awaits
    them concurrently), spread over `urls` with failover (cai.commands.serve.client)."""
    from cai.commands.serve.client import remote_reward_funcs as remote

    return remote(urls, token, weights)
