"""The Report interface: what a stage says about its split, in `cai stats`, the run summary, the dataset card and
the stats plot. Every method has a working default, so a stage with nothing to say needs no report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa


def pct(share: float | None, digits: int = 1, width: int = 0) -> str:
    """A share as a percentage ("n/a" without one), right-aligned in `width` characters."""
    return ("n/a" if share is None else f"{100 * share:.{digits}f}%").rjust(width)


def bars(rows: list[tuple[str, int]], width: int = 30) -> list[str]:
    """A text histogram: a line per (label, count), its bar scaled to the largest count."""
    top = max([n for _, n in rows] or [1])
    return [f"  {label}  {'#' * max(1, round(width * n / top))} {n}" for label, n in rows]


class Report:
    """A stage's report (returned by `Stage.report()`, built with the stage's own settings).

    task_categories  the Hub's task categories of the split, for the dataset card
    readers          who reads the split as it is, for the dataset card
    plots            whether it draws panels in `cai stats --plot` (then it implements `plot`)
    """

    task_categories: ClassVar[tuple[str, ...]] = ("text-generation",)
    readers: ClassVar[str] = ""
    plots: ClassVar[bool] = False

    def __init__(self, split: str):
        self.split = split

    def stats(self, rows: pl.LazyFrame) -> dict:
        """This split's section of `cai stats` (flat keys, merged into the report; nest them under one key of
        the split's name where they are generic)."""
        return {}

    def summary_lines(self, stats: dict) -> list[str]:
        """Lines for the summary printed at the end of `cai generate`."""
        return []

    def report_lines(self, stats: dict) -> list[str]:
        """Lines for `cai stats`."""
        return []

    def card_lines(self, stats: dict) -> list[str]:
        """Markdown bullets for the dataset card: what this split holds and how it was made."""
        return []

    def card_stats(self, stats: dict) -> list[str]:
        """Markdown bullets for the card's statistics section."""
        return []

    def card_use(self) -> list[str]:
        """Markdown for the card's "Use" section beyond loading the split (how to train on it)."""
        return []

    def select(self, table: pa.Table, min_p_true: float) -> tuple[pa.Table, str]:
        """The rows to publish under `cai publish --min-p-true`, and a sentence for the card ('' if the split has
        no P(True) to select by: then every row is kept)."""
        return table, ""

    def plot(self, stats: dict, left: Any, right: Any) -> None:
        """Draw this split's two panels of `cai stats --plot` on two matplotlib axes (where `plots` is set)."""
        raise NotImplementedError
