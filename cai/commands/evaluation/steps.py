"""`cai eval steps`: the step judge (or a trained process reward model) against steps people labelled."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cai import backends
from cai.commands.evaluation.data import LabelledSolution, fingerprint, read_steps
from cai.commands.evaluation.run import chunked
from cai.commands.evaluation.run import evaluate as run_evaluation
from cai.config import RunConfig
from cai.core import columns
from cai.core.context import RunContext
from cai.core.inputs import Prompt
from cai.core.prompts import TemplateSpec
from cai.core.records import ChunkResult, Failure
from cai.core.steps import CLASSES, NEGATIVE, NEUTRAL_BAND, band, classify, prompt_text
from cai.judges import step as stepjudge
from cai.signals.calibration import calibration
from cai.stages.base import Stage


@dataclass(frozen=True)
class StepsEvalRow:
    """One labelled solution as the step judge read it: P(good step) per step, or why it could not."""

    id: str
    step_p: list[float] | None
    error: str | None


class StepsEval(Stage):
    name = "eval-steps"
    split = "steps-judged"
    row_type = StepsEvalRow
    in_all = False
    settings = (stepjudge.StepJudgingOptions,)

    def __init__(self, config: RunConfig, records: list[LabelledSolution]):
        super().__init__(config)
        self.judge = stepjudge.get(config.options(stepjudge.StepJudgingOptions).step_judge)(config)
        self.records = {r.prompt.id: r for r in records}

    def template_specs(self) -> tuple[TemplateSpec, ...]:
        return self.judge.templates

    def needs_engine(self, ctx: RunContext) -> bool:
        return self.judge.needs_engine(ctx)

    def check(self, ctx: RunContext) -> None:
        self.judge.check(ctx)

    def run(self, ctx: RunContext, chunk: list[Prompt]) -> ChunkResult:
        """The steps stage's own reads: the same step judge, template, principles and option orders."""
        result = ChunkResult()
        solutions = [stepjudge.Solution(p, 0, "eval", self.records[p.id].steps) for p in chunk]
        for s, v in zip(solutions, self.judge.judge(ctx, solutions, result), strict=True):
            if isinstance(v, Failure):
                row = StepsEvalRow(s.prompt.id, None, v.reason)
            else:
                row = StepsEvalRow(s.prompt.id, list(v.step_p), None)
            result.rows.append(columns.record(row))
        return result


def evaluate(
    config: RunConfig,
    data: str,
    pm: str | None = None,
    backend: backends.Backend | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """P(good step) of every labelled step, from the step judge `cai generate --stage steps` uses, or from the
    process reward model `pm` when given; and how well it agrees with the labels, overall and per class of the
    declared neutral band."""
    neutral = stepjudge.neutral_band(config)  # a bad band is one line before any model loads
    records = read_steps(data)
    if pm is not None:
        from cai.signals import rewardmodels

        rows = [rewardmodels.StepRow(r.prompt.id, prompt_text(r.prompt.messages), list(r.steps), None) for r in records]
        predicted: list[list[float] | None] = list(rewardmodels.step_scores(pm, rows)["steps"])
        return report(records, predicted, [], neutral) | {"pm": pm}
    config = chunked(config)
    stage = StepsEval(config, records)
    done = run_evaluation(
        config, stage, [r.prompt for r in records], fingerprint(r.identity() for r in records), backend, log
    )
    got = {r["id"]: r for r in done.rows}
    predicted = [got[r.prompt.id]["step_p"] if r.prompt.id in got else None for r in records]
    failed = sorted({r["error"] for r in done.rows if r["error"]} | {why for _, why in done.failures})
    source = {"judge": stage.judge.name, "model": config.run.model, **config.values_of(stage.judge.settings)}
    return report(records, predicted, failed, neutral) | source


def report(
    records: list[LabelledSolution],
    predicted: list[list[float] | None],
    failed: list[str],
    neutral: tuple[float, float] = band(NEUTRAL_BAND),
) -> dict:
    """Step accuracy, calibration and first-error accuracy overall and per subset, over the solutions that were
    read (a solution whose read failed is counted, with the reasons). Each read step is also classified by the
    neutral band (`classes`: how many steps fell in each class and the share of them people labelled good), and
    the first-error accuracy is the labelling's own rule: the first step read as negative against the first step
    labelled bad (both None when there is none)."""
    from cai.signals.rewardmodels import step_metrics as metrics

    def first_mistake(items: list[tuple[LabelledSolution, list[float]]]) -> float | None:
        found = [
            next((i for i, x in enumerate(ps) if classify(x, neutral) == NEGATIVE), None)
            == next((i for i, ok in enumerate(r.labels) if not ok), None)
            for r, ps in items
        ]
        return sum(found) / len(found) if found else None

    def classes(items: list[tuple[LabelledSolution, list[float]]]) -> dict:
        got: dict[str, list[bool]] = {c: [] for c in CLASSES}
        for r, ps in items:
            for x, ok in zip(ps, r.labels, strict=True):
                got[classify(x, neutral)].append(bool(ok))
        total = sum(len(v) for v in got.values())
        return {
            c: {"steps": len(v), "share": len(v) / total if total else None, "good": sum(v) / len(v) if v else None}
            for c, v in got.items()
        }

    def figures(items: list[tuple[LabelledSolution, list[float]]]) -> dict:
        p = [x for _, ps in items for x in ps]
        y = [float(t) for r, _ in items for t in r.labels]
        m = metrics([ps for _, ps in items], [[float(t) for t in r.labels] for r, _ in items])
        m["first_error_accuracy"] = first_mistake(items)
        cal = calibration(p, y)
        good = [x for x, t in zip(p, y, strict=True) if t]
        bad = [x for x, t in zip(p, y, strict=True) if not t]
        return {
            "n": len(items),
            "steps": len(p),
            "accuracy": m["step_accuracy"],
            "first_error_accuracy": m["first_error_accuracy"],
            "ece": cal["ece"],
            "brier": cal["brier"],
            "reliability": cal["reliability"],
            "mean_p_good": sum(good) / len(good) if good else None,
            "mean_p_bad": sum(bad) / len(bad) if bad else None,
            "classes": classes(items),
        }

    read = [(r, ps) for r, ps in zip(records, predicted, strict=True) if ps is not None]
    out = figures(read)
    subsets: dict[str, list] = {}
    for r, ps in read:
        subsets.setdefault(r.subset or "all", []).append((r, ps))
    out.update(
        solutions=len(records),
        failed=len(records) - len(read),
        failure_reasons=failed,
        subsets={name: {k: v for k, v in figures(g).items() if k != "reliability"} for name, g in subsets.items()},
        neutral_band=list(neutral),
        predicted="predicted P(good step)",
        unit="steps",
    )
    return out
