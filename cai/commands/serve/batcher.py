"""Dynamic batching: items from concurrent requests go to a trained model together.

A request's items join a queue; one worker takes the first waiting items, waits at most `deadline` seconds for
more (up to `max_batch`), runs the model once on all of them in a thread (one batch at a time: the model's CPU
threads or GPU are not shared between batches), and hands each request its own results. A failure of the model
fails the requests of that batch with its reason, and the next batch runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any


class Batcher:
    def __init__(self, run: Callable[[list[Any]], list[Any]], max_batch: int = 64, deadline: float = 0.005):
        self.run, self.max_batch, self.deadline = run, max_batch, deadline
        self.queue: asyncio.Queue[tuple[list[Any], asyncio.Future]] = asyncio.Queue()
        self.batches = 0  # batches run, and the items in them: how well requests were merged
        self.items = 0
        self._task: asyncio.Task | None = None

    async def submit(self, items: Sequence[Any]) -> list[Any]:
        if self._task is None:
            self._task = asyncio.create_task(self._work())
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self.queue.put((list(items), future))
        return await future

    async def _work(self) -> None:
        while True:
            waiting = [await self.queue.get()]
            size = len(waiting[0][0])
            stop = asyncio.get_running_loop().time() + self.deadline
            while size < self.max_batch:
                left = stop - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self.queue.get(), left)
                except TimeoutError:
                    break
                waiting.append(nxt)
                size += len(nxt[0])
            flat = [x for items, _ in waiting for x in items]
            try:
                results = await asyncio.to_thread(self.run, flat)
            except Exception as e:  # the model failed on this batch: its requests get the reason, the next runs
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(e)
                continue
            self.batches += 1
            self.items += len(flat)
            at = 0
            for items, future in waiting:
                if not future.done():
                    future.set_result(results[at : at + len(items)])
                at += len(items)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
