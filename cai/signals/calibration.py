"""Calibration arithmetic shared by every evaluation and trainer: accuracy, expected calibration error, Brier
score and the reliability diagram of predicted probabilities against labels (pure functions)."""

from __future__ import annotations

from collections.abc import Iterable


def share(flags: Iterable[bool]) -> float | None:
    """The share of true values (None for none at all)."""
    got = list(flags)
    return sum(got) / len(got) if got else None


def calibration(p: list[float], y: list[bool] | list[float], bins: int = 10) -> dict:
    """Accuracy (p > 0.5 agrees with y), expected calibration error over `bins` equal-width bins, the Brier
    score, the reliability diagram's points and the count. `y` may be soft (probabilities): ECE and Brier
    then measure the distance to them."""
    pairs = list(zip(p, y, strict=True))
    if not pairs:
        return {"n": 0, "accuracy": None, "ece": None, "brier": None, "reliability": []}
    buckets: list[list[tuple[float, float]]] = [[] for _ in range(bins)]
    for q, t in pairs:
        buckets[min(int(q * bins), bins - 1)].append((q, t))
    ece = sum(
        len(b) / len(pairs) * abs(sum(q for q, _ in b) / len(b) - sum(t for _, t in b) / len(b)) for b in buckets if b
    )
    return {
        "n": len(pairs),
        "accuracy": sum((q > 0.5) == t for q, t in pairs) / len(pairs),
        "ece": ece,
        "brier": sum((q - t) ** 2 for q, t in pairs) / len(pairs),
        "reliability": [
            {
                "bin": i / bins,
                "n": len(b),
                "mean_p": sum(q for q, _ in b) / len(b),
                "share_true": sum(t for _, t in b) / len(b),
            }
            for i, b in enumerate(buckets)
            if b
        ],
    }
