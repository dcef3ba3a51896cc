"""Stages, found by name through the `cai.stages` entry-point group, and the order they run in."""

from __future__ import annotations

from cai import plugins
from cai.errors import CaiError
from cai.stages.base import Stage

__all__ = ["Stage", "for_split", "get", "names", "ordered"]


def names() -> list[str]:
    return plugins.names("stage")


def get(name: str) -> type[Stage]:
    cls: type[Stage] = plugins.get("stage", name)
    return cls


def ordered(chosen: list[str]) -> list[str]:
    """`chosen` stages in an order where each runs after the stages that write the splits it reads
    (a topological sort of the declared inputs; ties by name, so the order is stable)."""
    writer = {get(n).split: n for n in names()}
    done: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            raise CaiError(f"stages {', '.join(sorted(visiting))}: their declared inputs form a cycle")
        visiting.add(name)
        for split in get(name).inputs:
            if writer.get(split) in chosen:
                visit(writer[split])
        visiting.discard(name)
        done.append(name)

    for name in sorted(chosen):
        visit(name)
    return done


def for_split(split: str) -> type[Stage]:
    """The stage that writes `split`."""
    for name in names():
        if get(name).split == split:
            return get(name)
    raise CaiError(f"no installed stage writes the split {split!r}")
