"""Summaries of a run with polars: rows, skips, and each stage's own section (principles, labels, ...)."""

from __future__ import annotations

import json
from pathlib import Path

from cai.errors import CaiError
from cai.stages import Stage
from cai.store import RunStore


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
    from cai.review.decisions import counts

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
        out.update(stage.stats(frame))
        out["sections"].append(stage.name)
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
            lines += stage.report_lines(s)
    return "\n".join(lines)


def plot(s: dict, path: str) -> None:
    """A PNG: for a preference split, the p_chosen histogram and the per-principle consistency bars; for a steps
    split, where the first error falls and the mean P(good step) per principle. One row per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [draw for key, draw in (("p_chosen", _prefs_panels), ("steps", _steps_panels)) if key in s]
    if not rows:
        raise CaiError("--plot needs a preference or steps split (run the rl or steps stage first)")
    fig, axes = plt.subplots(len(rows), 2, figsize=(12, 4.5 * len(rows)), squeeze=False)
    for draw, (a, b) in zip(rows, axes, strict=True):
        draw(s, a, b)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _prefs_panels(s: dict, a, b) -> None:
    hist = s["p_chosen_histogram"]
    a.bar([r["bin"] + 0.05 for r in hist], [r["len"] for r in hist], width=0.09, color="#4c72b0")
    a.set(
        title=f"p_chosen ({s['judge']} judge)",
        xlabel="soft label of the chosen answer",
        ylabel="pairs",
        xlim=(0.5, 1.0),
    )
    per = s["consistent_per_principle"]
    if per:
        b.barh([r["principle"] for r in per], [100 * r["share"] for r in per], color="#55a868")
        b.set(title="position-consistent votes per principle", xlabel="% of votes", xlim=(0, 100))
    else:
        b.axis("off")
        b.text(0.5, 0.5, f"the {s['judge']} judge makes no two-order votes", ha="center", va="center")


def _steps_panels(s: dict, a, b) -> None:
    from cai.stages.steps_report import FIRST_ERRORS

    st = s["steps"]
    counts = {r["step"]: r["len"] for r in st["first_error_histogram"]}
    labels = [str(i + 1) for i in range(FIRST_ERRORS - 1)] + [f"{FIRST_ERRORS}+", "none"]
    values = [counts.get(i, 0) for i in range(FIRST_ERRORS)] + [st["all_good"]]
    a.bar(labels, values, color=["#c44e52"] * FIRST_ERRORS + ["#55a868"])
    a.set(title=f"first bad step ({st['solutions']} solutions)", xlabel="step", ylabel="solutions")
    per = st["per_principle"]
    b.barh([r["principle"] for r in per], [r["p_mean"] for r in per], color="#4c72b0", label="mean P(good step)")
    b.scatter([r["consistent"] for r in per], [r["principle"] for r in per], color="#c44e52", zorder=3,
              label="share of reads whose two orders agree")  # fmt: skip
    b.axvline(0.5, color="#999999", linestyle="--", linewidth=1)
    b.set(title="step reads per principle", xlim=(0, 1))
    b.legend(loc="lower right", fontsize=8)


def to_json(s: dict) -> str:
    return json.dumps(s, indent=2, default=str)
