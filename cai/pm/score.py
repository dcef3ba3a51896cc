"""Score (prompt, response) pairs with a trained preference model, batched."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from cai.errors import CaiError


def _items(source: str) -> tuple[list[dict], bool]:
    """(items, is_preference). Items: {id, prompt, response, side}."""
    from cai import stages
    from cai.pm.data import load_rows
    from cai.store import RunStore

    sft, prefs = stages.get("sl").split, stages.get("rl").split
    if RunStore.is_run(source) and RunStore(source).count(sft) and not RunStore(source).count(prefs):
        rows = RunStore(source).read(sft, columns=["id", "prompt", "completion"])
        return [
            {"id": r["id"], "prompt": r["prompt"], "response": r["completion"][-1]["content"], "side": "completion"}
            for r in rows
        ], False
    rows = load_rows(source)
    items = []
    for r in rows:
        for side in ("chosen", "rejected"):
            items.append({"id": r["id"], "prompt": r["prompt"], "response": r[side], "side": side, "p": r["p"]})
    return items, True


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


def score(pm: str, data: str, out: str, batch_size: int = 16, max_length: int = 512) -> dict:
    """Write one JSONL line per (prompt, response) with its `score` (normalised reward); on preference
    data, also report how often chosen outscores rejected."""
    check_pm(pm)
    items, is_pref = _items(data)
    scored = rewards(pm, [(it["prompt"], it["response"]) for it in items], batch_size, max_length)
    scores = scored["scores"]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        for it, s in zip(items, scores, strict=True):
            f.write(
                json.dumps(
                    {
                        "id": it["id"],
                        "side": it["side"],
                        "prompt": it["prompt"],
                        "response": it["response"],
                        "score": s,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    report = {"scored": len(items), "out": out, "truncated": scored["truncated"]}
    if is_pref:
        pairs = [(scores[i], scores[i + 1], items[i]["p"]) for i in range(0, len(items), 2)]
        decided = [(c, r) for c, r, p in pairs if p != 0.5]
        report["accuracy"] = sum(c > r for c, r in decided) / len(decided) if decided else None
    return report
