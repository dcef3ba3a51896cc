"""A trained preference model, loaded once per process, and its batched rewards of (prompt, response) items."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from cai.errors import CaiError

KINDS = {  # what `cai train-pm --kind` writes, by the architecture's suffix
    "pm": ("ForSequenceClassification", "a pairwise preference model"),
    "prm": ("ForTokenClassification", "a process reward model"),
}


def kind_of(pm: str, flag: str = "--pm", want: str | None = None) -> str:
    """The kind ("pm" or "prm") of a folder written by `cai train-pm`; one line when it is neither (naming the
    kind `want`ed, where the caller needs one)."""
    config = Path(pm) / "config.json"
    if not config.is_file():
        raise CaiError(f"{flag} {pm}: not a trained preference model folder (no config.json)")
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CaiError(f"{config}: unreadable model config") from None
    for kind, (suffix, _) in KINDS.items():
        if any(a.endswith(suffix) for a in architectures):
            return kind
    found = ", ".join(architectures) or "model of unknown kind"
    if want is not None:
        raise CaiError(f"{flag} {pm}: a {found}, not {KINDS[want][1]} (cai train-pm --kind {want} writes one)")
    raise CaiError(
        f"{flag} {pm}: a {found}, not a model cai train-pm writes "
        "(...ForSequenceClassification for pairs, ...ForTokenClassification for steps)"
    )


def check_pm(pm: str, flag: str = "--pm", want: str = "pm") -> None:
    """One line when `pm` is not the kind of model the caller needs (a PRM where a pairwise PM is expected, or
    the reverse)."""
    got = kind_of(pm, flag, want)
    if got != want:
        raise CaiError(
            f"{flag} {pm}: {KINDS[got][1]} (train-pm --kind {got}), but this needs {KINDS[want][1]} "
            f"(train-pm --kind {want})"
        )


def load(pm: str, kind: str = "pm"):
    """The tokenizer and model of a trained PM or PRM, loaded once per process while its files are unchanged
    (the GRM meta filter asks for the same one on every chunk)."""
    check_pm(pm, want=kind)
    return _load_saved(pm, kind, (Path(pm) / "config.json").stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _load_saved(pm: str, kind: str, _saved_at: int):
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    auto = AutoModelForTokenClassification if kind == "prm" else AutoModelForSequenceClassification
    return AutoTokenizer.from_pretrained(pm), auto.from_pretrained(pm).eval()


def rewards(pm: str, items: list[tuple[list[dict], str]], batch_size: int = 16, max_length: int = 512) -> dict:
    """Normalised rewards of (prompt messages, response) items, batched: {"scores": [...], "raw": [...],
    "truncated": n}.
    A score is (r - mean) / std with the mean and std of the rewards on the trainer's held-out split, so
    scores of one model are in standard units: 0 is an average answer, 1 is one standard deviation above."""
    import torch

    from cai.pm.data import Collator, Encoder
    from cai.pm.trainer import rewards_of

    tokenizer, model = load(pm)
    mean = getattr(model.config, "cai_reward_mean", 0.0)
    std = getattr(model.config, "cai_reward_std", 1.0) or 1.0
    encode = Encoder(tokenizer, max_length)
    collate = Collator(tokenizer.pad_token_id)
    raw: list[float] = []
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            batch = collate(
                [{"input_ids": [encode(prompt, response)], "comparisons": []} for prompt, response in chunk]
            )
            raw += rewards_of(model, batch).reshape(-1).tolist()
    # Raw rewards give Bradley-Terry probabilities (sigmoid of a margin); normalised ones compare across models.
    return {"scores": [(r - mean) / std for r in raw], "raw": raw, "truncated": encode.truncated}
