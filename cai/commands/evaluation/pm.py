"""`cai eval pm`: a trained preference model on pairs people labelled: accuracy, margin and calibration."""

from __future__ import annotations

import json
import math
from pathlib import Path

from cai.commands.evaluation.data import read_pairs
from cai.commands.evaluation.judge import chosen_first
from cai.commands.evaluation.metrics import best_of_n, pm_report


def evaluate(
    pm: str, data: str, seed: int = 0, batch_size: int = 16, max_length: int = 512, out: str | None = None
) -> dict:
    """Score both answers of every labelled pair; a pair is right when the preferred answer's reward is
    strictly higher. The model's P(preferred is better) is the sigmoid of the raw reward margin (the
    Bradley-Terry probability it was trained on). `out`: a JSONL file of every scored pair."""
    from cai.signals.rewardmodels import check_pm, rewards

    check_pm(pm)
    pairs = read_pairs(data)
    items = [(list(p.prompt.messages), text) for p in pairs for text in (p.chosen, p.rejected)]
    scored = rewards(pm, items, batch_size, max_length)
    raw = scored["raw"]
    rows = []
    for i, p in enumerate(pairs):
        margin = raw[2 * i] - raw[2 * i + 1]
        rows.append(
            {
                "id": p.id,
                "subset": p.subset,
                "group": p.group,
                "margin": margin,
                "raw_chosen": raw[2 * i],
                "raw_rejected": raw[2 * i + 1],
                "p": 1 / (1 + math.exp(-margin)),
                "chosen_first": chosen_first(seed, p.id),
                "p_label": p.p_label,
                "score_chosen": scored["scores"][2 * i],
                "score_rejected": scored["scores"][2 * i + 1],
            }
        )
    report = pm_report(rows)
    report["rewardbench2"] = best_of_n(rows, "margin", scores=True)
    report.update(pm=pm, data=data, truncated=scored["truncated"], pairs=len(pairs))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        report["out"] = out
    return report
