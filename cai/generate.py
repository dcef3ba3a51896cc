"""`cai generate` as a library call: validate everything, start the engine once, run the stages by chunk."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from cai import backends, executor, inputs, stages
from cai import constitution as constitution_mod
from cai.config import RunConfig
from cai.errors import CaiError
from cai.inputs import Prompt
from cai.prompts import Templates
from cai.run import RunContext
from cai.stages import Stage
from cai.store import RunStore


@dataclass
class Summary:
    out: str
    prompts: int
    duplicates: int
    rows: dict = field(default_factory=dict)  # split -> rows in the folder
    new_rows: dict = field(default_factory=dict)  # split -> rows written by this invocation
    skipped: dict = field(default_factory=dict)  # stage -> prompts on record as skipped
    prompt_tokens: int = 0
    output_tokens: int = 0
    truncated: int = 0
    seconds: float = 0.0
    engine_seconds: float = 0.0
    stats: dict = field(default_factory=dict)  # stage -> its statistics of its split (Stage.stats)
    lines: list = field(default_factory=list)  # what the stages say of their splits, for the printed summary
    loads: dict = field(default_factory=dict)  # stage -> how full the engine was while it ran (backends.load.Load)

    @property
    def tokens_per_second(self) -> float:
        return self.output_tokens / self.engine_seconds if self.engine_seconds else 0.0


@dataclass(frozen=True)
class Plan:
    ctx: RunContext
    stages: list[Stage]  # in run order
    prompts: list[Prompt]
    duplicates: int


def selected(config: RunConfig, every: bool = False) -> list[Stage]:
    """The stages `config` runs (or, with `every`, all installed ones), in the order their inputs need."""
    if every:
        chosen = stages.names()
    elif config.stage == "all":
        chosen = [n for n in stages.names() if stages.get(n).in_all]
    else:
        chosen = [config.stage]
    return [stages.get(name)(config) for name in stages.ordered(chosen)]


def prepare(config: RunConfig, log: Callable[[str], None] = print) -> Plan:
    """Everything that can be wrong with the input is found here, before the engine starts."""
    if not config.prompts:
        raise CaiError("--prompts is required")
    if not config.out:
        raise CaiError("--out is required")
    const = constitution_mod.load(config.constitution)
    templates = Templates(config.templates)
    run = selected(config)
    templates.check(spec for stage in run for spec in stage.template_specs())
    prompts, duplicates = inputs.load(config.prompts, config.prompt_column, config.limit)
    accuracy = [r.id for r in const.rules if r.kind == "accuracy"]
    if accuracy and not any(p.reference for p in prompts):
        # A prompt without a reference leaves its accuracy rules out; with none at all they were meant for
        # another prompt file.
        raise CaiError(
            f"{config.prompts}: the constitution's accuracy rule {accuracy[0]} needs a 'reference' in "
            "the prompt records, and none has one"
        )
    ctx = RunContext(config, const, templates, RunStore(config.out), log=log)
    for stage in run:
        stage.check(ctx)
    backends.get(config.backend).check(config, [s.name for s in run])
    return Plan(ctx, run, prompts, duplicates)


def generate(config: RunConfig, backend: backends.Backend | None = None, log: Callable[[str], None] = print) -> Summary:
    """Run `config`. Pass `backend` to reuse an engine across calls (it is then not closed here)."""
    started = time.monotonic()
    plan = prepare(config, log)
    ctx, store = plan.ctx, plan.ctx.store
    # The identity (and the counts) cover every stage, not only this invocation's: running the stages one at
    # a time into one folder must give that folder one identity. The counts leave out a stage that runs only
    # when named and has neither run here nor written rows (a steps split of 0 rows in every SL/RL summary).
    every = selected(config, every=True)
    written = {s.name for s in every if store.count(s.split)}
    counted = [s for s in every if s.in_all or s.name in written or s.name in {p.name for p in plan.stages}]
    specs = [spec for stage in every for spec in stage.template_specs()]
    identity = config.identity(ctx.constitution.sha256, ctx.templates.sha256(specs))
    free = unwritten({s.name for s in every} - written)
    store.check(identity, force=config.force, defaults=config.identity_defaults(), free=free)
    backend_cls = backends.get(config.backend) if backend is None else None
    summary = Summary(out=str(store.root), prompts=len(plan.prompts), duplicates=plan.duplicates)
    # one read of the shards per split
    done = {stage.name: store.done_ids(stage.split, stage.key) for stage in plan.stages}
    todo = {stage.name: [p for p in plan.prompts if p.id not in done[stage.name]] for stage in plan.stages}
    if not any(todo.values()):
        log("nothing to do: every prompt is already in the run")
        _summarise(store, counted, summary)
        summary.seconds = time.monotonic() - started
        return summary
    own = backend is None and any(todo[s.name] and s.needs_engine(ctx) for s in plan.stages)
    if own:
        assert backend_cls is not None
        log(f"starting the {config.backend} engine with {config.model} ...")
        backend = backend_cls.from_config(config)  # before the folder is claimed: a failed start writes nothing
    ctx = replace(ctx, backend=backend)
    try:
        store.open(
            identity,
            config.to_dict(),
            splits={s.name: s.split for s in counted},
            force=config.force,
            defaults=config.identity_defaults(),
            free=free,
        )
        c = ctx.constitution
        store.record_source(config.model, config.seed, {"name": c.name, "path": c.path, "sha256": c.sha256})
        for stage in plan.stages:
            executor.run_stage(ctx, stage, todo[stage.name], summary)
    finally:
        if own and backend is not None:
            backend.close()
        if store.manifest() is not None:
            _summarise(store, counted, summary)
        summary.seconds = time.monotonic() - started
        store.close()
    return summary


def unwritten(empty: set[str]) -> frozenset[str]:
    """The settings that only the stages named in `empty` (no rows in the folder) use: they shape nothing written
    yet, so a later invocation may set them (`--stage sl`, then `--stage steps --solutions sl` in one folder)."""
    from cai.config import catalogue

    users = catalogue().users
    return frozenset(
        k for k, owners in users.items() if owners and all(kind == "stage" and n in empty for kind, n in owners)
    )


def _summarise(store: RunStore, every: list[Stage], summary: Summary) -> None:
    """Row and skip counts come from the manifest's running counts, which start from the data on disk."""
    manifest = store.manifest() or {}
    counts = manifest.get("counts") or {}
    summary.rows = {s.split: counts.get(s.split, store.count(s.split)) for s in every}
    summary.skipped = dict(counts.get("skipped") or {})
    for stage in every:
        frame = store.scan(stage.split) if summary.rows.get(stage.split) else None
        if frame is not None:
            summary.stats[stage.name] = s = stage.stats(frame)
            summary.lines += stage.summary_lines(s)
