"""The bundled pairwise preference model: a transformer with a scalar head, trained with transformers' Trainer on
soft labels with the Bradley-Terry loss, all comparisons of a prompt in one batch element (InstructGPT)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from cai.settings import setting
from cai.signals.rewardmodels import PM, Collator, Encoder, rewards_of
from cai.train import data as pmdata
from cai.train import training
from cai.train.training import TrainOptions


@dataclass
class PMConfig(TrainOptions):
    """`cai train-pm --kind pm`: a pairwise preference model on preference rows (prompt, chosen, rejected,
    p_chosen)."""

    group_by_prompt: bool = setting(True, "InstructGPT's batching: all comparisons of a prompt in one batch element.")
    center_rewards: float = setting(
        0.0, "Coefficient of mean(r^2), keeps rewards centred near 0 (TRL's option).", minimum=0
    )


def _trainer_class():
    from transformers import Trainer

    from cai.train.loss import grouped

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


def train(config: PMConfig, log=print) -> dict:
    """Train on `config.source` (a run, a preference file or a dataset) into `config.out`; returns the metrics."""
    rows = pmdata.load_rows(config.source)  # input problems surface before any model loads
    started = training.start(config)
    groups = pmdata.group(rows, config.group_by_prompt)
    train_groups, eval_groups = pmdata.split(groups, config.eval_fraction, config.seed)
    model, tokenizer = training.load_backbone(config.backbone, config.dropout)
    encode = Encoder(tokenizer, config.max_length)
    train_feats = pmdata.features(train_groups, encode)
    eval_feats = pmdata.features(eval_groups, encode)
    collate = Collator(tokenizer.pad_token_id)
    log(
        f"train-pm: {len(rows)} pairs in {len(groups)} batch elements ({len(train_groups)} train, "
        f"{len(eval_groups)} eval); {encode.truncated} responses truncated to {config.max_length} tokens"
    )

    result, model = training.fit(
        _trainer_class(), model, config, train_feats, collate, log, center=config.center_rewards
    )

    metrics = evaluate(model, eval_feats or train_feats, eval_groups or train_groups, collate)
    # InstructGPT normalises the reward model so the mean reward is 0; the offset and scale live in the
    # model's config, and `cai score` applies them.
    model.config.cai_reward_mean = metrics["reward_mean"]
    model.config.cai_reward_std = metrics["reward_std"]
    counts = {
        "kind": PM,
        "pairs": len(rows),
        "train_groups": len(train_groups),
        "eval_groups": len(eval_groups),
        "truncated": encode.truncated,
    }
    return training.finish(model, tokenizer, Path(config.out), metrics | counts, result, started, config)


def summary_lines(m: dict) -> list[str]:
    """What `cai train-pm` prints of a trained pairwise model."""
    return [
        f"pairs          {m['pairs']} ({m['train_groups']} train / {m['eval_groups']} eval batch elements)",
        f"eval accuracy  {training.fmt(m['eval_accuracy'])}   ece {m['eval_ece']:.3f}   "
        f"mean margin {m['eval_mean_margin']:.3f}",
        f"train loss     {m['train_loss']:.4f} over {m['train_steps']} steps, {m['truncated']} truncated",
    ]
