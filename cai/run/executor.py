"""How a stage's prompts go through the engine, and when its rows are written.

stream (the default): every prompt is its own chain (the stage's `run` on that one prompt, in a thread of its
own), and each of its requests reaches the engine the moment the one before it finishes. With a prompt per
engine slot in flight, the engine's batch stays full: no step waits for the slowest request of another
prompt's step. Finished prompts are buffered and written as one atomic shard every `--chunk-size` prompts
or `--flush-seconds`, whichever comes first, so how often rows reach disk no longer decides how the engine
is batched.

steps: the stage's `run` on a chunk of `--chunk-size` prompts at a time, one batched engine call per step of
the chain. Every step drains the batch to its slowest request before the next starts; kept to measure
against (bench/generate.py) and for engines that gain nothing from streaming.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from cai.config import ExecutorOptions
from cai.core.records import ChunkResult

if TYPE_CHECKING:
    from cai.backends.base import Backend
    from cai.backends.load import Load
    from cai.core.context import RunContext
    from cai.core.inputs import Prompt
    from cai.stages.base import Stage

# Where finished work goes: (the stage's result for these prompts, their ids, the seconds it took). The run
# (cai.run.lifecycle) writes it as a shard, or keeps it in memory for a run without a folder.
Sink = Callable[[ChunkResult, set[str], float], None]


@dataclass
class Tally:
    """What running one stage made: rows written, tokens, time, and how full the engine was."""

    rows: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    truncated: int = 0
    seconds: float = 0.0
    load: Load | None = field(default=None)
    notes: list[str] = field(default_factory=list)  # lines for the run summary (the Ray executor's actors)

    def add(self, result: ChunkResult, seconds: float) -> None:
        self.rows += len(result.rows)
        self.prompt_tokens += result.prompt_tokens
        self.output_tokens += result.output_tokens
        self.truncated += result.truncated
        self.seconds += seconds


def run_stage(ctx: RunContext, stage: Stage, todo: list[Prompt], sink: Sink) -> Tally:
    """Run `stage` on `todo`, handing each finished part to `sink`; returns what it made."""
    tally = Tally()
    if not todo:
        return tally

    def write(result: ChunkResult, ids: set[str], seconds: float) -> None:
        sink(result, ids, seconds)
        tally.add(result, seconds)

    o = ctx.config.options(ExecutorOptions)
    stage.begin(ctx)
    engine = ctx.backend
    meter = engine.meter if engine is not None and stage.needs_engine(ctx) else None
    if meter is not None:
        meter.start()
    if o.executor == "steps":
        _steps(ctx, stage, todo, write)
    else:
        stream(ctx, stage, todo, write, o)
    if meter is not None:
        tally.load = meter.read()
    return tally


def _steps(ctx: RunContext, stage: Stage, todo: list[Prompt], write: Sink) -> None:
    size = ctx.config.run.chunk_size
    ctx.log(f"{stage.name}: {len(todo)} prompts to do in {-(-len(todo) // size)} chunk(s)")
    for start in range(0, len(todo), size):
        chunk = todo[start : start + size]
        t0 = time.monotonic()
        result = stage.run(ctx, chunk)
        write(result, {p.id for p in chunk}, time.monotonic() - t0)


class _OneAtATime:
    """A backend that cannot serve calls from several threads, made to take them in turn."""

    def __init__(self, inner: Backend):
        self.inner, self.lock = inner, threading.Lock()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, chats, sampling, seeds=None):
        with self.lock:
            return self.inner.generate(chats, sampling, seeds)


def stream(ctx: RunContext, stage: Stage, todo: list[Prompt], write: Sink, o: ExecutorOptions) -> None:
    """Every prompt of `todo` as its own chain, up to the window in flight (also run inside each Ray actor)."""
    from tqdm.auto import tqdm

    engine = ctx.backend
    slots = engine.slots if engine is not None else 1
    window = o.in_flight or slots + max(1, slots // 4)
    size, every = ctx.config.run.chunk_size, o.flush_seconds
    ctx.log(f"{stage.name}: {len(todo)} prompts to do, {min(window, len(todo))} in flight at once")
    bars = engine is not None and engine.progress
    if engine is not None and not engine.concurrent:
        ctx = replace(ctx, backend=_OneAtATime(engine))  # type: ignore[arg-type]
    bar = tqdm(total=len(todo), desc=stage.name, unit="prompt", disable=not bars)
    buffer, ids = ChunkResult(), set[str]()
    oldest = written = time.monotonic()  # the first unwritten prompt's finish; the last shard's time

    def flush() -> None:
        nonlocal buffer, ids, written
        if ids:
            now = time.monotonic()
            write(buffer, ids, now - written)
            buffer, ids, written = ChunkResult(), set(), now

    prompts = iter(todo)
    running: dict[Future, Prompt] = {}
    pool = ThreadPoolExecutor(max_workers=min(window, len(todo)), thread_name_prefix=f"cai-{stage.name}")
    if engine is not None:
        engine.progress = False  # one bar per stage here, not one per request
    try:
        while True:
            while len(running) < window and (p := next(prompts, None)) is not None:
                running[pool.submit(stage.run, ctx, [p])] = p
            if not running:
                break
            timeout = max(0.0, oldest + every - time.monotonic()) if ids else None
            finished, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
            error = None
            for f in finished:
                p = running.pop(f)
                if f.exception() is not None:
                    error = error or f.exception()
                    continue
                if not ids:
                    oldest = time.monotonic()
                buffer.add(f.result())
                ids.add(p.id)
                bar.update(1)
                if len(ids) >= size:
                    flush()
            if error is not None:
                raise error
            if ids and time.monotonic() - oldest >= every:
                flush()
        flush()
    except BaseException:
        for f in running:
            f.cancel()
        with contextlib.suppress(Exception):  # the error that stopped the run is the one to report
            flush()  # what finished is done: keep it; the prompts in flight are redone by the next run
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
        if engine is not None:
            engine.progress = bars
