"""Preference data for the pairwise trainer: read rows, group them by prompt, split by prompt, tokenize."""

from __future__ import annotations

from dataclasses import dataclass

from cai.core.inputs import prompt_id
from cai.core.sampling import stable_unit
from cai.core.sources import open_rows
from cai.errors import CaiError
from cai.signals.rewardmodels import Encoder


def read_rows(source: str, trainer: str, split: str | None = None) -> list[tuple[str, dict]]:
    """(where, row) pairs of training data for `trainer` (pm, prm, pik, meta): from a cai run folder, the split
    whose view says this trainer reads it (or `split`, written by a command that is not a stage: judge-data's
    judgements), with a person's review decisions applied (`cai review`: dropped rows left out, flipped pairs
    and relabelled steps as the person said, as `cai publish` applies them); else a folder of parquet shards, a
    parquet or JSONL file, or a `datasets` name."""
    from cai import stages
    from cai.core.store import RunStore

    if not RunStore.is_run(source):
        return open_rows(source)
    store = RunStore(source)
    writers = stages.reading(lambda view: view.trains == trainer)
    held = [w for w in writers if store.count(w.split)]
    if len(held) > 1:
        raise CaiError(
            f"{source}: the run holds {' and '.join(w.split + '/' for w in held)} rows; point train-pm at one "
            f"split's folder ({source}/{held[0].split})"
        )
    if held:
        return _reviewed(store, held[0].split, held[0].view, source)
    if split is not None and store.count(split):
        from cai.stages import view_of

        return _reviewed(store, split, view_of(split), source)
    names = [f"{w.split} (--stage {w.name})" for w in writers] + ([f"{split}"] if split else [])
    if not names:
        raise CaiError(f"{source}: no installed stage writes rows the {trainer} trainer reads")
    raise CaiError(f"{source}: the run has no rows the {trainer} trainer reads yet: {' or '.join(names)}")


def _reviewed(store, split: str, view, source: str) -> list[tuple[str, dict]]:
    """A run's split with the review decisions on it applied (the rows as they are where nobody reviewed)."""
    from cai.core import decisions

    table = store.table(split)
    if table is None or not table.num_rows:
        raise CaiError(f"{source}: the run has no {split} rows yet")
    reviews = store.reviews()
    if any(s == split for s, _ in reviews):
        table, _ = decisions.apply(table, split, view, reviews)
    return [(f"{source}: {split} row {i}", r) for i, r in enumerate(table.to_pylist())]


def load_rows(source: str) -> list[dict]:
    """Rows in TRL's preference format (prompt, chosen, rejected; p_chosen optional, default 1.0) from a
    cai run folder, a parquet/JSONL file, a folder of parquet files, or a `datasets` name."""
    return preference_rows(read_rows(source, "pm"), source)


def preference_rows(found: list[tuple[str, dict]], source: str) -> list[dict]:
    """Records in TRL's preference format, checked and normalised: {id, prompt, chosen, rejected, p, principles}."""
    rows = [r for _, r in found]
    out: list[dict] = []
    for i, r in enumerate(rows):
        if "responses" in r and "chosen" not in r:
            out += ranked_rows(r, i, source)
            continue
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
                "group": r.get("group"),
            }
        )
    if not out:
        raise CaiError(f"{source}: no preference rows")
    return out


def ranked_rows(r: dict, i: int, source: str) -> list[dict]:
    """A ranked group (`responses`: K answers, with `scores` (higher is better) or `ranks` (1 is best)) as every
    pair among them, the better one chosen with p 1 (equal: 0.5), all in one group. Without a scale for the scores
    no soft label is made up: cai's rank stage gives Bradley-Terry soft labels where it knows the scale."""
    responses = r["responses"]
    where = f"{source}: row {i}"
    if not isinstance(responses, list) or len(responses) < 2 or "prompt" not in r:
        raise CaiError(f"{where}: a ranked group needs a prompt and 'responses', a list of two or more answers")
    key = "scores" if "scores" in r else "ranks" if "ranks" in r else None
    if key is None:
        raise CaiError(f"{where}: 'responses' needs 'scores' or 'ranks' (one per response) to say which is better")
    values = r[key]
    if not isinstance(values, list) or len(values) != len(responses):
        raise CaiError(f"{where}: '{key}' must be a list of {len(responses)} numbers, one per response")
    goodness = [float(v) if key == "scores" else -float(v) for v in values]
    texts = [_text(x) for x in responses]
    prompt = _messages(r["prompt"], "user")
    group = str(r.get("group") or r.get("id") or f"{prompt_id(prompt)}/{i}")
    out = []
    for a in range(len(texts)):
        for b in range(a + 1, len(texts)):
            if texts[a] == texts[b]:
                continue
            win, lose = (a, b) if goodness[a] >= goodness[b] else (b, a)
            p = 0.5 if goodness[a] == goodness[b] else 1.0
            out.append(
                {
                    "id": f"{group}/{win}-{lose}",
                    "prompt": prompt,
                    "chosen": texts[win],
                    "rejected": texts[lose],
                    "p": p,
                    "principles": [],
                    "group": group,
                }
            )
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
        key = r.get("group") or prompt_id(r["prompt"])  # a ranked group's id, else the prompt
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
