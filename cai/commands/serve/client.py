"""Clients of `cai serve`: TRL reward functions that call it, and verl's custom reward function.

Requests are spread over the given servers in turn; a server that does not answer, answers 5xx or 429 (its queue
is full) is skipped for the next, up to `attempts` tries with a short growing pause, so a replica that dies loses
no request while another answers. A 4xx other than 429 is the request's own fault and is raised at once (Refused).
Connections are kept open: one pool per event loop for the async clients, one for the process for the sync one.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from cai.core.columns import text_of
from cai.errors import CaiError

RETRY = {429, 500, 502, 503, 504}


def _limits() -> Any:
    """As many kept-open connections as requests a trainer's loop is likely to have in flight at once."""
    import httpx

    return httpx.Limits(max_connections=64, max_keepalive_connections=64)


class Refused(CaiError):
    """The server refused the request itself (a 4xx other than 429): retrying it elsewhere would not help."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


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
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._sync: Any = None
        self._signals: list[str] | None = None

    def signals(self) -> list[str]:
        """The components the servers compute (their /health), asked once."""
        if self._signals is None:
            self._signals = list(self.post("/health")["signals"])
        return self._signals

    async def asignals(self) -> list[str]:
        if self._signals is None:
            self._signals = list((await self.apost("/health"))["signals"])
        return self._signals

    def _pick(self) -> str:
        with self._lock:
            return self.urls[next(self._next)]

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _failed(self, status: int | None, text: str, url: str) -> None:
        if status is not None and status not in RETRY:
            raise Refused(status, f"reward server {url}: {status} {text[:200]}")

    def _pause(self, attempt: int) -> float:
        self.failovers += 1
        return min(2.0, 0.05 * 2**attempt)

    def _aclient(self) -> Any:
        """This event loop's kept-open client: an httpx.AsyncClient is bound to the loop it first ran on, and a new
        client per request (with a thread and a loop of its own) cost about 70 ms a call against 2.7 ms for the
        request itself."""
        import httpx

        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None or client.is_closed:
            client = self._aclients[loop] = httpx.AsyncClient(timeout=self.timeout, limits=_limits())
        return client

    def _client(self) -> Any:
        import httpx

        with self._lock:
            if self._sync is None or self._sync.is_closed:
                self._sync = httpx.Client(timeout=self.timeout, limits=_limits())  # thread-safe: one pool for all
            return self._sync

    async def apost(self, path: str, body: dict | None = None) -> dict:
        """POST `body` (GET without one) to the next server, failing over; one kept-open client per event loop."""
        import httpx

        client, last = self._aclient(), ""
        for attempt in range(self.attempts):
            url = self._pick()
            try:
                if body is None:
                    r = await client.get(url + path)
                else:
                    r = await client.post(url + path, json=body, headers=self._headers())
                if r.status_code == 200:
                    return r.json()
                self._failed(r.status_code, r.text, url)
                last = f"{url}: {r.status_code}"
            except httpx.TransportError as e:
                last = f"{url}: {type(e).__name__}"
            await asyncio.sleep(self._pause(attempt))
        raise CaiError(f"no reward server answered after {self.attempts} attempts (last: {last})")

    def post(self, path: str, body: dict | None = None) -> dict:
        """`apost` for a caller that is not a coroutine (verl's older reward managers call a plain function, from
        threads): one kept-open client for the process, whether or not the caller's thread runs a loop."""
        import httpx

        client, last = self._client(), ""
        for attempt in range(self.attempts):
            url = self._pick()
            try:
                if body is None:
                    r = client.get(url + path)
                else:
                    r = client.post(url + path, json=body, headers=self._headers())
                if r.status_code == 200:
                    return r.json()
                self._failed(r.status_code, r.text, url)
                last = f"{url}: {r.status_code}"
            except httpx.TransportError as e:
                last = f"{url}: {type(e).__name__}"
            time.sleep(self._pause(attempt))
        raise CaiError(f"no reward server answered after {self.attempts} attempts (last: {last})")


def _text(completion: Any) -> str:
    text = text_of(completion)
    if text is None:
        raise CaiError(f"a completion must be text or chat messages, got {type(completion).__name__}")
    return text


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


def verl_result(item: dict | None, signals: Sequence[str]) -> dict[str, float]:
    """verl's dict for one sample, with the same keys for every sample a server scores (verl builds its extra-info
    columns from the first sample's keys and indexes every other sample by them): `score` and `reward` (0.0 when
    nothing could be scored: verl adds it to the token rewards, where a NaN would poison the whole step), each of
    the server's signals (NaN where that signal failed on this sample) and `errors`, how many checks failed on it
    (a sample the server refused outright counts one)."""
    reward = None if item is None else item["reward"]
    components = {} if item is None else item["components"]
    score = 0.0 if reward is None else float(reward)
    out = {"score": score, "reward": score}
    for name in signals:
        value = components.get(name)
        out[name] = float("nan") if value is None else float(value)
    out["errors"] = float(1 if item is None else len(item["errors"]))
    return out


def verl_item(solution_str: str, ground_truth: Any, extra_info: dict | None) -> dict:
    """One /v1/rewards item from verl's arguments: the prompt is `extra_info["question"]` where the data gives it."""
    prompt = (extra_info or {}).get("question") or ""
    return {
        "prompt": str(prompt) or " ",
        "response": solution_str,
        "reference": None if ground_truth is None else str(ground_truth),
    }


@functools.lru_cache(maxsize=8)
def servers_for(url: str | None, token: str | None) -> Servers:
    """One round-robin and connection pool per (servers, token) in a process: verl calls once per sample."""
    return Servers(url, token)


def verl_compute_score(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    url: str | None = None,
    token: str | None = None,
) -> dict:
    """verl's custom reward function for a caller that calls it synchronously, one sample a call, on a kept-open
    connection (verl 0.9's reward loop awaits `cai.commands.serve.verl.compute_score`, which batches the calls that
    arrive together). The server in `url` or CAI_SERVE_URL, the token in `token` or CAI_SERVE_TOKEN."""
    servers = servers_for(url, token)
    signals = servers.signals()
    try:
        got = servers.post("/v1/rewards", {"items": [verl_item(solution_str, ground_truth, extra_info)]})["items"][0]
    except Refused:  # this sample's own fault (too large for the server, say): it earns nothing, with an error
        got = None
    return verl_result(got, signals)
