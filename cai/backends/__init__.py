"""Engine backends, found by name through the `cai.backends` entry-point group."""

from __future__ import annotations

from cai import plugins
from cai.backends.base import Backend, Completion, Sampling

__all__ = ["Backend", "Completion", "Sampling", "get", "names"]


def names() -> list[str]:
    return plugins.names("backend")


def get(name: str) -> type[Backend]:
    """The backend class registered under `name`."""
    cls: type[Backend] = plugins.get("backend", name)
    return cls
