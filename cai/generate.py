"""`cai generate` as a library call: check everything, then run the stages on one engine (cai.run.lifecycle)."""

from __future__ import annotations

from collections.abc import Callable

from cai import backends, stages
from cai.config import RunConfig, catalogue
from cai.core import constitution as constitution_mod
from cai.core import inputs, rules
from cai.core.context import RunContext
from cai.core.prompts import Templates
from cai.core.store import RunStore
from cai.errors import CaiError
from cai.run.lifecycle import Plan, Summary, execute
from cai.stages import Stage

__all__ = ["Summary", "generate", "prepare", "selected"]


def selected(config: RunConfig, every: bool = False) -> list[Stage]:
    """The stages `config` runs (or, with `every`, all installed ones), in the order their inputs need."""
    if every:
        chosen = stages.names()
    elif config.run.stage == "all":
        chosen = [n for n in stages.names() if stages.get(n).in_all]
    else:
        chosen = [config.run.stage]
    # a stage that derives its split from a chosen one's runs with it (`--stage sample` selects and ranks too)
    chosen += [n for n in stages.names() if n not in chosen and stages.get(n).runs_with in chosen]
    return [stages.get(name)(config) for name in stages.ordered(chosen)]


def prepare(config: RunConfig, log: Callable[[str], None] = print) -> Plan:
    """Everything that can be wrong with the input is found here, before the engine starts."""
    o = config.run
    if not o.prompts:
        raise CaiError("--prompts is required")
    if not o.out:
        raise CaiError("--out is required")
    const = constitution_mod.load(o.constitution)
    templates = Templates(o.templates)
    run = selected(config)
    templates.check(spec for stage in run for spec in stage.template_specs())
    prompts, duplicates = inputs.load(o.prompts, o.prompt_column, o.limit)
    accuracy = [r.id for r in const.rules if r.kind == "accuracy"]
    if accuracy and not any(p.reference for p in prompts):
        # A prompt without a reference leaves its accuracy rules out; with none at all they were meant for
        # another prompt file.
        raise CaiError(
            f"{o.prompts}: the constitution's accuracy rule {accuracy[0]} needs a 'reference' in "
            "the prompt records, and none has one"
        )
    store = RunStore(o.out)
    ctx = RunContext(config, const, templates, store, log=log)
    for stage in run:
        stage.check(ctx)
    backends.get(o.backend).check(config, config.temperatures([s.name for s in run]))
    # The identity (and the counts) cover every stage, not only this invocation's: running the stages one at
    # a time into one folder must give that folder one identity. The counts leave out a stage that runs only
    # when named and has neither run here nor written rows (a steps split of 0 rows in every SL/RL summary).
    every = selected(config, every=True)
    written = {s.name for s in every if store.count(s.split)}
    counted = [s for s in every if s.in_all or s.name in written or s.name in {p.name for p in run}]
    specs = [spec for stage in every for spec in stage.template_specs()]
    identity = config.identity(const.sha256, templates.sha256(specs))
    free = unwritten({s.name for s in every} - written)
    return Plan(ctx, run, prompts, duplicates, counted, identity, free)


def generate(config: RunConfig, backend: backends.Backend | None = None, log: Callable[[str], None] = print) -> Summary:
    """Run `config`. Pass `backend` to reuse an engine across calls (it is then not closed here)."""
    plan = prepare(config, log)
    summary = execute(plan, backend, log)
    summary.lines += rules.notes(plan.ctx.constitution.rules)
    return summary


def unwritten(empty: set[str]) -> frozenset[str]:
    """The settings that only the stages named in `empty` (no rows in the folder) use: they shape nothing written
    yet, so a later invocation may set them (`--stage sl`, then `--stage steps --solutions sl` in one folder)."""
    d = catalogue()
    free = {k for k, owners in d.users.items() if owners and all(kind == "stage" and n in empty for kind, n in owners)}
    # A plug-in chosen by such a setting (the steps stage's step judge) shapes nothing written yet either.
    chosen_by_free = {kind for kind, name in d.selectors.items() if name in free}
    free |= {k for k, owners in d.users.items() if owners and all(kind in chosen_by_free for kind, _ in owners)}
    return frozenset(free)
