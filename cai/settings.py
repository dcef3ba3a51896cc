"""Settings that know themselves: help text, run identity, bounds and the plug-in that owns them.

Each stage, judge and backend declares its settings as a small frozen dataclass whose fields are made with
`setting(...)` (as llm's per-model `Options`). The CLI builds its flags from these declarations, the run
identity is read off them, and a setting given to a run whose stage, judge or backend does not use it is
refused by name, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cai.errors import CaiError


def setting(
    default: Any,
    help: str,
    *,
    identity: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    choices: Callable[[], Iterable[str]] | None = None,
    when: tuple[str, tuple[Any, ...]] | None = None,
    aliases: tuple[str, ...] = (),
    path: bool = False,
    selects: str | None = None,
    temperature: bool = False,
) -> Any:
    """A dataclass field with its documentation and rules.

    identity: part of what a row contains; a run folder refuses a resume that changes it.
    minimum/maximum/above: numeric bounds (`above` is exclusive). choices: the allowed values (a callable,
    so registries can answer late). when: (key, values): only meaningful when setting `key` has one of
    `values`; giving it otherwise is an error. path: compared as an absolute path in the identity.
    selects: the value names a plug-in of this kind (judge, backend, step_judge): its choices are the registered
    names, and a setting of another plug-in of that kind is refused. temperature: a sampling temperature (an
    engine that samples badly above 0 asks which ones the run uses).
    """
    if selects is not None and choices is None:
        from cai import plugins

        kind = selects
        choices = lambda: plugins.names(kind)  # late: the registry answers when asked
    meta = {
        "help": help,
        "identity": identity,
        "minimum": minimum,
        "maximum": maximum,
        "above": above,
        "choices": choices,
        "when": when,
        "aliases": aliases,
        "path": path,
        "selects": selects,
        "temperature": temperature,
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Setting:
    """One setting as the CLI and the validator see it."""

    name: str
    type: type  # int, float, str or bool
    optional: bool  # None is allowed
    default: Any
    help: str
    owner: str  # "run", "stage sl", "judge grm", "backend vllm", ...
    meta: dict

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def describe(self) -> str:
        return f"'{self.name}' ({self.flag})"


def declared(group: type, owner: str) -> list[Setting]:
    """The settings of one options dataclass."""
    hints = typing.get_type_hints(group)
    out = []
    for f in dataclasses.fields(group):
        allowed = typing.get_args(hints[f.name]) or (hints[f.name],)
        base = next(t for t in allowed if t is not type(None))
        out.append(Setting(f.name, base, type(None) in allowed, f.default, f.metadata["help"], owner, dict(f.metadata)))
    return out


def check_value(s: Setting, value: Any, where: str = "") -> None:
    """Raise CaiError naming the setting (and `where`, a file:line prefix) if `value` breaks its rules."""

    def bad(message: str) -> typing.NoReturn:
        raise CaiError(f"{where}{s.describe()}: {message}")

    if value is None:
        if not s.optional:
            bad("is required")
        return
    ok = {
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        bool: isinstance(value, bool),
    }[s.type]
    if not ok:
        names = s.type.__name__ + (" or nothing" if s.optional else "")
        bad(f"must be {names}, got {type(value).__name__} {value!r}")
    m = s.meta
    if m["choices"] is not None:
        choices = list(m["choices"]())
        if value not in choices:
            bad(f"must be one of {', '.join(choices)}, got {value!r}")
    low, high, above = m["minimum"], m["maximum"], m["above"]
    if above is not None and not value > above:
        bad(
            f"must be {'in (' + str(above) + ', ' + str(high) + ']' if high is not None else 'above ' + str(above)}"
            f", got {value}"
        )
    if low is not None and high is not None and not low <= value <= high:
        bad(f"must be in [{low}, {high}], got {value}")
    if low is not None and high is None and value < low:
        bad(f"must be at least {low}, got {value}")
    if high is not None and low is None and above is None and value > high:
        bad(f"must be at most {high}, got {value}")


def build(group: type, values: dict[str, Any]) -> Any:
    """An instance of `group` from a flat mapping holding (at least) its fields."""
    return group(**{f.name: values[f.name] for f in dataclasses.fields(group) if f.name in values})
