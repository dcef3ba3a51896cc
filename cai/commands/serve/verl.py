"""verl's reward function over `cai serve`: an async `compute_score` that sends the calls arriving together as one.

verl 0.9's reward loop (`RewardLoopWorker` with its default naive reward manager) calls the custom reward function
once per sample, every sample of its chunk a task on one event loop, and awaits it when it is a coroutine
function. Each call here joins its loop's open batch; a batch goes to `/v1/rewards` as one request when it holds
`max_items` items (or `max_chars` characters of text), or `window` seconds after its first item, on the loop's
kept-open connection pool, with the clients' failover and retries. A batch the server refuses outright (a 4xx
other than 429: too large, an item it cannot read) is split in halves until the sample at fault is alone; that
sample earns nothing and counts an error, and the others are scored. Servers that do not answer at all raise
inside verl, with the reason: a step trained on made-up rewards is worse than a stopped one.

    # reward.py, named by reward.custom_reward_function.path (name: compute_score)
    from cai.commands.serve.verl import compute_score
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from dataclasses import dataclass, field
from typing import Any

from cai.commands.serve.client import Refused, Servers, servers_for, verl_compute_score, verl_item, verl_result
from cai.errors import CaiError

WINDOW = 0.005  # seconds a batch waits for more calls after its first: verl's tasks arrive within microseconds
MAX_ITEMS = 256  # under `cai serve --max-items` (512 by default)
MAX_CHARS = 300_000  # text per request, under `cai serve --max-body` (1 MiB by default) with JSON's escapes

# verl's older reward managers call a plain function: the same keys, one sample a request on a kept-open client
compute_score_sync = verl_compute_score


@dataclass
class _Batch:
    items: list[dict] = field(default_factory=list)
    futures: list[asyncio.Future] = field(default_factory=list)
    chars: int = 0
    timer: asyncio.TimerHandle | None = None


class Coalescer:
    """Samples scored one call at a time, sent to the servers in batches (one open batch per event loop)."""

    def __init__(
        self, servers: Servers, window: float = WINDOW, max_items: int = MAX_ITEMS, max_chars: int = MAX_CHARS
    ):
        self.servers, self.window, self.max_items, self.max_chars = servers, window, max_items, max_chars
        self._open: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batch] = weakref.WeakKeyDictionary()
        self._signals: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = weakref.WeakKeyDictionary()
        self._sending: set[asyncio.Task] = set()  # held so a send in flight is not collected
        self.requests = 0  # requests sent and samples in them: how well the calls were merged
        self.samples = 0

    async def score(self, item: dict) -> dict[str, float]:
        loop = asyncio.get_running_loop()
        asked = self._signals.get(loop)
        if asked is None or (asked.done() and (asked.cancelled() or asked.exception() is not None)):
            # one /health per loop, however many calls wait for it; asked again after servers that did not answer
            asked = self._signals[loop] = loop.create_task(self.servers.asignals())
        signals = await asked
        size = len(item["response"]) + len(item["prompt"]) + len(item["reference"] or "")
        batch = self._open.get(loop)
        if batch is not None and batch.chars + size > self.max_chars:
            self._flush(loop, batch)
            batch = None
        if batch is None:
            batch = self._open[loop] = _Batch()
            batch.timer = loop.call_later(self.window, self._flush, loop, batch)
        future = loop.create_future()
        batch.items.append(item)
        batch.futures.append(future)
        batch.chars += size
        if len(batch.items) >= self.max_items:
            self._flush(loop, batch)
        return verl_result(await future, signals)

    def _flush(self, loop: asyncio.AbstractEventLoop, batch: _Batch) -> None:
        if self._open.get(loop) is batch:
            del self._open[loop]
        if batch.timer is not None:
            batch.timer.cancel()
        task = loop.create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: _Batch) -> None:
        try:
            got = await self._post(batch.items)
            if len(got) != len(batch.items):
                raise CaiError(f"the reward server answered {len(got)} items for {len(batch.items)}")
        except BaseException as e:  # no server answered (or answered nonsense): every waiting call gets the reason
            for future in batch.futures:
                if not future.done():
                    future.set_exception(e)
            return
        for future, one in zip(batch.futures, got, strict=True):
            if not future.done():
                future.set_result(one)

    async def _post(self, items: list[dict]) -> list[dict | None]:
        self.requests += 1
        self.samples += len(items)
        try:
            return (await self.servers.apost("/v1/rewards", {"items": items}))["items"]
        except Refused:
            if len(items) == 1:
                return [None]
            half = len(items) // 2
            first, second = await asyncio.gather(self._post(items[:half]), self._post(items[half:]))
            return first + second


@functools.lru_cache(maxsize=8)
def coalescer_for(url: str | None, token: str | None) -> Coalescer:
    return Coalescer(servers_for(url, token))


async def compute_score(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    url: str | None = None,
    token: str | None = None,
    **verl_kwargs: Any,  # what verl adds beside a reward model router (reward_router_address, its tokenizer)
) -> dict[str, float]:
    """verl's custom reward function: {"score", "reward", each signal of the server, "errors"}, the same keys for
    every sample; the prompt is `extra_info["question"]` where the data gives it; the servers in `url` or
    CAI_SERVE_URL (comma-separated), the token in `token` or CAI_SERVE_TOKEN."""
    return await coalescer_for(url, token).score(verl_item(solution_str, ground_truth, extra_info))
