"""A deterministic engine for tests and dry runs: same protocol, same failure modes, no model.

It behaves like a real engine where the pipeline can tell: replies depend only on the chat and the
seed, `n` samples differ from each other, long prompts are refused by the context limit, option
log-probs come back for the option letters, and requests can fail one by one. Tests shape it through
its constructor (`reply=`, `judge=`), the CLI through `CAI_SCRIPTED_*` variables.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import TYPE_CHECKING

from cai.backends.base import Backend, Completion, ContextOptions, Sampling, failed

if TYPE_CHECKING:
    from cai.config import RunConfig


def _digest(*parts) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()


def default_reply(chat, sampling: Sampling, seed, index) -> str:
    last = chat[-1]["content"]
    h = _digest(chat, seed, index)[:8]
    if chat[-1]["role"] == "assistant":
        if last.endswith("[["):  # a forced score prefix: answer in the format, like an obliging model
            return f"{int(h[:2], 16) % 10 + 1}, {int(h[2:4], 16) % 10 + 1}]]"
        return f" the reasoning {h} weighs both options."
    if last.startswith("Critique request"):
        return f"Critique {h}: the answer could be safer."
    if last.startswith("Revision request"):
        return f"Revised answer {h}."
    return f"Answer {h} to: {last[:40]}"


def default_judge(chat, options) -> dict[str, float]:
    """Log-probs that depend on the chat only, so both orders of a pair get different, fixed values."""
    h = int(_digest(chat)[:8], 16)
    return {opt: -((h >> (4 * i)) % 16) / 4.0 - 0.1 for i, opt in enumerate(options)}


class ScriptedBackend(Backend):
    settings = (ContextOptions,)
    concurrent = True  # replies depend on the chat and seed only: any number of calls may run at once
    slots = 8

    def __init__(
        self,
        model="scripted",
        *,
        reply=default_reply,
        judge=default_judge,
        max_model_len=4096,
        fail_on: str | None = None,
        delay: float = 0.0,
    ):
        self.model = model
        self.reply = reply
        self.judge = judge
        self.max_model_len = max_model_len
        self.fail_on = fail_on  # a request whose chat contains this text fails inside the "engine"
        self.delay = delay  # seconds per generate call, so a test can kill a run mid-way
        self.calls: list[tuple[int, Sampling]] = []  # (batch size, sampling) per call, for batching tests
        self._lock = threading.Lock()
        self.in_flight = self.peak = 0  # calls running now, and the most at once (for the executor's tests)

    @classmethod
    def from_config(cls, config: RunConfig) -> ScriptedBackend:
        return cls(
            model=config.run.model,
            max_model_len=config.options(ContextOptions).max_model_len,
            fail_on=os.environ.get("CAI_SCRIPTED_FAIL_ON") or None,
            delay=float(os.environ.get("CAI_SCRIPTED_DELAY", "0")),
        )

    @staticmethod
    def count_tokens(chat) -> int:
        return sum(len(m["content"].split()) + 4 for m in chat)

    def generate(self, chats, sampling: Sampling, seeds=None):
        self.calls.append((len(chats), sampling))
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            return self._replies(chats, sampling, seeds)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _replies(self, chats, sampling: Sampling, seeds):
        out = []
        for i, chat in enumerate(chats):
            seed = None if seeds is None else seeds[i]
            prompt_tokens = self.count_tokens(chat)
            budget = 1 if sampling.options else sampling.max_tokens
            if prompt_tokens + budget > self.max_model_len:
                out.append(
                    failed(
                        f"context: the request needs {prompt_tokens} + {budget} tokens, "
                        f"more than max_model_len {self.max_model_len}",
                        sampling.n,
                    )
                )
                continue
            if self.fail_on and any(self.fail_on in m["content"] for m in chat):
                out.append(failed(f"engine: request failed (scripted failure on {self.fail_on!r})", sampling.n))
                continue
            if sampling.options:
                lp = self.judge(chat, sampling.options)
                text = max(lp, key=lp.get)
                out.append([Completion(text=text, tokens=1, option_logprobs=lp, prompt_tokens=prompt_tokens)])
                continue
            samples = []
            for k in range(sampling.n):
                reply = self.reply(chat, sampling, seed, k)
                for stop in sampling.stop:  # like a real engine: cut at a stop string, drop it
                    reply = reply.split(stop, 1)[0]
                words = reply.split(" ")
                cut = len(words) > sampling.max_tokens
                text = " ".join(words[: sampling.max_tokens])
                samples.append(
                    Completion(
                        text=text,
                        tokens=min(len(words), sampling.max_tokens),
                        finish_reason="length" if cut else "stop",
                        prompt_tokens=prompt_tokens,
                    )
                )
            out.append(samples)
        return out
