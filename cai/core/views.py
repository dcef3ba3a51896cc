"""A split's view: what the readers of a split need to know of it, declared by the stage that writes it.

The review page, `cai stats`, `cai score`, `cai publish` and the trainers ask a split's view which column holds
the answer, where its principles and soft label are, how a row is flipped or relabelled, and which trainer
reads it, instead of guessing from column or stage names. A new stage picks a view (or makes its own) and
every reader shows its split with no edit of theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cai.core import steps as steps_mod
from cai.errors import CaiError

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True)
class Queue:
    """A review queue: the rows a person's labels are worth most on (`condition`, a polars expression), in the
    order to label them (`sort`, highest first unless `descending` is false)."""

    help: str
    condition: Any  # pl.Expr (polars is imported where a queue is built, not here)
    sort: str
    descending: bool = True


@dataclass(frozen=True)
class View:
    """A split whose rows each hold a prompt and an answer (the default layout).

    prompt      the prompt's column: chat messages or text
    answer      the answer's column, shown in lists and searched: messages, text or a list of texts
    messages    where the prompt column is text: a column holding it as chat messages
    search      further columns the review page searches
    principles  a list column of records with a `principle` field (the review page filters by it)
    label       the soft-label column the review page filters by range
    extra       further columns shown in the review page's list (a steps row's solution index)
    trains      the bundled trainer that reads the split as it is: pm, prm or None
    scores      how `cai score` reads it: completion (one text per row), pair (both sides), steps, or None
    """

    layout: ClassVar[str] = "text"  # how the review page lays a row out: text, trace, pair, steps (static/app.js)
    prompt: str = "prompt"
    answer: str | None = None
    messages: str | None = None
    search: tuple[str, ...] = ()
    principles: str | None = None
    label: str | None = None
    extra: tuple[str, ...] = ()
    trains: str | None = None
    scores: str | None = None

    @property
    def flippable(self) -> bool:
        """Whether a person can flip a row (a preference pair)."""
        return False

    def flags(self) -> dict[str, pl.Expr]:
        """The review page's filters that apply to this split: name -> a polars condition on a row."""
        return {}

    def queues(self) -> dict[str, Queue]:
        """The review queues of this split (`cai review --queue NAME`): name -> its rows and their order."""
        return {}

    def flip(self, row: dict) -> dict:
        raise CaiError("rows of this split have no pair to flip")

    def relabel(self, row: dict, steps: dict[int, bool]) -> dict | None:
        """The row with a person's step labels; None when the split has no step labels."""
        return None


def _list_any(column: str, condition: pl.Expr) -> pl.Expr:
    import polars as pl

    return pl.col(column).list.eval(condition).list.any()


@dataclass(frozen=True)
class TraceView(View):
    """SL rows: a prompt, its completion, and the critique-revision trace in `revisions`."""

    layout: ClassVar[str] = "trace"

    def flags(self) -> dict[str, pl.Expr]:
        import polars as pl

        kept = pl.col("kept").fill_null(0)
        revised = pl.col("revisions").list.get(kept - 1, null_on_oob=True).struct.field("p_true")
        p_true = pl.when(kept == 0).then(pl.col("initial_p_true")).otherwise(revised)  # the completion's
        return {
            "rules": _list_any("revisions", pl.element().struct.field("regressed")),  # broke a hard rule it kept
            "low_p_true": p_true < 0.5,
        }


