"""What the selected (SFT by rejection sampling) and ranked (K-way preferences) splits say of themselves."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cai.stages.report import Report

if TYPE_CHECKING:
    import polars as pl


class SelectReport(Report):
    readers = "TRL's SFTTrainer reads prompt/completion (conversational)"

    def __init__(self, split: str, select: str, require: str | None):
        super().__init__(split)
        self.default = require is None
        if require is None:
            self.require = "the constitution's hard rules and every accuracy rule where a reference grades it"
        else:
            self.require = require.strip() or "nothing (every answered sample)"
        self.how = select

    def stats(self, rows: pl.LazyFrame) -> dict:
        import polars as pl

        per_prompt = (
            rows.group_by("prompt_id")
            .agg(
                pl.len().alias("kept"),
                pl.col("passing").first(),
                pl.col("samples").first(),
                pl.col("graded").first(),
            )
            .collect()
        )
        yields = [p / n for p, n in zip(per_prompt["passing"], per_prompt["samples"], strict=True) if n]
        return {
            "selected": {
                "rows": int(per_prompt["kept"].sum()) if per_prompt.height else 0,
                "prompts": per_prompt.height,
                "mean_yield": sum(yields) / len(yields) if yields else None,
                "mean_kept": per_prompt["kept"].mean() if per_prompt.height else None,
                "ungraded_prompts": int((~per_prompt["graded"]).sum()) if per_prompt.height else 0,
            }
        }

    def summary_lines(self, stats: dict) -> list[str]:
        s = stats["selected"]
        yield_ = "n/a" if s["mean_yield"] is None else f"{100 * s['mean_yield']:.1f}%"
        lines = [
            f"selected       {s['rows']} SFT rows from {s['prompts']} prompts (--select {self.how}, requiring "
            f"{self.require}); mean yield {yield_} of a prompt's samples pass (prompts with none: skipped, on record)"
        ]
        if s.get("ungraded_prompts"):
            lines.append(
                f"               {s['ungraded_prompts']} of those prompts have no reference: their answers were kept "
                "on the other requirements alone (no accuracy rule could apply)"
            )
        return lines

    report_lines = summary_lines

    def card_lines(self, stats: dict) -> list[str]:
        return [
            f"- `selected`: rejection sampling (DeepSeek-R1): sampled answers that meet {self.require}, kept by "
            f"`{self.how}`; TRL's conversational prompt-completion format."
        ]


class RankReport(Report):
    readers = "TRL's RewardTrainer reads prompt/chosen/rejected; cai train-pm groups each prompt's pairs"
    task_categories = ("text-generation", "text-classification")

    def __init__(self, split: str, pairs: str, temperature: float):
        super().__init__(split)
        self.pairs, self.temperature = pairs, temperature

    def stats(self, rows: pl.LazyFrame) -> dict:
        import polars as pl

        s = (
            rows.select(
                pl.len().alias("pairs"),
                pl.col("group").n_unique().alias("groups"),
                pl.col("p_chosen").mean().alias("mean_p_chosen"),
                pl.col("tie").sum().alias("ties"),
                pl.col("graded").sum().alias("graded"),
            )
            .collect()
            .row(0, named=True)
        )
        return {"ranked": s}

    def summary_lines(self, stats: dict) -> list[str]:
        s = stats["ranked"]
        per = s["pairs"] / s["groups"] if s["groups"] else 0
        return [
            f"ranked         {s['pairs']} pairs in {s['groups']} groups ({per:.1f} per prompt, --ranked-pairs "
            f"{self.pairs}); mean p_chosen {s['mean_p_chosen']:.3f} (Bradley-Terry, T {self.temperature:g}), "
            f"{s['ties']} ties; {s['graded']} pairs by the graded score (a reference), the rest by the reference-free"
        ]

    report_lines = summary_lines

    def card_lines(self, stats: dict) -> list[str]:
        return [
            f"- `ranked`: pairs among each prompt's sampled answers ranked by their graded score where a reference "
            f"grades them (`graded`: the accuracy rules count, rule-checked preferences), else by the reference-free "
            f"score ({self.pairs}); `p_chosen` = sigmoid((score_chosen - score_rejected) / {self.temperature:g}); "
            "`group` is the prompt."
        ]
