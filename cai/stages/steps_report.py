"""The steps split's statistics and how they are told: `cai stats`, the run summary, the dataset card."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cai.core.steps import CLASSES
from cai.stages.report import Report, bars

if TYPE_CHECKING:
    import polars as pl

FIRST_ERRORS = 8  # first-error histogram: step 1 .. 7, then "8+"


class StepsReport(Report):
    """What the steps stage says about its split: steps per solution, how many steps fell in each class (positive,
    neutral, negative, unlabelled after the first mistake) and the share labelled good, where the first error
    falls, the judge's order consistency per principle, and final-answer accuracy where the prompts had
    references. `judged`: the step judge's sentence of how it labelled each step; `band`: the neutral band."""

    readers = "TRL's PRMTrainer reads prompt/completions/labels as is"
    plots = True
    task_categories = ("text-generation", "token-classification")

    def __init__(self, split: str, solutions: str, separator: str, judged: str, band: str, after_error: bool):
        super().__init__(split)
        self.solutions, self.separator, self.judged, self.band = solutions, separator, judged, band
        self.after = (
            "cover every step (labelled after the first mistake too)"
            if after_error
            else "stop at the first mistake: the steps after it are unlabelled and not trained on"
        )

    def stats(self, rows: pl.LazyFrame) -> dict:
        import polars as pl

        s = (
            rows.select(
                pl.len().alias("solutions"),
                pl.col("prompt_id").n_unique().alias("prompts"),
                pl.col("steps").list.len().mean().alias("steps_mean"),
                pl.col("steps").list.len().max().alias("steps_max"),
                pl.col("steps").list.len().sum().alias("steps"),
                pl.col("labels").list.len().sum().alias("labelled"),
                pl.col("labels").list.sum().sum().alias("good_steps"),
                pl.col("first_error").is_null().sum().alias("all_good"),
                pl.col("solution_p").mean().alias("solution_p_mean"),
                pl.col("failed_votes").list.len().sum().alias("failed_votes"),
                pl.col("correct").is_not_null().sum().alias("graded"),
                pl.col("correct").sum().alias("correct"),
            )
            .collect()
            .row(0, named=True)
        )
        step_p = rows.select(pl.col("step_p").explode()).select(pl.col("step_p").mean()).collect().item()
        classes = dict(
            rows.select(pl.col("step_class").explode().fill_null("unlabelled"))
            .group_by("step_class")
            .len()
            .collect()
            .rows()
        )
        first = (
            rows.filter(pl.col("first_error").is_not_null())
            .select(pl.col("first_error").clip(0, FIRST_ERRORS - 1).alias("step"))
            .group_by("step")
            .len()
            .sort("step")
            .collect()
            .rows(named=True)
        )
        votes = rows.select(pl.col("votes").explode()).unnest("votes").drop_nulls("principle")
        per_principle = (
            votes.with_columns(((pl.col("p_yes_ab") > 0.5) == (pl.col("p_yes_ba") > 0.5)).alias("consistent"))
            .group_by("principle")
            .agg(
                ((pl.col("p_yes_ab") + pl.col("p_yes_ba")) / 2).mean().alias("p_mean"),
                pl.col("consistent").mean().alias("consistent"),
                pl.len().alias("votes"),
            )
            .sort("principle")
            .collect()
            .rows(named=True)
        )
        # One key: `cai stats` merges every stage's section into one report, and these names are generic.
        return {
            "steps": {
                **s,
                "good_share": s["good_steps"] / s["labelled"] if s["labelled"] else None,
                "classes": {c: classes.get(c, 0) for c in (*CLASSES, "unlabelled")},
                "step_p_mean": step_p,
                "first_error_histogram": first,
                "per_principle": per_principle,
                "accuracy": s["correct"] / s["graded"] if s["graded"] else None,
            }
        }

    def _labels(self, s: dict) -> str:
        c = s["classes"]
        good = "n/a" if s["good_share"] is None else f"{100 * s['good_share']:.1f}%"
        return (
            f"{s['labelled']} of {s['steps']} steps labelled ({c['positive']} positive, {c['neutral']} neutral, "
            f"{c['negative']} negative; {c['unlabelled']} after a first mistake), {good} good (mean step_p "
            f"{s['step_p_mean']:.3f}), {s['all_good']} of {s['solutions']} solutions with no negative step, "
            f"{s['failed_votes']} failed reads"
        )

    def _first_errors(self, s: dict) -> str:
        counts = {r["step"]: r["len"] for r in s["first_error_histogram"]}
        return "  ".join(
            f"{i + 1 if i < FIRST_ERRORS - 1 else str(FIRST_ERRORS) + '+'}: {counts.get(i, 0)}"
            for i in range(FIRST_ERRORS)
        )

    def _accuracy(self, s: dict) -> str:
        if s["accuracy"] is None:
            return ""
        return f"final answer correct in {s['correct']} of {s['graded']} graded solutions ({100 * s['accuracy']:.1f}%)"

    def summary_lines(self, report: dict) -> list[str]:
        s = report["steps"]
        lines = [
            f"steps          {s['solutions']} solutions of {s['prompts']} prompts, "
            f"{s['steps_mean']:.1f} steps each (max {s['steps_max']})",
            f"step labels    {self._labels(s)}",
            f"first error    at step {self._first_errors(s)}",
        ]
        return lines + ([f"outcome        {self._accuracy(s)}"] if s["accuracy"] is not None else [])

    def report_lines(self, report: dict) -> list[str]:
        s = report["steps"]
        lines = [
            "",
            f"{'solutions / prompts':<28}{s['solutions']} / {s['prompts']}",
            f"{'steps per solution':<28}{s['steps_mean']:.2f} (max {s['steps_max']})",
            f"{'step labels':<28}{self._labels(s)}",
            f"{'mean solution_p':<28}{s['solution_p_mean']:.3f}",
        ]
        if s["accuracy"] is not None:
            lines.append(f"{'final answers':<28}{self._accuracy(s)}")
        lines.append("first error at step (solutions):")
        steps = [
            f"{r['step'] + 1}" if r["step"] < FIRST_ERRORS - 1 else f"{FIRST_ERRORS}+"
            for r in s["first_error_histogram"]
        ]
        lines += bars([(f"{step:>3}", r["len"]) for step, r in zip(steps, s["first_error_histogram"], strict=True)])
        lines.append("per principle (mean P(good step), order-consistent reads):")
        lines += [
            f"  {r['principle']:<26}{r['p_mean']:.3f}  {100 * r['consistent']:5.1f}%  ({r['votes']} votes)"
            for r in s["per_principle"]
        ]
        return lines

    def card_lines(self, s: dict) -> list[str]:
        return [
            f"- **`{self.split}`**: process supervision (Lightman et al. 2023) with AI feedback: `{self.solutions}` "
            f"solutions split into steps by `{self.separator}`; {self.judged}. "
            f"`step_p` is P(good step) (the mean over the judge's reads); `step_class` is positive above the neutral "
            f"band, negative below it, neutral within it ({self.band}); `first_error` is the first negative step "
            "(the first mistake). As in PRM800K, `completions` and `labels` (TRL's stepwise-supervision format) "
            f"{self.after}; a label is true for a positive step (a neutral one counts as not positive). `steps` "
            "holds every step, `solution_p` the product of `step_p`; `votes` holds every read."
        ]

    def card_use(self) -> list[str]:
        return [
            "Train a process reward model on the soft step labels with `cai train-pm --kind prm`, or with TRL's "
            "`PRMTrainer` on the boolean ones:",
            "",
            "```python",
            "from trl import PRMConfig, PRMTrainer",
            "",
            'trainer = PRMTrainer(model=model, args=PRMConfig(output_dir="prm"), processing_class=tokenizer, '
            f'train_dataset={self.split}["train"])',
            "trainer.train()",
            "```",
            "",
        ]

    def card_stats(self, report: dict) -> list[str]:
        s = report["steps"]
        lines = [
            f"- {s['solutions']} solutions of {s['prompts']} prompts, {s['steps_mean']:.1f} steps each",
            f"- {self._labels(s)}",
            f"- first error at step: {self._first_errors(s)}",
        ]
        return lines + ([f"- {self._accuracy(s)}"] if s["accuracy"] is not None else [])

    def plot(self, stats: dict, left: Any, right: Any) -> None:
        """Where the first error falls, and the mean P(good step) per principle."""
        st = stats["steps"]
        counts = {r["step"]: r["len"] for r in st["first_error_histogram"]}
        labels = [str(i + 1) for i in range(FIRST_ERRORS - 1)] + [f"{FIRST_ERRORS}+", "none"]
        values = [counts.get(i, 0) for i in range(FIRST_ERRORS)] + [st["all_good"]]
        left.bar(labels, values, color=["#c44e52"] * FIRST_ERRORS + ["#55a868"])
        left.set(title=f"first bad step ({st['solutions']} solutions)", xlabel="step", ylabel="solutions")
        per = st["per_principle"]
        right.barh(
            [r["principle"] for r in per], [r["p_mean"] for r in per], color="#4c72b0", label="mean P(good step)"
        )
        right.scatter(
            [r["consistent"] for r in per],
            [r["principle"] for r in per],
            color="#c44e52",
            zorder=3,
            label="share of reads whose two orders agree",
        )
        right.axvline(0.5, color="#999999", linestyle="--", linewidth=1)
        right.set(title="step reads per principle", xlim=(0, 1))
        right.legend(loc="lower right", fontsize=8)
