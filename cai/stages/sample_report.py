"""What the samples split says of itself: how many answers, how each signal scored them, P(IK), and how well
P(True) and the combined score pick the right answers where a reference grades them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cai.signals import ranking
from cai.stages.report import Report

if TYPE_CHECKING:
    import polars as pl


def _tenths(values: list[float]) -> list[int]:
    counts = [0] * 10
    for v in values:
        counts[min(9, max(0, int(v * 10)))] += 1
    return counts


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


class SampleReport(Report):
    readers = (
        "`cai generate --stage sample` runs select (SFT) and rank (preferences) on it; train-pm --kind pik reads it"
    )

    def __init__(self, split: str, n: int, signals: list[str], weights: str):
        super().__init__(split)
        self.n, self.signals, self.weights = n, signals, weights

    def stats(self, rows: pl.LazyFrame) -> dict:
        table = rows.select("samples", "graded", "correct", "p_ik", "best").collect()
        samples = [s for group in table["samples"].to_list() for s in group]
        prompts = table.height
        graded = [r for r in table.iter_rows(named=True) if r["graded"]]
        labelled = [s for s in samples if s["correct"] is not None]
        out: dict = {
            "prompts": prompts,
            "samples": len(samples),
            "failed_samples": sum(s["error"] is not None for s in samples),
            "signal_failures": sum(len(s["failures"]) for s in samples),
            "graded_prompts": len(graded),
            "pass_at_1": sum(r["correct"] for r in graded) / sum(r["graded"] for r in graded) if graded else None,
            "pass_at_n": sum(r["correct"] > 0 for r in graded) / len(graded) if graded else None,
            "mean_p_ik": sum(r["p_ik"] for r in graded) / len(graded) if graded else None,
        }
        for signal in ("rules_score", "p_true", "pm", "prm", "grm", "score"):
            values = [s[signal] for s in samples if s[signal] is not None]
            out[f"mean_{signal}"] = sum(values) / len(values) if values else None
        # Where a reference grades the answers: does each score separate right from wrong (AUROC), and does the
        # prompt's best-scored sample come out right (best-of-N by the combined score)?
        out["auroc"] = {
            signal: ranking.auroc([s[signal] for s in scored], [bool(s["correct"]) for s in scored])
            for signal in ("p_true", "pm", "prm", "grm", "score")
            if (scored := [s for s in labelled if s[signal] is not None])
        }
        best = [
            r["samples"][r["best"]]["correct"]
            for r in graded
            if r["best"] is not None and r["samples"][r["best"]]["correct"] is not None
        ]
        out["best_of_n"] = sum(bool(b) for b in best) / len(best) if best else None
        # the distributions the plot draws: each signal's values on [0, 1], in tenths
        out["histograms"] = {
            signal: _tenths([ranking.unit(signal, s[key]) for s in samples if s[key] is not None])
            for signal, key in (
                ("rules", "rules_score"),
                ("p_true", "p_true"),
                ("pm", "pm"),
                ("prm", "prm"),
                ("grm", "grm"),
                ("score", "score"),
            )
            if any(s[key] is not None for s in samples)
        }
        out["p_ik_histogram"] = _tenths([r["p_ik"] for r in graded])
        return {"samples": out}

    plots = True

    def plot(self, stats: dict, left: Any, right: Any) -> None:
        """Each signal's distribution over the samples (on [0, 1]), and P(IK) over the prompts."""
        s = stats["samples"]
        centres = [i / 10 + 0.05 for i in range(10)]
        signals = list(s["histograms"])
        width = 0.09 / max(1, len(signals))
        for k, signal in enumerate(signals):
            left.bar(
                [c - 0.045 + width * (k + 0.5) for c in centres], s["histograms"][signal], width=width, label=signal
            )
        left.set(title=f"scores of {s['samples']} samples, on [0, 1]", xlabel="score", ylabel="samples", xlim=(0, 1))
        left.legend(fontsize=8)
        if s["graded_prompts"]:
            right.bar(centres, s["p_ik_histogram"], width=0.09, color="#55a868")
            right.set(
                title=f"P(IK): share of a prompt's samples right (pass@1 {_pct(s['pass_at_1'])})",
                xlabel="P(IK)",
                ylabel="prompts",
                xlim=(0, 1),
            )
        else:
            right.axis("off")
            right.text(0.5, 0.5, "no reference graded the samples", ha="center", va="center")

    def summary_lines(self, stats: dict) -> list[str]:
        s = stats["samples"]
        lines = [
            f"samples        {s['samples']} answers to {s['prompts']} prompts ({self.n} each), {s['failed_samples']} "
            f"failed, {s['signal_failures']} scores failed; signals {', '.join(self.signals)} ({self.weights})",
        ]
        if s["graded_prompts"]:
            lines.append(
                f"accuracy       pass@1 {_pct(s['pass_at_1'])}, pass@{self.n} {_pct(s['pass_at_n'])}, best-of-"
                f"{self.n} by score {_pct(s['best_of_n'])}; mean P(IK) {_num(s['mean_p_ik'])} over "
                f"{s['graded_prompts']} graded prompts"
            )
            if s["auroc"]:
                cells = ", ".join(f"{k} {_num(v)}" for k, v in s["auroc"].items())
                lines.append(f"AUROC          of each score against the answer being right: {cells}")
        return lines

    def report_lines(self, stats: dict) -> list[str]:
        s = stats["samples"]
        means = ", ".join(
            f"{k} {_num(s[f'mean_{k}'])}"
            for k in ("rules_score", "p_true", "pm", "prm", "grm", "score")
            if s[f"mean_{k}"] is not None
        )
        return [*self.summary_lines(stats), f"mean scores    {means}"]

    def card_lines(self, stats: dict) -> list[str]:
        return [
            f"- `samples`: {self.n} sampled answers per prompt, each scored by {', '.join(self.signals)}; the combined "
            f"score is the weighted mean on [0, 1] ({self.weights}); `p_ik` is the share of a prompt's answers that "
            "pass its accuracy rules (Kadavath et al.'s P(IK) target)."
        ]
