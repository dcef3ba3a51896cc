"""The Backend protocol: one batched `generate` call, order in = order out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from cai.backends.load import Meter
from cai.settings import setting

if TYPE_CHECKING:
    from cai.config import RunConfig


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    n: int = 1
    # When set, generate exactly one token and return the log-probabilities of these single-token
    # strings (the option letters of a multiple-choice question) from the model's own distribution.
    options: tuple[str, ...] = ()
    # The last message is an assistant turn to continue (an answer prefix such as "The answer is: (").
    continue_final: bool = False
    stop: tuple[str, ...] = ()  # stop generating at any of these strings (not included in the text)
    # Structured output: the text must match this regular expression (vLLM's guided decoding). Engines that
    # cannot constrain ignore it, so callers still validate what comes back.
    regex: str | None = None
    ignore_eos: bool = False  # benchmarks only: makes token counts equal across the compared runs
    # Benchmarks only: False keeps each request from reusing any other's cached prefix (a cache salt of its
    # own), to measure what prefix sharing saves.
    share_prefix: bool = True
    label: str = ""  # shown on the progress bar


@dataclass
class Completion:
    text: str = ""
    tokens: int = 0  # output tokens
    finish_reason: str = "stop"  # "stop" | "length" | "error"
    option_logprobs: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # why this request produced nothing; the caller records it, never drops it
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the engine found in its prefix cache (not computed again)

    @property
    def ok(self) -> bool:
        return self.error is None


def failed(reason: str, n: int = 1) -> list[Completion]:
    return [Completion(finish_reason="error", error=reason) for _ in range(n)]


def option_probability(logprobs: dict[str, float], first: str = "A", second: str = "B") -> float:
    """P(first) / (P(first) + P(second)), computed stably from log-probabilities."""
    return 1.0 / (1.0 + math.exp(logprobs[second] - logprobs[first]))


@dataclass(frozen=True)
class ContextOptions:
    """The context limit, for backends that check it before sending a request."""

    max_model_len: int = setting(
        4096, "Context length; longer requests are skipped, with the reason recorded.", minimum=1
    )


class Backend:
    """An engine. Subclasses implement `generate`; everything else has a working default.

    `generate(chats, sampling, seeds)` returns, for every chat, `sampling.n` completions, in input order. A
    request that fails comes back as a Completion with `error` set, so one bad prompt never sinks the rest.
    `seeds` (one per chat) make sampling reproducible whatever the batch it lands in.

    The streaming executor calls `generate` from many threads at once (one prompt's chain each): a backend
    that sets `concurrent` serves every call in flight together, so a request joins the engine's running
    batch as soon as it is made; for one that does not, the executor makes the calls one at a time.
    `slots` is how many requests the engine runs at once (how many prompts to keep in flight), and `meter`,
    where the engine can tell, samples how many it is running.
    """

    settings: ClassVar[tuple[type, ...]] = ()  # its settings groups (cai.settings); the CLI makes flags of them
    model = ""
    concurrent: ClassVar[bool] = False
    slots = 1
    meter: Meter | None = None
    progress = False  # draw a progress bar for each labelled call (the streaming executor draws its own)

    @classmethod
    def check(cls, config: RunConfig, temperatures: dict[str, float]) -> None:
        """What can be wrong with this run on this engine, before it starts (`temperatures`: the sampling
        temperatures the run's stages sample at, by setting); raise CaiError naming it."""

    @classmethod
    def from_config(cls, config: RunConfig) -> Backend:
        raise NotImplementedError

    def generate(
        self, chats: list[list[dict]], sampling: Sampling, seeds: list[int] | None = None
    ) -> list[list[Completion]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
