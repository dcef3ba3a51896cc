"""Benchmark: --executor ray against the in-process streaming executor, and the Ray orchestration ceiling.
Every figure is measured in this one run, on a local Ray cluster this script starts and stops (loopback).

    python bench/cluster.py [--quick] [--prompts N] [--max-tokens T] [--max-num-seqs S] [--ceiling N] [--skip-engine]

1. Overhead on the real engine: the SL stage (one round: three steps per prompt) on the embedded model, once in
   process (--executor stream) and once in one Ray actor holding the same engine (--executor ray). Both times are
   end to end and include one engine start (in the driver, or in the actor); the cluster's own start is not in
   either and is printed apart. `ray_vs_stream` is the in-process time over the Ray time (goal: at least 0.95),
   `ray_vs_stream_generation` the same without the engine starts; the second run finds the model's files in
   the page cache (--ray-first swaps the order). The rows of both runs are compared id for id and text for text.
2. The orchestration ceiling: the scripted engine (no model: replies cost nothing) through 1, 2 and 4 actors, and
   in process for reference. prompts/s end to end (actor starts included) and in steady state (from the first
   shard on disk to the last, the prompts written after the first shard over that span).

Prints `name: value` lines, then the ratios.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTITUTION = ROOT / "constitution" / "harmless.yaml"


def prompts_file(folder: Path, n: int) -> str:
    """n distinct prompts: the shipped red-team ones, with a numbered variant each time round."""
    import json

    base = [json.loads(line)["prompt"] for line in (ROOT / "data" / "prompts" / "red_team.jsonl").open()]
    path = folder / "prompts.jsonl"
    with path.open("w") as f:
        for i in range(n):
            text = base[i % len(base)] + (f" (variant {i // len(base)})" if i >= len(base) else "")
            f.write(json.dumps({"prompt": text}) + "\n")
    return str(path)


def run(out: Path, prompts: str, **settings):
    """One `cai generate` of the SL stage; returns (summary, seconds end to end)."""
    from cai.config import RunConfig
    from cai.generate import generate

    config = RunConfig(constitution=str(CONSTITUTION), prompts=prompts, out=str(out), stage="sl", rounds=1, **settings)
    t0 = time.monotonic()
    summary = generate(config, log=lambda _: None)
    return summary, time.monotonic() - t0


def rows(folder: Path) -> list[dict]:
    from cai.core.store import RunStore

    return sorted(RunStore(folder).read("sft"), key=lambda r: r["id"])


def steady(folder: Path) -> float:
    """Prompts per second from the first shard on disk to the last (the pool running, its start left out)."""
    import pyarrow.parquet as pq

    from cai.core.store import RunStore

    shards = sorted(RunStore(folder).shards("sft"), key=lambda p: p.stat().st_mtime)
    if len(shards) < 2:
        return float("nan")
    span = shards[-1].stat().st_mtime - shards[0].stat().st_mtime
    after = sum(pq.read_metadata(s).num_rows for s in shards[1:])
    return after / span if span > 0 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 prompts, 48 tokens, a ceiling of 512 prompts")
    ap.add_argument("--prompts", type=int, default=64, help="prompts for the real-engine comparison")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument("--ceiling", type=int, default=2048, help="prompts for the scripted-engine ceiling")
    ap.add_argument("--skip-engine", action="store_true", help="only the scripted-engine ceiling")
    ap.add_argument("--skip-ceiling", action="store_true", help="only the real-engine comparison")
    ap.add_argument("--ray-first", action="store_true", help="the Ray run before the in-process one")
    a = ap.parse_args()
    if a.quick:
        a.prompts, a.max_tokens, a.max_num_seqs, a.ceiling = 16, 48, 16, 512
    import ray

    tmp = Path(tempfile.mkdtemp(prefix="cai-bench-ray-"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, ray {ray.__version__}")
    t0 = time.monotonic()
    ray.init(
        address="local",
        num_cpus=os.cpu_count() or 2,
        object_store_memory=512 * 2**20,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
    )
    print(f"cluster_start_s: {time.monotonic() - t0:.1f}")
    ratios: dict[str, float] = {}
    try:
        if not a.skip_engine:
            engine = dict(max_tokens=a.max_tokens, max_num_seqs=a.max_num_seqs, kv_cache_gb=2, max_model_len=2048)
            # the actor gets the machine's cores: Ray sets an actor's OMP_NUM_THREADS (the CPU engine's threads) to
            # its CPUs, and the in-process engine uses them all
            cores = float(os.cpu_count() or 2)
            prompts = prompts_file(tmp, a.prompts)
            # the second run finds the model's files in the page cache: --ray-first swaps the order to see that
            if a.ray_first:
                pool, t_pool = run(tmp / "ray", prompts, executor="ray", ray_actors=1, ray_cpus=cores, **engine)
            one, t_one = run(tmp / "stream", prompts, **engine)
            print(f"stream_s: {t_one:.1f} ({one.output_tokens} output tokens)")
            for stage, load in one.loads.items():
                print(f"  load ({stage}) in process: {load.describe()}")
            if not a.ray_first:
                pool, t_pool = run(tmp / "ray", prompts, executor="ray", ray_actors=1, ray_cpus=cores, **engine)
            print(f"ray_1_actor_s: {t_pool:.1f} ({pool.output_tokens} output tokens)")
            for line in pool.describe():
                if "actor" in line or "load" in line:
                    print(f"  {line.strip()}")
            same = rows(tmp / "stream") == rows(tmp / "ray")
            print(f"same_rows: {same}")
            ratios["ray_vs_stream"] = t_one / t_pool
            # generation only: from the engine up (in process) or the first actor's engine up (Ray) to the last shard
            print(f"generation_s: stream {one.engine_seconds:.1f}, ray {pool.engine_seconds:.1f}")
            ratios["ray_vs_stream_generation"] = one.engine_seconds / pool.engine_seconds
        ceiling = prompts_file(tmp, a.ceiling)
        fast = dict(backend="scripted", max_tokens=a.max_tokens, chunk_size=64)
        _, t = run(tmp / "ceiling-stream", ceiling, **fast)
        base = a.ceiling / t
        print(f"scripted_stream_prompts_per_s: {base:.1f} (steady {steady(tmp / 'ceiling-stream'):.1f})")
        for n in () if a.skip_ceiling else (1, 2, 4):
            # half a CPU each: the pool's width, not Ray's CPU count, is what is measured
            _, t = run(tmp / f"ceiling-{n}", ceiling, executor="ray", ray_actors=n, ray_cpus=0.5, **fast)
            rate = f"{a.ceiling / t:.1f} (steady {steady(tmp / f'ceiling-{n}'):.1f})"
            print(f"scripted_ray_{n}_actors_prompts_per_s: {rate}")
            ratios[f"ray_{n}_actors_vs_stream_scripted"] = (a.ceiling / t) / base
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")


if __name__ == "__main__":  # vLLM starts its engine in a spawned process
    sys.exit(main())
