"""Reads prompt sets (JSONL, text, parquet, or a `datasets` path/name) into chat-message prompts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from cai.core.sources import open_rows
from cai.errors import CaiError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Prompt:
    id: str
    messages: tuple[dict, ...]  # OpenAI-style {"role", "content"}, ending with the user turn
    reference: str | None = None  # the known answer, for rules that check accuracy (a `reference` field)


def prompt_id(messages) -> str:
    """A stable id: the hash of the canonical JSON of the messages, so the same prompt always maps to
    the same row, in any file, in any order, across resumes."""
    canonical = json.dumps([{"role": m["role"], "content": m["content"]} for m in messages], ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def load(source: str, prompt_column: str | None = None, limit: int | None = None) -> tuple[list[Prompt], int]:
    """Load prompts from `source`. Returns (prompts, duplicates dropped). Raises CaiError naming the
    file and line of the first bad record; nothing is partially returned."""
    records = open_rows(source, what="prompt")
    prompts, seen, duplicates = [], set(), 0
    for where, record in records:
        messages = to_messages(record, where, prompt_column)
        pid = prompt_id(messages)
        if pid in seen:
            duplicates += 1
            continue
        seen.add(pid)
        prompts.append(Prompt(pid, messages, reference(record, where)))
        if limit is not None and len(prompts) >= limit:
            break
    if not prompts:
        raise CaiError(f"{source}: no prompts found (empty file?)")
    return prompts, duplicates


def reference(record: dict, where: str) -> str | None:
    """The record's known answer: text, or a number written as text; for a code problem, its `tests` (a list of
    {"input", "output"} pairs or assert lines, kept as JSON for `accuracy: code`); None when it has none."""
    if "tests" in record:
        return tests(record["tests"], where)
    value = record.get("reference")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not str(value).strip():
        raise CaiError(f"{where}: 'reference' must be a non-empty text or number, got {value!r}")
    return str(value).strip()


def to_messages(record, where: str, column: str | None) -> tuple[dict, ...]:
    if not isinstance(record, dict):
        raise CaiError(f"{where}: expected an object with 'prompt' or 'messages', got {type(record).__name__}")
    if column is not None:
        if column not in record:
            raise CaiError(f"{where}: missing column {column!r} (--prompt-column)")
        value = record[column]
    elif "messages" in record:
        value = record["messages"]
    elif "prompt" in record:
        value = record["prompt"]
    else:
        raise CaiError(f"{where}: missing field 'prompt' or 'messages' (have: {', '.join(record) or 'none'})")
    if isinstance(value, str):
        if not value.strip():
            raise CaiError(f"{where}: empty prompt")
        return ({"role": "user", "content": value},)
    if not isinstance(value, list) or not value:
        raise CaiError(f"{where}: a prompt must be text or a non-empty list of messages")
    messages = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise CaiError(f"{where}: message {i} must be {{'role': system|user|assistant, 'content': text}}")
        messages.append({"role": m["role"], "content": m["content"]})
    if messages[-1]["role"] != "user":
        raise CaiError(f"{where}: the last message must be the user's turn, got {messages[-1]['role']!r}")
    if not messages[-1]["content"].strip():
        raise CaiError(f"{where}: empty prompt")
    return tuple(messages)


def tests(value, where: str) -> str:
    """A code problem's tests, checked and kept as canonical JSON."""
    ok = (
        isinstance(value, list)
        and value
        and all(
            (isinstance(t, str) and t.strip())
            or (
                isinstance(t, dict)
                and set(t) <= {"input", "output"}
                and "output" in t
                and all(isinstance(v, str) for v in t.values())
            )
            for t in value
        )
    )
    if not ok:
        raise CaiError(
            f"{where}: 'tests' must be a non-empty list of {{'input': text, 'output': text}} pairs or assert lines"
        )
    return json.dumps(value, ensure_ascii=False)
