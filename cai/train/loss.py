"""The soft-label losses: Bradley-Terry per comparison and grouped by prompt (InstructGPT) for pairwise
preference models, binary cross-entropy on step probabilities for process reward models."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_bt(r_chosen: torch.Tensor, r_rejected: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """-(p * log σ(r_c - r_r) + (1 - p) * log σ(r_r - r_c)), elementwise. With p = 1 it is TRL's loss.

    The CAI preference model was trained on the feedback model's probabilities, not on hard labels:
    a 0.55 label should pull the two rewards only slightly apart.
    """
    margin = r_chosen - r_rejected
    return -(p * F.logsigmoid(margin) + (1 - p) * F.logsigmoid(-margin))


def grouped(
    rewards: torch.Tensor,
    first: torch.Tensor,
    second: torch.Tensor,
    p: torch.Tensor,
    group: torch.Tensor,
    n_groups: int,
) -> torch.Tensor:
    """Mean over groups of the mean soft-BT loss over each group's comparisons.

    `rewards` holds one reward per response; comparison k says response first[k] beats second[k] with
    probability p[k] and belongs to group[k]. InstructGPT puts all C(K,2) comparisons of one prompt in
    one batch element so that the K responses, each used K-1 times, do not overfit.
    """
    losses = soft_bt(rewards[first], rewards[second], p)
    sums = torch.zeros(n_groups, dtype=losses.dtype, device=losses.device).index_add_(0, group, losses)
    counts = torch.zeros(n_groups, dtype=losses.dtype, device=losses.device).index_add_(
        0, group, torch.ones_like(losses)
    )
    return (sums / counts).mean()


def soft_bce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of σ(logit) against soft targets, over the positions in `mask` (the last token
    of each step). A step labelled 0.7 pulls its probability toward 0.7: TRL's PRMTrainer casts labels with
    int(), which would make it 0; the feedback model's confidence is the label here, as in the pairwise loss."""
    return F.binary_cross_entropy_with_logits(logits[mask], targets[mask])
