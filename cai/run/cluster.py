"""The ray executor: a stage's prompts as a Ray dataset, run by a pool of actors that each hold one engine.

Ray Data's stateful actor pool (`Dataset.map_batches` with a class and an `ActorPoolStrategy`) does the
scheduling, the back-pressure and the fault tolerance: an actor that dies is restarted (`max_restarts=-1`)
and the batch it held is run again (`max_task_retries=-1`), both Ray Data's defaults for actor pools. Inside
an actor the stage runs exactly as in one process: the streaming executor (`executor.stream`) keeps every
prompt's chain going on the actor's own engine, and two batches run in an actor at once so the engine stays
full between them. Every request carries its own seed, so an actor makes the rows the one process would.

The rows come back to the driver, the one owner of the run folder (RunStore): it writes shards, the skip log
and the manifest as the other executors do, so resume works unchanged. A batch redone after an actor died can
return prompts the driver already has; the driver keeps the first copy (the same rows, by the seeds) and drops
the rest, so nothing is written twice.

Ray is imported here only, when the executor runs: `cai --help` and the other executors never load it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cai import backends, stages
from cai.config import ExecutorOptions, RayOptions, RunConfig, catalogue
from cai.core.context import RunContext
from cai.core.prompts import Templates
from cai.core.records import ChunkResult
from cai.core.store import RunStore
from cai.errors import CaiError
from cai.run import executor

if TYPE_CHECKING:
    from cai.backends.load import Load
    from cai.core.constitution import Constitution
    from cai.core.inputs import Prompt
    from cai.stages.base import Stage

INSTALL = "--executor ray needs Ray Data: pip install 'cai[ray]' (or pip install 'ray[data]')"
# Environment an actor takes from the driver: the engines' own settings (VLLM_*, the scripted engine's, cai's
# model cache). An actor is started by a raylet that may predate the driver's settings, or on another node.
# Secrets (HF_TOKEN, CAI_SERVE_TOKEN) are not copied: a cluster gets them from Ray's runtime environment.
FORWARDED = ("VLLM_", "CAI_SCRIPTED_", "CAI_CACHE")


def require() -> None:
    """Ray Data is installed, or one line saying how to get it (before anything starts)."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        raise CaiError(INSTALL) from None


@contextlib.contextmanager
def connected(config: RunConfig) -> Iterator[None]:
    """Connected to the cluster for the run: an existing connection (a test's, a notebook's) is used as it is;
    otherwise --ray-address, or RAY_ADDRESS (set by `ray job submit`), or a local cluster started here and shut
    down at the end."""
    import ray

    if ray.is_initialized():
        yield
        return
    # "local" starts a cluster of this run's own: Ray's default would join any `ray start` cluster on the machine
    address = config.options(RayOptions).ray_address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class Spec:
    """What an actor needs to rebuild the driver's run context: all of it picklable, paths absolute."""

    config: RunConfig
    stage: str
    constitution: Constitution
    templates: str | None  # the user's template folder (a loaded Jinja environment does not pickle)
    store: str | None  # the run folder, read by stages whose begin() reads an earlier split
    cwd: str  # relative paths in the settings mean what they meant to the driver
    env: dict[str, str]


def local_config(config: RunConfig) -> RunConfig:
    """The driver's settings for one actor's engine and stream: one prompt per result (the driver makes the
    shards), and the ray settings dropped (the actor runs `stream`, to which they do not apply)."""
    values = config.to_dict()
    ray_keys = {s.name for s in catalogue().settings.values() if s.owner == "run" and s.name.startswith("ray_")}
    given = {k: values[k] for k in config.given if k not in ray_keys}
    return RunConfig(**{**given, "executor": "stream", "chunk_size": 1})


