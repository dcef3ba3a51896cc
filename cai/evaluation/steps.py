"""`cai eval steps`: the step judge (or a trained process reward model) against steps people labelled."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from cai import backends
from cai.config import RunConfig
from cai.evaluation.data import LabelledSolution, read_steps
from cai.evaluation.metrics import calibration


def evaluate(
    config: RunConfig,
    data: str,
    pm: str | None = None,
    backend: backends.Backend | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """P(good step) of every labelled step, from the steps stage's own reads (same template, principles and
    both option orders as `cai generate --stage steps`), or from the process reward model `pm` when given; and
    how well it agrees with the labels."""
    records = read_steps(data)
    if pm is not None:
        from cai.pm import prm

        rows = [prm.StepRow(r.prompt.id, _text(r), list(r.steps), None) for r in records]
        predicted: list[list[float] | None] = list(prm.step_scores(pm, rows)["steps"])
        source = {"pm": pm}
        failed: list[str] = []
    else:
        predicted, failed = _judge(config, records, backend, log)
        source = {"judge": "logprob", "model": config.model, "step_principles": config.step_principles}
    return report(records, predicted, failed) | source


def _text(r: LabelledSolution) -> str:
    from cai.stages.steps import prompt_text

    return prompt_text(r.prompt.messages)


def _judge(config: RunConfig, records: list[LabelledSolution], backend, log) -> tuple[list, list[str]]:
    from cai import stepjudge
    from cai.constitution import load
    from cai.prompts import Templates
    from cai.records import ChunkResult, Failure
    from cai.run import RunContext
    from cai.stages.steps import StepsStage
    from cai.store import RunStore

    const = load(config.constitution)
    templates = Templates(config.templates)
    templates.check(stepjudge.TEMPLATES)
    ctx = RunContext(config, const, templates, RunStore(config.out or "."), log=log)  # reads only: never opened
    StepsStage(config).check_judging(ctx)
    own = backend is None
    if own:
        log(f"starting the {config.backend} engine with {config.model} ...")
        backend = backends.get(config.backend).from_config(config)
    ctx = replace(ctx, backend=backend)
    solutions = [stepjudge.Solution(r.prompt, 0, "eval", r.steps) for r in records]
    try:
        verdicts = stepjudge.judge(ctx, solutions, config.step_principles, ChunkResult())
    finally:
        if own and backend is not None:
            backend.close()
    predicted = [None if isinstance(v, Failure) else list(v.step_p) for v in verdicts]
    return predicted, sorted({v.reason for v in verdicts if isinstance(v, Failure)})


def report(records: list[LabelledSolution], predicted: list[list[float] | None], failed: list[str]) -> dict:
    """Step accuracy, calibration and first-error accuracy overall and per subset, over the solutions that were
    read (a solution whose read failed is counted, with the reasons)."""
    from cai.pm.prm import metrics

    def figures(items: list[tuple[LabelledSolution, list[float]]]) -> dict:
        p = [x for _, ps in items for x in ps]
        y = [float(t) for r, _ in items for t in r.labels]
        m = metrics([ps for _, ps in items], [[float(t) for t in r.labels] for r, _ in items])
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
        predicted="predicted P(good step)",
        unit="steps",
    )
    return out
