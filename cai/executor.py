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
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cai.records import ChunkResult
from cai.settings import setting

if TYPE_CHECKING:
    import pyarrow as pa

    from cai.backends.base import Backend
    from cai.generate import Summary
    from cai.inputs import Prompt
    from cai.run import RunContext
    from cai.stages import Stage

EXECUTORS = ("stream", "steps")


@dataclass(frozen=True)
class ExecutorOptions:
    executor: str = setting(
        "stream",
        "stream: each prompt goes on through its stage's steps as soon as its previous request finishes, with "
        "the engine's batch kept full; steps: one batched engine call per step of each chunk (every step "
        "waits for its slowest request).",
        choices=lambda: EXECUTORS,
    )
    in_flight: int | None = setting(
        None,
        "stream: prompts in flight at once (auto: the engine's limit, --max-num-seqs or --concurrency, and a "
        "quarter more, so a finished request's slot is taken at the next engine step).",
        minimum=1,
        when=("executor", ("stream",)),
    )
    flush_seconds: float = setting(
        60.0,
        "stream: write the prompts finished so far as a shard at least this often (and every --chunk-size "
        "prompts): a killed run redoes at most this much work.",
        above=0,
        when=("executor", ("stream",)),
    )


def run_stage(ctx: RunContext, stage: Stage, todo: list[Prompt], summary: Summary) -> None:
    """Run `stage` on `todo` and write its rows; the engine's load over the stage goes in `summary.loads`."""
    if not todo:
        return
    o = ctx.config.options(ExecutorOptions)
    stage.begin(ctx)
    engine = ctx.backend
    meter = engine.meter if engine is not None and stage.needs_engine(ctx) else None
    if meter is not None:
        meter.start()
    if o.executor == "steps":
        _steps(ctx, stage, todo, summary)
    else:
        _stream(ctx, stage, todo, summary, o)
    if meter is not None:
        summary.loads[stage.name] = meter.read()


def _write(
    ctx: RunContext, stage: Stage, schema: pa.Schema, result: ChunkResult, ids: set[str], seconds: float, summary
) -> None:
    ctx.store.write_chunk(
        stage.name,
        stage.split,
        result.rows,
        schema,
        result.skips,
        ids,
        (result.prompt_tokens, result.output_tokens),
        seconds,
    )
    summary.new_rows[stage.split] = summary.new_rows.get(stage.split, 0) + len(result.rows)
    summary.prompt_tokens += result.prompt_tokens
    summary.output_tokens += result.output_tokens
    summary.truncated += result.truncated
    summary.engine_seconds += seconds


def _steps(ctx: RunContext, stage: Stage, todo: list[Prompt], summary: Summary) -> None:
    size = ctx.config.chunk_size
    ctx.log(f"{stage.name}: {len(todo)} prompts to do in {-(-len(todo) // size)} chunk(s)")
    schema = stage.schema()
    for start in range(0, len(todo), size):
        chunk = todo[start : start + size]
        t0 = time.monotonic()
        result = stage.run(ctx, chunk)
        _write(ctx, stage, schema, result, {p.id for p in chunk}, time.monotonic() - t0, summary)


class _OneAtATime:
    """A backend that cannot serve calls from several threads, made to take them in turn."""

    def __init__(self, inner: Backend):
        self.inner, self.lock = inner, threading.Lock()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, chats, sampling, seeds=None):
        with self.lock:
            return self.inner.generate(chats, sampling, seeds)


def _stream(ctx: RunContext, stage: Stage, todo: list[Prompt], summary: Summary, o: ExecutorOptions) -> None:
    from tqdm.auto import tqdm

    engine = ctx.backend
    slots = engine.slots if engine is not None else 1
    window = o.in_flight or slots + max(1, slots // 4)
    size, every = ctx.config.chunk_size, o.flush_seconds
    ctx.log(f"{stage.name}: {len(todo)} prompts to do, {min(window, len(todo))} in flight at once")
    schema = stage.schema()
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
            _write(ctx, stage, schema, buffer, ids, now - written, summary)
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