class Chains:
    """One actor of the pool: one engine, the stage begun once, then every batch it is handed run as a stream."""

    def __init__(self, spec: Spec):
        import ray

        os.environ.update(spec.env)
        if os.path.isdir(spec.cwd):  # same machine or a shared filesystem mounted at the same path
            os.chdir(spec.cwd)
        config = local_config(spec.config)
        self.engine = backends.get(config.run.backend).from_config(config)
        self.engine.progress = False  # the driver draws the one bar
        store = RunStore(spec.store) if spec.store else None
        self.ctx = RunContext(
            config, spec.constitution, Templates(spec.templates), store, self.engine, log=lambda _: None
        )
        self.stage = stages.get(spec.stage)(config)
        self.stage.begin(self.ctx)
        self.options = config.options(ExecutorOptions)
        actor = ray.get_runtime_context().get_actor_id() or "local"
        self.name = f"{actor[:8]}@{socket.gethostname()}"
        if self.engine.meter is not None:
            self.engine.meter.start()
        self.ready = time.time()  # the engine is up: the driver's generation time starts at the first actor's

    def __del__(self) -> None:
        # Ray Data drops the UDF when it shuts the pool down gracefully: the engine's processes go with it
        engine = getattr(self, "engine", None)
        if engine is not None:
            with contextlib.suppress(Exception):
                engine.close()

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        prompts = [pickle.loads(b) for b in batch.column("prompt").to_pylist()]
        ids: list[str] = []
        results: list[bytes] = []

        def keep(result: ChunkResult, done: set[str], seconds: float) -> None:
            ids.extend(done)  # one prompt per result (chunk_size 1)
            results.append(pickle.dumps(result))

        error = None
        try:
            executor.stream(self.ctx, self.stage, prompts, keep, self.options)
        except CaiError as e:  # the user's to fix: one line, as in one process
            error = f"CaiError: {e}"
        except Exception:  # a bug in a chain: the driver shows where, after writing what finished
            error = traceback.format_exc()
        meter = self.engine.meter
        load = pickle.dumps(meter.read() if meter is not None else None)
        errors: list[str | None] = [None] * len(ids)
        if error is not None:  # one more row, after the finished ones, carrying the error
            ids, results, errors = [*ids, ""], [*results, b""], [*errors, error]
        n = len(ids)
        return pa.table(
            {
                "id": ids,
                "result": results,
                "error": errors,
                "actor": [self.name] * n,
                "load": [load] * n,
                "ready": [self.ready] * n,
            }
        )


@dataclass
class _Actor:
    prompts: int = 0
    load: Load | None = None


