"""Train a preference model on soft labels with transformers' Trainer: a pairwise PM (transformer + scalar head,
soft Bradley-Terry) or a process reward model (token-classification head, soft BCE on step labels)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cai import steps as steps_mod
from cai.errors import CaiError
from cai.pm import data as pmdata
from cai.settings import check_value, declared, setting

if TYPE_CHECKING:
    import torch


@dataclass
class TrainConfig:
    """The trainer's settings; `cai train-pm` makes its flags from these declarations."""

    source: str = setting("", "A run folder, a preference (--kind prm: steps) parquet/JSONL file or a dataset.")
    out: str = setting("", "Folder for the preference model, checkpoints and metrics.json.")
    kind: str = setting(
        "pm",
        "pm: a pairwise preference model on prefs/ (soft Bradley-Terry); prm: a process reward model on steps/ "
        "(a probability at the end of every step, soft binary cross-entropy on step_p).",
        choices=lambda: ("pm", "prm"),
    )
    step_separator: str = setting(
        "\\n",
        "With --kind prm: the text after each step, where its label sits (TRL's PRMTrainer's step_separator; "
        "'\\n' is a newline).",
    )
    backbone: str = setting(
        "all-minilm-l6-v2",
        "all-minilm-l6-v2 (embedded encoder), smollm2-135m (embedded decoder), a folder or a Hub id.",
    )
    epochs: float = setting(1.0, "Passes over the training pairs.", above=0)
    lr: float = setting(5e-5, "Learning rate.", above=0)
    batch_size: int = setting(4, "Prompts (batch elements) per step; each carries all its comparisons.", minimum=1)
    max_length: int = setting(512, "Longer (prompt, response) texts keep their end and are counted.", minimum=8)
    seed: int = setting(0, "Seed of the split, the order and the head's initialisation.")
    eval_fraction: float = setting(0.1, "Held out, split by prompt.", minimum=0, maximum=0.999)
    group_by_prompt: bool = setting(
        True, "--kind pm: InstructGPT's batching, all comparisons of a prompt in one batch element."
    )
    center_rewards: float = setting(
        0.0, "--kind pm: coefficient of mean(r^2), keeps rewards centred near 0 (TRL's option).", minimum=0
    )
    dropout: bool = setting(
        False, "Keep the backbone's dropout (off by default: it adds noise to every reward comparison)."
    )
    save_steps: int = setting(50, "Checkpoint every N steps (resumable).", minimum=1)
    threads: int | None = setting(None, "torch CPU threads (default: torch's choice).", minimum=1)

    def validate(self) -> None:
        for s in declared(TrainConfig, "train-pm"):
            check_value(s, getattr(self, s.name))
        defaults = TrainConfig()
        for name in ("group_by_prompt", "center_rewards") if self.kind == "prm" else ("step_separator",):
            if getattr(self, name) != getattr(defaults, name):
                other = "pm" if self.kind == "prm" else "prm"
                raise CaiError(f"--{name.replace('_', '-')} applies only with --kind {other}")
        if not self.step_separator:
            raise CaiError("--step-separator: empty")


def load_backbone(spec: str, dropout: bool = False, per_token: bool = False):
    """The backbone with a one-output head: one reward per text (a pairwise PM), or with `per_token` one logit per
    token (a PRM reads it at the end of each step)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    from cai.models import resolve_backbone

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


def rewards_of(model, batch) -> torch.Tensor:
    """One output per text, or per token for a PRM."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)


def _trainer_class():
    from transformers import Trainer

    from cai.pm.loss import grouped

    class PMTrainer(Trainer):
        center = 0.0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            r = rewards_of(model, inputs)
            loss = grouped(r, inputs["first"], inputs["second"], inputs["p"], inputs["group"], inputs["n_groups"])
            if self.center:
                loss = loss + self.center * (r**2).mean()
            return (loss, {"rewards": r}) if return_outputs else loss

    return PMTrainer


def evaluate(model, feats: list[dict], groups: list[pmdata.Group], collate, batch_size: int = 16) -> dict:
    """Accuracy (agreement with the label's side), ECE of σ(r_a - r_b) against p (10 bins), mean margin,
    accuracy per principle, and the rewards' mean/std (for normalisation)."""
    import torch

    model.eval()
    preds, labels, margins, principles, all_rewards = [], [], [], [], []
    with torch.no_grad():
        for start in range(0, len(feats), batch_size):
            batch = collate(feats[start : start + batch_size])
            r = rewards_of(model, batch)
            all_rewards += r.tolist()
            m = (r[batch["first"]] - r[batch["second"]]).tolist()
            margins += m
            labels += batch["p"].tolist()
            preds += [1 / (1 + math.exp(-x)) for x in m]
        for g in groups:
            principles += [c[3] for c in g.comparisons]
    decided = [(pr, p, ps) for pr, p, ps in zip(preds, labels, principles, strict=True) if p != 0.5]
    correct = [(pr > 0.5) == (p > 0.5) for pr, p, _ in decided]
    bins: list[list[tuple[float, float]]] = [[] for _ in range(10)]
    for pr, p in zip(preds, labels, strict=True):
        bins[min(int(pr * 10), 9)].append((pr, p))
    ece = (
        sum(len(b) / len(preds) * abs(sum(x for x, _ in b) / len(b) - sum(y for _, y in b) / len(b)) for b in bins if b)
        if preds
        else 0.0
    )
    per_principle: dict[str, list[bool]] = {}
    for ok, (_, _, ps) in zip(correct, decided, strict=True):
        for name in ps:
            per_principle.setdefault(name, []).append(ok)
    mean = sum(all_rewards) / len(all_rewards) if all_rewards else 0.0
    std = (sum((x - mean) ** 2 for x in all_rewards) / len(all_rewards)) ** 0.5 if all_rewards else 1.0
    return {
        "eval_accuracy": sum(correct) / len(correct) if correct else None,
        "eval_ece": ece,
        "eval_mean_margin": sum(m if p >= 0.5 else -m for m, p in zip(margins, labels, strict=True)) / len(margins)
        if margins
        else 0.0,
        "eval_accuracy_per_principle": {k: sum(v) / len(v) for k, v in sorted(per_principle.items())},
        "eval_comparisons": len(preds),
        "reward_mean": mean,
        "reward_std": std or 1.0,
    }


