"""One reader for every source of records: a cai run folder, a folder of parquet shards, a JSONL, parquet or text
file, or a `datasets` folder or name.

Every record comes with `where` (file and line, or row) so that the first bad record is named in one line.
Prompts (cai.core.inputs), training data (cai.train), labelled evaluation data (cai.commands.evaluation), candidate files and
`cai score` all read through `open_rows`.
"""

from __future__ import annotations

import json
from pathlib import Path

from cai.core.store import RunStore
from cai.errors import CaiError

FILES = (".jsonl", ".json", ".parquet", ".txt", ".csv")  # a source named so is a file, never a dataset name


def open_rows(source: str, split: str | None = None, what: str = "") -> list[tuple[str, dict]]:
    """(where, record) pairs from `source`. A run folder gives the rows of `split` (the caller says which split
    it reads); `what` names the kind of file in errors ("prompt" file not found)."""
    path = Path(source)
    if RunStore.is_run(path):
        if split is None:
            raise CaiError(f"{source}: a cai run folder, which holds no {what or 'such'} records")
        rows = RunStore(path).read(split)
        if not rows:
            raise CaiError(f"{source}: the run has no {split} rows yet")
        return [(f"{source}: {split} row {i}", r) for i, r in enumerate(rows)]
    if path.is_dir() and not _is_dataset(path):
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise CaiError(f"{source}: no parquet files (expected a cai run, a folder of shards or a dataset)")
        return [pair for f in files for pair in read_parquet(f)]
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            return read_jsonl(path)
        if suffix == ".parquet":
            return read_parquet(path)
        return read_text(path)
    if path.suffix.lower() in FILES:
        raise CaiError(f"{source}: {what + ' ' if what else ''}file not found")
    return read_dataset(source)


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    if b"\0" in raw[:8192]:
        raise CaiError(f"{path}: binary file, expected UTF-8 text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise CaiError(f"{path}:{line}: not UTF-8 text (byte {e.start})") from None


def read_jsonl(path: Path) -> list[tuple[str, dict]]:
    out = []
    for n, line in enumerate(_decode(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise CaiError(f"{path}:{n}: bad JSON: {e.msg} (column {e.colno})") from None
        out.append((f"{path}:{n}", record))
    return out


def read_text(path: Path) -> list[tuple[str, dict]]:
    """One prompt per non-empty line."""
    lines = _decode(path).splitlines()
    return [(f"{path}:{n}", {"prompt": line}) for n, line in enumerate(lines, 1) if line.strip()]


def read_parquet(path: Path) -> list[tuple[str, dict]]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise CaiError(f"{path}: not a readable parquet file: {e}") from None
    return [(f"{path}: row {i}", r) for i, r in enumerate(rows)]


def _is_dataset(folder: Path) -> bool:
    return any((folder / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json"))


def read_dataset(source: str) -> list[tuple[str, dict]]:
    """A `datasets` folder (save_to_disk) or a dataset name; its train split, else its first."""
    import datasets

    try:
        folder = Path(source)
        ds = datasets.load_from_disk(source) if _is_dataset(folder) else datasets.load_dataset(source, split="train")
    except FileNotFoundError:
        raise CaiError(f"{source}: no such file, folder or dataset") from None
    except Exception as e:
        raise CaiError(f"{source}: cannot load as a dataset: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    return [(f"{source}: row {i}", r) for i, r in enumerate(ds)]
