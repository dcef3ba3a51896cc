"""Benchmark: `cai serve` under load on loopback, against the same rewards computed in the trainer's process.

    python bench/serve.py [--quick] [--seconds S] [--items B] [--concurrency 1,16,64,256] [--soak S]

Starts `cai serve` (rules only; then rules and a MiniLM PM trained here for one epoch on the shipped pairs) on
127.0.0.1 and drives it with an asyncio load generator (httpx, one connection pool): at each concurrency, as many
requests of B items as it can for S seconds. Prints requests/s, items/s, p50/p99 latency, 429s and other errors
per concurrency, then what one item costs in process (`cai.rewards.reward_funcs`, the same constitution), and
`http_vs_in_process` (the server's per-item time at the best concurrency over the in-process per-item time).
With --soak S it also runs S seconds at the highest concurrency and prints the server's resident memory at the
start and the end. Every request goes to loopback, bounded in count by the time given.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANSWER = "<think>6 * 7 = 42, as 6 * 7 is 42.</think> The answer is \\boxed{42}."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start(args: list[str], token: str) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "cai"), "serve", "--port", str(port), "--queue", "100000", *args],
        env={**os.environ, "CAI_SERVE_TOKEN": token},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("cai serve did not start")


async def load(url: str, token: str, concurrency: int, seconds: float, items: int) -> dict:
    import httpx

    body = {"items": [{"prompt": "What is 6 times 7?", "response": ANSWER, "reference": "42"}] * items}
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    codes: dict[int, int] = {}
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def worker() -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    r = await client.post(url + "/v1/rewards", json=body, headers=headers)
                    code = r.status_code
                except httpx.TransportError:
                    code = -1
                latencies.append(time.perf_counter() - t0)
                codes[code] = codes.get(code, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ok = codes.get(200, 0)
    latencies.sort()
    return {
        "concurrency": concurrency,
        "requests_s": ok / wall,
        "items_s": ok * items / wall,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else float("nan"),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("nan"),
        "429": codes.get(429, 0),
        "errors": sum(n for c, n in codes.items() if c not in (200, 429)),
        "requests": sum(codes.values()),
    }


def in_process(pm: str | None, n: int) -> float:
    """Seconds per item of the same rewards called in the trainer's process (TRL's reward-function path)."""
    from cai.rewards import reward_funcs

    funcs = reward_funcs("reasoning", pm=pm)
    prompts = ["What is 6 times 7?"] * n
    completions = [[{"role": "assistant", "content": ANSWER}]] * n
    for f in funcs:  # warm: models load, rule caches fill
        f(prompts[:2], completions[:2], reference=["42"] * 2)
    t0 = time.perf_counter()
    for f in funcs:
        f(prompts, completions, reference=["42"] * n)
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 s per concurrency")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--items", type=int, default=8, help="items per request")
    ap.add_argument("--concurrency", default="1,16,64,256")
    ap.add_argument(
        "--soak", type=float, default=0.0, help="seconds of load at the highest concurrency, memory watched"
    )
    ap.add_argument("--only", choices=["rules", "rules+PM"], help="run one of the two servers")
    args = ap.parse_args()
    if args.quick:
        args.seconds = 4.0
    levels = [int(c) for c in args.concurrency.split(",")]
    token = "bench-token"
    print(
        f"cai serve on 127.0.0.1, {os.cpu_count()} CPU cores; {args.items} items per request, "
        f"{args.seconds:g} s per level"
    )
    with tempfile.TemporaryDirectory() as tmp:
        from cai.train import train

        train(
            str(ROOT / "data" / "eval" / "prefs.jsonl"), f"{tmp}/pm", log=lambda *_: None, epochs=1, eval_fraction=0.0
        )
        for name, extra, pm in (("rules", [], None), ("rules+PM", ["--pm", f"{tmp}/pm"], f"{tmp}/pm")):
            if args.only and name != args.only:
                continue
            proc, url = start(["--constitution", "reasoning", *extra], token)
            try:
                print(f"\n{name}:")
                print(
                    f"  {'concurrency':>11} {'req/s':>8} {'items/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
                    f"{'429':>5} {'errors':>6}"
                )
                rows = []
                for c in levels:
                    r = asyncio.run(load(url, token, c, args.seconds, args.items))
                    rows.append(r)
                    print(
                        f"  {c:>11} {r['requests_s']:>8.1f} {r['items_s']:>9.1f} {r['p50_ms']:>8.1f} "
                        f"{r['p99_ms']:>8.1f} {r['429']:>5} {r['errors']:>6}"
                    )
                if args.soak:
                    before = rss_mib(proc.pid)
                    r = asyncio.run(load(url, token, levels[-1], args.soak, args.items))
                    print(
                        f"  soak {args.soak:g} s at {levels[-1]}: {r['requests']} requests, {r['errors']} errors; "
                        f"server memory {before:.0f} MiB -> {rss_mib(proc.pid):.0f} MiB"
                    )
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
            best = max(rows, key=lambda r: r["items_s"])
            local = in_process(pm, 256)
            served = 1 / best["items_s"] if best["items_s"] else float("nan")
            key = name.replace("+", "_").lower()
            print(
                f"  in process: {1000 * local:.2f} ms per item; served: {1000 * served:.2f} ms per item "
                f"(best concurrency {best['concurrency']})"
            )
            print(f"http_vs_in_process_{key}: {served / local:.2f}")


if __name__ == "__main__":
    main()
