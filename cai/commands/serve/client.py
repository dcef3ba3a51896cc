"""Clients of `cai serve`: TRL reward functions that call it, and verl's custom reward function.

Requests are spread over the given servers in turn; a server that does not answer, answers 5xx or 429 (its queue
is full) is skipped for the next, up to `attempts` tries with a short growing pause, so a replica that dies loses
no request while another answers. A 4xx other than 429 is the request's own fault and is raised at once.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cai.errors import CaiError

RETRY = {429, 500, 502, 503, 504}


def _urls(urls: str | Sequence[str] | None) -> list[str]:
    given = urls if urls is not None else os.environ.get("CAI_SERVE_URL", "")
    found = [u.strip().rstrip("/") for u in (given.split(",") if isinstance(given, str) else given) if u.strip()]
    if not found:
        raise CaiError("no reward server: give its URL(s) or set CAI_SERVE_URL")
    return found


def _token(token: str | None) -> str:
    token = token or os.environ.get("CAI_SERVE_TOKEN")
    if not token:
        raise CaiError("no token for the reward server: give it or set CAI_SERVE_TOKEN")
    return token


class Servers:
    """Round-robin over reward servers, with failover (thread- and task-safe: one counter under a lock)."""

    def __init__(self, urls: str | Sequence[str] | None, token: str | None, attempts: int = 6, timeout: float = 120.0):
        self.urls, self.token = _urls(urls), _token(token)
        self.attempts, self.timeout = max(attempts, len(self.urls)), timeout
        self._next = itertools.cycle(range(len(self.urls)))
        self._lock = threading.Lock()
        self.failovers = 0  # requests that went to another server after one failed

    def _pick(self) -> str:
        with self._lock:
            return self.urls[next(self._next)]

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _failed(self, status: int | None, text: str, url: str) -> None:
        if status is not None and status not in RETRY:
            raise CaiError(f"reward server {url}: {status} {text[:200]}")

    async def apost(self, path: str, body: dict) -> dict:
        import httpx

        last = ""
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            for attempt in range(self.attempts):
                url = self._pick()
                try:
                    r = await client.post(url + path, json=body, headers=self._headers())
                    if r.status_code == 200:
                        return r.json()
                    self._failed(r.status_code, r.text, url)
                    last = f"{url}: {r.status_code}"
                except httpx.TransportError as e:
                    last = f"{url}: {type(e).__name__}"
                self.failovers += 1
                await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
        raise CaiError(f"no reward server answered after {self.attempts} attempts (last: {last})")

    def post(self, path: str, body: dict) -> dict:
        """`apost` for a caller that is not a coroutine (verl's reward managers call a plain function): run in a
        loop of its own, on a thread of its own, so it works whether or not the caller's thread runs a loop."""
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self.apost(path, body)).result()


def _text(completion: Any) -> str:
    return completion if isinstance(completion, str) else str(completion[-1]["content"])


def _prompt(prompt: Any) -> Any:
    return prompt if isinstance(prompt, str) else [{"role": m["role"], "content": m["content"]} for m in prompt]


def remote_reward_funcs(
    urls: str | Sequence[str] | None = None, token: str | None = None, weights: dict[str, float] | None = None
) -> list:
    """TRL GRPOTrainer reward functions (async: TRL awaits them concurrently) that ask `cai serve` for the reward of
    each completion; a dataset's `reference` column is sent as each item's reference."""
    servers = Servers(urls, token)

    async def cai_remote(
        prompts: Sequence[Any], completions: Sequence[Any], reference: Sequence[Any] | None = None, **_: Any
    ) -> list[float | None]:
        refs = list(reference) if reference is not None else [None] * len(completions)
        items = [
            {"prompt": _prompt(p), "response": _text(c), "reference": None if r is None else str(r)}
            for p, c, r in zip(prompts, completions, refs, strict=True)
        ]
        body: dict[str, Any] = {"items": items}
        if weights is not None:
            body["weights"] = weights
        return (await servers.apost("/v1/rewards", body))["rewards"]

    cai_remote.servers = servers  # type: ignore[attr-defined]  # for a caller that wants the failover count
    return [cai_remote]


@functools.lru_cache(maxsize=8)
def _servers(url: str | None, token: str | None) -> Servers:
    """One round-robin per (servers, token) in a process: verl calls the function once per sample."""
    return Servers(url, token)


def verl_compute_score(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    url: str | None = None,
    token: str | None = None,
) -> dict:
    """verl's custom reward function, called by its reward manager with these four arguments by name (point
    `custom_reward_function.path` at a file that imports it): {"score", "reward", **components}; the prompt is
    `extra_info["question"]` where the data gives it; the server in `url` or CAI_SERVE_URL."""
    prompt = (extra_info or {}).get("question") or ""
    item = {
        "prompt": prompt or " ",
        "response": solution_str,
        "reference": None if ground_truth is None else str(ground_truth),
    }
    got = _servers(url, token).post("/v1/rewards", {"items": [item]})["items"][0]
    reward = got["reward"] if got["reward"] is not None else 0.0
    # verl's reward managers read "score" (0.4 on) or "reward" (its earlier NaiveRewardManager): both are given
    return {"score": reward, "reward": reward, **{k: v for k, v in got["components"].items() if v is not None}}
