"""P(IK) (Kadavath et al. 2022, §5): a value head that reads the question alone and predicts the probability that
the model will answer it correctly, trained on the share of the model's own samples that were correct.

The target is a prompt's `p_ik` (the samples split of `cai generate --stage sample`, or a file with `p_ik`, or
`correct` and `graded` counts); the loss is binary cross-entropy against that soft target. Evaluated as the paper
does: Brier score and calibration of P(IK) against the held-out share correct, and AUROC, how well P(IK) tells the
questions' right answers from wrong ones (each held-out sample is one case, scored by its question's P(IK)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cai.errors import CaiError
from cai.signals.calibration import calibration
from cai.train import pointwise, training
from cai.train.pointwise import Collator, predict
from cai.train.training import TrainOptions

PIK = "pik"


@dataclass
class PIKConfig(TrainOptions):
    """`cai train-pm --kind pik`: a P(IK) value head on questions (prompt, p_ik, or correct of graded samples)."""


@dataclass(frozen=True)
class Question:
    key: str
    prompt: list[dict]
    target: float  # the share of the model's samples that were correct
    correct: int | None = None  # of `graded` samples, where the data counts them (for AUROC per sample)
    graded: int | None = None


def load_rows(source: str) -> tuple[list[Question], int]:
    """Questions with a target, and how many rows had none (no reference graded them), from a run folder (its
    samples/ split), a parquet or JSONL file, a folder of parquet files or a `datasets` name."""
    from cai.core.inputs import prompt_id, to_messages
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
            )
        )
    if not out:
        raise CaiError(f"{source}: no question with a P(IK) target ({ungraded} had no graded samples)")
    return out, ungraded


def split(rows: list[Question], eval_fraction: float, seed: int) -> tuple[list[Question], list[Question]]:
    """Held out by question (a seeded hash)."""
    return training.held_out(rows, lambda q: q.key, eval_fraction, seed)


def question_text(tokenizer, prompt: list[dict]) -> str:
    """The question as the model sees it before answering (its chat template, up to the assistant's turn)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def features(rows: list[Question], tokenizer, max_length: int) -> list[dict]:
    tokenizer.truncation_side = "left"  # keep the end of a long conversation: the question asked
    return [
        {
            "input_ids": tokenizer(question_text(tokenizer, q.prompt), truncation=True, max_length=max_length)[
                "input_ids"
            ],
            "target": q.target,
        }
        for q in rows
    ]


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


def train(config: PIKConfig, log=print) -> dict:
    rows, ungraded = load_rows(config.source)
    started = training.start(config)
    train_rows, eval_rows = split(rows, config.eval_fraction, config.seed)
    log(
        f"train-pm: {len(rows)} questions ({len(train_rows)} train, {len(eval_rows)} eval); {ungraded} without "
        "graded samples left out"
    )
    counts = {
        "questions": len(rows),
        "ungraded": ungraded,
        "train_questions": len(train_rows),
        "eval_questions": len(eval_rows),
    }
    return pointwise.train(config, PIK, (train_rows, eval_rows), features, metrics, counts, started, log)


def summary_lines(m: dict) -> list[str]:
    auroc = m["eval_auroc"]
    return [
        f"questions      {m['questions']} ({m['train_questions']} train / {m['eval_questions']} eval), "
        f"{m['ungraded']} without graded samples",
        f"eval           Brier {training.fmt(m['eval_brier'])} "
        f"(constant guess {training.fmt(m['eval_brier_constant'])})   ece {training.fmt(m['eval_ece'])}   "
        f"AUROC {training.fmt(auroc)}",
        f"train loss     {m['train_loss']:.4f} over {m['train_steps']} steps",
    ]


def scores(model_dir: str, prompts: list[list[dict]], batch_size: int = 16, max_length: int = 512) -> list[float]:
    """P(IK) of each question from a trained value head."""
    from cai.signals.rewardmodels import load

    tokenizer, model = load(model_dir, PIK)
    feats = [dict(f, target=math.nan) for f in features([Question("", p, 0.0) for p in prompts], tokenizer, max_length)]
    return predict(model, feats, Collator(tokenizer.pad_token_id), batch_size)
