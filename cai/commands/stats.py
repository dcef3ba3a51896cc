"""Summaries of a run with polars: rows, skips, and each stage's own section (principles, labels, ...)."""

from __future__ import annotations

import json
from pathlib import Path

from cai.core.store import RunStore
from cai.errors import CaiError
from cai.stages import Stage


def run_stages(store: RunStore) -> list[Stage]:
    """The installed stages, configured as the run in `store` was (settings it does not know are dropped:
    a run made with a plug-in that is no longer installed still reads)."""
    from cai import stages
    from cai.config import RunConfig, catalogue

    known = catalogue().settings
    given = {k: v for k, v in store.settings().items() if k in known and v != known[k].default}
    try:
        config = RunConfig(**given)
    except CaiError as e:
        raise CaiError(f"{store.root}: the run's settings no longer validate: {e}") from None
    return [stages.get(name)(config) for name in stages.ordered(stages.names())]


def compute(run: str | Path) -> dict:
    """Everything `cai stats` shows, as plain data. Lazy scans, so a run of millions of rows is read
    column by column, never materialised whole."""
    import polars as pl

    store = RunStore(run)
    store.require()
    from cai.core.decisions import counts

    out: dict = {"run": str(store.root), "rows": {}, "sections": [], "review": counts(store)}
    skipped = store.skipped()
    if skipped:
        sk = pl.DataFrame(skipped).with_columns(
            pl.col("reason").str.extract(r"^([^:]+(?::\s*[^:]+)?)", 1).alias("kind")
        )
        out["skipped"] = (
            sk.group_by("stage", "kind").len().sort("stage", "len", descending=[False, True]).rows(named=True)
        )
    else:
        out["skipped"] = []
    for stage in run_stages(store):
        frame = store.scan(stage.split)
        if frame is None:
            continue
        out["rows"][stage.split] = frame.select(pl.len()).collect().item()
        out.update(stage.report().stats(frame))
        out["sections"].append(stage.name)
    for split in store.splits():  # splits no installed stage writes (judge-data's, an evaluation's)
        out["rows"].setdefault(split, store.count(split))
    judge_data = store.load_report("judge-data")
    if judge_data is not None:
        out["judge_data"] = judge_data
    return out


def render(s: dict, store: RunStore | None = None) -> str:
    lines = [f"run {s['run']}", ""]
    for split, n in s["rows"].items():
        lines.append(f"{split + ' rows':<28}{n}")
    for row in s["skipped"]:
        lines.append(f"{'skipped (' + row['stage'] + ')':<28}{row['len']:>6}  {row['kind']}")
    review = s.get("review") or {}
    if review.get("reviewed"):
        per = ", ".join(
            f"{k}: {v['keep']} kept, {v['drop']} dropped, {v['flip']} flipped" for k, v in review["splits"].items()
        )
        lines.append(f"{'reviewed by a person':<28}{review['reviewed']:>6}  ({review['changed']} changed; {per})")
    for stage in run_stages(store or RunStore(s["run"])):
        if stage.name in s["sections"]:
            lines += stage.report().report_lines(s)
    if s.get("judge_data"):
        from cai.commands.judge_data import lines as judge_data_lines

        lines += ["", *judge_data_lines(s["judge_data"])]
    return "\n".join(lines)


def plot(s: dict, path: str) -> None:
    """A PNG: one row of two panels per split whose stage's report draws (the p_chosen histogram and per-principle
    consistency of a preference split, where the first error falls in a steps split, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [r for st in run_stages(RunStore(s["run"])) if st.name in s["sections"] and (r := st.report()).plots]
    if not drawn:
        raise CaiError("--plot: no split of this run has panels to draw (run the rl, steps or sample stage first)")
    fig, axes = plt.subplots(len(drawn), 2, figsize=(12, 4.5 * len(drawn)), squeeze=False)
    for report, (a, b) in zip(drawn, axes, strict=True):
        report.plot(s, a, b)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def to_json(s: dict) -> str:
    return json.dumps(s, indent=2, default=str)
