"""P(IK) out of distribution (Kadavath et al. 2022, §5): a value head trained on some subsets of the questions (tasks,
datasets) and tested on the others, and the record of what a head trained on, which `cai eval pik` reads.

The paper trains P(IK) on TriviaQA and reports how it generalises to Lambada, arithmetic, GSM8k and code: a head
that only learned the quirks of its training task does well in distribution and falls to chance out of it. Here a
question's subset is its record's `subset` (the prompt's, carried into the samples split); a question without one
belongs to the subset `(none)`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cai.errors import CaiError

TRAINED = "pik_trained.json"  # beside the head: the subsets and questions it trained on
NONE = "(none)"
FIGURES = ("questions", "brier", "brier_constant", "ece", "auroc", "mean_p_ik", "mean_target")


def name(q: Any) -> str:
    return q.subset or NONE


def split(rows: list, train_subsets: str | None) -> tuple[list, list]:
    """(questions to train and evaluate on, questions of the subsets held out whole) for `--train-subsets`; every
    bad value is refused by name before any model loads."""
    if train_subsets is None:
        return rows, []
    wanted = {s.strip() for s in train_subsets.split(",") if s.strip()}
    have = sorted({q.subset for q in rows if q.subset})
    if not wanted:
        raise CaiError("--train-subsets: name at least one subset")
    if not have:
        raise CaiError("--train-subsets: the questions name no subset (give the prompt records a `subset` field)")
    unknown = sorted(wanted - set(have))
    if unknown:
        raise CaiError(f"--train-subsets: no question of subset {unknown[0]!r} (the data has: {', '.join(have)})")
    seen = [q for q in rows if q.subset in wanted]
    unseen = [q for q in rows if q.subset not in wanted]
    if not unseen:
        raise CaiError("--train-subsets: names every subset of the data, so none is left out of distribution")
    return seen, unseen


def counts(train_rows: list, unseen: list) -> dict:
    return {
        "train_subsets": sorted({name(q) for q in train_rows}),
        "ood_subsets": sorted({name(q) for q in unseen}),
    }


def save_trained(out: str, train_rows: list) -> None:
    """What the head trained on, so that `cai eval pik` keeps those questions out of its figures."""
    record = {"subsets": sorted({name(q) for q in train_rows}), "questions": sorted({q.key for q in train_rows})}
    (Path(out) / TRAINED).write_text(json.dumps(record) + "\n")


def _figures(metrics: Callable[[list[float], list], dict], pairs: list[tuple[float, Any]]) -> dict | None:
    if not pairs:
        return None
    m = metrics([p for p, _ in pairs], [q for _, q in pairs])
    return {k: m[k] for k in FIGURES}


def report(model_dir: str, predicted: list[float], rows: list, metrics: Callable[[list[float], list], dict]) -> dict:
    """In- and out-of-distribution figures of a head on `rows`: questions it trained on are left out of both; the
    rest are in distribution where their subset was trained on, out of it where not; and the figures per subset."""
    path = Path(model_dir) / TRAINED
    if not path.is_file():
        return {"ood_reason": f"{model_dir} has no {TRAINED} (trained before cai recorded it): retrain to get it"}
    trained = json.loads(path.read_text())
    subsets, keys = set(trained["subsets"]), set(trained["questions"])
    fresh = [(p, q) for p, q in zip(predicted, rows, strict=True) if q.key not in keys]
    inside = [(p, q) for p, q in fresh if name(q) in subsets]
    outside = [(p, q) for p, q in fresh if name(q) not in subsets]
    per = {}
    for s in sorted({name(q) for _, q in fresh}):
        figures = _figures(metrics, [(p, q) for p, q in fresh if name(q) == s])
        per[s] = {**(figures or {}), "trained_on": s in subsets}
    out: dict = {
        "trained_subsets": sorted(subsets),
        "seen_in_training": len(rows) - len(fresh),
        "in_distribution": _figures(metrics, inside),
        "out_of_distribution": _figures(metrics, outside),
        "ood_subsets": sorted({name(q) for _, q in outside}),
        "per_subset": per,
    }
    if not outside:
        out["ood_reason"] = (
            "every subset of the data was trained on (train-pm --kind pik --train-subsets holds some out)"
        )
    return out
