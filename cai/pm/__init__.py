"""The bundled preference-model trainer: soft-label Bradley-Terry on RLAIF data, evaluation, scoring."""

from cai.pm.score import score
from cai.pm.trainer import train

__all__ = ["score", "train"]
