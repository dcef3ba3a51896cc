"""Preference data for the trainer: load rows, group them by prompt, tokenize, collate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cai.errors import CaiError
from cai.inputs import prompt_id
from cai.sampling import stable_unit


def read_rows(source: str, stage: str, what: str) -> list[tuple[str, dict]]:
    """(where, row) pairs of training data: the split of `stage` in a cai run folder, a folder of parquet shards,
    a parquet or JSONL file, or a `datasets` name; `what` names the rows in errors ("preference", "step")."""
    from cai import stages
    from cai.inputs import read_jsonl, read_parquet
    from cai.store import RunStore

    path = Path(source)
    if RunStore.is_run(path):
        split = stages.get(stage).split
        rows = RunStore(path).read(split)
        if not rows:
            raise CaiError(f"{source}: the run has no {what} rows yet (run --stage {stage})")
        return [(f"{source}: {split} row {i}", r) for i, r in enumerate(rows)]
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise CaiError(f"{source}: no parquet files (expected a cai run or a folder of {what} shards)")
        return [pair for f in files for pair in read_parquet(f)]
    if path.is_file():
        return read_parquet(path) if path.suffix == ".parquet" else read_jsonl(path)
    if path.suffix in (".jsonl", ".json", ".parquet"):
        raise CaiError(f"{source}: file not found")
    import datasets

    try:
        return [(f"{source}: row {i}", r) for i, r in enumerate(datasets.load_dataset(source, split="train"))]
    except Exception as e:
        raise CaiError(f"{source}: not a run, file or loadable dataset ({type(e).__name__})") from None


def load_rows(source: str) -> list[dict]:
    """Rows in TRL's preference format (prompt, chosen, rejected; p_chosen optional, default 1.0) from a
    cai run folder, a parquet/JSONL file, a folder of parquet files, or a `datasets` name."""
    rows = [r for _, r in read_rows(source, "rl", "preference")]
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


class Encoder:
    """Turns (prompt, response) into token ids; counts truncations. Keeps the end of long texts
    (the answer's conclusion), dropping from the left."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncated = 0
        tokenizer.truncation_side = "left"

    def text(self, prompt, response) -> str:
        messages = list(prompt) + [{"role": "assistant", "content": response}]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages)

    def __call__(self, prompt, response) -> list[int]:
        text = self.text(prompt, response)
        ids = self.tokenizer(text)["input_ids"]
        if len(ids) <= self.max_length:
            return ids
        self.truncated += 1  # rare: only these pay a second, truncating pass
        return self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"]


def features(groups: list[Group], encode: Encoder) -> list[dict]:
    return [
        {
            "input_ids": [encode(g.prompt, r) for r in g.responses],
            "comparisons": [(a, b, p) for a, b, p, _ in g.comparisons],
        }
        for g in groups
    ]


class Collator:
    """Flattens a batch of groups into one padded tensor of responses plus index tensors."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        seqs: list[list[int]] = []
        first: list[int] = []
        second: list[int] = []
        p: list[float] = []
        grp: list[int] = []
        for gi, item in enumerate(batch):
            base = len(seqs)
            seqs += item["input_ids"]
            for a, b, prob in item["comparisons"]:
                first.append(base + a)
                second.append(base + b)
                p.append(prob)
                grp.append(gi)
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "first": torch.tensor(first),
            "second": torch.tensor(second),
            "p": torch.tensor(p, dtype=torch.float32),
            "group": torch.tensor(grp),
            "n_groups": len(batch),
        }
