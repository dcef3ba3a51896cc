"""The run folder: append-only parquet shards per split, skipped.jsonl, manifest.json, and resume."""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cai.errors import CaiError

MANIFEST = "manifest.json"
SKIPPED = "skipped.jsonl"
_SHARD = re.compile(r"^part-(\d{5})\.parquet$")
_OURS = {MANIFEST, SKIPPED, "sft", "prefs", ".lock"}


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
    are the truth about what is done, so a rerun skips exactly those and loses nothing."""

    def __init__(self, out: str | Path):
        self.root = Path(out)
        self._lock = None

    # -- opening ------------------------------------------------------------------------------------
    def check(self, identity: dict, *, force: bool = False) -> dict | None:
        """Read-only: may a run of `identity` use this folder? Returns the previous manifest, if any.
        Refuses a non-empty folder that is not a cai run (unless force) and a run of another identity."""
        previous = self.manifest()
        if previous is None and self.root.exists():
            if not self.root.is_dir():
                raise CaiError(f"--out {self.root}: exists and is not a folder")
            foreign = sorted(p.name for p in self.root.iterdir() if p.name not in _OURS and not p.name.startswith("."))
            if foreign and not force:
                raise CaiError(f"--out {self.root}: folder is not empty and is not a cai run "
                               f"(has {', '.join(foreign[:3])}); choose another folder or pass --force")
        if previous is not None:
            old = previous.get("identity", {})
            diff = [k for k in sorted(set(old) | set(identity)) if old.get(k) != identity.get(k)]
            if diff:
                k = diff[0]
                raise CaiError(f"--out {self.root}: holds a run with a different {k} ({old.get(k)!r}, now "
                               f"{identity.get(k)!r}); mixing them would corrupt the data. Use a new --out folder")
        return previous

    def open(self, identity: dict, config: dict, *, force: bool = False) -> dict | None:
        """Claim the folder for a run of `identity` (checked again), lock it, write the manifest."""
        previous = self.check(identity, force=force)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.root / ".lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CaiError(f"--out {self.root}: another cai generate is writing to this folder") from None
        for stale in self.root.glob("**/.*.tmp"):  # leftovers of a write that was killed before its rename
            stale.unlink(missing_ok=True)
        manifest = dict(previous or {}, identity=identity, config=config)
        manifest.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        manifest.setdefault("totals", {"prompt_tokens": 0, "output_tokens": 0, "seconds": 0.0})
        self.write_manifest(manifest)
        return previous

    def close(self):
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- manifest -----------------------------------------------------------------------------------
    def manifest(self) -> dict | None:
        path = self.root / MANIFEST
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CaiError(f"{path}: unreadable run manifest ({e}); it was not written by cai") from None

    def write_manifest(self, manifest: dict) -> None:
        atomic_write(self.root / MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())

    # -- shards -------------------------------------------------------------------------------------
    def shards(self, split: str) -> list[Path]:
        folder = self.root / split
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if _SHARD.match(p.name))

    def done_ids(self, split: str) -> set[str]:
        done: set[str] = set()
        for shard in self.shards(split):
            done.update(pq.read_table(shard, columns=["id"]).column("id").to_pylist())
        return done

    def count(self, split: str) -> int:
        return sum(pq.ParquetFile(s).metadata.num_rows for s in self.shards(split))

    def write_shard(self, split: str, rows: list[dict], schema: pa.Schema) -> Path | None:
        if not rows:
            return None
        existing = [int(_SHARD.match(p.name).group(1)) for p in self.shards(split)]
        path = self.root / split / f"part-{max(existing, default=-1) + 1:05d}.parquet"
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink)
        atomic_write(path, sink.getvalue().to_pybytes())
        return path

    def read(self, split: str) -> list[dict]:
        return [row for s in self.shards(split) for row in pq.read_table(s).to_pylist()]

    # -- skipped ------------------------------------------------------------------------------------
    def skipped(self) -> list[dict]:
        path = self.root / SKIPPED
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def record_skips(self, stage: str, skips: list[dict], retried: set[str]) -> None:
        """Rewrite skipped.jsonl: drop this stage's old entries for ids just retried (they are now either
        done or skipped again), then add the new ones. A failure is always on record with its reason."""
        kept = [s for s in self.skipped() if not (s["stage"] == stage and s["id"] in retried)]
        kept += [{"id": s["id"], "stage": stage, "reason": s["reason"]} for s in skips]
        atomic_write(self.root / SKIPPED, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in kept).encode())
