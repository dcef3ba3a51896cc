"""`cai eval self`: self-evaluation's P(True) against answers people labelled acceptable or not."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cai import backends
from cai.commands.evaluation.data import Labelled, fingerprint, read_labelled
from cai.commands.evaluation.run import chunked
from cai.commands.evaluation.run import evaluate as run_evaluation
from cai.config import RunConfig
from cai.core import columns
from cai.core.context import RunContext
from cai.core.inputs import Prompt
from cai.core.prompts import TemplateSpec
from cai.core.records import ChunkResult
from cai.signals import p_true as selfeval
from cai.signals.calibration import calibration
from cai.signals.ranking import auroc
from cai.stages.base import Stage


@dataclass(frozen=True)
class SelfRow:
    """One labelled answer's P(True), read as `cai generate --self-eval` reads it (None, with the reason in
    `error`, when a read failed)."""

    id: str
    acceptable: bool
    p_true: float | None
    p_true_ab: float | None
    p_true_ba: float | None
    error: str | None


class SelfEval(Stage):
    name = "eval-self"
    split = "self-evaluated"
    row_type = SelfRow
    in_all = False

    def __init__(self, config: RunConfig, records: list[Labelled]):
        super().__init__(config)
        self.records = {r.id: r for r in records}
        self.samples = config.options(selfeval.SelfEvalOptions).self_eval_samples

    def template_specs(self) -> tuple[TemplateSpec, ...]:
        return selfeval.TEMPLATES

    def run(self, ctx: RunContext, chunk: list[Prompt]) -> ChunkResult:
        """The same template, both option orders and brainstorm setting as `generate --self-eval`."""
        result = ChunkResult()
        records = [self.records[p.id] for p in chunk]
        samples = selfeval.brainstorm(
            ctx, list({r.prompt.id: r.prompt for r in records}.values()), self.samples, result
        )
        items = [(list(r.prompt.messages), r.answer, samples.get(r.prompt.id, [])) for r in records]
        for r, read in zip(records, selfeval.evaluate(ctx, items, result), strict=True):
            row = SelfRow(r.id, r.acceptable, read.p_true, read.p_ab, read.p_ba, read.error)
            result.rows.append(columns.record(row))
        return result


def self_eval(
    config: RunConfig, data: str, backend: backends.Backend | None = None, log: Callable[[str], None] = print
) -> dict:
    """P(True) of every labelled answer and how well it agrees with the labels."""
    records = read_labelled(data)
    config = chunked(config)
    stage = SelfEval(config, records)
    items = [Prompt(r.id, r.prompt.messages, r.prompt.reference) for r in records]
    done = run_evaluation(config, stage, items, fingerprint(records), backend, log)
    ok = [r for r in done.rows if r["p_true"] is not None]
    report = calibration([r["p_true"] for r in ok], [r["acceptable"] for r in ok])
    disagree = [(r["p_true_ab"] > 0.5) != (r["p_true_ba"] > 0.5) for r in ok]
    report.update(
        # AUROC: how well P(True) separates acceptable answers from the rest (Kadavath et al.'s measure)
        auroc=auroc([r["p_true"] for r in ok], [r["acceptable"] for r in ok]),
        records=len(records),
        failed=len(records) - len(ok),
        brainstorm_samples=stage.samples,
        orders_disagree=sum(disagree) / len(ok) if ok else None,
        model=config.run.model,
        constitution=done.constitution.name,
    )
    return report
