"""Benchmark: verl 0.9.1's own reward loop over `cai serve`, against one batched request and a trivial local reward.

    python bench/verl_rewards.py [--quick] [--sizes 64,512,4096] [--repeat 2] [--workers 2]

Starts `cai serve --constitution reasoning` (rules only) on 127.0.0.1 and makes N R1-style samples (an arithmetic
question, reasoning of 60-400 words inside <think> or 3-8 with --short, a boxed answer, right or wrong; seeded).
For each N it times: one `/v1/rewards` request of the N items on a kept-open connection (`batched`); verl's reward
loop with `cai.commands.serve.verl.compute_score` as the custom reward function, in verl's RewardLoopWorker in one
process (`worker`) and through RewardLoopManager.compute_rm_score over `--workers` Ray workers as the PPO trainer
calls it (`manager`); and the same two with a trivial local function (`local_*`: a substring test, verl's loop alone).
Each time is the best of `--repeat` after one warm-up run. Prints one row per N and `manager / batched`, the
issue's goal being at most 2. Runs in the venv `make verl` builds (tests/verl_loop.py), every request to
loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serve import start  # bench/serve.py: `cai serve` on a free loopback port

ROOT = Path(__file__).resolve().parent.parent
LOCAL = """def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    return {"score": float(str(ground_truth) in solution_str)}
"""
STEPS = ["Add the ones first.", "Then carry the tens.", "Check it by subtracting back.", "So the sum holds."]


def samples(n: int, short: bool = False, seed: int = 0) -> list[list]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rnd.randint(10, 999), rnd.randint(10, 999)
        words = rnd.randint(3, 8) if short else rnd.randint(60, 400)
        reasoning = []
        while sum(len(s.split()) for s in reasoning) < words:
            reasoning.append(f"{a} + {b}: " + rnd.choice(STEPS))
        answer = a + b if rnd.random() < 0.5 else a + b + rnd.randint(1, 9)
        text = f"<think>{' '.join(reasoning)}</think> The sum is \\boxed{{{answer}}}."
        out.append([f"What is {a} + {b}?", text, str(a + b)])
    return out


def batched(url: str, token: str, items: list[list], repeat: int) -> float:
    import httpx

    body = {"items": [{"prompt": p, "response": r, "reference": ref} for p, r, ref in items]}
    with httpx.Client(timeout=600, headers={"Authorization": f"Bearer {token}"}) as client:
        best = float("inf")
        for k in range(repeat + 1):
            t0 = time.perf_counter()
            r = client.post(url + "/v1/rewards", json=body)
            if k:  # the first warms the server (its language detector loads on first use)
                best = min(best, time.perf_counter() - t0)
            assert r.status_code == 200, r.text[:300]
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="N = 64, 512 only")
    ap.add_argument("--sizes", default="64,512,4096")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="verl's reward.num_workers (Ray actors)")
    ap.add_argument("--short", action="store_true", help="one-line reasoning: HTTP overhead against little work")
    args = ap.parse_args()
    sizes = [int(s) for s in ("64,512" if args.quick else args.sizes).split(",")]
    python = Path(os.environ.get("CAI_VERL_VENV") or Path(sys.prefix) / "verl") / "bin" / "python"
    if not python.is_file():
        raise SystemExit(f"{python}: verl 0.9.1's venv is missing: run `make verl`")
    from cai.backends.models import resolve

    token = "bench-" + os.urandom(8).hex()
    limits = ["--max-items", str(max(sizes)), "--max-body", str(256 << 20)]
    proc, url = start(["--constitution", "reasoning", *limits], token)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cai, local = Path(tmp) / "cai_reward.py", Path(tmp) / "local_reward.py"
            cai.write_text("from cai.commands.serve.verl import compute_score  # noqa: F401\n")
            local.write_text(LOCAL)
            runs = []
            for n in sizes:
                items = samples(n, args.short)
                for reward in (cai, local):  # the first repeat is the warm-up: verl's loop cold, the pool empty
                    runs.append({"reward_file": str(reward), "samples": items, "repeat": args.repeat + 1})
            spec = Path(tmp) / "spec.json"
            spec.write_text(json.dumps({"tokenizer": resolve("smollm2-135m"), "workers": args.workers, "runs": runs}))
            env = {**os.environ, "CAI_SERVE_URL": url, "CAI_SERVE_TOKEN": token, "PYTHONPATH": str(ROOT)}
            t0 = time.perf_counter()
            child = subprocess.run(
                [str(python), str(ROOT / "tests" / "verl_loop.py"), str(spec)],
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp,
            )
            if child.returncode != 0:
                raise SystemExit(child.stderr[-3000:])
            out = json.loads(child.stdout.strip().splitlines()[-1])["runs"]
            print(f"verl's loop, all runs: {time.perf_counter() - t0:.1f} s (imports, Ray and its workers included)")
            print("N      batched  worker  manager  local_worker  local_manager  worker/batched  manager/batched")
            for k, n in enumerate(sizes):
                one = batched(url, token, samples(n, args.short), args.repeat)
                got, base = out[2 * k], out[2 * k + 1]
                w, m = min(got["worker"]["seconds"][1:]), min(got["manager"]["seconds"][1:])
                lw, lm = min(base["worker"]["seconds"][1:]), min(base["manager"]["seconds"][1:])
                row = f"{n:<6} {one:7.3f}  {w:6.3f}  {m:7.3f}  {lw:12.3f}  {lm:13.3f}"
                print(f"{row}  {w / one:14.2f}  {m / one:15.2f}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


if __name__ == "__main__":
    main()
