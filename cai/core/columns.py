"""One declaration per column: a split's row type (a dataclass) makes both its parquet schema and its rows.

A stage builds each row as an instance of its row type, so a misspelt or missing column fails when the row is
made, not as a silent null column in the parquet file; `schema(RowType)` gives the parquet schema from the
same declaration. Python types map to arrow types: str, bool, int (int32), float (float64), `X | None`
(nullable X), list[X] / tuple[X, ...] (a list), and a nested dataclass or TypedDict (a struct).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypedDict, Union

if TYPE_CHECKING:
    import pyarrow as pa


class Message(TypedDict):
    """An OpenAI-style chat message: the shape of TRL's conversational formats."""

    role: str
    content: str


# A chat as a column: a list of Message structs. Typed as plain dicts for the code that builds chats.
Messages = Annotated[list[dict], Message]


def _fields(tp: type) -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(tp, include_extras=True)
    if dataclasses.is_dataclass(tp):
        return [(f.name, hints[f.name]) for f in dataclasses.fields(tp)]
    return list(hints.items())  # a TypedDict: its keys in declaration order


def arrow_type(tp: Any) -> pa.DataType:
    """The arrow type of a Python type annotation (see the module's docstring for the mapping)."""
    import pyarrow as pa

    origin = typing.get_origin(tp)
    if origin is Annotated:  # Messages: the struct is in the annotation
        return pa.list_(arrow_type(tp.__metadata__[0]))
    if origin in (Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return arrow_type(inner)
    if origin in (list, tuple, Sequence):
        return pa.list_(arrow_type(typing.get_args(tp)[0]))
    if tp is str:
        return pa.string()
    if tp is bool:  # before int: a bool is an int in Python
        return pa.bool_()
    if tp is int:
        return pa.int32()
    if tp is float:
        return pa.float64()
    if dataclasses.is_dataclass(tp) or typing.is_typeddict(tp):
        return pa.struct([(name, arrow_type(t)) for name, t in _fields(tp)])
    raise TypeError(f"no arrow type for {tp!r}")


@functools.cache
def schema(row_type: type, extra: tuple[pa.Field, ...] = (), before: str | None = None) -> pa.Schema:
    """The parquet schema of `row_type`'s fields; `extra` fields (a plug-in's own columns) go before the field
    `before`, or last."""
    import pyarrow as pa

    fields = [pa.field(name, arrow_type(t)) for name, t in _fields(row_type)]
    at = next((i for i, f in enumerate(fields) if f.name == before), len(fields))
    return pa.schema(fields[:at] + list(extra) + fields[at:])


def record(row: Any, **extra: Any) -> dict:
    """A row object as the plain mapping a parquet writer takes, with `extra` columns (a plug-in's own)."""
    out = dataclasses.asdict(row)
    out.update(extra)
    return out


def listed(items: Sequence[Any]) -> list[dict]:
    """Row objects (dataclasses) of a nested list column as plain mappings."""
    return [dataclasses.asdict(x) for x in items]
