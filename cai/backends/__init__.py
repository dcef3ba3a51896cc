"""Engine backends, found by name through the `cai.backends` entry-point group."""

from __future__ import annotations

from importlib.metadata import entry_points

from cai.backends.base import Backend, Completion, Sampling
from cai.errors import CaiError

__all__ = ["Backend", "Completion", "Sampling", "get", "names"]


def names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group="cai.backends"))


def get(name: str) -> type[Backend]:
    """The backend class registered under `name` (its module is imported only now: heavy imports stay
    at the edge)."""
    for ep in entry_points(group="cai.backends"):
        if ep.name == name:
            return ep.load()
    raise CaiError(f"--backend {name!r}: unknown backend (installed: {', '.join(names()) or 'none'})")
