"""What the review page asks of a run: one filtered page of row summaries, and one row in full.

Reads are lazy polars scans of the split's shards with the filters pushed down, then one page sliced off, so a
run of 100,000 rows is never loaded whole. Everything returned is data for the page to show as text.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from cai.errors import CaiError
from cai.store import RunStore

PAGE_MAX = 200
FLAGS = ("inconsistent", "tie", "failed", "rules", "low_p_true", "reviewed", "unreviewed")


@dataclass(frozen=True)
class Filters:
    split: str
    q: str = ""
    principle: str = ""
    p_min: float | None = None
    p_max: float | None = None
    flag: str = ""
    offset: int = 0
    limit: int = 50


def parse(params: dict[str, str], splits: list[str]) -> Filters:
    split = params.get("split") or (splits[0] if splits else "")
    if split not in splits:
        raise CaiError(f"no split {split!r} in this run (have: {', '.join(splits) or 'none'})")
    flag = params.get("flag", "")
    if flag and flag not in FLAGS:
        raise CaiError(f"flag must be one of {', '.join(FLAGS)}")
    try:
        p_min = float(params["p_min"]) if params.get("p_min") else None
        p_max = float(params["p_max"]) if params.get("p_max") else None
        offset = max(0, int(params.get("offset") or 0))
        limit = min(PAGE_MAX, max(1, int(params.get("limit") or 50)))
    except ValueError:
        raise CaiError("p_min, p_max, offset and limit must be numbers") from None
    return Filters(
        split, params.get("q", "")[:200], params.get("principle", "")[:200], p_min, p_max, flag, offset, limit
    )


def _text(col: str):
    """The text of a messages column (every message's content) or a string column."""
    import polars as pl

    return pl.col(col).list.eval(pl.element().struct.field("content")).list.join("\n")


def _content(schema, col: str):
    import polars as pl

    return _text(col) if isinstance(schema[col], pl.List) else pl.col(col)


def _p_true():
    """The SFT completion's P(True): the kept text's (round 0 is the initial answer)."""
    import polars as pl

    kept = pl.col("kept").fill_null(0)
    revised = pl.col("revisions").list.get(kept - 1, null_on_oob=True).struct.field("p_true")
    return pl.when(kept == 0).then(pl.col("initial_p_true")).otherwise(revised)


def page(store: RunStore, f: Filters) -> dict:
    """{total, rows: [{id, prompt, answer, p_chosen?, principles, decision}]} for one page of `f`."""
    import polars as pl

    frame = store.scan(f.split)
    if frame is None:
        return {"total": 0, "rows": []}
    schema = frame.collect_schema()
    names = set(schema.names())
    answer = "chosen" if "chosen" in names else "completion" if "completion" in names else None
    principles = (
        pl.col("votes").list.eval(pl.element().struct.field("principle"))
        if "votes" in names
        else pl.col("revisions").list.eval(pl.element().struct.field("principle"))
        if "revisions" in names
        else pl.lit([], dtype=pl.List(pl.String))
    )
    reviews = {i: d for (s, i), d in store.reviews().items() if s == f.split}
    conds = []
    if f.q:
        needle = f.q.lower()
        texts = [_content(schema, c) for c in ("prompt", "chosen", "rejected", "completion") if c in names]
        if "completions" in names:  # a steps row: its steps
            texts.append(pl.col("completions").list.join("\n"))
        conds.append(pl.any_horizontal([t.str.to_lowercase().str.contains(needle, literal=True) for t in texts]))
    if f.principle:
        conds.append(principles.list.contains(f.principle))
    if "p_chosen" in names and f.p_min is not None:
        conds.append(pl.col("p_chosen") >= f.p_min)
    if "p_chosen" in names and f.p_max is not None:
        conds.append(pl.col("p_chosen") <= f.p_max)
    if f.flag:
        conds.append(_flag(f.flag, names, set(reviews)))
    for cond in conds:
        frame = frame.filter(cond)
    total = frame.select(pl.len()).collect().item()
    cols = [pl.col("id"), _content(schema, "prompt").str.slice(0, 300).alias("prompt"), principles.alias("principles")]
    if answer:
        cols.append(_content(schema, answer).str.slice(0, 300).alias("answer"))
    elif "completions" in names:  # a steps row: which of the prompt's solutions, and its steps
        cols.append(pl.col("completions").list.join(" / ").str.slice(0, 300).alias("answer"))
        cols.append(pl.col("solution"))
    if "p_chosen" in names:
        cols.append(pl.col("p_chosen"))
    rows = frame.select(cols).slice(f.offset, f.limit).collect().to_dicts()
    for r in rows:
        d = reviews.get(r["id"])
        r["decision"] = d["action"] if d else None
    return {"total": total, "rows": rows}


def _flag(flag: str, names: set[str], reviewed: set[str]):
    import polars as pl

    if flag == "reviewed":
        return pl.col("id").is_in(list(reviewed))
    if flag == "unreviewed":
        return ~pl.col("id").is_in(list(reviewed))
    if flag == "inconsistent" and "votes" in names:
        v = pl.element().struct
        split_vote = (v.field("kind") == "ai") & ((v.field("p_chosen_ab") > 0.5) != (v.field("p_chosen_ba") > 0.5))
        return pl.col("votes").list.eval(split_vote).list.any()
    if flag == "tie" and "tie" in names:
        return pl.col("tie")
    if flag == "failed" and "failed_votes" in names:
        return pl.col("failed_votes").list.len() > 0
    if flag == "rules":
        if "rules_chosen" in names:  # the chosen answer breaks a rule
            return pl.col("rules_chosen").list.eval(~pl.element().struct.field("passed")).list.any()
        if "revisions" in names:  # a revision broke a hard rule the text before it kept
            return pl.col("revisions").list.eval(pl.element().struct.field("regressed")).list.any()
    if flag == "low_p_true" and "initial_p_true" in names:
        return _p_true() < 0.5
    return pl.lit(False)  # the flag does not apply to this split: nothing matches


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
