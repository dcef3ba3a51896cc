"""P(IK) (Kadavath et al. 2022, §5): a value head that reads the question alone and predicts the probability that
the model will answer it correctly, trained on the share of the model's own samples that were correct.

The target is a prompt's `p_ik` (the samples split of `cai generate --stage sample`, or a file with `p_ik`, or
`correct` and `graded` counts); the loss is binary cross-entropy against that soft target. Evaluated as the paper
does: Brier score and calibration of P(IK) against the held-out share correct, and AUROC, how well P(IK) tells the
questions' right answers from wrong ones (each held-out sample is one case, scored by its question's P(IK)).

The head sits on the model itself by default (`--backbone policy`: the model that answered, as the samples split
names it, else the embedded SmolLM2-135M): Kadavath trains a value head on the language model whose knowledge is in
question. A separate encoder (`--backbone all-minilm-l6-v2`) is an explicit choice: it learns which questions are
hard, not what the model knows. `--train-subsets` holds every other subset out whole, for the out-of-distribution
figure the paper reports (trained on TriviaQA, tested on other tasks); see `cai.train.pik_subsets`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cai.errors import CaiError
from cai.settings import setting
from cai.signals.calibration import calibration
from cai.signals.rewardmodels import question_ids
from cai.train import pik_subsets, pointwise, training
from cai.train.training import TrainOptions

PIK = "pik"
POLICY = "policy"


@dataclass
class PIKConfig(TrainOptions):
    """`cai train-pm --kind pik`: a P(IK) value head on questions (prompt, p_ik, or correct of graded samples)."""

    backbone: str = setting(
        POLICY,
        "policy (its default): a value head on the model that answered (the samples' `model`, else the embedded "
        "smollm2-135m), as Kadavath et al.; all-minilm-l6-v2 (a separate encoder: a difficulty predictor), a folder "
        "or a Hub id.",
    )
    train_subsets: str | None = setting(
        None,
        "Comma-separated subsets (the rows' `subset`) to train on; every other subset is held out whole and "
        "reported as the out-of-distribution figure (Kadavath et al. train on one task, test on others).",
    )


@dataclass(frozen=True)
class Question:
    key: str
    prompt: list[dict]
    target: float  # the share of the model's samples that were correct
    correct: int | None = None  # of `graded` samples, where the data counts them (for AUROC per sample)
    graded: int | None = None
    subset: str | None = None  # the task or dataset it comes from (the out-of-distribution figure holds some out)
    model: str | None = None  # the model whose samples were graded (a samples split names it)


def load_rows(source: str) -> tuple[list[Question], int]:
    """Questions with a target, and how many rows had none (no reference graded them), from a run folder (its
    samples/ split), a parquet or JSONL file, a folder of parquet files or a `datasets` name."""
    from cai.core.inputs import prompt_id, subset, to_messages
    from cai.train.data import read_rows

    out, ungraded = [], 0
    for where, r in read_rows(source, PIK):
        messages = list(to_messages(r, where, None))
        correct, graded = r.get("correct"), r.get("graded")
        target = r.get("p_ik")
        if target is None and isinstance(graded, int) and graded > 0 and isinstance(correct, int):
            target = correct / graded
        if target is None:
            if "p_ik" in r or "graded" in r:
                ungraded += 1  # no reference graded its samples: nothing to learn from
                continue
            raise CaiError(f"{where}: no 'p_ik' (or 'correct' and 'graded' counts): P(IK) learns from them")
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 <= target <= 1:
            raise CaiError(f"{where}: 'p_ik' must be a probability in [0, 1], got {target!r}")
        counted = isinstance(graded, int) and graded > 0 and isinstance(correct, int)
        out.append(
            Question(
                prompt_id(messages),
                messages,
                float(target),
                correct if counted else None,
                graded if counted else None,
                subset(r, where),
                r["model"] if isinstance(r.get("model"), str) and r["model"] else None,
            )
        )
    if not out:
        raise CaiError(f"{source}: no question with a P(IK) target ({ungraded} had no graded samples)")
    return out, ungraded


def split(rows: list[Question], eval_fraction: float, seed: int) -> tuple[list[Question], list[Question]]:
    """Held out by question (a seeded hash)."""
    return training.held_out(rows, lambda q: q.key, eval_fraction, seed)


def features(rows: list[Question], tokenizer, max_length: int) -> list[dict]:
    """What the head trains on: each question as P(IK) inference reads it (rewardmodels.question_ids)."""
    ids = question_ids(tokenizer, [q.prompt for q in rows], max_length)
    return [{"input_ids": x, "target": q.target} for x, q in zip(ids, rows, strict=True)]


def metrics(predicted: list[float], rows: list[Question]) -> dict:
    """Brier score and ECE of P(IK) against each question's share correct, and AUROC: per sample where the data
    counts them (each sample a case with its question's P(IK)), else per question (share correct >= 0.5)."""
    from cai.signals.ranking import auroc

    cal = calibration(predicted, [q.target for q in rows])
    scores: list[float] = []
    labels: list[bool] = []
    for p, q in zip(predicted, rows, strict=True):
        if q.graded is not None and q.correct is not None:
            scores += [p] * q.graded
            labels += [True] * q.correct + [False] * (q.graded - q.correct)
        else:
            scores.append(p)
            labels.append(q.target >= 0.5)
    mean = sum(q.target for q in rows) / len(rows) if rows else None
    return {
        "brier": cal["brier"],
        "ece": cal["ece"],
        "auroc": auroc(scores, labels),
        "mean_p_ik": sum(predicted) / len(predicted) if predicted else None,
        "mean_target": mean,
        # the Brier score of always predicting the mean target: the bar a value head must beat
        "brier_constant": sum((q.target - mean) ** 2 for q in rows) / len(rows) if rows and mean is not None else None,
        "questions": len(rows),
        "reliability": cal["reliability"],
    }


def policy(rows: list[Question]) -> str:
    """The model that answered the questions (the one the samples split names), else the embedded model."""
    from cai.backends.models import DEFAULT_MODEL

    named = sorted({q.model for q in rows if q.model})
    if len(named) > 1:
        raise CaiError(
            f"--backbone policy: the questions were answered by several models ({', '.join(named)}); name one"
        )
    return named[0] if named else DEFAULT_MODEL


def train(config: PIKConfig, log=print) -> dict:
    rows, ungraded = load_rows(config.source)
    seen, unseen = pik_subsets.split(rows, config.train_subsets)  # a bad subset name is refused before any model
    if config.backbone == POLICY:
        config.backbone = policy(rows)
    started = training.start(config)
    train_rows, eval_rows = split(seen, config.eval_fraction, config.seed)
    log(
        f"train-pm: {len(rows)} questions ({len(train_rows)} train, {len(eval_rows)} eval, {len(unseen)} of "
        f"subsets held out whole); {ungraded} without graded samples left out; value head on {config.backbone}"
    )
    counts = {
        "questions": len(rows),
        "ungraded": ungraded,
        "train_questions": len(train_rows),
        "eval_questions": len(eval_rows),
        **pik_subsets.counts(train_rows, unseen),
    }
    extra = {"ood": unseen} if unseen else {}
    m = pointwise.train(config, PIK, (train_rows, eval_rows), features, metrics, counts, started, log, extra)
    pik_subsets.save_trained(config.out, train_rows)
    return m


def summary_lines(m: dict) -> list[str]:
    auroc = m["eval_auroc"]
    lines = [
        f"questions      {m['questions']} ({m['train_questions']} train / {m['eval_questions']} eval), "
        f"{m['ungraded']} without graded samples",
        f"eval           Brier {training.fmt(m['eval_brier'])} "
        f"(constant guess {training.fmt(m['eval_brier_constant'])})   ece {training.fmt(m['eval_ece'])}   "
        f"AUROC {training.fmt(auroc)}",
    ]
    if m.get("ood_questions"):
        lines.append(
            f"out of distr.  Brier {training.fmt(m['ood_brier'])} (constant guess "
            f"{training.fmt(m['ood_brier_constant'])})   AUROC {training.fmt(m['ood_auroc'])} on "
            f"{m['ood_questions']} questions of {', '.join(m['ood_subsets'])} (never trained on)"
        )
    return lines + [
        f"value head     on {m['config']['backbone']}",
        f"train loss     {m['train_loss']:.4f} over {m['train_steps']} steps",
    ]
