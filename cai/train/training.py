"""What the bundled trainers share: their common settings, the backbone with a one-output head, the Trainer's
arguments, resuming from the last checkpoint, and saving the model with its metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from cai.core.sampling import stable_unit
from cai.settings import check_value, declared, setting

T = TypeVar("T")


@dataclass
class TrainOptions:
    """The settings every trainer takes; a trainer's config extends it (PMConfig, PRMConfig)."""

    source: str = setting("", "A run folder, a parquet/JSONL file of the trainer's rows, or a dataset.")
    out: str = setting("", "Folder for the model, checkpoints and metrics.json.")
    backbone: str = setting(
        "all-minilm-l6-v2",
        "all-minilm-l6-v2 (embedded encoder), smollm2-135m (embedded decoder), a folder or a Hub id.",
    )
    epochs: float = setting(1.0, "Passes over the training data.", above=0)
    lr: float = setting(5e-5, "Learning rate.", above=0)
    batch_size: int = setting(
        4, "Batch elements per step (a prompt with all its comparisons, or a solution).", minimum=1
    )
    max_length: int = setting(512, "Tokens per text at most; longer texts are cut and counted.", minimum=8)
    seed: int = setting(0, "Seed of the split, the order and the head's initialisation.")
    eval_fraction: float = setting(
        0.1, "Held out, split by prompt (the meta RM: by labelled pair).", minimum=0, maximum=0.999
    )
    dropout: bool = setting(
        False, "Keep the backbone's dropout (off by default: it adds noise to every reward comparison)."
    )
    save_steps: int = setting(50, "Checkpoint every N steps (resumable).", minimum=1)
    threads: int | None = setting(None, "torch CPU threads (default: torch's choice).", minimum=1)

    def validate(self) -> None:
        """Every value against its declaration, naming the flag."""
        for s in declared(type(self), "train-pm"):
            check_value(s, getattr(self, s.name))


def held_out(rows: list[T], key: Callable[[T], str], eval_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """(train, held out), split by `key` (a prompt, a pair) on a seeded hash, so no key sits on both sides; a tiny
    set still holds something out, deterministically."""
    if eval_fraction <= 0:
        return rows, []
    keys = sorted({key(r) for r in rows}, key=lambda k: stable_unit("split", seed, k))
    held = {k for k in keys if stable_unit("split", seed, k) < eval_fraction}
    if not held or len(held) == len(keys):
        held = set(keys[: max(1, round(len(keys) * eval_fraction))])
    return [r for r in rows if key(r) not in held], [r for r in rows if key(r) in held]


def load_backbone(spec: str, dropout: bool = False, per_token: bool = False):
    """The backbone with a one-output head: one reward per text (a pairwise PM), or with `per_token` one logit per
    token (a PRM reads it at the end of each step)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    from cai.backends.models import resolve_backbone

    path = resolve_backbone(spec)
    tokenizer = AutoTokenizer.from_pretrained(path)
    auto = AutoModelForTokenClassification if per_token else AutoModelForSequenceClassification
    model = auto.from_pretrained(path, num_labels=1, dtype=torch.float32)
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        # A decoder pools its last real token, found as the last token that is not padding; a pad token
        # shared with EOS would hide a real final EOS, so padding gets a token of its own.
        tokenizer.add_special_tokens({"pad_token": "<|cai_pad|>"})
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    tokenizer.padding_side = "right"
    if not dropout:
        # Every loss term compares two rewards (or a probability with its label); dropout noise adds variance to
        # each. Off, the step is also cheaper: no masks drawn or kept for the backward (TRL does the same).
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    return model, tokenizer


def arguments(config: TrainOptions, ckpt_dir: Path):
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=config.epochs,
        learning_rate=config.lr,
        per_device_train_batch_size=config.batch_size,
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        logging_steps=10,
        report_to=[],
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def fit(trainer_class, model, config: TrainOptions, features: list[dict], collate, log, **extra):
    """Train `model` with `trainer_class` (a transformers Trainer; `extra` set on it) on `features`, from the last
    checkpoint in `config.out`/checkpoints where a killed run left one. Returns (the run's result, the model)."""
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = Path(config.out) / "checkpoints"
    trainer = trainer_class(
        model=model, args=arguments(config, ckpt_dir), train_dataset=features, data_collator=collate
    )
    for name, value in extra.items():
        setattr(trainer, name, value)
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if last:
        log(f"train-pm: resuming from {last}")
    return trainer.train(resume_from_checkpoint=last), trainer.model


def start(config: TrainOptions) -> float:
    import torch
    from transformers import set_seed

    if config.threads:
        torch.set_num_threads(config.threads)
    set_seed(config.seed)
    return time.monotonic()


def finish(model, tokenizer, out_dir: Path, metrics: dict, result, started: float, config: TrainOptions) -> dict:
    """Save the model and its tokenizer, and the metrics with the run's training figures, in `out_dir`."""
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    metrics.update(
        {
            "train_loss": result.training_loss,
            "train_steps": result.global_step,
            "train_seconds": round(result.metrics.get("train_runtime", 0.0), 2),
            "seconds": round(time.monotonic() - started, 2),
            "config": asdict(config),
        }
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