@dataclass(frozen=True)
class PairView(View):
    """Preference rows: `chosen` and `rejected` answers, `p_chosen`, the votes seen from the chosen side."""

    layout: ClassVar[str] = "pair"

    @property
    def flippable(self) -> bool:
        return True

    def flags(self) -> dict[str, pl.Expr]:
        import polars as pl

        v = pl.element().struct
        split_vote = (v.field("kind") == "ai") & ((v.field("p_chosen_ab") > 0.5) != (v.field("p_chosen_ba") > 0.5))
        return {
            "inconsistent": _list_any("votes", split_vote),
            "tie": pl.col("tie"),
            "failed": pl.col("failed_votes").list.len() > 0,
            "rules": _list_any("rules_chosen", ~pl.element().struct.field("passed")),  # the chosen answer breaks one
        }

    def flip(self, row: dict) -> dict:
        """The row with its answers swapped: the votes and rules are seen from the new chosen answer's side (new
        chosen shown as (A) is the old rejected shown as (A): P = 1 - old p_chosen_ba), and the label is the
        person's."""
        out = dict(row, chosen=row["rejected"], rejected=row["chosen"], p_chosen=1.0, ai_p_chosen=1 - row["p_chosen"])
        out["tie"] = False
        out["votes"] = [
            dict(v, p_chosen_ab=1 - v["p_chosen_ba"], p_chosen_ba=1 - v["p_chosen_ab"]) for v in row.get("votes") or []
        ]
        if "rules_chosen" in row:
            out["rules_chosen"], out["rules_rejected"] = row.get("rules_rejected"), row.get("rules_chosen")
        return out


@dataclass(frozen=True)
class StepsView(View):
    """Stepwise rows: `completions` (the steps) with a boolean label each."""

    layout: ClassVar[str] = "steps"

    def flags(self) -> dict[str, pl.Expr]:
        import polars as pl

        return {"failed": pl.col("failed_votes").list.len() > 0}

    def queues(self) -> dict[str, Queue]:
        import polars as pl

        return {
            "convincing-wrong": Queue(
                "solutions whose final answer is wrong, those the labeller found most convincing (highest "
                "solution_p) first: the steps that fool it, where a person's labels teach most (Lightman et al. "
                "2023's active learning)",
                pl.col("correct").fill_null(True).not_(),  # graded wrong; ungraded solutions are not in it
                "solution_p",
            )
        }

    def relabel(self, row: dict, steps: dict[int, bool]) -> dict | None:
        """The row with a person's step labels, which outrank the labeller's: a relabelled step's soft label
        `step_p` becomes the person's 1 or 0 (the PRM trainer learns `step_p` first), the labeller's soft labels
        stay in `ai_step_p`, and `first_error` follows the new labels. `solution_p` stays the labeller's. A row
        with step classes (cai's steps split) is labelled again by PRM800K's rule (cai.core.steps.labelling): a step
        marked right is positive, one marked wrong negative, and the labels stop at the first mistake."""
        if "step_class" in row and "steps" in row:
            return _relabel_classes(row, steps)
        labels = list(row["labels"])
        soft = row.get("step_p")
        step_p = list(soft) if soft is not None else None
        for k, v in steps.items():
            if 0 <= int(k) < len(labels):
                labels[int(k)] = v
                if step_p is not None:
                    step_p[int(k)] = 1.0 if v else 0.0
        out = dict(row, labels=labels)
        if step_p is not None:
            out.update(step_p=step_p, ai_step_p=list(soft or []))
        if "first_error" in row:
            out["first_error"] = next((i for i, ok in enumerate(labels) if not ok), None)
        return out


def _relabel_classes(row: dict, marked: dict[int, bool]) -> dict:
    classes = list(row["step_class"])
    soft = row.get("step_p")
    step_p = list(soft) if soft is not None else None
    for k, v in marked.items():
        if 0 <= int(k) < len(classes):
            classes[int(k)] = steps_mod.POSITIVE if v else steps_mod.NEGATIVE
            if step_p is not None:
                step_p[int(k)] = 1.0 if v else 0.0
    got = steps_mod.labelling(classes, bool(row.get("labelled_after_error")))
    out = dict(
        row,
        step_class=got.classes,
        labels=got.labels,
        completions=list(row["steps"][: got.labelled]),
        first_error=got.first_error,
    )
    if step_p is not None:
        out.update(step_p=step_p, ai_step_p=list(soft or []))
    return out
