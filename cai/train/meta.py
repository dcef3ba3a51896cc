"""The meta reward model (DeepSeek-GRM, Liu et al. 2025, §3.3): a pointwise scalar head that reads one sampled
judgement (the question with the answers, the judgement and its scores) and predicts whether its verdict is
correct. Trained on `cai judge-data`'s judgements split (the kept and the rejected alike) with binary
cross-entropy against `correct`; `--grm-meta-rm DIR` then keeps the better half of the k samples before the
vote (meta-RM-guided voting).

Evaluated on held-out pairs (split by pair, so a pair's judgements are all on one side): AUROC of P(correct)
against the verdicts' correctness, the Brier score against a constant guess, and what the filter is for: the share
of correct verdicts among each pair's top half by the meta RM against the share among all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cai.errors import CaiError
from cai.signals.calibration import calibration
from cai.train import pointwise, training
from cai.train.training import TrainOptions

META = "meta"


@dataclass
class MetaRMConfig(TrainOptions):
    """`cai train-pm --kind meta`: a meta reward model on sampled judgements (messages, correct; the judgements
    split of `cai judge-data`)."""


@dataclass(frozen=True)
class Judged:
    group: str  # the labelled pair the judgement was sampled for (the split keeps a pair's judgements together)
    messages: list[dict]
    correct: bool


def load_rows(source: str) -> tuple[list[Judged], int]:
    """Pairwise judgements with their correctness, and how many rows were left out (pointwise judgements, and
    judgements that failed or have no verdict to check), from a judge-data run folder, a parquet or JSONL file of
    {messages, correct}, a folder of parquet files or a `datasets` name."""
    from cai.train.data import read_rows

    out, left = [], 0
    for where, r in read_rows(source, META, split="judgements"):
        if r.get("kind", "pairwise") != "pairwise" or r.get("error"):
            left += 1
            continue
        messages, correct = r.get("messages"), r.get("correct")
        if correct is None and "correct" in r:
            left += 1
            continue
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise CaiError(f"{where}: 'messages' must be the judgement as chat messages (question, then the reply)")
        if not isinstance(correct, bool):
            raise CaiError(f"{where}: 'correct' must be true or false (did the judgement's verdict match the label?)")
        out.append(Judged(str(r.get("pair_id") or r.get("id") or where), messages, correct))
    if not out:
        raise CaiError(f"{source}: no pairwise judgement with a checked verdict ({left} rows left out)")
    return out, left


def split(rows: list[Judged], eval_fraction: float, seed: int) -> tuple[list[Judged], list[Judged]]:
    """Held out by pair: a pair's judgements share most of their text, so they are all on one side."""
    train, held = training.held_out(rows, lambda r: r.group, eval_fraction, seed)
    return (train, held) if train else (rows, [])  # one pair only: evaluated on what it trained on (as said)


def features(rows: list[Judged], tokenizer, max_length: int) -> list[dict]:
    from cai.signals.rewardmodels import judgement_ids

    return [{"input_ids": judgement_ids(tokenizer, r.messages, max_length), "target": float(r.correct)} for r in rows]


def metrics(predicted: list[float], rows: list[Judged]) -> dict:
    from cai.signals.ranking import auroc

    labels = [r.correct for r in rows]
    base = sum(labels) / len(labels) if labels else None
    cal = calibration(predicted, [float(x) for x in labels])
    by_group: dict[str, list[tuple[float, bool]]] = {}
    for p, r in zip(predicted, rows, strict=True):
        by_group.setdefault(r.group, []).append((p, r.correct))
    kept = [
        ok for group in by_group.values() for _, ok in sorted(group, key=lambda x: -x[0])[: math.ceil(len(group) / 2)]
    ]
    return {
        "auroc": auroc(predicted, labels),
        "brier": cal["brier"],
        "brier_constant": sum((x - base) ** 2 for x in labels) / len(labels) if base is not None else None,
        "accuracy": sum((p > 0.5) == ok for p, ok in zip(predicted, labels, strict=True)) / len(labels)
        if labels
        else None,
        "correct_share": base,
        "kept_correct_share": sum(kept) / len(kept) if kept else None,
        "judgements": len(rows),
        "pairs": len(by_group),
    }


def train(config: MetaRMConfig, log=print) -> dict:
    rows, left = load_rows(config.source)
    started = training.start(config)
    train_rows, eval_rows = split(rows, config.eval_fraction, config.seed)
    log(
        f"train-pm: {len(rows)} judgements ({len(train_rows)} train, {len(eval_rows)} eval; "
        f"{sum(r.correct for r in rows)} with a correct verdict); {left} rows left out"
    )
    counts = {
        "judgements": len(rows),
        "left_out": left,
        "train_judgements": len(train_rows),
        "eval_judgements": len(eval_rows),
        "evaluated_on": "held-out pairs" if eval_rows else "the training pairs (too few pairs to hold any out)",
    }
    return pointwise.train(config, META, (train_rows, eval_rows), features, metrics, counts, started, log)


def summary_lines(m: dict) -> list[str]:
    f = training.fmt
    return [
        f"judgements     {m['judgements']} ({m['train_judgements']} train / {m['eval_judgements']} eval), "
        f"{m['left_out']} rows left out; evaluated on {m['evaluated_on']}",
        f"eval           AUROC {f(m['eval_auroc'])}   Brier {f(m['eval_brier'])} (constant guess "
        f"{f(m['eval_brier_constant'])})   accuracy {f(m['eval_accuracy'])}",
        f"filter         correct verdicts: {f(m['eval_correct_share'])} of all, {f(m['eval_kept_correct_share'])} "
        "of each pair's top half by the meta RM",
        f"train loss     {m['train_loss']:.4f} over {m['train_steps']} steps",
    ]
