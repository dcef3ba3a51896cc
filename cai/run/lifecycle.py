"""The one run lifecycle: check the folder, start the engine, open the folder, run the stages, summarise, close.

`cai generate` and every `cai eval` that asks the model run through `execute`: a plan (what to run on which
prompts, into which folder, under which identity) in, a summary out. The engine is started here and nowhere
else, only when a stage with work to do needs it, and after every input was checked. A run with a folder
writes each finished part as an atomic shard and resumes where a killed run stopped; a run without one (an
evaluation without --out) keeps its rows in memory.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from cai import backends
from cai.config import ExecutorOptions
from cai.core.context import RunContext
from cai.core.records import ChunkResult, Skip
from cai.errors import CaiError
from cai.run import cluster, executor

if TYPE_CHECKING:
    from cai.backends.load import Load
    from cai.config import RunConfig
    from cai.core.inputs import Prompt
    from cai.core.store import RunStore
    from cai.stages.base import Stage


@dataclass
class Summary:
    out: str | None
    prompts: int
    duplicates: int
    rows: dict = field(default_factory=dict)  # split -> rows in the folder (or kept, without one)
    new_rows: dict = field(default_factory=dict)  # split -> rows written by this invocation
    skipped: dict = field(default_factory=dict)  # stage -> prompts on record as skipped
    prompt_tokens: int = 0
    output_tokens: int = 0
    truncated: int = 0
    seconds: float = 0.0
    engine_seconds: float = 0.0
    stats: dict = field(default_factory=dict)  # stage -> its statistics of its split (Report.stats)
    lines: list = field(default_factory=list)  # what the stages say of their splits, for the printed summary
    loads: dict[str, Load] = field(default_factory=dict)  # stage -> how full the engine was while it ran
    kept: dict[str, list[dict]] = field(default_factory=dict)  # split -> rows, for a run without a folder
    skips: list[Skip] = field(default_factory=list)  # this invocation's skips, for a run without a folder

    @property
    def tokens_per_second(self) -> float:
        return self.output_tokens / self.engine_seconds if self.engine_seconds else 0.0

    def describe(self) -> list[str]:
        """The summary printed at the end of `cai generate`."""
        lines = [f"run folder     {self.out}"]
        lines.append(
            f"prompts        {self.prompts}"
            + (f" ({self.duplicates} records repeat an earlier prompt)" if self.duplicates else "")
        )
        for split, n in self.rows.items():
            if n or split in self.new_rows:
                lines.append(f"{split + ' rows':<15}{n} ({self.new_rows.get(split, 0)} new)")
        for stage, n in self.skipped.items():
            if n:
                lines.append(f"skipped ({stage})   {n}  (reasons in {self.out}/skipped.jsonl)")
        if self.output_tokens:
            lines += [
                f"tokens         {self.prompt_tokens} in, {self.output_tokens} out, "
                f"{self.truncated} turns hit max-tokens",
                f"speed          {self.tokens_per_second:.1f} output tokens/s over "
                f"{self.engine_seconds:.1f}s of generation",
            ]
        lines += [f"{f'load ({stage})':<15}{load.describe()}" for stage, load in self.loads.items()]
        return [*lines, *self.lines, f"time           {self.seconds:.1f}s"]

    def add(self, stage: Stage, tally: executor.Tally) -> None:
        self.new_rows[stage.split] = self.new_rows.get(stage.split, 0) + tally.rows
        self.prompt_tokens += tally.prompt_tokens
        self.output_tokens += tally.output_tokens
        self.truncated += tally.truncated
        self.engine_seconds += tally.seconds
        if tally.load is not None:
            self.loads[stage.name] = tally.load
        self.lines += tally.notes


@dataclass(frozen=True)
class Plan:
    """A checked run: the context (store None: nothing is kept on disk), the stages to run in order, the stages
    whose splits the folder counts, the prompts, and the identity the folder must hold."""

    ctx: RunContext
    stages: list[Stage]
    prompts: list[Prompt]
    duplicates: int = 0
    counted: list[Stage] = field(default_factory=list)
    identity: dict = field(default_factory=dict)
    free: frozenset[str] = frozenset()  # identity keys a resume may change (settings of stages with no rows yet)


def start_engine(config: RunConfig, log: Callable[[str], None]) -> backends.Backend:
    """The run's engine, built from its settings (the one place an engine is started)."""
    log(f"starting the {config.run.backend} engine with {config.run.model} ...")
    return backends.get(config.run.backend).from_config(config)


