"""`cai score`: rewards of (prompt, response) items from a preference model, the constitution's rules, or both."""

from __future__ import annotations

import json
from pathlib import Path

from cai import stages
from cai.core.columns import text_of
from cai.errors import CaiError


def items(source: str, pm: str | None = None) -> tuple[list[dict], bool]:
    """(items, is_preference) from a run, a preference file or dataset, or a file of completions (records with
    a prompt or messages, a `completion` or `response`, and an optional `reference`).
    Items: {id, prompt, response, side, reference, p?}. A run is read by its splits' views: a split of pairs (both
    sides), else one of completions. Step data (a run with only a steps split, or records with `completions`)
    is refused by name: a pairwise model gives one reward per text, not per step."""
    from cai.core import inputs
    from cai.core.sources import open_rows
    from cai.core.store import RunStore
    from cai.train.data import preference_rows

    run = RunStore(source) if RunStore.is_run(source) else None
    found = {}  # how a split is scored -> its stage, for the splits that hold rows
    if run is not None:
        found = {s.view.scores: s for s in stages.reading(lambda v: v.scores is not None) if run.count(s.split)}
    path = Path(source)
    records = None  # a file's records, read once
    if path.is_file() and path.suffix in (".jsonl", ".json", ".parquet"):
        records = open_rows(source)
    stepwise = (run is not None and set(found) == {"steps"}) or bool(records and "completions" in records[0][1])
    if stepwise and pm is not None:
        raise CaiError(
            f"--pm {pm}: a pairwise preference model (train-pm --kind pm), but this data has steps: score them "
            "with a process reward model (train-pm --kind prm)"
        )
    if run is not None and "completion" in found and "pair" not in found:
        view, split = found["completion"].view, found["completion"].split
        assert view.answer is not None
        rows = run.read(split, columns=["id", view.prompt, view.answer, "reference"])
        return [
            {
                "id": r["id"],
                "prompt": r[view.prompt],
                "response": r[view.answer][-1]["content"],
                "side": "completion",
                "reference": r["reference"],
            }
            for r in rows
        ], False
    if records is not None and not {"chosen", "rejected"} <= set(records[0][1]):
        out = []
        for where, record in records:
            messages = inputs.to_messages(record, where, None)
            response = text_of(record.get("completion", record.get("response")))
            if response is None:
                raise CaiError(f"{where}: expected 'completion' (or 'response'): text or assistant messages")
            out.append(
                {
                    "id": inputs.prompt_id(messages),
                    "prompt": list(messages),
                    "response": response,
                    "side": "completion",
                    "reference": inputs.reference(record, where),
                }
            )
        return out, False
    pairs = found["pair"].split if "pair" in found else None
    if run is not None and pairs is None:
        raise CaiError(f"{source}: the run has no rows to score")
    rows = preference_rows(records if records is not None else open_rows(source, pairs), source)
    return [
        {
            "id": r["id"],
            "prompt": r["prompt"],
            "response": r[side],
            "side": side,
            "p": r["p"],
            "reference": r.get("reference"),
        }
        for r in rows
        for side in ("chosen", "rejected")
    ], True


def score(
    data: str,
    out: str,
    pm: str | None = None,
    rules: str | None = None,
    batch_size: int = 16,
    max_length: int = 512,
    aggregate: str | None = None,
) -> dict:
    """Write one JSONL line per (prompt, response): its `score` from the preference model `pm` (in standard
    units of its held-out rewards) and/or its `rules` results and `rules_score` (weighted mean) under the
    constitution `rules`. On preference data, also report how often chosen outscores rejected. With a process
    reward model, one line per solution with every step's probability and the solution's score (`aggregate`:
    product or min of the steps')."""
    from cai.core.constitution import load
    from cai.signals.rewardmodels import PM, PRM, kind_of

    if pm is None and rules is None:
        raise CaiError("give --pm DIR, --rules CONSTITUTION, or both")
    kind = kind_of(pm) if pm is not None else PM
    if aggregate is not None and kind != PRM:
        raise CaiError("--aggregate applies to a process reward model (train-pm --kind prm) given as --pm")
    const = load(rules) if rules is not None else None
    if const is not None and not const.rules:
        raise CaiError(f"--rules {rules}: {const.path} has no rules")
    scorer = {PM: score_texts, PRM: score_steps}[kind]  # one reward per text, or one per step
    return scorer(data, out, pm, const, aggregate or "product", batch_size, max_length)


