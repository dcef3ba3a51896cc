"""Choosing among N answers to one prompt: their combined score, rejection sampling, K-way preference pairs with
soft labels from score differences, majority vote by equivalence, and AUROC. Pure functions, no engine.

Every signal is put on [0, 1] before it is combined: the rules' weighted mean score, P(True) and a PRM's
solution score already are; a trained PM's normalised reward z (standard units, cai.signals.rewardmodels) becomes
sigmoid(z), and a GRM score s on 1-9 becomes (s - 1) / 8. The combined score is the weighted mean of the signals
a sample has (a failed or absent signal is left out of that sample's mean, never counted as 0).

Soft labels are Bradley-Terry on the combined scores: P(a is better than b) = sigmoid((s_a - s_b) / T), with T the
`--rank-temperature`. Scores on [0, 1] differ by at most 1, so T = 0.1 puts a difference of 0.1 at P = 0.73 and
one of 0.3 at P = 0.95; equal scores give 0.5, a tie.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

SIGNALS = ("rules", "p_true", "pm", "prm", "grm")
SELECT = ("passing", "best", "top-k")
PAIRS = ("all", "best-vs-rest")
OPERATORS = (">=", ">")


def unit(signal: str, value: float) -> float:
    """A signal's value on [0, 1]: a PM's standard-unit reward through the logistic function, a GRM score on its
    1-9 scale mapped linearly."""
    if signal == "pm":
        return 1 / (1 + math.exp(-value))
    if signal == "grm":
        return (value - 1) / 8
    return value


def parse_weights(text: str) -> dict[str, float]:
    """`rules=1,p_true=0.5`: each signal's weight in the combined score (ValueError naming a bad piece)."""
    out: dict[str, float] = {}
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        name, sep, value = piece.partition("=")
        name = name.strip()
        if not sep or name not in SIGNALS:
            raise ValueError(f"{piece!r}: expected SIGNAL=WEIGHT with SIGNAL one of {', '.join(SIGNALS)}")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"{piece!r}: the weight must be a number") from None
        if not weight >= 0 or math.isinf(weight):
            raise ValueError(f"{piece!r}: the weight must be a finite number of at least 0")
        out[name] = weight
    if not any(out.values()):
        raise ValueError(f"{text!r}: at least one signal needs a weight above 0")
    return out


def combined(scores: dict[str, float | None], weights: dict[str, float]) -> float | None:
    """The weighted mean on [0, 1] of the signals present; None when no weighted signal has a value."""
    present = [(weights[k], unit(k, v)) for k, v in scores.items() if v is not None and weights.get(k, 0) > 0]
    total = sum(w for w, _ in present)
    return sum(w * v for w, v in present) / total if total else None


@dataclass(frozen=True)
class Requirement:
    """What a kept sample must meet: a rule that passes (`rule`), or a signal at a threshold (`signal op value`)."""

    text: str
    rule: str | None = None
    signal: str | None = None
    op: str = ">="
    value: float = 0.0

    def met(self, passed: dict[str, bool | None], scores: dict[str, float | None]) -> bool | None:
        """True or False; None when it cannot be told (the rule did not apply or could not finish; the signal
        failed): a sample that cannot be told is not kept."""
        if self.rule is not None:
            return passed.get(self.rule)
        assert self.signal is not None
        value = scores.get(self.signal)
        if value is None:
            return None
        return value >= self.value if self.op == ">=" else value > self.value


def parse_require(text: str, rules: Sequence[str]) -> list[Requirement]:
    """`math.accuracy,p_true>=0.6,score>0.5`: rule ids that must pass and signals (or `score`, the combined one)
    at thresholds (ValueError naming the unknown rule or bad piece)."""
    out = []
    for piece in (p.strip() for p in text.split(",")):
        if not piece:
            continue
        op = next((o for o in OPERATORS if o in piece), None)
        if op is None:
            if piece not in rules:
                known = ", ".join(rules) or "none"
                raise ValueError(f"{piece!r}: no such rule in the constitution (its rules: {known})")
            out.append(Requirement(piece, rule=piece))
            continue
        name, value = (s.strip() for s in piece.split(op, 1))
        if name not in (*SIGNALS, "score"):
            raise ValueError(f"{piece!r}: a threshold names one of {', '.join((*SIGNALS, 'score'))}")
        try:
            threshold = float(value)
        except ValueError:
            raise ValueError(f"{piece!r}: the threshold must be a number") from None
        out.append(Requirement(piece, signal=name, op=op, value=threshold))
    return out


def bradley_terry(a: float, b: float, temperature: float) -> float:
    """P(a is better than b) from their scores: sigmoid((a - b) / temperature)."""
    return 1 / (1 + math.exp(-(a - b) / temperature))


def ranked(scores: Sequence[float | None]) -> list[int]:
    """The indices of the scored samples, best first (ties keep the sampled order); unscored ones are left out."""
    return sorted((i for i, s in enumerate(scores) if s is not None), key=lambda i: -scores[i])  # type: ignore[operator]


def pairs(
    texts: Sequence[str], scores: Sequence[float | None], how: str, temperature: float
) -> list[tuple[int, int, float]]:
    """(better index, worse index, P(better is better)) for a prompt's scored samples: every pair among them
    (`all`: K choose 2, InstructGPT's ranking) or the best against each other (`best-vs-rest`). Identical texts
    make no pair (their preference carries nothing), and only the first of several identical texts takes part."""
    order, seen = [], set()
    for i in ranked(scores):
        if texts[i] not in seen:
            seen.add(texts[i])
            order.append(i)
    out = []
    for a_pos, a in enumerate(order):
        for b in order[a_pos + 1 :]:
            out.append((a, b, bradley_terry(scores[a], scores[b], temperature)))  # type: ignore[arg-type]
        if how == "best-vs-rest":
            break
    return out


def select(scores: Sequence[float | None], passing: Sequence[bool], how: str, k: int = 1) -> list[int]:
    """The samples kept for SFT: every passing one (`passing`, R1's rejection sampling, in sampled order), the best
    passing one by score (`best`), or the `k` best (`top-k`). An unscored passing sample ranks last."""
    kept = [i for i, ok in enumerate(passing) if ok]
    if how == "passing":
        return kept
    by_score = sorted(kept, key=lambda i: (scores[i] is None, -(scores[i] or 0.0), i))
    return by_score[: 1 if how == "best" else k]


def majority(answers: Sequence[str | None], equal: Callable[[str, str], bool]) -> int | None:
    """The index of the first answer of the largest class of equal answers (ties: the class seen first); None when
    no sample has an answer. `equal` decides equivalence (math-verify for mathematics), so 1/2 and 0.5 vote
    together."""
    classes: list[list[int]] = []
    for i, a in enumerate(answers):
        if a is None:
            continue
        home = next((c for c in classes if equal(answers[c[0]], a)), None)  # type: ignore[arg-type]
        if home is None:
            classes.append([i])
        else:
            home.append(i)
    if not classes:
        return None
    return max(classes, key=len)[0]  # max keeps the first of equal sizes


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """The area under the ROC curve: the probability that a random positive scores above a random negative (ties
    count one half; the Mann-Whitney U statistic). None without both classes."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    # Rank-based: O(n log n) rather than comparing every pair.
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # the mean rank of a run of ties
        i = j + 1
    pos_ranks = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    return (pos_ranks - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))