def execute(plan: Plan, backend: backends.Backend | None = None, log: Callable[[str], None] = print) -> Summary:
    """Run `plan`. Pass `backend` to reuse an engine across calls (it is then not closed here)."""
    started = time.monotonic()
    ctx, config, store = plan.ctx, plan.ctx.config, plan.ctx.store
    o = config.run
    remote = config.options(ExecutorOptions).executor == "ray"  # the engines are in the actors, not here
    if remote:
        cluster.require()
        if backend is not None:
            raise CaiError("--executor ray builds an engine in each actor from the settings; pass no backend")
    defaults = config.identity_defaults()
    if store is not None:
        store.check(plan.identity, force=o.force, defaults=defaults, free=plan.free)
    summary = Summary(out=str(store.root) if store else None, prompts=len(plan.prompts), duplicates=plan.duplicates)
    # one read of the shards per split
    done = {s.name: store.done_ids(s.split, s.key) if store else set() for s in plan.stages}
    todo = {s.name: [p for p in plan.prompts if p.id not in done[s.name]] for s in plan.stages}
    if not any(todo.values()):
        log("nothing to do: every prompt is already in the run")
        if store is not None:
            _summarise(store, plan.counted, summary)
        summary.seconds = time.monotonic() - started
        return summary
    own = backend is None and not remote and any(todo[s.name] and s.needs_engine(ctx) for s in plan.stages)
    if own:  # before the folder is claimed: a failed start writes nothing
        backend = start_engine(config, log)
    ctx = replace(ctx, backend=backend)
    try:
        if store is not None:
            splits = {s.name: s.split for s in plan.counted}
            store.open(plan.identity, config.to_dict(), splits=splits, force=o.force, defaults=defaults, free=plan.free)
            c = ctx.constitution
            store.record_source(o.model, o.seed, {"name": c.name, "path": c.path, "sha256": c.sha256})
        with cluster.connected(config) if remote else contextlib.nullcontext():
            for stage in plan.stages:
                # a stage that needs no engine (select, rank: they read another split) runs here
                run_stage = cluster.run_stage if remote and stage.needs_engine(ctx) else executor.run_stage
                summary.add(stage, run_stage(ctx, stage, todo[stage.name], _sink(store, stage, summary)))
    finally:
        if own and backend is not None:
            backend.close()
        if store is not None and store.manifest() is not None:
            _summarise(store, plan.counted, summary)
        if store is None:
            summary.rows = {split: len(rows) for split, rows in summary.kept.items()}
        summary.seconds = time.monotonic() - started
        if store is not None:
            store.close()
    return summary


def _sink(store: RunStore | None, stage: Stage, summary: Summary) -> executor.Sink:
    """Where the stage's finished parts go: a shard each, or (no folder) the summary's rows in memory."""
    if store is None:

        def keep(result: ChunkResult, ids: set[str], seconds: float) -> None:
            summary.kept.setdefault(stage.split, []).extend(result.rows)
            summary.skips.extend(result.skips)

        return keep
    schema = stage.schema()

    def write(result: ChunkResult, ids: set[str], seconds: float) -> None:
        tokens = (result.prompt_tokens, result.output_tokens)
        store.write_chunk(stage.name, stage.split, result.rows, schema, result.skips, ids, tokens, seconds)

    return write


def _summarise(store: RunStore, every: list[Stage], summary: Summary) -> None:
    """Row and skip counts come from the manifest's running counts, which start from the data on disk; each
    stage's report says what its split holds."""
    manifest = store.manifest() or {}
    counts = manifest.get("counts") or {}
    summary.rows = {s.split: counts.get(s.split, store.count(s.split)) for s in every}
    summary.skipped = dict(counts.get("skipped") or {})
    for stage in every:
        frame = store.scan(stage.split) if summary.rows.get(stage.split) else None
        if frame is not None:
            report = stage.report()
            summary.stats[stage.name] = s = report.stats(frame)
            summary.lines += report.summary_lines(s)
