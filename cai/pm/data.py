"""Preference data for the pairwise trainer: read rows, group them by prompt, split by prompt, tokenize."""

from __future__ import annotations

from dataclasses import dataclass

from cai.errors import CaiError
from cai.inputs import prompt_id
from cai.rewardmodels import Encoder
from cai.sampling import stable_unit
from cai.sources import open_rows


def read_rows(source: str, trainer: str) -> list[tuple[str, dict]]:
    """(where, row) pairs of training data for `trainer` (pm, prm): from a cai run folder, the split whose view
    says this trainer reads it; else a folder of parquet shards, a parquet or JSONL file, or a `datasets` name."""
    from cai import stages
    from cai.store import RunStore

    split = None
    if RunStore.is_run(source):
        writers = stages.reading(lambda view: view.trains == trainer)
        if not writers:
            raise CaiError(f"{source}: no installed stage writes rows the {trainer} trainer reads")
        writer = writers[0]
        split = writer.split
        if not RunStore(source).count(split):
            raise CaiError(f"{source}: the run has no {split} rows yet (run --stage {writer.name})")
    return open_rows(source, split)


def load_rows(source: str) -> list[dict]:
    """Rows in TRL's preference format (prompt, chosen, rejected; p_chosen optional, default 1.0) from a
    cai run folder, a parquet/JSONL file, a folder of parquet files, or a `datasets` name."""
    return preference_rows(read_rows(source, "pm"), source)


def preference_rows(found: list[tuple[str, dict]], source: str) -> list[dict]:
    """Records in TRL's preference format, checked and normalised: {id, prompt, chosen, rejected, p, principles}."""
    rows = [r for _, r in found]
    out = []
    for i, r in enumerate(rows):
        if not all(k in r for k in ("prompt", "chosen", "rejected")):
            raise CaiError(f"{source}: row {i} lacks prompt/chosen/rejected")
        p = r.get("p_chosen")
        p = 1.0 if p is None else float(p)
        if not 0.0 <= p <= 1.0:
            raise CaiError(f"{source}: row {i}: p_chosen {p} is not a probability")
        out.append(
            {
                "id": r.get("id", i),
                "prompt": _messages(r["prompt"], "user"),
                "chosen": _text(r["chosen"]),
                "rejected": _text(r["rejected"]),
                "p": p,
                "principles": [v["principle"] for v in r.get("votes") or []],
            }
        )
    if not out:
        raise CaiError(f"{source}: no preference rows")
    return out


def _messages(value, role):
    return [{"role": role, "content": value}] if isinstance(value, str) else [dict(m) for m in value]


def _text(value) -> str:
    return value if isinstance(value, str) else value[-1]["content"]


@dataclass
class Group:
    """One prompt, its distinct responses, and every comparison between them (one batch element)."""

    key: str
    prompt: list
    responses: list[str]
    comparisons: list[tuple[int, int, float, list[str]]]  # (winner index, loser index, p, principles)


def group(rows: list[dict], by_prompt: bool) -> list[Group]:
    if not by_prompt:
        return [
            Group(
                prompt_id(r["prompt"]) + f"/{i}",
                r["prompt"],
                [r["chosen"], r["rejected"]],
                [(0, 1, r["p"], r["principles"])],
            )
            for i, r in enumerate(rows)
        ]
    groups: dict[str, Group] = {}
    for r in rows:
        key = prompt_id(r["prompt"])
        g = groups.setdefault(key, Group(key, r["prompt"], [], []))
        idx = []
        for text in (r["chosen"], r["rejected"]):
            if text not in g.responses:
                g.responses.append(text)
            idx.append(g.responses.index(text))
        g.comparisons.append((idx[0], idx[1], r["p"], r["principles"]))
    return list(groups.values())


def split(groups: list[Group], eval_fraction: float, seed: int) -> tuple[list[Group], list[Group]]:
    """Split by prompt (seeded hash), so no prompt sits on both sides."""
    if eval_fraction <= 0:
        return groups, []

    def bucket(g):
        return stable_unit("split", seed, g.key.split("/")[0])

    train = [g for g in groups if bucket(g) >= eval_fraction]
    held = [g for g in groups if bucket(g) < eval_fraction]
    if not held or not train:  # tiny sets: still hold something out, deterministically
        ordered = sorted(groups, key=bucket)
        n = max(1, round(len(groups) * eval_fraction))
        held, train = ordered[:n], ordered[n:]
    return train, held


def features(groups: list[Group], encode: Encoder) -> list[dict]:
    """Each group's responses as token ids and its comparisons (a batch element of the Collator)."""
    return [
        {
            "input_ids": [encode(g.prompt, r) for r in g.responses],
            "comparisons": [(a, b, p) for a, b, p, _ in g.comparisons],
        }
        for g in groups
    ]
