"""A scalar head trained with binary cross-entropy against a soft target: what the P(IK) value head and the meta
reward model share (their data and metrics differ; the loss, batching and prediction do not)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cai.train import training


class Collator:
    """Pads a batch of {input_ids, target} into tensors (the targets may be NaN when only predicting)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        from cai.signals.rewardmodels import padded

        ids, mask = padded([b["input_ids"] for b in batch], self.pad_id)
        return {"input_ids": ids, "attention_mask": mask, "targets": torch.tensor([b["target"] for b in batch])}


def trainer_class():
    from transformers import Trainer

    class PointwiseTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            import torch

            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits.squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, inputs["targets"].to(logits.dtype))
            return (loss, {"logits": logits}) if return_outputs else loss

    return PointwiseTrainer


def predict(model, feats: list[dict], collate: Collator, batch_size: int = 16) -> list[float]:
    """σ(head) of every feature, in order."""
    from cai.signals.rewardmodels import probabilities

    return probabilities(model, [f["input_ids"] for f in feats], collate.pad_id, batch_size)


def train(
    config: training.TrainOptions,
    kind: str,
    rows: tuple[list[Any], list[Any]],
    features: Callable[[list[Any], Any, int], list[dict]],
    metrics: Callable[[list[float], list[Any]], dict],
    counts: dict,
    started: float,
    log,
) -> dict:
    """Fit the head on the training rows of `rows` (train, held out), evaluate `metrics` on the held-out rows (the
    training rows where none are held out), and save the model as `kind` with its metrics and `counts`."""
    train_rows, eval_rows = rows
    model, tokenizer = training.load_backbone(config.backbone, config.dropout)
    collate = Collator(tokenizer.pad_token_id)
    feats = features(train_rows, tokenizer, config.max_length)
    result, model = training.fit(trainer_class(), model, config, feats, collate, log)
    held = eval_rows or train_rows
    m = metrics(predict(model, features(held, tokenizer, config.max_length), collate), held)
    model.config.cai_kind = kind
    figures = {f"eval_{k}": v for k, v in m.items()} | {"kind": kind, **counts}
    return training.finish(model, tokenizer, Path(config.out), figures, result, started, config)