def _arguments(config: TrainConfig, ckpt_dir: Path):
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


def _resume(trainer, ckpt_dir: Path, log):
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if last:
        log(f"train-pm: resuming from {last}")
    return trainer.train(resume_from_checkpoint=last)


def _start(config: TrainConfig) -> float:
    import torch
    from transformers import set_seed

    if config.threads:
        torch.set_num_threads(config.threads)
    set_seed(config.seed)
    return time.monotonic()


def train(source: str, out: str, log=print, **settings) -> dict:
    """Train on `source` (a run, a preference or steps file, or a dataset) into `out`; returns the metrics."""
    config = TrainConfig(source=source, out=out, **settings)
    config.validate()
    if config.kind == "prm":
        return train_prm(config, log)
    rows = pmdata.load_rows(source)  # input problems surface before any model loads
    started = _start(config)
    groups = pmdata.group(rows, config.group_by_prompt)
    train_groups, eval_groups = pmdata.split(groups, config.eval_fraction, config.seed)
    model, tokenizer = load_backbone(config.backbone, config.dropout)
    encode = pmdata.Encoder(tokenizer, config.max_length)
    train_feats = pmdata.features(train_groups, encode)
    eval_feats = pmdata.features(eval_groups, encode)
    collate = pmdata.Collator(tokenizer.pad_token_id)
    log(
        f"train-pm: {len(rows)} pairs in {len(groups)} batch elements ({len(train_groups)} train, "
        f"{len(eval_groups)} eval); {encode.truncated} responses truncated to {config.max_length} tokens"
    )

    out_dir = Path(out)
    ckpt_dir = out_dir / "checkpoints"
    trainer = _trainer_class()(
        model=model, args=_arguments(config, ckpt_dir), train_dataset=train_feats, data_collator=collate
    )
    trainer.center = config.center_rewards
    result = _resume(trainer, ckpt_dir, log)
    model = trainer.model

    metrics = evaluate(model, eval_feats or train_feats, eval_groups or train_groups, collate)
    # InstructGPT normalises the reward model so the mean reward is 0; the offset and scale live in the
    # model's config, and `cai score` applies them.
    model.config.cai_reward_mean = metrics["reward_mean"]
    model.config.cai_reward_std = metrics["reward_std"]
    counts = {
        "pairs": len(rows),
        "train_groups": len(train_groups),
        "eval_groups": len(eval_groups),
        "truncated": encode.truncated,
    }
    return _finish(model, tokenizer, out_dir, metrics | counts, result, started, config)


def _finish(model, tokenizer, out_dir: Path, metrics: dict, result, started: float, config: TrainConfig) -> dict:
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


def train_prm(config: TrainConfig, log=print) -> dict:
    """A process reward model on step labels (`--kind prm`): soft BCE on each step's `step_p`; evaluated by step
    accuracy, ECE and first-error accuracy on prompts held out."""
    from cai.pm import prm

    rows = prm.load_rows(config.source)  # input problems surface before any model loads
    started = _start(config)
    train_rows, eval_rows = prm.split(rows, config.eval_fraction, config.seed)
    model, tokenizer = load_backbone(config.backbone, config.dropout, per_token=True)
    encode = prm.StepEncoder(tokenizer, steps_mod.unescape(config.step_separator), config.max_length)
    train_feats, eval_feats = prm.features(train_rows, encode), prm.features(eval_rows, encode)
    collate = prm.StepCollator(tokenizer.pad_token_id)
    steps = sum(len(r.steps) for r in rows)
    log(
        f"train-pm: {len(rows)} solutions, {steps} steps ({len(train_rows)} train, {len(eval_rows)} eval solutions); "
        f"{encode.cut_steps} steps cut by max_length {config.max_length}"
    )
    out_dir = Path(config.out)
    ckpt_dir = out_dir / "checkpoints"
    trainer = prm.trainer_class()(
        model=model, args=_arguments(config, ckpt_dir), train_dataset=train_feats, data_collator=collate
    )
    result = _resume(trainer, ckpt_dir, log)
    model = trainer.model
    held = eval_feats or train_feats
    metrics = prm.metrics(prm.predict(model, held, collate), [f["targets"] for f in held])
    model.config.cai_kind = prm.KIND
    model.config.cai_step_separator = encode.separator
    counts = {
        "kind": prm.KIND,
        "solutions": len(rows),
        "steps": steps,
        "train_solutions": len(train_rows),
        "eval_solutions": len(eval_rows),
        "cut_steps": encode.cut_steps,
    }
    return _finish(
        model, tokenizer, out_dir, {f"eval_{k}": v for k, v in metrics.items()} | counts, result, started, config
    )
