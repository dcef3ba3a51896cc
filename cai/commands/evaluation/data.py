"""Labelled data for `cai eval`: preference pairs people labelled, and answers labelled acceptable or not.

Every reader checks every record before anything runs, and names the file and line of the first bad one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cai.core import inputs
from cai.core.sources import open_rows
from cai.errors import CaiError


@dataclass(frozen=True)
class LabelledPair:
    """A prompt and two answers, `chosen` the one people preferred. `prompt.id` is the pair's id (a prompt may
    come with several pairs), `p_label` the data's soft label where it has one."""

    prompt: inputs.Prompt
    chosen: str
    rejected: str
    subset: str | None = None
    p_label: float | None = None
    group: str | None = None  # a RewardBench 2 record's id: its chosen answer(s) against every rejected one
    correct: int = 1  # the record's correct answers (RewardBench 2's num_correct; several in its Ties subset)

    @property
    def id(self) -> str:
        return self.prompt.id

    def identity(self) -> list:
        extra = [self.group, self.correct] if self.group is not None else []
        return [self.id, self.prompt.messages, self.chosen, self.rejected, self.subset, *extra]


@dataclass(frozen=True)
class Labelled:
    """An answer people labelled acceptable or not. `id` names the record (a prompt may come with several
    answers); `prompt.id` is the prompt's own id."""

    id: str
    prompt: inputs.Prompt
    answer: str
    acceptable: bool

    def identity(self) -> list:
        return [self.id, self.prompt.messages, self.answer, self.acceptable]


def _records(source: str) -> list[tuple[str, dict]]:
    path = Path(source)
    if not path.exists() and path.suffix:
        raise CaiError(f"--data {source}: file not found")
    if path.is_file() and path.suffix.lower() not in (".jsonl", ".json", ".parquet"):
        raise CaiError(f"--data {source}: expected a .jsonl or .parquet file or a `datasets` folder")
    records = open_rows(source, what="data")
    if not records:
        raise CaiError(f"--data {source}: no records (empty file?)")
    return records


def _answer(record: dict, keys: tuple[str, ...], where: str, what: str) -> str:
    """Text, or the last message's content of an assistant message list, under the first of `keys` present."""
    value = next((record[k] for k in keys if k in record), None)
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        value = value[-1].get("content")
    if not isinstance(value, str) or not value.strip():
        raise CaiError(f"{where}: expected {what}: non-empty text (or assistant messages)")
    return value.strip()


def read_pairs(source: str) -> list[LabelledPair]:
    """Preference records: a prompt (text or messages), `chosen` (the better answer), `rejected`, an optional
    `subset` (text), `id` and `p_chosen` (a soft label). RewardBench's and TRL's layouts read as they are, and
    RewardBench 2's: `rejected` a list (best-of-4: one chosen against three), `chosen` a list in its Ties subset."""
    out, seen = [], set()
    for where, record in _records(source):
        if not isinstance(record, dict):
            raise CaiError(f"{where}: expected an object, got {type(record).__name__}")
        messages = inputs.to_messages(record, where, None)
        if "chosen" not in record or "rejected" not in record:
            raise CaiError(
                f"{where}: no label: expected 'chosen' (the answer people preferred) and 'rejected' "
                f"(have: {', '.join(record) or 'none'})"
            )
        if isinstance(record["rejected"], list) and record["rejected"] and isinstance(record["rejected"][0], str):
            group = best_of(record, messages, where)
            for pair in group:
                if pair.id in seen:
                    raise CaiError(f"{where}: id {pair.group!r} appears twice")
                seen.add(pair.id)
            out += group
            continue
        chosen = _answer(record, ("chosen",), where, "'chosen'")
        rejected = _answer(record, ("rejected",), where, "'rejected'")
        if chosen == rejected:
            raise CaiError(f"{where}: 'chosen' and 'rejected' are the same text: the pair carries no label")
        subset = record.get("subset")
        if subset is not None and (not isinstance(subset, str) or not subset.strip()):
            raise CaiError(f"{where}: 'subset' must be text, got {subset!r}")
        p = record.get("p_chosen")
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1):
            raise CaiError(f"{where}: 'p_chosen' must be a probability in [0, 1], got {p!r}")
        given = record.get("id")
        pid = str(given) if given is not None else _pair_id(messages, chosen, rejected)
        if pid in seen:
            raise CaiError(f"{where}: id {pid!r} appears twice")
        seen.add(pid)
        out.append(
            LabelledPair(
                inputs.Prompt(pid, messages, inputs.reference(record, where)),
                chosen,
                rejected,
                subset.strip() if subset else None,
                None if p is None else float(p),
            )
        )
    return out


