"""Stages, found by name through the `cai.stages` entry-point group, and the order they run in."""

from __future__ import annotations

from collections.abc import Callable

from cai import plugins
from cai.core.views import View
from cai.errors import CaiError
from cai.stages.base import Stage
from cai.stages.report import Report

__all__ = ["Report", "Stage", "for_split", "get", "names", "ordered", "reading"]


def names() -> list[str]:
    return plugins.names("stage")


def get(name: str) -> type[Stage]:
    cls: type[Stage] = plugins.get("stage", name)
    return cls


def ordered(chosen: list[str]) -> list[str]:
    """`chosen` stages in an order where each runs after the stages that write the splits it reads."""
    return plugins.stage_order(chosen)


def for_split(split: str) -> type[Stage]:
    """The stage that writes `split`."""
    for name in names():
        if get(name).split == split:
            return get(name)
    raise CaiError(f"no installed stage writes the split {split!r}")


def reading(test: Callable[[View], bool]) -> list[type[Stage]]:
    """The installed stages whose split's view passes `test` (which split a trainer reads, which `cai score`
    can score), in run order."""
    return [get(n) for n in ordered(names()) if test(get(n).view)]
