"""Step-level labels (Lightman et al. 2023, "Let's Verify Step by Step"): splitting a solution into steps and
the arithmetic that turns per-step reads into labels and a solution score. Pure functions, no engine.

A step's probability of being correct and acceptable is read like P(True) (Kadavath et al.): the option
log-probs of one token, with "Yes" shown as (A) and then as (B), averaged so that a judge that always says
(A) gives 0.5 (cai.judges.step); the mean over the sampled principles is the step's `step_p`. The solution's
score is the product of its steps' probabilities (Lightman et al. §2.6: the probability that every step is correct),
with the minimum as the stricter alternative.

Labels are made as PRM800K's were: each step is positive, neutral or negative (`classify`: `step_p` below the
declared neutral band is negative, above it positive, inside it neutral); the first negative step is the first
mistake, and the steps after it are not labelled (PRM800K's labellers stopped there; a neutral step does not
stop them). The boolean training label counts a neutral step as not positive, as PRM800K's PRM learned it: it
predicts the rating token and scores a step by P(positive), and TRL's conversion of PRM800K to this format sets
`label = rating == 1`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cai.settings import setting

POSITIVE, NEUTRAL, NEGATIVE = "positive", "neutral", "negative"
CLASSES = (POSITIVE, NEUTRAL, NEGATIVE)
NEUTRAL_BAND = "0.4,0.6"  # the default: a read this close to a coin flip says the judge is unsure
AGGREGATES = ("product", "min")


@dataclass(frozen=True)
class SeparatorOptions:
    """How a solution is split into steps: the steps stage and the PRM signal split alike."""

    step_separator: str = setting(
        "line",
        "How a solution is split into steps: line (non-empty lines), paragraph (blank-line separated), or any "
        "other text as a literal separator ('\\n' is a newline).",
        identity=True,
    )


_PARAGRAPH = re.compile(r"\n\s*\n")
# Markup that is not a step of its own: the reasoning tags of DeepSeek-R1's format on a line of their own.
_BARE_TAG = re.compile(r"^\s*</?think>\s*$")


def split(text: str, separator: str = "line") -> list[str]:
    """The steps of `text`: its non-empty lines (`line`), blank-line separated blocks (`paragraph`), or the
    pieces between occurrences of a literal separator. Steps are stripped; empty ones and bare `<think>` /
    `</think>` lines are dropped, so a solution with nothing in it has no steps."""
    if separator == "line":
        pieces = text.splitlines()
    elif separator == "paragraph":
        pieces = _PARAGRAPH.split(text)
    else:
        if not separator:
            raise ValueError("an empty step separator splits nothing")
        pieces = text.split(unescape(separator))
    return [s for p in pieces if (s := p.strip()) and not _BARE_TAG.match(s)]


def unescape(separator: str) -> str:
    """A separator typed in a shell arrives with its escapes as two characters: "\\n" means a newline."""
    return separator.replace("\\n", "\n").replace("\\t", "\t")


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("no values")
    return sum(values) / len(values)


def labels(step_p: Sequence[float], threshold: float = 0.5) -> list[bool]:
    """TRL's boolean step labels: a step is good when its probability is at least `threshold`."""
    return [p >= threshold for p in step_p]


def first_error(step_labels: Sequence[bool]) -> int | None:
    """The index of the first bad step (PRM800K's "first mistake"), or None when every step is good."""
    return next((i for i, good in enumerate(step_labels) if not good), None)


def band(text: str) -> tuple[float, float]:
    """The neutral band `LOW,HIGH` as two probabilities, 0 <= LOW <= HIGH <= 1 (ValueError saying what is wrong)."""
    try:
        low, high = (float(x) for x in str(text).split(","))  # not two numbers: a ValueError either way
    except ValueError:
        raise ValueError(f"{text!r}: expected LOW,HIGH (two probabilities, such as {NEUTRAL_BAND})") from None
    if not (0.0 <= low <= 1.0 and 0.0 <= high <= 1.0):
        raise ValueError(f"{text!r}: both ends must lie in [0, 1]")
    if low > high:
        raise ValueError(f"{text!r}: LOW is above HIGH")
    return low, high


def classify(p: float, neutral: tuple[float, float]) -> str:
    """A step's class from P(good step): negative below the band, positive above it, neutral within it (ends
    included)."""
    low, high = neutral
    return NEGATIVE if p < low else POSITIVE if p > high else NEUTRAL


@dataclass(frozen=True)
class Labelling:
    """A solution's step labels as PRM800K makes them. `classes` has one entry per step (None for a step left
    unlabelled after the first mistake); `labels` covers the labelled steps, the first `labelled` of them (the
    ones a PRM trains on): True for a positive step, False for a neutral or negative one."""

    classes: list[str | None]
    labels: list[bool]
    first_error: int | None  # the first negative step; None when no step is negative
    labelled: int


def labelling(classes: Sequence[str | None], after_error: bool = False) -> Labelling:
    """Labels from each step's class: up to and including the first negative step, or past it with
    `after_error`. A step with no class ends the labels before it: nothing after a step nobody labelled is known
    to follow from right steps (a person who marks the first mistake right has not read the steps after it)."""
    n, first = 0, None
    for c in classes:
        if c is None:
            break
        n += 1
        if c == NEGATIVE and first is None:
            first = n - 1
            if not after_error:
                break
    kept = list(classes[:n])
    return Labelling(kept + [None] * (len(classes) - n), [c == POSITIVE for c in kept], first, n)


def label(step_p: Sequence[float], neutral: tuple[float, float], after_error: bool = False) -> Labelling:
    """The labels of a solution whose steps the judge read: each step classified by the neutral band."""
    return labelling([classify(p, neutral) for p in step_p], after_error)


def aggregate(step_scores: Sequence[float], how: str = "product") -> float:
    """A solution's score from its steps' probabilities: their product (P(every step is correct), the paper's
    choice) or their minimum (the weakest step)."""
    if not step_scores:
        raise ValueError("a solution with no steps has no score")
    if how == "product":
        return math.prod(step_scores)
    if how == "min":
        return min(step_scores)
    raise ValueError(f"unknown aggregate {how!r} (use {' or '.join(AGGREGATES)})")


def prompt_text(messages) -> str:
    """The prompt as the plain string TRL's stepwise format takes: the user's text for a one-turn prompt, else the
    conversation as "Role: content" lines (the messages stay in their own column)."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
