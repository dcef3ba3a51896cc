"""The run folder: append-only parquet shards per split, skipped.jsonl, manifest.json, and resume.

This module is the only code that knows the folder's layout: shard names, the skip log's lines and the
manifest's keys. Everything else (stages, stats, publish, the trainer) reads a run through RunStore.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cai.errors import CaiError

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

MANIFEST = "manifest.json"
SKIPPED = "skipped.jsonl"
REVIEW = "review.jsonl"
LOCK = ".lock"
_SHARD = re.compile(r"^part-(\d{5})\.parquet$")
_REPORT = re.compile(r"^report-[a-z0-9-]+\.json$")


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, fsync, then rename: readers (and a resumed run)
    see the old file or the new one, never half of one, even after SIGKILL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RunStore:
    """One run folder. Every finished chunk becomes one shard, written atomically; the ids in the shards
    are the truth about what is done, so a rerun skips exactly those and loses nothing.

    Running counts (rows per split, skipped prompts per stage) live in the manifest and are kept up to date
    chunk by chunk; skipped.jsonl is a log that is only appended to while a run writes (a retried prompt
    gets a `resolved` line), and compacted once when the run closes.
    """

    def __init__(self, out: str | Path):
        self.root = Path(out)
        self._lock: Any = None
        self._manifest: dict | None = None
        self._skips: dict[tuple[str, str], str] = {}  # (stage, id) -> reason, while open

    @staticmethod
    def is_run(path: str | Path) -> bool:
        return (Path(path) / MANIFEST).is_file()

    # -- opening ------------------------------------------------------------------------------------
    def check(
        self, identity: dict, *, force: bool = False, defaults: dict | None = None, free: frozenset[str] = frozenset()
    ) -> dict | None:
        """Read-only: may a run of `identity` use this folder? Returns the previous manifest, if any.
        Refuses a non-empty folder that is not a cai run (unless force) and a run of another identity. A key
        that one side lacks counts as its value in `defaults` (a setting added since the folder was written).
        Keys in `free` may differ: settings of stages that have written no rows here yet (nothing to mix)."""
        previous = self.manifest()
        if previous is None and self.root.exists():
            if not self.root.is_dir():
                raise CaiError(f"--out {self.root}: exists and is not a folder")
            foreign = sorted(p.name for p in self.root.iterdir() if not self._ours(p) and not p.name.startswith("."))
            if foreign and not force:
                raise CaiError(
                    f"--out {self.root}: folder is not empty and is not a cai run "
                    f"(has {', '.join(foreign[:3])}); choose another folder or pass --force"
                )
        if previous is not None:
            old, missing, defaults = previous.get("identity", {}), object(), defaults or {}

            def value(side: dict, k: str) -> object:
                return side.get(k, defaults.get(k, missing))

            diff = [k for k in sorted((set(old) | set(identity)) - free) if value(old, k) != value(identity, k)]
            if diff:
                k = diff[0]
                raise CaiError(
                    f"--out {self.root}: holds a run with a different {k} ({old.get(k, defaults.get(k))!r}, now "
                    f"{identity.get(k, defaults.get(k))!r}); mixing them would corrupt the data. Use a new --out folder"
                )
        return previous

    @staticmethod
    def _ours(p: Path) -> bool:
        """Files a run writes, and split folders (nothing but shards)."""
        if p.name in (MANIFEST, SKIPPED, LOCK, REVIEW) or _REPORT.match(p.name):
            return True
        return p.is_dir() and all(_SHARD.match(c.name) or c.name.startswith(".") for c in p.iterdir())

    def open(
        self,
        identity: dict,
        config: dict,
        *,
        splits: dict[str, str],
        force: bool = False,
        defaults: dict | None = None,
        free: frozenset[str] = frozenset(),
    ) -> dict | None:
        """Claim the folder for a run of `identity` (checked again), lock it, write the manifest with counts
        taken from the data on disk. `splits` maps each stage name to the split it writes."""
        previous = self.check(identity, force=force, defaults=defaults, free=free)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.root / LOCK, "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CaiError(f"--out {self.root}: another cai generate is writing to this folder") from None
        for stale in self.root.glob("**/.*.tmp"):  # leftovers of a write that was killed before its rename
            stale.unlink(missing_ok=True)
        self._skips = self._replay()
        manifest = dict(previous or {}, identity=identity, config=config)
        manifest.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        manifest.setdefault("totals", {"prompt_tokens": 0, "output_tokens": 0, "seconds": 0.0})
        counts: dict[str, Any] = {split: self.count(split) for split in splits.values()}
        counts["skipped"] = {stage: sum(st == stage for st, _ in self._skips) for stage in splits}
        manifest["counts"] = counts
        self._manifest = manifest
        self.write_manifest(manifest)
        return previous

    def close(self) -> None:
        if self._lock is None:
            return
        self._compact()
        self._lock.close()
        self._lock = None

    # -- manifest -----------------------------------------------------------------------------------
    def manifest(self) -> dict | None:
        if self._manifest is not None:
            return self._manifest
        path = self.root / MANIFEST
        if not path.is_file():
            return None
        try:
            manifest: dict = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CaiError(f"{path}: unreadable run manifest ({e}); it was not written by cai") from None
        return manifest

    def write_manifest(self, manifest: dict) -> None:
        atomic_write(self.root / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())

    def require(self) -> dict:
        """The manifest of a finished or running run, or one line saying this is not a run."""
        manifest = self.manifest()
        if manifest is None:
            raise CaiError(f"{self.root}: not a cai run (no {MANIFEST})")
        return manifest

    def settings(self) -> dict:
        """The run's settings as they were given to the last invocation."""
        return dict(self.require().get("config", {}))

    def constitution_path(self) -> Path | None:
        path = self.require().get("constitution", {}).get("path")
        return Path(path) if path else None

    def record_source(self, model: str, seed: int, constitution: dict) -> None:
        """What made the rows: the model, the seed and the constitution (name, path, sha256)."""
        assert self._manifest is not None, "open() first"
        self._manifest.update(model=model, seed=seed, constitution=constitution)
        self.write_manifest(self._manifest)

    def save_report(self, kind: str, report: dict) -> Path:
        """A report computed from the run (`cai eval`'s figures), beside the data it describes."""
        path = self.root / f"report-{kind}.json"
        assert _REPORT.match(path.name), kind
        atomic_write(path, (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode())
        return path

    def load_report(self, kind: str) -> dict | None:
        """A report `save_report` wrote, or None."""
        path = self.root / f"report-{kind}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    # -- shards -------------------------------------------------------------------------------------
    def shards(self, split: str) -> list[Path]:
        folder = self.root / split
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if _SHARD.match(p.name))

    def done_ids(self, split: str, column: str = "id") -> set[str]:
        """The prompt ids in the split's shards (`column`: the stage's key)."""
        import pyarrow.parquet as pq

        done: set[str] = set()
        for shard in self.shards(split):
            # a folder written before the stage had a key column of its own keyed its rows by `id`
            names = pq.ParquetFile(shard).schema_arrow.names
            key = column if column in names else "id"
            done.update(pq.read_table(shard, columns=[key]).column(key).to_pylist())
        return done

    def count(self, split: str) -> int:
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(s).metadata.num_rows for s in self.shards(split))

    def splits(self) -> list[str]:
        """The splits that hold rows."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.shards(p.name))

    def read(self, split: str, columns: list[str] | None = None) -> list[dict]:
        import pyarrow.parquet as pq

        return [row for s in self.shards(split) for row in pq.read_table(s, columns=columns).to_pylist()]

    def table(self, split: str) -> pa.Table | None:
        """The whole split as one arrow table (None if it has no rows)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        shards = self.shards(split)
        return pa.concat_tables([pq.read_table(s) for s in shards]) if shards else None

    def scan(self, split: str) -> pl.LazyFrame | None:
        """A lazy polars scan of the split: a run of millions of rows is read column by column."""
        import polars as pl

        shards = self.shards(split)
        return pl.scan_parquet([str(s) for s in shards]) if shards else None

    def write_chunk(
        self,
        stage: str,
        split: str,
        rows: list[dict],
        schema: pa.Schema,
        skips: list,
        chunk_ids: set[str],
        tokens: tuple[int, int],
        seconds: float,
    ) -> None:
        """Record one finished chunk: rows, skips and counts, in an order a kill at any moment cannot break.

        1. `resolved` lines for the chunk's ids that were on record as skipped: they are now either done or
           skipped anew. (Killed here: those ids are neither done nor skipped, so the next run retries them.)
        2. the shard, atomically. 3. the chunk's new skips. (Killed between 2 and 3: the new skips are not on
           record, so the next run retries them.) 4. the manifest's running counts.
        """
        assert self._manifest is not None, "open() first"
        retried = [i for i in sorted(chunk_ids) if (stage, i) in self._skips]
        self._append([{"id": i, "stage": stage, "resolved": True} for i in retried])
        for i in retried:
            del self._skips[(stage, i)]
        self._write_shard(split, rows, schema)
        self._append([{"id": s.id, "stage": stage, "reason": s.reason} for s in skips])
        self._skips.update({(stage, s.id): s.reason for s in skips})
        m = self._manifest
        m["counts"][split] = m["counts"].get(split, 0) + len(rows)
        m["counts"]["skipped"][stage] = sum(st == stage for st, _ in self._skips)
        totals = m["totals"]
        totals["prompt_tokens"] += tokens[0]
        totals["output_tokens"] += tokens[1]
        totals["seconds"] = round(totals["seconds"] + seconds, 3)
        self.write_manifest(m)

    def _write_shard(self, split: str, rows: list[dict], schema: pa.Schema) -> Path | None:
        if not rows:
            return None
        existing = [int(m.group(1)) for p in self.shards(split) if (m := _SHARD.match(p.name))]
        path = self.root / split / f"part-{max(existing, default=-1) + 1:05d}.parquet"
        _write_parquet(path, rows, schema)
        return path

    def write_derived(self, split: str, rows: list[dict], schema: pa.Schema) -> Path:
        """A split made from another split's rows (judge-data's SFT split from its judgements): written whole as
        one shard, atomically, replacing what was there. It is rebuilt from its source on every run, so a kill
        while writing it loses nothing; it is written even when empty, so its schema is there to read."""

        path = self.root / split / "part-00000.parquet"
        _write_parquet(path, rows, schema)
        for stale in self.shards(split):
            if stale != path:
                stale.unlink()
        return path

    # -- review -------------------------------------------------------------------------------------
    def append_review(self, entry: dict) -> None:
        """One person's decision on one row, appended and fsynced: a killed review server loses nothing it
        acknowledged. The file is a log; `reviews` replays it."""
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
        fd = os.open(self.root / REVIEW, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write of one line with O_APPEND: lines of two writers never interleave
            os.fsync(fd)
        finally:
            os.close(fd)

    def reviews(self) -> dict[tuple[str, str], dict]:
        """The latest decision per (split, id); a last line cut short by a kill is ignored."""
        return {(e["split"], e["id"]): e for e in self._log(REVIEW)}

    # -- skipped ------------------------------------------------------------------------------------
    def skipped(self) -> list[dict]:
        """Every prompt on record as skipped: {"id", "stage", "reason"}, in the order they were recorded."""
        return [{"id": i, "stage": stage, "reason": reason} for (stage, i), reason in self._replay().items()]

    def _replay(self) -> dict[tuple[str, str], str]:
        """The skip log, replayed: the latest line per (stage, id) wins and `resolved` lines remove. A last
        line cut short by a kill mid-append is ignored (its chunk's ids are retried)."""
        live: dict[tuple[str, str], str] = {}
        for entry in self._log(SKIPPED):
            key = (entry["stage"], entry["id"])
            live.pop(key, None)
            if not entry.get("resolved"):
                live[key] = entry["reason"]
        return live

    def _log(self, name: str) -> list[dict]:
        """The entries of an append-only JSONL log in the folder; a line cut short by a kill is ignored."""
        path = self.root / name
        if not path.is_file():
            return []
        entries = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return entries

    def _append(self, entries: list[dict]) -> None:
        if not entries:
            return
        with open(self.root / SKIPPED, "ab") as f:
            f.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries).encode())
            f.flush()
            os.fsync(f.fileno())

    def _compact(self) -> None:
        """Rewrite the log as just the live skips (once per run, when it closes)."""
        path = self.root / SKIPPED
        if not path.is_file():
            return
        live = self._replay()
        lines = [
            json.dumps({"id": i, "stage": stage, "reason": reason}, ensure_ascii=False) + "\n"
            for (stage, i), reason in live.items()
        ]
        if len(lines) != len(path.read_text(encoding="utf-8").splitlines()):
            atomic_write(path, "".join(lines).encode())


def _write_parquet(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    """`rows` as one parquet file at `path`, written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink)
    atomic_write(path, sink.getvalue().to_pybytes())
