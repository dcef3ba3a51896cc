"""The soft-label Bradley-Terry loss, per comparison and grouped by prompt (InstructGPT)."""

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
