"""The bundled process reward model (Lightman et al. 2023): a token-classification head that predicts, at the
last token of each step, the probability that the step is correct; trained on soft step labels with binary
cross-entropy.

The text is laid out as TRL's PRMTrainer lays it out (the prompt, then each step followed by the separator, the
label on the separator's last token: cai.signals.rewardmodels.StepEncoder), so a model trained here reads the same data
the same way; what differs is the target: the step's soft label `step_p` where the data has it, not `int(label)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cai.core import steps as steps_mod
from cai.errors import CaiError
from cai.settings import setting
from cai.signals.rewardmodels import PRM, StepCollator, StepEncoder, StepRow, predict, step_features, step_metrics
from cai.train import training
from cai.train.training import TrainOptions


@dataclass
class PRMConfig(TrainOptions):
    """`cai train-pm --kind prm`: a process reward model on step rows (prompt, completions, labels or step_p)."""

    step_separator: str = setting(
        "\\n",
        "The text after each step, where its label sits (TRL's PRMTrainer's step_separator; '\\n' is a newline).",
    )

    def validate(self) -> None:
        super().validate()
        if not self.step_separator:
            raise CaiError("--step-separator: empty")


def load_rows(source: str, need_labels: bool = True) -> list[StepRow]:
    """Solutions in TRL's stepwise format (prompt, completions, and labels and/or step_p) from a cai run folder
    (its steps/ split), a parquet or JSONL file, a folder of parquet files, or a `datasets` name. `step_p` is
    the target where present, else the boolean `labels`. Every bad row is one line naming it."""
    from cai.train.data import read_rows

    found = read_rows(source, PRM)
    out = [_row(where, r, need_labels) for where, r in found]
    if not out:
        raise CaiError(f"{source}: no step rows")
    return out


def _row(where: str, r: dict, need_labels: bool) -> StepRow:
    prompt = r.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
        prompt = steps_mod.prompt_text(prompt)
    if not isinstance(prompt, str) or not prompt.strip():
        raise CaiError(f"{where}: 'prompt' must be text (or chat messages)")
    steps = r.get("completions")
    step_p = r.get("step_p")
    whole = r.get("steps")  # cai's steps split: every step, where `completions` stops at the first mistake
    if isinstance(whole, list) and isinstance(step_p, list) and len(step_p) == len(whole):
        if need_labels:  # train on the labelled steps only: the soft labels of those, not of the steps after them
            step_p = step_p[: len(steps)] if isinstance(steps, list) else step_p
        else:  # scoring reads the whole solution
            steps = whole
    text = next((r[k] for k in ("solution", "completion", "response") if isinstance(r.get(k), str)), None)
    if steps is None and text is not None and not need_labels:  # a whole solution to score: one step per line
        steps = steps_mod.split(text, "line")
        if not steps:
            raise CaiError(f"{where}: the solution has no steps after splitting by line")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
        raise CaiError(f"{where}: 'completions' must be a non-empty list of non-empty step texts")
    targets: list[float] | None = None
    if step_p is not None:
        targets = step_p
        what = "step_p"
    elif r.get("labels") is not None:
        if not all(isinstance(x, bool) or x in (0, 1) for x in r["labels"]):
            raise CaiError(f"{where}: 'labels' must be true/false per step")
        targets = [float(x) for x in r["labels"]]
        what = "labels"
    elif need_labels:
        raise CaiError(f"{where}: no 'labels' or 'step_p': a process reward model learns from step labels")
    if targets is not None:
        if len(targets) != len(steps):
            raise CaiError(f"{where}: {len(steps)} steps but {len(targets)} {what}")
        for x in targets:
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 <= x <= 1.0:
                raise CaiError(f"{where}: {what} value {x!r} is not a probability")
        targets = [float(x) for x in targets]
    reference = r.get("reference")
    return StepRow(
        prompt,
        prompt,
        [s.strip() for s in steps],
        targets,
        None if r.get("id") is None else str(r["id"]),
        r.get("solution"),
        None if reference is None else str(reference),
    )


def split(rows: list[StepRow], eval_fraction: float, seed: int) -> tuple[list[StepRow], list[StepRow]]:
    """Held out by prompt (a seeded hash), as the pairwise trainer splits."""
    return training.held_out(rows, lambda r: r.key, eval_fraction, seed)


def trainer_class():
    from transformers import Trainer

    from cai.signals.rewardmodels import rewards_of
    from cai.train.loss import soft_bce

    class PRMTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            logits = rewards_of(model, inputs)
            loss = soft_bce(logits, inputs["targets"], inputs["mask"])
            return (loss, {"logits": logits}) if return_outputs else loss

    return PRMTrainer


def train(config: PRMConfig, log=print) -> dict:
    """A process reward model on step labels: soft BCE on each step's `step_p`; evaluated by step accuracy, ECE and
    first-error accuracy on prompts held out."""
    rows = load_rows(config.source)  # input problems surface before any model loads
    started = training.start(config)
    train_rows, eval_rows = split(rows, config.eval_fraction, config.seed)
    model, tokenizer = training.load_backbone(config.backbone, config.dropout, per_token=True)
    encode = StepEncoder(tokenizer, steps_mod.unescape(config.step_separator), config.max_length)
    train_feats, eval_feats = step_features(train_rows, encode), step_features(eval_rows, encode)
    collate = StepCollator(tokenizer.pad_token_id)
    steps = sum(len(r.steps) for r in rows)
    log(
        f"train-pm: {len(rows)} solutions, {steps} steps ({len(train_rows)} train, {len(eval_rows)} eval solutions); "
        f"{encode.cut_steps} steps cut by max_length {config.max_length}"
    )
    result, model = training.fit(trainer_class(), model, config, train_feats, collate, log)
    held = eval_feats or train_feats
    metrics = step_metrics(predict(model, held, collate), [f["targets"] for f in held])
    model.config.cai_kind = PRM
    model.config.cai_step_separator = encode.separator
    counts = {
        "kind": PRM,
        "solutions": len(rows),
        "steps": steps,
        "train_solutions": len(train_rows),
        "eval_solutions": len(eval_rows),
        "cut_steps": encode.cut_steps,
    }
    eval_metrics = {f"eval_{k}": v for k, v in metrics.items()}
    return training.finish(model, tokenizer, Path(config.out), eval_metrics | counts, result, started, config)


def summary_lines(m: dict) -> list[str]:
    """What `cai train-pm` prints of a trained process reward model."""
    return [
        f"solutions      {m['solutions']}, {m['steps']} steps ({m['train_solutions']} train / "
        f"{m['eval_solutions']} eval solutions)",
        f"eval           step accuracy {training.fmt(m['eval_step_accuracy'])}   "
        f"ece {training.fmt(m['eval_step_ece'])}   "
        f"first-error accuracy {training.fmt(m['eval_first_error_accuracy'])}",
        f"train loss     {m['train_loss']:.4f} over {m['train_steps']} steps, {m['cut_steps']} steps cut",
    ]
