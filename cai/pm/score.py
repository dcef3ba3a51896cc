"""A trained preference model, loaded once per process, and its batched rewards of (prompt, response) items."""

from __future__ import annotations

import functools
from pathlib import Path

from cai.errors import CaiError


def check_pm(pm: str, flag: str = "--pm") -> None:
    if not (Path(pm) / "config.json").is_file():
        raise CaiError(f"{flag} {pm}: not a trained preference model folder (no config.json)")


def _load(pm: str):
    """The tokenizer and model of a trained PM, loaded once per process while its files are unchanged
    (the GRM meta filter asks for the same one on every chunk)."""
    check_pm(pm)
    return _load_saved(pm, (Path(pm) / "config.json").stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _load_saved(pm: str, _saved_at: int):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return AutoTokenizer.from_pretrained(pm), AutoModelForSequenceClassification.from_pretrained(pm).eval()


def rewards(pm: str, items: list[tuple[list[dict], str]], batch_size: int = 16, max_length: int = 512) -> dict:
    """Normalised rewards of (prompt messages, response) items, batched: {"scores": [...], "truncated": n}.
    A score is (r - mean) / std with the mean and std of the rewards on the trainer's held-out split, so
    scores of one model are in standard units: 0 is an average answer, 1 is one standard deviation above."""
    import torch

    from cai.pm.data import Collator, Encoder
    from cai.pm.trainer import rewards_of

    tokenizer, model = _load(pm)
    mean = getattr(model.config, "cai_reward_mean", 0.0)
    std = getattr(model.config, "cai_reward_std", 1.0) or 1.0
    encode = Encoder(tokenizer, max_length)
    collate = Collator(tokenizer.pad_token_id)
    scores = []
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            batch = collate(
                [{"input_ids": [encode(prompt, response)], "comparisons": []} for prompt, response in chunk]
            )
            scores += ((rewards_of(model, batch) - mean) / std).reshape(-1).tolist()
    return {"scores": scores, "truncated": encode.truncated}
