"""A constitution told in words: the summary of `cai constitution check`, the table of `show`, the differences of
`diff`, and the commented starter file of `new`."""

from __future__ import annotations

from cai.core.constitution import Constitution

STARTER = """# A cai constitution. Check it with: cai constitution check {file}
name: {name}
description: What these principles are for.
# license: cc-by-4.0
# system: An optional system prompt placed first in every chat.

principles:
  - id: example-principle          # unique: letters and digits (any script), _ - .
    critique: >                    # the critique request
      Point out anything in the answer that ...
    revision: >                    # the revision request
      Rewrite the answer so that ...
    compare: Which answer is ...?  # optional: the question for the RL stage
    step: Is this step ...?        # optional: the question about one step of a solution (steps stage)
    tags: [example]                # optional
    weight: 1.0                    # optional: relative chance of being sampled
#   rules:                         # optional: checked by code (beside or instead of critique/revision)
#     - max_words: 300             # also max_chars, max_paragraph_words, no_code_block: true, must_match /
#                                  #   must_not_match (regex, flags: [ignorecase]),
#       weight: 1.0                #   format (think-answer, boxed-answer or a regex), language: en + threshold,
#       hard: false                #   accuracy: math|exact (against the prompt record's `reference`)

# examples:                        # optional answered questions shown before every prompt the model answers
#   - prompt: What is 3 + 4?
#     answer: "3 + 4 = 7.\nAnswer: 7"

# few_shot:                        # optional demonstrations of one critique and revision
#   - prompt: ...
#     answer: ...
#     principle: example-principle
#     critique: ...
#     revision: ...
"""


def summary(c: Constitution) -> list[str]:
    """One screen: what the file holds, principle by principle."""
    lines = [f"{c.path}: ok", f"name        {c.name}"]
    if c.description:
        lines.append(f"description {c.description[:100]}")
    lines += [
        f"principles  {len(c.principles)} ({len(c.critiquable)} with critique and revision for the SL stage, "
        f"{len(c.comparable)} with a compare question for the RL stage, {len(c.steppable)} that can judge steps)",
        f"rules       {len(c.rules)} ({sum(r.hard for r in c.rules)} hard)",
        f"few-shot    {len(c.few_shot)} demonstration(s)",
        f"examples    {len(c.examples)} answered question(s)",
        f"system      {'yes' if c.system else 'no'}",
        f"sha256      {c.sha256[:16]}",
    ]
    for p in c.principles:
        kinds = ", ".join(r.kind for r in p.rules)
        lines.append(
            f"  - {p.id:<24} w={p.weight:g} {'compare ' if p.compare else '        '}{', '.join(p.tags)}"
            + (f"  rules: {kinds}" if kinds else "")
        )
    return lines


def table(c: Constitution) -> list[str]:
    """Every principle with its texts and rules."""
    lines = [f"{c.name}: {len(c.principles)} principles"]
    for p in c.principles:
        lines.append(f"\n[{p.id}] weight {p.weight:g}" + (f"  tags: {', '.join(p.tags)}" if p.tags else ""))
        if p.critique:
            lines += [f"  critique: {p.critique}", f"  revision: {p.revision}"]
        if p.compare:
            lines.append(f"  compare:  {p.compare}")
        if p.step:
            lines.append(f"  step:     {p.step}")
        lines += [f"  rule:     {r.id}  {r.describe()}" for r in p.rules]
    return lines


def differences(a: Constitution, b: Constitution) -> list[str]:
    """Principles added (+), removed (-) and changed (~, with the fields) from `a` to `b`."""
    old, new = {p.id: p for p in a.principles}, {p.id: p for p in b.principles}
    changes = [f"+ {i}" for i in new if i not in old] + [f"- {i}" for i in old if i not in new]
    for i in (i for i in old if i in new and old[i] != new[i]):
        fields = [
            f
            for f in ("critique", "revision", "compare", "step", "tags", "weight", "rules")
            if getattr(old[i], f) != getattr(new[i], f)
        ]
        changes.append(f"~ {i} ({', '.join(fields)})")
    # what every request carries, beside the principles: a changed example changes every answer
    for f in ("system", "few_shot", "examples", "scope"):
        before, after = getattr(a, f), getattr(b, f)
        if before != after:
            counts = f" ({len(before)} -> {len(after)})" if isinstance(before, tuple) else ""
            changes.append(f"~ {f}{counts}")
    return changes
