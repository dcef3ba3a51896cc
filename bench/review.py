"""Benchmark: how long the review page waits for a page of rows on a large run.

    python bench/review.py [--rows 100000]

Builds a run with the scripted engine (sl and rl stages), repeats its rows under new ids until the prefs and
sft splits hold --rows rows each (in 20 shards, as chunked generation writes them), then times the page's
queries: the first page, a page deep in the run, a free-text search, a principle filter, the
position-inconsistent filter, and one row in full. Prints milliseconds per query (median of 5).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq

    from cai.backends.scripted import ScriptedBackend
    from cai.commands.review import query
    from cai.config import RunConfig
    from cai.core.store import RunStore
    from cai.generate import generate

    tmp = Path(tempfile.mkdtemp(prefix="cai-bench-review-"))
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"question {i} about topic {i % 7}"}) + "\n" for i in range(50)))
    run = tmp / "run"
    generate(
        RunConfig(prompts=str(prompts), out=str(run), stage="all", rounds=2, principles_per_pair=2),
        backend=ScriptedBackend(),
        log=lambda *_: None,
    )
    store = RunStore(run)
    for split in ("sft", "prefs"):
        base = store.table(split)
        assert base is not None
        shards = store.shards(split)
        for s in shards:
            s.unlink()
        per = args.rows // 20
        for k in range(20):
            idx = [i % base.num_rows for i in range(k * per, (k + 1) * per)]
            part = base.take(pa.array(idx))
            ids = pa.array([f"{k:02d}-{i:07d}" for i in range(per)])
            part = part.set_column(part.schema.get_field_index("id"), "id", ids)
            pq.write_table(part, run / split / f"part-{k:05d}.parquet")
    principle = store.read("prefs", columns=["votes"])[0]["votes"][0]["principle"]
    splits = store.splits()
    cases = {
        "first page": {"split": "prefs"},
        "page at row 90% deep": {"split": "prefs", "offset": str(int(args.rows * 0.9))},
        "search 'topic 3'": {"split": "prefs", "q": "topic 3"},
        "principle filter": {"split": "prefs", "principle": principle},
        "position-inconsistent": {"split": "prefs", "flag": "inconsistent"},
        "sft search 'topic 3'": {"split": "sft", "q": "topic 3"},
    }
    print(f"{args.rows} rows per split, 20 shards ({tmp})")
    for name, params in cases.items():
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            out = query.page(store, query.parse(params, splits))
            times.append(1000 * (time.perf_counter() - t0))
        print(f"  {name:<26}{statistics.median(times):8.1f} ms   ({out['total']} matching)")
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        query.row(store, "sft", f"19-{args.rows // 20 - 1:07d}")
        times.append(1000 * (time.perf_counter() - t0))
    print(f"  {'one sft row in full':<26}{statistics.median(times):8.1f} ms")


if __name__ == "__main__":
    main()
