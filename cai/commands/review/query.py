"""What the review page asks of a run: one filtered page of row summaries, and one row in full.

Reads are lazy polars scans of the split's shards with the filters pushed down, then one page sliced off, so a
run of 100,000 rows is never loaded whole. Everything returned is data for the page to show as text.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from cai import stages
from cai.core.store import RunStore
from cai.core.views import View
from cai.errors import CaiError

PAGE_MAX = 200
REVIEW_FLAGS = ("reviewed", "unreviewed")  # every split's; the others come from the splits' views


def flags() -> list[str]:
    """Every filter the page offers: each installed stage's view's flags, then whether a person reviewed a row."""
    names = [name for n in stages.ordered(stages.names()) for name in stages.get(n).view.flags()]
    return [*dict.fromkeys(names), *REVIEW_FLAGS]


@dataclass(frozen=True)
class Filters:
    split: str
    q: str = ""
    principle: str = ""
    p_min: float | None = None
    p_max: float | None = None
    flag: str = ""
    queue: str = ""  # a review queue of the split's view: its rows only, in its order
    offset: int = 0
    limit: int = 50


def parse(params: dict[str, str], splits: list[str]) -> Filters:
    split = params.get("split") or (splits[0] if splits else "")
    if split not in splits:
        raise CaiError(f"no split {split!r} in this run (have: {', '.join(splits) or 'none'})")
    flag = params.get("flag", "")
    if flag and flag not in flags():
        raise CaiError(f"flag must be one of {', '.join(flags())}")
    queue = params.get("queue", "")
    if queue and queue not in view_of(split).queues():
        have = ", ".join(view_of(split).queues()) or "none"
        raise CaiError(f"no review queue {queue!r} for {split} rows (have: {have})")
    try:
        p_min = float(params["p_min"]) if params.get("p_min") else None
        p_max = float(params["p_max"]) if params.get("p_max") else None
        offset = max(0, int(params.get("offset") or 0))
        limit = min(PAGE_MAX, max(1, int(params.get("limit") or 50)))
    except ValueError:
        raise CaiError("p_min, p_max, offset and limit must be numbers") from None
    return Filters(
        split, params.get("q", "")[:200], params.get("principle", "")[:200], p_min, p_max, flag, queue, offset, limit
    )


def view_of(split: str) -> View:
    """The view of the stage that writes `split`; a split no installed stage writes (an evaluation's) is shown as
    plain rows."""
    try:
        return stages.for_split(split).view
    except CaiError:
        return View()


def _content(schema, col: str):
    """A column as text: the messages' contents, a list's items, or the text itself."""
    import polars as pl

    dtype = schema[col]
    if isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
        return pl.col(col).list.eval(pl.element().struct.field("content")).list.join("\n")
    if isinstance(dtype, pl.List):
        return pl.col(col).list.join(" / ")
    return pl.col(col).cast(pl.String)


def page(store: RunStore, f: Filters) -> dict:
    """{total, rows: [{id, prompt, answer?, <label column>?, principles, decision, ...}]} for one page of `f`: what
    each column is comes from the split's view."""
    import polars as pl

    frame = store.scan(f.split)
    if frame is None:
        return {"total": 0, "rows": []}
    view = view_of(f.split)
    schema = frame.collect_schema()
    principles = (
        pl.col(view.principles).list.eval(pl.element().struct.field("principle"))
        if view.principles
        else pl.lit([], dtype=pl.List(pl.String))
    )
    reviews = {i: d for (s, i), d in store.reviews().items() if s == f.split}
    conds = []
    if f.q:
        needle = f.q.lower()
        texts = [_content(schema, c) for c in (view.prompt, view.answer, *view.search) if c]
        conds.append(pl.any_horizontal([t.str.to_lowercase().str.contains(needle, literal=True) for t in texts]))
    if f.principle:
        conds.append(principles.list.contains(f.principle))
    if view.label and f.p_min is not None:
        conds.append(pl.col(view.label) >= f.p_min)
    if view.label and f.p_max is not None:
        conds.append(pl.col(view.label) <= f.p_max)
    if f.flag:
        conds.append(_flag(f.flag, view, set(reviews)))
    queue = view.queues().get(f.queue) if f.queue else None
    if queue is not None:
        conds.append(queue.condition)
    for cond in conds:
        frame = frame.filter(cond)
    if queue is not None:  # its order, then the id's (a stable page order for equal scores)
        frame = frame.sort([queue.sort, "id"], descending=[queue.descending, False], nulls_last=True)
    total = frame.select(pl.len()).collect().item()
    # a split no installed stage writes (judge-data's SFT split) may hold its prompt in chat messages only
    shown = next((c for c in (view.prompt, "messages", view.answer) if c and c in schema), None)
    cols = [
        pl.col("id"),
        (_content(schema, shown) if shown else pl.lit("")).str.slice(0, 300).alias("prompt"),
        principles.alias("principles"),
    ]
    if view.answer:
        cols.append(_content(schema, view.answer).str.slice(0, 300).alias("answer"))
    cols += [pl.col(c) for c in view.extra]
    if queue is not None and queue.sort not in (view.label, *view.extra):
        cols.append(pl.col(queue.sort))
    if view.label:
        cols.append(pl.col(view.label))
    rows = frame.select(cols).slice(f.offset, f.limit).collect().to_dicts()
    for r in rows:
        d = reviews.get(r["id"])
        r["decision"] = d["action"] if d else None
    return {"total": total, "rows": rows}


def _flag(flag: str, view: View, reviewed: set[str]):
    import polars as pl

    if flag == "reviewed":
        return pl.col("id").is_in(list(reviewed))
    if flag == "unreviewed":
        return ~pl.col("id").is_in(list(reviewed))
    return view.flags().get(flag, pl.lit(False))  # a flag that does not apply to this split matches nothing


def row(store: RunStore, split: str, row_id: str) -> dict:
    """One row in full, with word diffs of each SFT revision against the text before it."""
    import polars as pl

    frame = store.scan(split) if split in store.splits() else None
    if frame is None:
        raise CaiError(f"no split {split!r} in this run")
    found = frame.filter(pl.col("id") == row_id).collect().to_dicts()
    if not found:
        raise CaiError(f"no row {row_id!r} in {split}")
    out = found[0]
    if out.get("revisions"):
        before = out["initial"]
        for r in out["revisions"]:
            r["diff"] = diff(before, r["revision"])
            before = r["revision"]
    d = store.reviews().get((split, row_id))
    out["decision"] = d
    return out


_TOKENS = re.compile(r"\s+|[^\s]+")


def diff(a: str, b: str) -> list[list[str]]:
    """Word-level diff of `a` to `b` as [op, text] pieces: op is "=" (both), "-" (only a) or "+" (only b)."""
    x, y = _TOKENS.findall(a), _TOKENS.findall(b)
    out: list[list[str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, x, y, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(["=", "".join(x[i1:i2])])
        else:
            if i2 > i1:
                out.append(["-", "".join(x[i1:i2])])
            if j2 > j1:
                out.append(["+", "".join(y[j1:j2])])
    return out
