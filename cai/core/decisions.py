"""A person's decisions on a run's rows (RUN/review.jsonl) and how publishing applies them.

A decision is the whole state of one row after a person looked at it: `keep`, `drop`, or `flip` (a preference
pair whose other answer is the better one), with an optional note, and for step rows the step labels the
person changed. The latest decision per (split, id) counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cai.errors import CaiError

if TYPE_CHECKING:
    import pyarrow as pa

    from cai.core.store import RunStore
    from cai.core.views import View

ACTIONS = ("keep", "drop", "flip")


@dataclass(frozen=True)
class Decision:
    split: str
    id: str
    action: str
    note: str = ""
    steps: dict[int, bool] = field(default_factory=dict)  # step index -> the person's label

    def entry(self) -> dict:
        return {
            "split": self.split,
            "id": self.id,
            "action": self.action,
            "note": self.note,
            "steps": {str(k): v for k, v in self.steps.items()},
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


def parse(body: dict, flippable: bool) -> Decision:
    """A decision from the page, checked: anything else is refused with the reason."""
    if not isinstance(body, dict):
        raise CaiError("a decision is an object")
    split, row_id, action = body.get("split"), body.get("id"), body.get("action")
    if not isinstance(split, str) or not isinstance(row_id, str) or not row_id:
        raise CaiError("a decision needs 'split' and 'id'")
    if action not in ACTIONS:
        raise CaiError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    if action == "flip" and not flippable:
        raise CaiError(f"rows of {split} have no pair to flip")
    note = body.get("note") or ""
    if not isinstance(note, str) or len(note) > 2000:
        raise CaiError("note must be text of at most 2000 characters")
    steps = body.get("steps") or {}
    if not isinstance(steps, dict) or not all(str(k).isdigit() and isinstance(v, bool) for k, v in steps.items()):
        raise CaiError("steps must map step indexes to true/false")
    return Decision(split, row_id, action, note, {int(k): v for k, v in steps.items()})


def counts(store: RunStore) -> dict:
    """How many rows a person reviewed, per split and action, and how many they changed."""
    out: dict = {"reviewed": 0, "changed": 0, "splits": {}}
    for (split, _), d in store.reviews().items():
        per = out["splits"].setdefault(split, {a: 0 for a in ACTIONS})
        per[d["action"]] += 1
        out["reviewed"] += 1
        out["changed"] += d["action"] != "keep" or bool(d.get("steps"))
    return out


def apply(table: pa.Table, split: str, view: View, reviews: dict[tuple[str, str], dict]) -> tuple[pa.Table, dict]:
    """`table` with the decisions on `split` applied, as its view says: dropped rows removed; flipped pairs swapped
    (a pair's view gives the person's label as `p_chosen` (1.0) and the judge's as `ai_p_chosen`); step labels
    set. Every row gets `human_label` (keep, flip, relabel, or null where nobody looked). Returns the table and
    what changed."""
    import pyarrow as pa

    mine = {i: d for (s, i), d in reviews.items() if s == split}
    ids = table.column("id").to_pylist()
    rows = table.to_pylist() if mine else None
    done = {"dropped": 0, "flipped": 0, "relabelled": 0, "kept": 0}
    if rows is None:
        labels = pa.array([None] * table.num_rows, type=pa.string())
        return table.append_column("human_label", labels), done
    out = []
    for row_id, row in zip(ids, rows, strict=True):
        d = mine.get(row_id)
        if d is None:
            out.append({**row, "human_label": None})
            continue
        if d["action"] == "drop":
            done["dropped"] += 1
            continue
        label = d["action"]
        if d["action"] == "flip":
            row = view.flip(row)
            done["flipped"] += 1
        relabelled = view.relabel(row, {int(k): v for k, v in d["steps"].items()}) if d.get("steps") else None
        if relabelled is not None:
            row = relabelled
            label = "relabel" if label == "keep" else label
            done["relabelled"] += 1
        done["kept"] += label == "keep"
        out.append({**row, "human_label": label})
    schema = table.schema.append(pa.field("human_label", pa.string()))
    # columns a decision added (a flipped pair's `ai_p_chosen`): typed from their values, null in the other rows
    for name in dict.fromkeys(k for row in out for k in row if k not in schema.names):
        schema = schema.append(pa.field(name, pa.array([row.get(name) for row in out]).type))
    return pa.Table.from_pylist(out, schema=schema), done