def run_stage(ctx: RunContext, stage: Stage, todo: list[Prompt], sink: executor.Sink) -> executor.Tally:
    """Run `stage` on `todo` over the actor pool, handing finished prompts to `sink` in shards as the stream
    executor does (every --chunk-size prompts, or at the first result after --flush-seconds)."""
    import pyarrow as pa
    import ray.data
    from ray.data import ActorPoolStrategy
    from tqdm.auto import tqdm

    tally = executor.Tally()
    if not todo:
        return tally
    o, e = ctx.config.options(RayOptions), ctx.config.options(ExecutorOptions)
    size, every = ctx.config.run.chunk_size, e.flush_seconds
    # an engine that takes calls from several threads at once gets two batches at a time: the second one's
    # chains fill the slots the first one's tail leaves empty
    calls = 2 if backends.get(ctx.config.run.backend).concurrent else 1
    spec = Spec(
        config=ctx.config,
        stage=stage.name,
        constitution=ctx.constitution,
        templates=str(ctx.templates.folder.resolve()) if ctx.templates.folder is not None else None,
        store=str(ctx.store.root.resolve()) if ctx.store is not None else None,
        cwd=os.getcwd(),
        env={k: v for k, v in os.environ.items() if k.startswith(FORWARDED)},
    )
    data = ray.data.DataContext.get_current()
    data.enable_progress_bars = False  # the driver draws one bar of prompts, as in one process
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its per-dataset lines; the log file keeps them
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "bars disabled": by us, above
    blocks = -(-len(todo) // o.ray_batch_size)
    width = min(o.ray_actors, blocks)  # an actor with no batch to run would start an engine for nothing
    # pickled both ways: exact Python values (a prompt's messages, a row's nested records) between the run's own
    # processes; the model's text is only ever a string inside them
    ds = ray.data.from_items([{"prompt": pickle.dumps(p)} for p in todo], override_num_blocks=blocks)
    out = ds.map_batches(
        Chains,
        fn_constructor_kwargs={"spec": spec},
        batch_size=o.ray_batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(
            size=width,
            max_tasks_in_flight_per_actor=calls,
            max_concurrent_calls_per_actor=calls,
            enable_true_multi_threading=calls > 1,
        ),
        num_cpus=o.ray_cpus,
        num_gpus=o.ray_gpus or None,
    )
    ctx.log(f"{stage.name}: {len(todo)} prompts to do on {width} Ray actor(s), {blocks} batch(es)")
    actors: dict[str, _Actor] = {}
    seen: set[str] = set()
    buffer, ids = ChunkResult(), set[str]()
    oldest = written = time.monotonic()
    clock = time.time() - written  # wall clock minus monotonic, to place the actors' ready times
    ready: float | None = None  # the first actor's engine up (monotonic), until the first shard
    redone = 0

    def flush() -> None:
        nonlocal buffer, ids, written
        if ids:
            now = time.monotonic()
            if ready is not None and not tally.rows:  # the first shard's time leaves the actors' start out
                written = max(written, min(ready, now))
            sink(buffer, ids, now - written)
            tally.add(buffer, now - written)
            buffer, ids, written = ChunkResult(), set(), now

    bar = tqdm(total=len(todo), desc=stage.name, unit="prompt", disable=None)
    error = None
    try:
        for table in out.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
            assert isinstance(table, pa.Table)
            for row in table.to_pylist():
                a = actors.setdefault(row["actor"], _Actor())
                ready = min(ready or float("inf"), row["ready"] - clock)
                a.load = pickle.loads(row["load"])
                if row["error"] is not None:
                    error = error or row["error"]
                    continue
                if row["id"] in seen:  # a batch redone after its actor died: the first copy is kept
                    redone += 1
                    continue
                seen.add(row["id"])
                a.prompts += 1
                if not ids:
                    oldest = time.monotonic()
                buffer.add(pickle.loads(row["result"]))
                ids.add(row["id"])
                bar.update(1)
                if len(ids) >= size:
                    flush()
            if ids and time.monotonic() - oldest >= every:
                flush()
            if error is not None:
                break
        flush()
    except BaseException:
        with contextlib.suppress(Exception):  # the error that stopped the run is the one to report
            flush()  # what finished is done: keep it; the rest is redone by the next run
        raise
    finally:
        bar.close()
    if error is not None:
        if error.startswith("CaiError: "):
            raise CaiError(error.removeprefix("CaiError: "))
        raise RuntimeError(f"a chain failed in a Ray actor:\n{error}")
    tally.load = _pooled([a.load for a in actors.values() if a.load is not None])
    tally.notes = _describe(stage, actors, redone)
    return tally


def _pooled(loads: list[Load]) -> Load | None:
    """The pool's load: requests running on all actors over all their limits."""
    if not loads:
        return None

    first = loads[0]
    return replace(
        first,
        seconds=max(x.seconds for x in loads),
        mean_running=sum(x.mean_running for x in loads),
        limit=sum(x.limit for x in loads),
        source=f"{first.source}, summed over {len(loads)} actor(s)",
    )


def _describe(stage: Stage, actors: dict[str, _Actor], redone: int) -> list[str]:
    again = f" ({redone} results of a batch run again after its actor died were dropped)" if redone else ""
    lines = [f"{f'actors ({stage.name})':<15}{len(actors)}{again}"]
    for name, a in sorted(actors.items()):
        load = f", load {a.load.describe()}" if a.load is not None else ""
        lines.append(f"  actor {name}  {a.prompts} prompts{load}")
    return lines
