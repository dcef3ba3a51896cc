"""The typed records every stage shares: the chat-message schema, failures, skips and a chunk's result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cai.backends.base import Completion
from cai.core.constitution import Constitution


@dataclass(frozen=True)
class Failure:
    """Why something produced no value: kept in the slot of the value, never replaced by a default."""

    reason: str


@dataclass(frozen=True)
class Skip:
    """A prompt that a stage could not turn into a row, with the reason (skipped.jsonl)."""

    id: str
    reason: str


@dataclass
class ChunkResult:
    """What a stage made of one chunk of prompts: its rows (in the split's schema), its skips, and the
    engine's token accounting."""

    rows: list[dict] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    prompt_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, found in the engine's prefix cache
    output_tokens: int = 0
    truncated: int = 0  # turns cut by max_tokens (kept, but worth knowing)

    def tally(self, completion: Completion) -> None:
        self.prompt_tokens += completion.prompt_tokens
        self.cached_tokens += completion.cached_tokens
        self.output_tokens += completion.tokens
        self.truncated += completion.finish_reason == "length"

    def skip(self, prompt_id: str, reason: str) -> None:
        self.skips.append(Skip(prompt_id, reason))

    def add(self, other: ChunkResult) -> None:
        """Fold another result in (the streaming executor gathers one per prompt into a shard)."""
        self.rows += other.rows
        self.skips += other.skips
        self.prompt_tokens += other.prompt_tokens
        self.cached_tokens += other.cached_tokens
        self.output_tokens += other.output_tokens
        self.truncated += other.truncated


def with_system(constitution: Constitution, messages: Sequence[dict]) -> list[dict]:
    """The prompt's own messages as the model is asked to answer them: behind the constitution's system prompt
    (unless the prompt brings one) and its answered examples (after the prompt's own system message, if any).
    The rows keep the prompt as given: the examples are how it was asked, not what the data teaches."""
    out = [dict(m) for m in messages]
    system = [out.pop(0)] if out and out[0]["role"] == "system" else []
    if not system and constitution.system:
        system = [{"role": "system", "content": constitution.system}]
    shown = [
        {"role": role, "content": text}
        for e in constitution.examples
        for role, text in (("user", e.prompt), ("assistant", e.answer))
    ]
    return system + shown + out


def continued(question: str, prefix: str) -> list[dict]:
    """A question, and the start of the answer for the model to continue (a judge's forced prefix)."""
    return [{"role": "user", "content": question}, {"role": "assistant", "content": prefix}]


def assistant(text: str) -> list[dict]:
    """One assistant turn as a message list (TRL's completion / chosen / rejected shape)."""
    return [{"role": "assistant", "content": text}]
