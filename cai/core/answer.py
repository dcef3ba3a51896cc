"""One definition of "the answer": the text after the reasoning, and the final answer within it.

A policy optimised against a rule reward will put the right answer wherever a rule looks for it. DeepSeek-R1
grades the answer given after the reasoning, so every rule that reads an answer reads this one:

- **The answer** is the text after the last `</think>`. A text with `<think>` and no `</think>` never finished
  its reasoning and has no answer (""). A text without reasoning tags is all answer.
- **The reasoning** is the text before the last `</think>`, with its `<think>` tags taken out ("" without one).
- **The final answer** (`final`) is read from the part a rule reads (its scope: for accuracy, the answer, never
  the reasoning):
  - `\\boxed{...}` with balanced braces, nested ones included (`\\boxed{\\frac{1}{3}}` is `\\frac{1}{3}`);
    `\\boxed 3` (no braces) is the next token, as in LaTeX; `\\boxed{` never closed is no box.
  - A box inside a fenced code block or a quoted line (`> ...`) is quoted, not answered: it does not count.
  - Several boxes: their contents must agree (the same text, spacing aside); two different boxed answers are
    a hedge and there is no final answer. (math-verify's extraction, which Open-R1's accuracy reward uses, takes
    the first match it finds and would grade `\\boxed{3} \\boxed{4}` by one of them.)
  - No box: the last `Answer: ...` line of the answer. "Answer: 3 or 4" is taken as written: math-verify reads
    it as the set {3, 4}, which equals neither 3 nor 4.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCOPES = ("answer", "reasoning", "all")
OPEN, CLOSE = "<think>", "</think>"
_FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)  # fenced code, to the end of the text if never closed
_QUOTE = re.compile(r"^[ \t]*>.*$", re.M)
_ANSWER_LINE = re.compile(r"^\s*(?:final\s+)?answer\s*[:：]\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_BARE_BOX = re.compile(r"\\boxed\s+([^\s{}$\\]+)")


@dataclass(frozen=True)
class Parts:
    reasoning: str
    answer: str


def parts(text: str) -> Parts:
    """The reasoning and the answer of `text` (see the module's docstring)."""
    end = text.rfind(CLOSE)
    if end >= 0:
        return Parts(text[:end].replace(OPEN, "").strip(), text[end + len(CLOSE) :].strip())
    if OPEN in text:  # the reasoning never closed: there is no answer
        return Parts(text.replace(OPEN, "").strip(), "")
    return Parts("", text.strip())


def scoped(text: str, scope: str) -> str:
    """The part of `text` a rule or a judge with `scope` reads: the answer, the reasoning, or all of it."""
    if scope == "all":
        return text
    p = parts(text)
    return p.answer if scope == "answer" else p.reasoning


def boxes(text: str) -> list[str]:
    """The contents of every box in `text` outside code blocks and quoted lines, in order."""
    visible = _QUOTE.sub("", _FENCE.sub("", text))
    out: list[tuple[int, str]] = []
    start = visible.find("\\boxed{")
    while start >= 0:
        depth, i = 0, start + len("\\boxed")
        for j in range(i, len(visible)):
            depth += {"{": 1, "}": -1}.get(visible[j], 0)
            if depth == 0:
                out.append((start, visible[i + 1 : j].strip()))
                break
        start = visible.find("\\boxed{", start + 1)
    out += [(m.start(), m.group(1)) for m in _BARE_BOX.finditer(visible)]
    return [content for _, content in sorted(out)]


def final(text: str) -> str | None:
    """The final answer in `text` (already scoped, e.g. the answer part): its box (all its boxes agreeing), else its
    last "Answer:" line; None when it has none, or boxes that disagree."""
    found = [b for b in boxes(text) if b]
    if found:
        distinct = {" ".join(b.split()) for b in found}
        return found[-1] if len(distinct) == 1 else None
    lines = _ANSWER_LINE.findall(_QUOTE.sub("", _FENCE.sub("", text)))
    return lines[-1] if lines else None


def has_box(text: str) -> bool:
    """Whether `text` gives one boxed answer (or several that agree) with balanced braces: the `boxed` format."""
    found = [b for b in boxes(text) if b]
    return bool(found) and len({" ".join(b.split()) for b in found}) == 1
