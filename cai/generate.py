"""`cai generate` as a library call: validate everything, start the engine once, run the stages by chunk."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cai import backends, constitution as constitution_mod, inputs, sl
from cai.config import RunConfig
from cai.errors import CaiError
from cai.prompts import Templates
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
    prefs: dict = field(default_factory=dict)  # label statistics of the preference split

    @property
    def tokens_per_second(self) -> float:
        return self.output_tokens / self.engine_seconds if self.engine_seconds else 0.0


def stages(config: RunConfig):
    """(stage, split, run function, schema) in the order they run."""
    from cai import rl

    table = {"sl": ("sft", sl.run, sl.SFT_SCHEMA), "rl": ("prefs", rl.run, rl.PREFS_SCHEMA)}
    names = ["sl", "rl"] if config.stage == "all" else [config.stage]
    return [(n, *table[n]) for n in names]


def prepare(config: RunConfig):
    """Everything that can be wrong with the input is found here, before the engine starts."""
    if not config.prompts:
        raise CaiError("--prompts is required")
    if not config.out:
        raise CaiError("--out is required")
    const = constitution_mod.load(config.constitution)
    templates = Templates(config.templates)
    templates.check()
    prompts, duplicates = inputs.load(config.prompts, config.prompt_column, config.limit)
    if config.stage in ("rl", "all"):
        from cai import rl

        rl.check(config, const)
    return const, templates, prompts, duplicates


def generate(config: RunConfig, backend: backends.Backend | None = None, log=print) -> Summary:
    """Run `config`. Pass `backend` to reuse an engine across calls (it is then not closed here)."""
    started = time.monotonic()
    const, templates, prompts, duplicates = prepare(config)
    backend_cls = backends.get(config.backend) if backend is None else None
    store = RunStore(config.out)
    identity = config.identity(const.sha256, templates.sha256())
    store.check(identity, force=config.force)
    summary = Summary(out=str(store.root), prompts=len(prompts), duplicates=duplicates)
    plan = [(name, split, fn, schema, [p for p in prompts if p.id not in store.done_ids(split)])
            for name, split, fn, schema in stages(config)]
    if not any(todo for *_, todo in plan):
        log("nothing to do: every prompt is already in the run")
        _summarise(store, summary)
        summary.seconds = time.monotonic() - started
        return summary
    own = backend is None
    if own:
        log(f"starting the {config.backend} engine with {config.model} ...")
        backend = backend_cls.from_config(config)  # before the folder is claimed: a failed start writes nothing
    try:
        store.open(identity, config.to_dict(), force=config.force)
        for name, split, fn, schema, todo in plan:
            _run_stage(store, summary, backend, name, split, fn, schema, todo, const, templates, config, log)
    finally:
        if own:
            backend.close()
        if store.manifest() is not None:
            _finish(store, config, const)
            _summarise(store, summary)
        summary.seconds = time.monotonic() - started
        store.close()
    return summary


def _run_stage(store, summary, backend, name, split, fn, schema, todo, const, templates, config, log):
    if not todo:
        return
    log(f"{name}: {len(todo)} prompts to do in {-(-len(todo) // config.chunk_size)} chunk(s)")
    for start in range(0, len(todo), config.chunk_size):
        chunk = todo[start:start + config.chunk_size]
        t0 = time.monotonic()
        if name == "rl":
            result = fn(backend, chunk, const, templates, config, store=store)
        else:
            result = fn(backend, chunk, const, templates, config)
        elapsed = time.monotonic() - t0
        # The shard first, then the skip list: a kill between the two leaves the skipped ids undone,
        # so the next run retries them; never the other way round.
        store.write_shard(split, result.rows, schema)
        store.record_skips(name, result.skips, {p.id for p in chunk})
        summary.new_rows[split] = summary.new_rows.get(split, 0) + len(result.rows)
        summary.prompt_tokens += result.prompt_tokens
        summary.output_tokens += result.output_tokens
        summary.truncated += result.truncated
        summary.engine_seconds += elapsed
        manifest = store.manifest()
        totals = manifest["totals"]
        totals["prompt_tokens"] += result.prompt_tokens
        totals["output_tokens"] += result.output_tokens
        totals["seconds"] = round(totals["seconds"] + elapsed, 3)
        store.write_manifest(_counts(store, manifest))


def _counts(store: RunStore, manifest: dict) -> dict:
    skipped = store.skipped()
    manifest["counts"] = {
        "sft": store.count("sft"),
        "prefs": store.count("prefs"),
        "skipped": {stage: sum(s["stage"] == stage for s in skipped) for stage in ("sl", "rl")},
    }
    return manifest


def _finish(store: RunStore, config: RunConfig, const) -> None:
    manifest = store.manifest() or {}
    manifest.update(model=config.model, seed=config.seed, constitution={"name": const.name, "path": const.path,
                                                                         "sha256": const.sha256})
    store.write_manifest(_counts(store, manifest))


def _summarise(store: RunStore, summary: Summary) -> None:
    """Row and skip counts come from the data on disk, not from what this invocation believes it did."""
    skipped = store.skipped()
    summary.rows = {"sft": store.count("sft"), "prefs": store.count("prefs")}
    summary.skipped = {stage: sum(s["stage"] == stage for s in skipped) for stage in ("sl", "rl")}
    if summary.rows["prefs"]:
        from cai import rl

        summary.prefs = rl.label_stats(store.read("prefs"))
