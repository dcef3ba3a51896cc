"""The plug-in registry: stages, judges and backends are found by name through entry-point groups.

The built-in ones register in pyproject.toml exactly as a third-party package would, so a new stage or
judge is one module (plus its templates) and one entry-point line, and `cai plugins` lists them all.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import Any

from cai.errors import CaiError

# kind -> entry-point group. A step judge labels the steps of a solution (cai.judges.step); a judge, pairs.
GROUPS = {"stage": "cai.stages", "judge": "cai.judges", "step_judge": "cai.step_judges", "backend": "cai.backends"}


@functools.cache
def _registered(kind: str) -> dict[str, Any]:
    """Scanning the installed distributions' metadata is the slow part: once per process and kind."""
    return {ep.name: ep for ep in entry_points(group=GROUPS[kind])}


def names(kind: str) -> list[str]:
    return sorted(_registered(kind))


@functools.cache
def get(kind: str, name: str) -> Any:
    """The class registered under `name`; its module is imported only now (heavy imports stay at the edge)."""
    ep = _registered(kind).get(name)
    if ep is not None:
        try:
            return ep.load()
        except Exception as e:  # a broken plug-in: one line naming it, not a traceback from importlib
            raise CaiError(
                f"--{kind.replace('_', '-')} {name}: its entry point {ep.value!r} ({GROUPS[kind]}) failed to load: "
                f"{type(e).__name__}: {e}"
            ) from None
    flag, what = kind.replace("_", "-"), kind.replace("_", " ")
    raise CaiError(f"--{flag} {name!r}: unknown {what} (installed: {', '.join(names(kind)) or 'none'})")


def every(kind: str) -> dict[str, Any]:
    """Every registered class of `kind`, by name."""
    return {name: get(kind, name) for name in names(kind)}


def stage_order(chosen: list[str]) -> list[str]:
    """`chosen` stages in an order where each runs after the stages that write the splits it reads (a
    topological sort of the stages' declared `inputs`; ties by name, so the order is stable)."""
    writer = {get("stage", n).split: n for n in names("stage")}
    done: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            raise CaiError(f"stages {', '.join(sorted(visiting))}: their declared inputs form a cycle")
        visiting.add(name)
        for split in get("stage", name).inputs:
            if writer.get(split) in chosen:
                visit(writer[split])
        visiting.discard(name)
        done.append(name)

    for name in sorted(chosen):
        visit(name)
    return done