def best_of(record: dict, messages: tuple[dict, ...], where: str) -> list[LabelledPair]:
    """A RewardBench 2 record (one `chosen` answer, or a list of correct ones in its Ties subset, against a list of
    `rejected`): every chosen-vs-rejected pair, grouped under the record's id. The record is right when its
    chosen answer beats every rejected one (cai.commands.evaluation.metrics.best_of_n)."""
    chosen = record["chosen"] if isinstance(record["chosen"], list) else [record["chosen"]]
    rejected = record["rejected"]
    texts = [*chosen, *rejected]
    if not chosen or not all(isinstance(t, str) and t.strip() for t in texts):
        raise CaiError(f"{where}: 'chosen' and every 'rejected' answer must be non-empty text")
    chosen, rejected = [t.strip() for t in chosen], [t.strip() for t in rejected]
    if set(chosen) & set(rejected):
        raise CaiError(f"{where}: an answer is both chosen and rejected: the record carries no label")
    subset = record.get("subset")
    if subset is not None and (not isinstance(subset, str) or not subset.strip()):
        raise CaiError(f"{where}: 'subset' must be text, got {subset!r}")
    given = record.get("id")
    gid = str(given) if given is not None else _pair_id(messages, chosen[0], "\n".join(rejected))
    if subset == "Ties" and gid.partition(":")[0] not in ("ref", "tied"):
        raise CaiError(
            f"{where}: a Ties record's id is ref:<n> (one correct answer) or tied:<n> (several), got {gid!r}"
        )
    reference = inputs.reference(record, where)
    return [
        LabelledPair(
            inputs.Prompt(f"{gid}/{c}-{r}", messages, reference),
            good,
            bad,
            subset.strip() if subset else None,
            None,
            gid,
            len(chosen),
        )
        for c, good in enumerate(chosen)
        for r, bad in enumerate(rejected)
    ]


def _pair_id(messages, chosen: str, rejected: str) -> str:
    text = json.dumps([inputs.prompt_id(messages), chosen, rejected], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(records: list[LabelledPair] | list[Labelled] | list[LabelledSolution]) -> str:
    """A hash of the labelled data as read: a run folder of one data set is not resumed with another."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r.identity(), ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def read_labelled(source: str) -> list[Labelled]:
    """Records with a prompt (or messages), an `answer` (or `completion`/`response`: text or assistant
    messages) and `acceptable` (true/false, or 1/0)."""
    out: list[Labelled] = []
    for where, record in _records(source):
        messages = inputs.to_messages(record, where, None)
        answer = _answer(record, ("answer", "completion", "response"), where, "'answer' (or 'completion'/'response')")
        label = record.get("acceptable")
        if label not in (True, False, 0, 1):
            raise CaiError(f"{where}: expected 'acceptable': true or false (or 1/0), got {label!r}")
        pid = inputs.prompt_id(messages)
        prompt = inputs.Prompt(pid, messages, inputs.reference(record, where))
        out.append(Labelled(f"{_pair_id(messages, answer, '')}-{len(out)}", prompt, answer, bool(label)))
    return out


@dataclass(frozen=True)
class LabelledSolution:
    """A solution split into steps, each labelled good or bad by people (`prompt.id` is the solution's id)."""

    prompt: inputs.Prompt
    steps: tuple[str, ...]
    labels: tuple[bool, ...]
    subset: str | None = None

    def identity(self) -> list:
        return [self.prompt.id, self.prompt.messages, self.steps, self.labels, self.subset]


def read_steps(source: str) -> list[LabelledSolution]:
    """Labelled solutions in TRL's stepwise format: a prompt (text or messages), `completions` (the steps) and
    `labels` (true/false per step); optional `id`, `subset` and `reference`."""
    out: list[LabelledSolution] = []
    seen: set[str] = set()
    for where, record in _records(source):
        messages = inputs.to_messages(record, where, None)
        steps, labels = record.get("completions"), record.get("labels")
        if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
            raise CaiError(f"{where}: 'completions' must be a non-empty list of non-empty step texts")
        if not isinstance(labels, list) or not all(isinstance(x, bool) for x in labels):
            raise CaiError(f"{where}: 'labels' must be a list of true/false, one per step")
        if len(labels) != len(steps):
            raise CaiError(f"{where}: {len(steps)} steps but {len(labels)} labels")
        subset = record.get("subset")
        if subset is not None and not isinstance(subset, str):
            raise CaiError(f"{where}: 'subset' must be text, got {subset!r}")
        sid = str(record.get("id") or f"{inputs.prompt_id(messages)}/{len(out)}")
        if sid in seen:
            raise CaiError(f"{where}: duplicate id {sid!r}")
        seen.add(sid)
        prompt = inputs.Prompt(sid, messages, inputs.reference(record, where))
        out.append(LabelledSolution(prompt, tuple(s.strip() for s in steps), tuple(labels), subset))
    return out
