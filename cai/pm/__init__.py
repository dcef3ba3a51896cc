"""The bundled preference-model trainer: soft-label Bradley-Terry on RLAIF data, evaluation, rewards."""

from cai.pm.trainer import train

__all__ = ["train"]