def score_texts(data: str, out: str, pm: str | None, const, aggregate: str, batch_size: int, max_length: int) -> dict:
    """`cai score` of whole texts: a pairwise preference model's reward and/or the constitution's rules."""
    from cai.core.rules import check_all, mean_score
    from cai.signals.rewardmodels import rewards

    found, is_pref = items(data, pm)
    lines = [{k: it[k] for k in ("id", "side", "prompt", "response")} for it in found]
    report: dict = {"scored": len(found), "out": out, "unit": "responses"}
    if pm is not None:
        scored = rewards(pm, [(it["prompt"], it["response"]) for it in found], batch_size, max_length)
        for line, s in zip(lines, scored["scores"], strict=True):
            line["score"] = s
        report["truncated"] = scored["truncated"]
        if is_pref:
            report["accuracy"] = _agreement([line["score"] for line in lines], found)
    if const is not None:
        rules = {r.id: r for r in const.rules}
        for line, it in zip(lines, found, strict=True):
            results = check_all(const.rules, it["response"], it.get("reference"))
            line["rules"] = [r.row() for r in results]
            line["rules_score"] = mean_score(results, rules)
        report["rules_passed"] = {r.id: _share([line for line in lines], r.id) for r in const.rules}
        report["rules_unknown"] = sum(r["error"] is not None for line in lines for r in line["rules"])
        if is_pref:
            report["rules_accuracy"] = _agreement([line["rules_score"] for line in lines], found)
    _write(out, lines)
    return report


def score_steps(data: str, out: str, pm: str | None, const, aggregate: str, batch_size: int, max_length: int) -> dict:
    """`cai score` with a process reward model: every step's P(good) and the solution's score; where the data
    has step labels, the step accuracy and first-error accuracy against them."""
    from cai.core.rules import check_all
    from cai.signals import rewardmodels
    from cai.train import prm

    assert pm is not None  # a PRM was given: that is how this scorer was chosen
    rows = prm.load_rows(data, need_labels=False)
    scored = rewardmodels.step_scores(pm, rows, batch_size, max_length)
    lines = []
    for r, ps in zip(rows, scored["steps"], strict=True):
        line = {
            "id": r.id,
            "solution": r.solution,
            "prompt": r.prompt,
            "completions": r.steps,
            "step_scores": ps,
            "score": rewardmodels.solution_score(ps, aggregate),
            "aggregate": aggregate,
        }
        if r.targets is not None:
            line["labels"] = [t >= 0.5 for t in r.targets]
        if const is not None:
            results = check_all(const.rules, "\n".join(r.steps), r.reference)
            line["rules"] = [x.row() for x in results]
        lines.append(line)
    labelled = [(ps, r.targets[: len(ps)]) for r, ps in zip(rows, scored["steps"], strict=True) if r.targets]
    report: dict = {"scored": len(rows), "out": out, "unit": "solutions", "windowed_steps": scored["windowed_steps"]}
    if labelled:
        m = rewardmodels.step_metrics([p for p, _ in labelled], [t for _, t in labelled])
        report.update({k: m[k] for k in ("step_accuracy", "first_error_accuracy", "step_ece")})
    _write(out, lines)
    return report


def _write(out: str, lines: list[dict]) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        f.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)


def _agreement(scores: list, found: list[dict]) -> float | None:
    """How often chosen scores above rejected, over the pairs with a label (not a tie) and both scores."""
    pairs = [(scores[i], scores[i + 1]) for i in range(0, len(found), 2) if found[i]["p"] != 0.5]
    decided = [(c, r) for c, r in pairs if c is not None and r is not None]
    return sum(c > r for c, r in decided) / len(decided) if decided else None


def _share(lines: list[dict], rule: str) -> float | None:
    """The share of the texts a rule applied to (and finished on) that passed it."""
    got = [r["passed"] for line in lines for r in line["rules"] if r["rule"] == rule and r["error"] is None]
    return sum(got) / len(got) if got else None


def lines(report: dict) -> list[str]:
    """What `cai score` prints of its report."""

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    what = "the steps of " if report["unit"] == "solutions" else ""
    out = [f"scored {what}{report['scored']} {report['unit']} -> {report['out']}"]
    if report.get("step_accuracy") is not None:
        out.append(
            f"against the data's labels: step accuracy {num(report['step_accuracy'])}, first-error accuracy "
            f"{num(report['first_error_accuracy'])}, ece {num(report['step_ece'])}"
        )
    if report.get("windowed_steps"):
        out.append(f"{report['windowed_steps']} steps past the model's max length were each read in a window")
    if report.get("accuracy") is not None:
        out.append(f"accuracy (chosen scores above rejected): {report['accuracy']:.3f}")
    for rule, share in (report.get("rules_passed") or {}).items():
        out.append(f"  {rule:<34} passed by {'n/a' if share is None else f'{100 * share:.1f}%'}")
    if report.get("rules_unknown"):
        out.append(f"  {report['rules_unknown']} checks could not finish (unknown: left out, reasons in the file)")
    if report.get("rules_accuracy") is not None:
        out.append(f"rules accuracy (chosen's rules score above rejected's): {report['rules_accuracy']:.3f}")
    return out
