"""The preference split's statistics and how they are told: `cai stats`, the run summary, the dataset card."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cai.judges import Description
from cai.stages.report import Report, bars

if TYPE_CHECKING:
    import polars as pl

BINS = 5  # p_chosen in [0.5, 0.6), ..., [0.9, 1.0]


class RLReport(Report):
    """What the RL stage says about its split: the p_chosen distribution, ties, position consistency of the
    judge's votes, and the labels each source (judge, rules, hard rules) decided, each in the judge's own words
    (`described`: the judge's Description)."""

    readers = "TRL's RewardTrainer / DPOTrainer read prompt/chosen/rejected"
    plots = True
    task_categories = ("text-generation", "text-classification")

    def __init__(self, split: str, pairs: str, judge: str, described: Description, hard_rule_p: float):
        super().__init__(split)
        self.pairs, self.judge, self.d, self.hard_rule_p = pairs, judge, described, hard_rule_p

    def stats(self, rows: pl.LazyFrame) -> dict:
        import polars as pl

        p = rows.select("p_chosen", "tie", "failed_votes", "votes")
        summary = (
            p.select(
                pl.len().alias("pairs"),
                pl.col("p_chosen").mean().alias("mean"),
                pl.col("p_chosen").median().alias("median"),
                pl.col("tie").sum().alias("ties"),
                pl.col("failed_votes").list.len().sum().alias("failed_votes"),
            )
            .collect()
            .row(0, named=True)
        )
        hist = (
            p.select((((pl.col("p_chosen") - 0.5) * 10).floor().clip(0, BINS - 1) / 10 + 0.5).round(1).alias("bin"))
            .group_by("bin")
            .len()
            .sort("bin")
            .collect()
            .rows(named=True)
        )
        every = p.select("votes").explode("votes").unnest("votes").drop_nulls("principle")
        if "kind" in every.collect_schema().names():  # runs made before rules voted have only the judge's
            every = every.filter(pl.col("kind") == "ai")
        votes = every.with_columns(
            (
                ((pl.col("p_chosen_ab") > 0.5) & (pl.col("p_chosen_ba") > 0.5))
                | ((pl.col("p_chosen_ab") < 0.5) & (pl.col("p_chosen_ba") < 0.5))
            ).alias("consistent")
        )
        decided: dict[str, int] = {}
        if "decided_by" in rows.collect_schema().names():
            decided = dict(rows.group_by("decided_by").len().sort("decided_by").collect().iter_rows())
        return {
            "pairs": summary["pairs"],
            "decided_by": decided,
            "p_chosen": {k: summary[k] for k in ("mean", "median")},
            "ties": summary["ties"],
            "failed_votes": summary["failed_votes"],
            "p_chosen_histogram": hist,
            "position_consistent": votes.select(pl.col("consistent").mean()).collect().item(),
            "consistent_per_principle": (
                votes.group_by("principle")
                .agg(pl.col("consistent").mean().alias("share"), pl.len().alias("votes"))
                .sort("principle")
                .collect()
                .rows(named=True)
            ),
            "judge": self.judge,
        }

    def _consistency(self, s: dict) -> str:
        if s["position_consistent"] is None:
            return "n/a (no pairwise votes)" if not self.d.pairwise_votes else "n/a"
        return f"{100 * s['position_consistent']:.1f}%"

    def summary_lines(self, s: dict) -> list[str]:
        d = self.d
        counts = {round(r["bin"], 1): r["len"] for r in s["p_chosen_histogram"]}
        bins = "  ".join(
            f"{0.5 + i / 10:.1f}-{0.6 + i / 10:.1f}: {counts.get(round(0.5 + i / 10, 1), 0)}" for i in range(BINS)
        )
        return [
            f"labels         mean p_chosen {s['p_chosen']['mean']:.3f}, ties {s['ties']}, "
            f"position-consistent votes {self._consistency(s)}, {d.failures} {s['failed_votes']}",
            f"p_chosen       {bins}",
            *([f"decided by     {_decided(s)}"] if s["decided_by"] else []),
        ]

    def report_lines(self, s: dict) -> list[str]:
        d = self.d
        lines = [
            "",
            f"{'judge':<28}{s['judge']}",
            f"{'p_chosen mean / median':<28}{s['p_chosen']['mean']:.3f} / {s['p_chosen']['median']:.3f}",
            f"{'ties':<28}{s['ties']}",
            f"{d.failures:<28}{s['failed_votes']}",
            f"{'position-consistent votes':<28}{self._consistency(s)}",
            *([f"{'labels decided by':<28}{_decided(s)}"] if s["decided_by"] else []),
            "p_chosen histogram:",
        ]
        lines += bars([(f"[{r['bin']:.1f}, {r['bin'] + 0.1:.1f})", r["len"]) for r in s["p_chosen_histogram"]])
        if d.pairwise_votes:
            lines.append("position-consistent share per principle:")
            lines += [
                f"  {r['principle']:<26}{100 * r['share']:5.1f}%  ({r['votes']} votes)"
                for r in s["consistent_per_principle"]
            ]
        return lines

    def card_lines(self, s: dict) -> list[str]:
        d = self.d
        rules = (
            " Where the constitution's rules (checked by code) score the two answers differently, each such "
            "rule adds a vote of kind `rule` to `votes`, weighted by the rule's weight; a hard rule that one "
            f"answer keeps and the other breaks decides the pair (p_chosen {self.hard_rule_p:g}). "
            "`decided_by` says which, and `rules_chosen`/`rules_rejected` hold every rule's result."
        )
        return [
            f"- **`{self.split}`**: `{self.pairs}` candidate pairs labelled by the `{self.judge}` judge: "
            f"{d.label_source}" + (rules if s.get("decided_by", {}).keys() - {"judge"} else "")
        ]

    def card_use(self) -> list[str]:
        return [
            "Train a soft-label preference model with `cai train-pm`, or TRL's `RewardTrainer` with hard labels:",
            "",
            "```python",
            "from trl import RewardConfig, RewardTrainer",
            "",
            'trainer = RewardTrainer(model="your/model", args=RewardConfig(output_dir="pm"), '
            f'train_dataset={self.split}["train"])',
            "trainer.train()",
            "```",
            "",
        ]

    def card_stats(self, s: dict) -> list[str]:
        d = self.d
        return [
            f"- mean p_chosen {s['p_chosen']['mean']:.3f}, median {s['p_chosen']['median']:.3f}",
            f"- position-consistent votes: {self._consistency(s)}",
            f"- ties: {s['ties']}, {d.failures}: {s['failed_votes']}",
            *([f"- labels decided by: {_decided(s)}"] if s["decided_by"] else []),
        ]

    def plot(self, stats: dict, left: Any, right: Any) -> None:
        """The p_chosen histogram, and the position-consistent share of votes per principle."""
        s = stats
        hist = s["p_chosen_histogram"]
        left.bar([r["bin"] + 0.05 for r in hist], [r["len"] for r in hist], width=0.09, color="#4c72b0")
        left.set(
            title=f"p_chosen ({s['judge']} judge)",
            xlabel="soft label of the chosen answer",
            ylabel="pairs",
            xlim=(0.5, 1.0),
        )
        per = s["consistent_per_principle"]
        if per:
            right.barh([r["principle"] for r in per], [100 * r["share"] for r in per], color="#55a868")
            right.set(title="position-consistent votes per principle", xlabel="% of votes", xlim=(0, 100))
        else:
            right.axis("off")
            right.text(0.5, 0.5, f"the {s['judge']} judge makes no two-order votes", ha="center", va="center")


def _decided(s: dict) -> str:
    """How many labels each source decided: the judge alone, rules alone, both, or a hard rule."""
    return ", ".join(f"{source} {n}" for source, n in s["decided_by"].items())
