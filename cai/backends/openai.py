"""A backend for OpenAI-compatible servers (`vllm serve` first): many URLs, bounded concurrency, retries."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cai.backends.base import Backend, Completion, Sampling, failed
from cai.backends.load import Meter
from cai.backends.retries import transient_status
from cai.errors import CaiError
from cai.settings import setting

if TYPE_CHECKING:
    from cai.config import RunConfig

log = logging.getLogger(__name__)


class _Transient(Exception):
    """A failure a retry can fix: connection trouble, timeout, 429, 5xx."""


class _Refused(Exception):
    """The server refused the request itself (4xx): retrying would not help."""


@dataclass(frozen=True)
class ServerOptions:
    base_url: str | None = setting(None, "Server URL(s), comma-separated (e.g. http://127.0.0.1:8000).")
    api_key: str | None = setting(None, "API key, if the server wants one.")
    concurrency: int = setting(64, "Requests in flight across all servers.", minimum=1)
    max_attempts: int = setting(6, "Tries per request on transient errors (connection, timeout, 429, 5xx).", minimum=1)
    retry_seconds: float = setting(300.0, "Stop retrying a request after this many seconds.", above=0)


class OpenAIBackend(Backend):
    """Spreads requests over `base_urls` with at most `concurrency` in flight across every call; results come
    back in input order. Every request is its own task on one event loop (a thread of its own), so calls
    from many threads (the streaming executor's chains) share the servers with no barrier between them.
    Transient failures are retried with exponential backoff and jitter, up to `attempts` tries or
    `retry_seconds`; a request that still fails comes back with its reason (the run records it in
    skipped.jsonl, and a rerun retries exactly those)."""

    settings = (ServerOptions,)
    concurrent = True

    def __init__(
        self,
        base_urls: list[str],
        model: str | None = None,
        *,
        api_key: str | None = None,
        concurrency: int = 64,
        attempts: int = 6,
        retry_seconds: float = 300.0,
        request_timeout: float = 600.0,
        progress: bool = True,
    ):
        import httpx

        if not base_urls:
            raise CaiError("--backend openai needs --base-url URL[,URL...]")
        self.base_urls = [u.rstrip("/").removesuffix("/v1") for u in base_urls]
        self.concurrency, self.attempts, self.retry_seconds = concurrency, attempts, retry_seconds
        self.timeout = request_timeout
        self.progress = progress
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._httpx = httpx
        self.model = self._served_model(model)
        self._option_ids: dict[tuple[str, ...], dict[str, int] | None] = {}  # per option set
        self._options_lock = threading.Lock()
        self.slots = concurrency
        self.meter: Meter = Meter(concurrency, "requests in flight, counted by cai")
        self._in_flight = 0
        self._turn = itertools.count()  # round-robin over the servers, across calls
        self._started = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client = None
        self._gate: asyncio.Semaphore | None = None

    @classmethod
    def from_config(cls, config: RunConfig) -> OpenAIBackend:
        o = config.options(ServerOptions)
        urls = [u.strip() for u in (o.base_url or "").split(",") if u.strip()]
        return cls(
            urls,
            config.run.model,
            api_key=o.api_key,
            concurrency=o.concurrency,
            attempts=o.max_attempts,
            retry_seconds=o.retry_seconds,
        )

    def _served_model(self, wanted: str | None) -> str:
        """The served model name: `wanted` if the server lists it, else the server's only model."""
        try:
            r = self._httpx.get(f"{self.base_urls[0]}/v1/models", headers=self.headers, timeout=30)
            r.raise_for_status()
            ids = [m["id"] for m in r.json().get("data", [])]
        except Exception as e:
            raise CaiError(
                f"--base-url {self.base_urls[0]}: no OpenAI-compatible server answers "
                f"({type(e).__name__}); start one with `vllm serve MODEL`"
            ) from None
        if wanted is not None and wanted in ids:
            return wanted
        if len(ids) == 1:
            return ids[0]
        raise CaiError(f"--model {wanted!r}: the server serves {', '.join(ids) or 'nothing'}; name one of them")

    def _options(self, options: tuple[str, ...]) -> dict[str, int] | None:
        """Token ids of the options (the judge's letters, the meta judge's " Yes"/" No") from vLLM's
        /tokenize, so their log-probs are requested exactly (logprob_token_ids). Servers without it
        fall back to the top-20 log-probs. Looked up once per option set."""
        with self._options_lock:
            return self._lookup(options)

    def _lookup(self, options: tuple[str, ...]) -> dict[str, int] | None:
        if options not in self._option_ids:
            ids: dict[str, int] = {}
            for opt in options:
                try:
                    r = self._httpx.post(
                        f"{self.base_urls[0]}/tokenize",
                        headers=self.headers,
                        timeout=30,
                        json={"model": self.model, "prompt": opt, "add_special_tokens": False},
                    )
                    r.raise_for_status()
                    tokens = r.json()["tokens"]
                except Exception:
                    self._option_ids[options] = None
                    return None
                if len(tokens) != 1:
                    raise CaiError(
                        f"option {opt!r} is {len(tokens)} tokens for {self.model}; options must be one token"
                    )
                ids[opt] = tokens[0]
            self._option_ids[options] = ids
        return self._option_ids[options]

    def _body(self, chat, sampling: Sampling, seed):
        body = {
            "model": self.model,
            "messages": chat,
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "n": sampling.n,
        }
        if seed is not None:
            body["seed"] = seed
        if sampling.continue_final:
            body.update(add_generation_prompt=False, continue_final_message=True)
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.ignore_eos:
            body["ignore_eos"] = True
        if sampling.regex is not None:
            body["structured_outputs"] = {"regex": sampling.regex}  # vLLM's server; others ignore unknown keys
        if sampling.options:
            ids = self._options(sampling.options)
            body.update(max_tokens=1, temperature=1.0, n=1, logprobs=True, top_logprobs=20)
            if ids:
                body.update(logprob_token_ids=list(ids.values()), allowed_token_ids=list(ids.values()))
        return body

    def generate(self, chats, sampling: Sampling, seeds=None):
        if not chats:
            return []
        bodies = [self._body(c, sampling, None if seeds is None else seeds[i]) for i, c in enumerate(chats)]
        return asyncio.run_coroutine_threadsafe(self._all(bodies, sampling), self._event_loop()).result()

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The one loop all requests run on, started on first use."""
        with self._started:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="cai-server-loop", daemon=True)
                self._thread.start()
            return self._loop

    async def _all(self, bodies, sampling):
        from tqdm.auto import tqdm

        if self._client is None:  # made on the loop, shared by every call: one connection pool, one limit
            limits = self._httpx.Limits(max_connections=self.concurrency)
            self._client = self._httpx.AsyncClient(timeout=self.timeout, limits=limits, headers=self.headers)
            self._gate = asyncio.Semaphore(self.concurrency)
        client, gate = self._client, self._gate
        assert gate is not None
        bar = tqdm(total=len(bodies), desc=sampling.label, disable=not (self.progress and sampling.label))

        async def one(body):
            async with gate:
                url = self.base_urls[next(self._turn) % len(self.base_urls)]
                self._in_flight += 1
                self.meter.sample(self._in_flight)
                try:
                    out = await self._request(client, url, body, sampling)
                finally:
                    self._in_flight -= 1
                    self.meter.sample(self._in_flight)
                bar.update(1)
                return out

        results = await asyncio.gather(*(one(b) for b in bodies))
        bar.close()
        return list(results)

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if self._client is not None:
            asyncio.run_coroutine_threadsafe(self._client.aclose(), loop).result(timeout=30)
            self._client = None
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)
        loop.close()

    async def _request(self, client, url, body, sampling) -> list[Completion]:
        from tenacity import (
            AsyncRetrying,
            retry_if_exception_type,
            stop_after_attempt,
            stop_after_delay,
            wait_random_exponential,
        )

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_Transient),
                reraise=True,
                stop=stop_after_attempt(self.attempts) | stop_after_delay(self.retry_seconds),
                wait=wait_random_exponential(multiplier=0.5, max=30),
            ):
                with attempt:
                    data = await self._post(client, url, body)
        except _Transient as e:
            n = attempt.retry_state.attempt_number
            return failed(f"server: {e} (gave up after {n} attempt(s))", max(1, body["n"]))
        except _Refused as e:
            return failed(f"server: {e}", max(1, body["n"]))
        prompt_tokens = (data.get("usage") or {}).get("prompt_tokens", 0)
        out = []
        for i, choice in enumerate(data["choices"]):
            lp = {}
            content = (choice.get("logprobs") or {}).get("content") or []
            if sampling.options and content:
                lp = _option_logprobs(content[0].get("top_logprobs", []), sampling.options)
            text = choice["message"].get("content") or ""
            out.append(
                Completion(
                    text=text,
                    tokens=(data.get("usage") or {}).get("completion_tokens", 0) // len(data["choices"]),
                    finish_reason=choice.get("finish_reason") or "stop",
                    option_logprobs=lp,
                    prompt_tokens=prompt_tokens if i == 0 else 0,  # n choices share one prompt: counted once
                )
            )
        return out

    async def _post(self, client, url, body) -> dict:
        httpx = self._httpx
        try:
            r = await client.post(f"{url}/v1/chat/completions", json=body)
        except (httpx.TransportError, httpx.TimeoutException) as e:
            raise _Transient(f"{url}: {type(e).__name__}") from None
        if transient_status(r.status_code):
            raise _Transient(f"{url}: HTTP {r.status_code}")
        if r.status_code >= 400:
            try:
                message = r.json().get("error", {}).get("message") or r.text
            except ValueError:
                message = r.text
            raise _Refused(f"HTTP {r.status_code}: {str(message).splitlines()[0][:300]}")
        return r.json()


def _option_logprobs(top: list[dict], options: tuple[str, ...]) -> dict[str, float]:
    """The options' log-probs among the returned tokens: the exact token, else one equal up to spaces
    (servers differ in how they print a leading-space token such as " Yes")."""
    out: dict[str, float] = {}
    for opt in options:
        match = [t for t in top if t["token"] == opt] or [t for t in top if t["token"].strip() == opt.strip()]
        if match:
            out[opt] = match[0]["logprob"]
    return out
