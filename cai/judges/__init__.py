"""Judges, found by name through the `cai.judges` entry-point group."""

from __future__ import annotations

from cai import plugins
from cai.judges.base import Description, Evidence, FailedRead, Judge, Pair, Verdict, Vote

__all__ = ["Description", "Evidence", "FailedRead", "Judge", "Pair", "Verdict", "Vote", "get", "names"]


def names() -> list[str]:
    return plugins.names("judge")


def get(name: str) -> type[Judge]:
    cls: type[Judge] = plugins.get("judge", name)
    return cls
