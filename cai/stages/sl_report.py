"""The SL split's statistics and how they are told: `cai stats`, the run summary, the dataset card."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cai.stages.report import Report, bars, pct

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa


class SLReport(Report):
    """What the SL stage says about its split: principle usage, lengths, rules passed before and after
    revising, and self-evaluation's P(True) by round."""

    readers = "TRL's SFTTrainer reads prompt/completion as is"

    def __init__(self, split: str, rounds: int, keep: str):
        super().__init__(split)
        self.rounds, self.keep = rounds, keep

    def stats(self, rows: pl.LazyFrame) -> dict:
        import polars as pl

        revs = (
            rows.select("id", "initial", "revisions")
            .explode("revisions")
            .unnest("revisions")
            .with_columns(pl.col("revision").shift(1).over("id").fill_null(pl.col("initial")).alias("input"))
        )
        lengths = (
            revs.select(
                pl.col("initial").str.len_chars().mean().alias("initial"),
                pl.col("critique").str.len_chars().mean().alias("critique"),
                pl.col("revision").str.len_chars().mean().alias("revision"),
                (pl.col("revision") == pl.col("input")).mean().alias("unchanged"),
            )
            .collect()
            .row(0, named=True)
        )
        return {
            "principles_per_round": (
                revs.group_by("round", "principle")
                .len()
                .sort("round", "len", descending=[False, True])
                .collect()
                .rows(named=True)
            ),
            "mean_chars": {k: lengths[k] for k in ("initial", "critique", "revision")},
            "revision_unchanged_share": lengths["unchanged"],
            **self._rule_stats(rows),
            **self._self_eval_stats(rows),
        }

    @staticmethod
    def _self_eval_stats(rows: pl.LazyFrame) -> dict:
        """P(True) by round (does revising help?), its change per principle, its histogram, and how often the
        two option orders disagree."""
        import polars as pl

        if "self_eval" not in rows.collect_schema().names():
            return {}
        reads = rows.select("self_eval").explode("self_eval").unnest("self_eval").drop_nulls("round")
        if reads.select(pl.col("p_true").is_not_null().sum()).collect().item() == 0:
            return {}
        by_round = (
            reads.group_by("round")
            .agg(pl.col("p_true").mean().alias("mean"), pl.len().alias("n"))
            .sort("round")
            .collect()
            .rows(named=True)
        )
        revs = (
            rows.select("id", "initial_p_true", "revisions")
            .explode("revisions")
            .unnest("revisions")
            .with_columns(pl.col("p_true").shift(1).over("id").fill_null(pl.col("initial_p_true")).alias("before"))
        )
        per_principle = (
            revs.group_by("principle")
            .agg((pl.col("p_true") - pl.col("before")).mean().alias("change"), pl.len().alias("n"))
            .sort("principle")
            .collect()
            .rows(named=True)
        )
        hist = (
            reads.drop_nulls("p_true")
            .select((pl.col("p_true") * 10).floor().clip(0, 9).alias("bin"))
            .group_by("bin")
            .len()
            .sort("bin")
            .collect()
            .rows(named=True)
        )
        disagree = (
            reads.drop_nulls("p_true")
            .select(((pl.col("p_true_ab") > 0.5) != (pl.col("p_true_ba") > 0.5)).mean())
            .collect()
            .item()
        )
        failed = reads.select(pl.col("error").is_not_null().sum()).collect().item()
        return {
            "p_true_by_round": by_round,
            "p_true_change_per_principle": per_principle,
            "p_true_histogram": [{"bin": r["bin"] / 10, "len": r["len"]} for r in hist],
            "p_true_orders_disagree": disagree,
            "p_true_failed": failed,
        }

    @staticmethod
    def _rule_stats(rows: pl.LazyFrame) -> dict:
        """Per rule, the share of initial answers and of final revisions that pass it (does revising help?),
        the revisions that broke a hard rule their input kept, and which round the completions come from."""
        import polars as pl

        if "initial_rules" not in rows.collect_schema().names():  # runs made before rules existed
            return {}

        def passed(results: pl.LazyFrame, name: str) -> pl.LazyFrame:
            """The share passed of the checks that finished; the unknown ones (an error) counted apart."""
            known = pl.col("error").is_null()
            return (
                results.explode("r")
                .unnest("r")
                .drop_nulls("rule")
                .group_by("rule")
                .agg(pl.col("passed").filter(known).mean().alias(name), (~known).sum().alias(f"{name}_unknown"))
            )

        initial = passed(rows.select(pl.col("initial_rules").alias("r")), "initial")
        final = passed(rows.select(pl.col("revisions").list.last().struct.field("rules").alias("r")), "final")
        per_rule = initial.join(final, on="rule", how="full", coalesce=True).sort("rule").collect().rows(named=True)
        unknown = sum((r["initial_unknown"] or 0) + (r["final_unknown"] or 0) for r in per_rule)
        if not per_rule:
            return {}
        revs = rows.select(pl.col("revisions").explode().struct.field("regressed").alias("regressed"))
        return {
            "rules_passed": per_rule,
            "rules_unknown": unknown,  # checks that could not finish: left out of the shares
            "hard_rule_regressions": revs.select(pl.col("regressed").sum()).collect().item(),
            "kept_round": dict(rows.group_by("kept").len().sort("kept").collect().iter_rows()),
        }

    def report_lines(self, s: dict) -> list[str]:
        m = s["mean_chars"]
        lines = [
            "",
            f"{'mean chars':<28}initial {m['initial'] or 0:.0f}  critique {m['critique'] or 0:.0f}  "
            f"revision {m['revision'] or 0:.0f}",
            f"{'revision == its input':<28}{100 * (s['revision_unchanged_share'] or 0):.1f}%",
            "",
            "principle usage per round:",
        ]
        lines += [f"  round {r['round']}  {r['principle']:<26}{r['len']:>6}" for r in s["principles_per_round"]]
        if s.get("rules_passed"):
            lines += ["", f"{'rule':<36}{'initial':>9}{'final':>9}   (share of texts that pass)"]
            lines += [f"  {r['rule']:<34}{pct(r['initial'], 0):>9}{pct(r['final'], 0):>9}" for r in s["rules_passed"]]
            lines += [
                f"{'checks that could not finish':<36}{s.get('rules_unknown', 0)}  (unknown: left out of the shares)",
                f"{'revisions breaking a hard rule':<36}{s['hard_rule_regressions']}",
                f"{'completion taken from round':<36}" + ", ".join(f"{k}: {n}" for k, n in s["kept_round"].items()),
            ]
        if s.get("p_true_by_round"):
            lines += ["", "self-evaluation, P(True) by round (0: the initial answer):"]
            lines += [f"  round {r['round']}  mean {_num(r['mean'])}  ({r['n']} answers)" for r in s["p_true_by_round"]]
            lines += ["change of P(True) from a revision's input, per principle:"]
            lines += [
                f"  {r['principle']:<26}{_num(r['change'], signed=True)}  ({r['n']} revisions)"
                for r in s["p_true_change_per_principle"]
            ]
            lines += ["P(True) histogram:"]
            lines += bars([(f"[{r['bin']:.1f}, {r['bin'] + 0.1:.1f})", r["len"]) for r in s["p_true_histogram"]])
            lines.append(
                f"{'option orders disagree':<36}{100 * (s['p_true_orders_disagree'] or 0):.1f}%  "
                f"({s['p_true_failed']} failed reads)"
            )
        return lines

    def summary_lines(self, s: dict) -> list[str]:
        if not s.get("p_true_by_round"):
            return []
        rounds = "  ".join(f"{r['round']}: {r['mean']:.3f}" for r in s["p_true_by_round"] if r["mean"] is not None)
        return [
            f"P(True)        by round {rounds}; the two option orders disagree on "
            f"{100 * (s['p_true_orders_disagree'] or 0):.1f}%, {s['p_true_failed']} failed reads"
        ]

    def card_lines(self, s: dict) -> list[str]:
        kept = (
            "final revision"
            if self.keep == "last"
            else (
                "text of the trace (initial answer or a revision) that does best on the constitution's rules; `kept` "
                "says which round"
            )
        )
        rules = (
            (
                ", with each text's rule results (`initial_rules`, `revisions.rules`) and the revisions that broke "
                "a hard rule their input kept flagged (`revisions.regressed`)"
            )
            if s.get("rules_passed")
            else ""
        )
        return [
            f"- **`{self.split}`**: each prompt was answered by the model, then critiqued and revised under a "
            f"principle sampled per round ({self.rounds} round(s)). `completion` is the {kept}; `revisions` holds the "
            f"whole trace{rules}."
        ]

    def select(self, table: pa.Table, min_p_true: float) -> tuple[pa.Table, str]:
        import pyarrow as pa

        if "self_eval" not in table.column_names:
            return table, ""
        kept = table.column("kept").to_pylist()
        initial = table.column("initial_p_true").to_pylist()
        revisions = table.column("revisions").to_pylist()
        p = [initial[i] if k == 0 else revisions[i][k - 1]["p_true"] for i, k in enumerate(kept)]
        if all(x is None for x in p):
            return table, ""
        chosen = table.filter(pa.array([x is not None and x >= min_p_true for x in p]))
        return chosen, (
            f"Only the `{self.split}` rows whose completion the model itself rated at least {min_p_true:g} "
            f"likely true (P(True), self-evaluation) are published: {chosen.num_rows} of {table.num_rows}."
        )

    def card_stats(self, s: dict) -> list[str]:
        lines = []
        if s.get("p_true_by_round"):
            lines += [
                "- self-evaluation, mean P(True) by round (0: initial answer): "
                + ", ".join(f"{r['round']}: {_num(r['mean'])}" for r in s["p_true_by_round"])
                + f"; the two option orders disagree on {100 * (s['p_true_orders_disagree'] or 0):.1f}%"
            ]
        if not s.get("rules_passed"):
            return lines
        lines += [
            f"- `{r['rule']}` passed by {pct(r['initial'], 0)} of initial answers, "
            f"{pct(r['final'], 0)} of final revisions"
            for r in s["rules_passed"]
        ]
        return [*lines, f"- revisions that broke a hard rule their input kept: {s['hard_rule_regressions']}"]


def _num(x: float | None, signed: bool = False) -> str:
    return "n/a" if x is None else (f"{x:+.3f}" if signed else f"{x:.3f}")
