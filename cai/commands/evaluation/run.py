"""An evaluation that asks the model is a run of one stage that runs only when named: this is the thin wrapper
that puts it through the lifecycle `cai generate` runs (cai.run.lifecycle): checked before the engine starts, the
engine started once, rows written by shard into --out and resumed there (kept in memory without --out), and
a different data file or setting refused on resume."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cai import backends
from cai.config import RunConfig
from cai.core.constitution import Constitution
from cai.core.constitution import load as load_constitution
from cai.core.context import RunContext
from cai.core.inputs import Prompt
from cai.core.prompts import Templates
from cai.core.store import RunStore
from cai.run.lifecycle import Plan, execute
from cai.stages.base import Stage


@dataclass(frozen=True)
class Evaluated:
    """The evaluation's rows (this data's only, by the stage's key, in the folder's order) and its failures (id,
    reason)."""

    rows: list[dict]
    failures: list[tuple[str, str]]
    constitution: Constitution
    store: RunStore | None


def evaluate(
    config: RunConfig,
    stage: Stage,
    items: list[Prompt],
    data_fingerprint: str,
    backend: backends.Backend | None = None,
    log: Callable[[str], None] = print,
) -> Evaluated:
    """Run `stage` (built on `config` from `chunked`) on `items`: one per labelled record, each with its own id."""
    o = config.run
    const = load_constitution(o.constitution)
    templates = Templates(o.templates)
    specs = stage.template_specs()
    templates.check(specs)
    store = RunStore(o.out) if o.out else None
    ctx = RunContext(config, const, templates, store, log=log)
    stage.check(ctx)
    identity = {
        **config.identity(const.sha256, templates.sha256(specs)),
        "eval": stage.name.removeprefix("eval-"),  # eval-judge -> judge, as folders written before had it
        "eval_data": data_fingerprint,
    }
    summary = execute(Plan(ctx, [stage], items, counted=[stage], identity=identity), backend, log)
    wanted = {p.id for p in items}
    if store is None:
        rows, skips = summary.kept.get(stage.split, []), [(s.id, s.reason) for s in summary.skips]
    else:
        rows = store.read(stage.split)
        skips = [(s["id"], s["reason"]) for s in store.skipped() if s["stage"] == stage.name]
    return Evaluated(
        [r for r in rows if r[stage.key] in wanted], [(i, why) for i, why in skips if i in wanted], const, store
    )


def chunked(config: RunConfig) -> RunConfig:
    """An evaluation reads in chunks of --chunk-size unless --executor says otherwise: each chunk's reads go to
    the engine in one call (a one-step read gains nothing from streaming prompt by prompt)."""
    return config if "executor" in config.given else config.replace(executor="steps")
