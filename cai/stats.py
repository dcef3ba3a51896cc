"""Summaries of a run with polars: rows, skips, principle usage, lengths, label distribution, consistency."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from cai.errors import CaiError


def _scan(root: Path, split: str) -> pl.LazyFrame | None:
    files = sorted((root / split).glob("part-*.parquet"))
    return pl.scan_parquet([str(f) for f in files]) if files else None


def compute(run: str | Path) -> dict:
    """Everything `cai stats` shows, as plain data. Lazy scans, so a run of millions of rows is read
    column by column, never materialised whole."""
    root = Path(run)
    if not (root / "manifest.json").is_file():
        raise CaiError(f"{root}: not a cai run (no manifest.json)")
    out: dict = {"run": str(root), "rows": {}}
    sft, prefs = _scan(root, "sft"), _scan(root, "prefs")
    skipped = root / "skipped.jsonl"
    if skipped.is_file() and skipped.stat().st_size:
        sk = pl.read_ndjson(skipped).with_columns(
            pl.col("reason").str.extract(r"^([^:]+(?::\s*[^:]+)?)", 1).alias("kind"))
        out["skipped"] = sk.group_by("stage", "kind").len().sort("stage", "len", descending=[False, True]).rows(named=True)
    else:
        out["skipped"] = []
    if sft is not None:
        out["rows"]["sft"] = sft.select(pl.len()).collect().item()
        revs = (sft.select("id", "initial", "revisions").explode("revisions").unnest("revisions")
                .with_columns(pl.col("revision").shift(1).over("id").fill_null(pl.col("initial")).alias("input")))
        out["principles_per_round"] = (revs.group_by("round", "principle").len()
                                       .sort("round", "len", descending=[False, True]).collect().rows(named=True))
        lengths = revs.select(
            pl.col("initial").str.len_chars().mean().alias("initial"),
            pl.col("critique").str.len_chars().mean().alias("critique"),
            pl.col("revision").str.len_chars().mean().alias("revision"),
            (pl.col("revision") == pl.col("input")).mean().alias("unchanged"),
        ).collect().row(0, named=True)
        out["mean_chars"] = {k: lengths[k] for k in ("initial", "critique", "revision")}
        out["revision_unchanged_share"] = lengths["unchanged"]
    if prefs is not None:
        p = prefs.select("p_chosen", "tie", "failed_votes", "votes")
        summary = p.select(
            pl.len().alias("pairs"), pl.col("p_chosen").mean().alias("mean"),
            pl.col("p_chosen").median().alias("median"), pl.col("tie").sum().alias("ties"),
            pl.col("failed_votes").list.len().sum().alias("failed_votes"),
        ).collect().row(0, named=True)
        out["rows"]["prefs"] = summary["pairs"]
        out["p_chosen"] = {k: summary[k] for k in ("mean", "median")}
        out["ties"], out["failed_votes"] = summary["ties"], summary["failed_votes"]
        out["p_chosen_histogram"] = (p.select((((pl.col("p_chosen") - 0.5) * 10).floor().clip(0, 4) / 10 + 0.5)
                                              .round(1).alias("bin"))
                                     .group_by("bin").len().sort("bin").collect().rows(named=True))
        votes = (p.select("votes").explode("votes").unnest("votes").drop_nulls("principle")
                 .with_columns((((pl.col("p_chosen_ab") > 0.5) & (pl.col("p_chosen_ba") > 0.5))
                                | ((pl.col("p_chosen_ab") < 0.5) & (pl.col("p_chosen_ba") < 0.5))).alias("consistent")))
        out["position_consistent"] = votes.select(pl.col("consistent").mean()).collect().item()
        out["consistent_per_principle"] = (votes.group_by("principle")
                                           .agg(pl.col("consistent").mean().alias("share"), pl.len().alias("votes"))
                                           .sort("principle").collect().rows(named=True))
    return out


def render(s: dict) -> str:
    lines = [f"run {s['run']}", ""]
    for split, n in s["rows"].items():
        lines.append(f"{split + ' rows':<28}{n}")
    for row in s["skipped"]:
        lines.append(f"{'skipped (' + row['stage'] + ')':<28}{row['len']:>6}  {row['kind']}")
    if "mean_chars" in s:
        m = s["mean_chars"]
        lines += ["", f"{'mean chars':<28}initial {m['initial']:.0f}  critique {m['critique']:.0f}  "
                  f"revision {m['revision']:.0f}",
                  f"{'revision == its input':<28}{100 * s['revision_unchanged_share']:.1f}%", "",
                  "principle usage per round:"]
        for row in s["principles_per_round"]:
            lines.append(f"  round {row['round']}  {row['principle']:<26}{row['len']:>6}")
    if "p_chosen" in s:
        lines += ["", f"{'p_chosen mean / median':<28}{s['p_chosen']['mean']:.3f} / {s['p_chosen']['median']:.3f}",
                  f"{'ties':<28}{s['ties']}", f"{'failed CoT votes':<28}{s['failed_votes']}",
                  f"{'position-consistent votes':<28}" + ("n/a (no pairwise votes)" if s["position_consistent"] is None
                                                   else f"{100 * s['position_consistent']:.1f}%"),
                  "p_chosen histogram:"]
        top = max([r["len"] for r in s["p_chosen_histogram"]] or [1])
        for r in s["p_chosen_histogram"]:
            lines.append(f"  [{r['bin']:.1f}, {r['bin'] + 0.1:.1f})  {'#' * max(1, round(30 * r['len'] / top))} {r['len']}")
        lines.append("position-consistent share per principle:")
        for r in s["consistent_per_principle"]:
            lines.append(f"  {r['principle']:<26}{100 * r['share']:5.1f}%  ({r['votes']} votes)")
    return "\n".join(lines)


def plot(s: dict, path: str) -> None:
    """A PNG with the p_chosen histogram and the per-principle consistency bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "p_chosen" not in s:
        raise CaiError("--plot needs a preference split (run the rl stage first)")
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    hist = s["p_chosen_histogram"]
    a.bar([r["bin"] + 0.05 for r in hist], [r["len"] for r in hist], width=0.09, color="#4c72b0")
    a.set(title="p_chosen", xlabel="soft label of the chosen answer", ylabel="pairs", xlim=(0.5, 1.0))
    per = s["consistent_per_principle"]
    b.barh([r["principle"] for r in per], [100 * r["share"] for r in per], color="#55a868")
    b.set(title="position-consistent votes per principle", xlabel="% of votes", xlim=(0, 100))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def to_json(s: dict) -> str:
    return json.dumps(s, indent=2, default=str)
