"""Step-level labels (Lightman et al. 2023, "Let's Verify Step by Step"): splitting a solution into steps and
the arithmetic that turns per-step reads into labels and a solution score. Pure functions, no engine.

A step's probability of being correct and acceptable is read like P(True) (Kadavath et al.): the option
log-probs of one token, with "Yes" shown as (A) and then as (B), averaged so that a judge that always says
(A) gives 0.5 (cai.judges.step); the mean over the sampled principles is the step's `step_p`. The solution's score is the
product of its steps' probabilities (Lightman et al. §2.6: the probability that every step is correct), with
the minimum as the stricter alternative.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

SEPARATORS = ("line", "paragraph")  # named ways of splitting; any other value is a literal separator string
AGGREGATES = ("product", "min")
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
