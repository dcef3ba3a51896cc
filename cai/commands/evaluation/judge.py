"""`cai eval judge`: the RL stage's judge on pairs people labelled, and how often it agrees with them.

The pairs go through the labeller the RL stage labels its own pairs with (cai.judges.labels: the same judge,
principles, templates, rules and blending), so the figures describe the labels a run would make. In a seeded
half of the pairs the preferred answer is the first candidate, so position bias shows up as a gap between
`preferred_as_a_accuracy` and `preferred_as_b_accuracy` rather than as accuracy.

The evaluation is a run (cai.commands.evaluation.run): with --out its judged rows are shards there, written chunk by
chunk, so a killed evaluation resumes where it stopped and the rows stay for reading the disagreements.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cai import backends
from cai.commands.evaluation.data import LabelledPair, fingerprint, read_pairs
from cai.commands.evaluation.metrics import best_of_n, grm_scaling, judge_report
from cai.commands.evaluation.run import chunked
from cai.commands.evaluation.run import evaluate as run_evaluation
from cai.config import RunConfig
from cai.core import columns
from cai.core.columns import Messages
from cai.core.context import RunContext
from cai.core.inputs import Prompt
from cai.core.prompts import TemplateSpec
from cai.core.records import ChunkResult
from cai.core.sampling import stable_unit
from cai.judges import Pair
from cai.judges.base import FailedRead, VoteRow
from cai.judges.labels import Judged, Labeller, LabelOptions
from cai.stages.base import Stage

SPLIT = "judged"
STAGE = "eval-judge"


def chosen_first(seed: int, pair_id: str) -> bool:
    """Whether the preferred answer is the first candidate (shown as (A) in the first order): a seeded half."""
    return stable_unit("eval-order", seed, pair_id) < 0.5


@dataclass(frozen=True)
class JudgedRow:
    """A labelled pair as the judge saw it, seen from the preferred answer's side. The judge's own evidence
    columns go before `judge`."""

    id: str
    subset: str | None
    group: str | None  # the RewardBench 2 record the pair belongs to
    prompt: Messages
    chosen: str  # the answer people preferred
    rejected: str
    chosen_first: bool  # the preferred answer was the first candidate
    p_chosen: float  # the judge's P(the preferred answer is better)
    correct: bool  # p_chosen > 0.5 (a tie is wrong)
    votes: list[VoteRow]
    failed_votes: list[FailedRead]
    decided_by: str
    judge: str
    model: str


class JudgeEval(Stage):
    """Labels each labelled pair, in the seeded order, as the RL stage would."""

    name = STAGE
    split = SPLIT
    row_type = JudgedRow
    in_all = False
    settings = (LabelOptions,)

    def __init__(self, config: RunConfig, pairs: list[LabelledPair]):
        super().__init__(config)
        self.labeller = Labeller(config)
        self.pairs = {p.id: p for p in pairs}

    def template_specs(self) -> tuple[TemplateSpec, ...]:
        return self.labeller.judge.templates

    def schema(self):
        return columns.schema(JudgedRow, self.labeller.judge.evidence_fields(), before="judge")

    def needs_engine(self, ctx: RunContext) -> bool:
        return self.labeller.needs_engine(ctx)

    def check(self, ctx: RunContext) -> None:
        self.labeller.check(ctx)

    def run(self, ctx: RunContext, chunk: list[Prompt]) -> ChunkResult:
        result = ChunkResult()
        seed = ctx.config.run.seed
        order = {p.id: chosen_first(seed, p.id) for p in chunk}
        shown = []
        for p in chunk:
            lp = self.pairs[p.id]
            first, second = (lp.chosen, lp.rejected) if order[p.id] else (lp.rejected, lp.chosen)
            shown.append(Pair(lp.prompt, first, second))
        for j in self.labeller.label(ctx, shown, result):
            result.rows.append(self._row(ctx, self.pairs[j.pair.prompt.id], order[j.pair.prompt.id], j))
        return result

    def _row(self, ctx: RunContext, pair: LabelledPair, first: bool, j: Judged) -> dict:
        p = j.label.p_first if first else 1 - j.label.p_first
        row = JudgedRow(
            id=pair.id,
            subset=pair.subset,
            group=pair.group,
            prompt=list(pair.prompt.messages),
            chosen=pair.chosen,
            rejected=pair.rejected,
            chosen_first=first,
            p_chosen=p,
            correct=p > 0.5,
            votes=j.votes(first),  # from the preferred answer's side
            failed_votes=j.failed_votes(first),
            decided_by=j.label.decided_by,
            judge=self.labeller.name,
            model=ctx.config.run.model,
        )
        return columns.record(row, **j.evidence(first, self.labeller.judge))


def evaluate(
    config: RunConfig, data: str, backend: backends.Backend | None = None, log: Callable[[str], None] = print
) -> dict:
    """Judge every labelled pair of `data` (resuming `--out` if it holds part of them) and report."""
    started = time.monotonic()
    pairs = read_pairs(data)
    config = chunked(config)
    stage = JudgeEval(config, pairs)
    done = run_evaluation(
        config, stage, [p.prompt for p in pairs], fingerprint(p.identity() for p in pairs), backend, log
    )
    report = judge_report(done.rows, len(done.failures), stage.labeller.judge.describe().pairwise_votes)
    # RewardBench 2's records: a pair the judge could not label counts as a loss of its record
    failed = {pid for pid, _ in done.failures}
    # a GRM scores each answer (pointwise), so RB2's Ties subset, which rates answers' own scores, is rated for it
    pointwise = stage.labeller.name == "grm"
    records = [dict(r, advantage=r["p_chosen"] - 0.5, **(_grm_scores(r) if pointwise else {})) for r in done.rows]
    records += [
        {"id": p.id, "group": p.group, "subset": p.subset, "advantage": -1.0}
        for p in pairs
        if p.id in failed and p.group is not None
    ]
    report["rewardbench2"] = best_of_n(records, "advantage", scores=pointwise)
    if stage.labeller.name == "grm":
        from cai.judges.grm import GrmOptions

        report["grm_scaling"] = grm_scaling(done.rows, config.options(GrmOptions).grm_samples)
    report.update(
        config.values_of(stage.labeller.judge.settings),
        data=data,
        judge=stage.labeller.name,
        model=config.run.model,
        constitution=done.constitution.name,
        seed=config.run.seed,
        out=str(done.store.root) if done.store else None,
        failure_reasons=sorted({why for _, why in done.failures})[:5],
        seconds=round(time.monotonic() - started, 1),
    )
    if done.store is not None:
        done.store.save_report("eval-judge", report)
    return report


def _grm_scores(row: dict) -> dict[str, float | None]:
    """A GRM-judged pair's pointwise scores of the preferred and the other answer: the mean over the judgements that
    voted of each answer's score (the expected one where it was read, else the written one)."""
    kept = [g for g in row.get("grm") or () if g["kept"]]

    def mean(side: str) -> float | None:
        got = [g[f"soft_{side}"] if g[f"soft_{side}"] is not None else g[f"score_{side}"] for g in kept]
        return sum(got) / len(got) if got else None

    return {"raw_chosen": mean("chosen"), "raw_rejected": mean("rejected")}
