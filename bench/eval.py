"""Benchmark: how good are the embedded judge's labels? `cai eval judge` with each judge on the shipped
labelled pairs (data/eval/prefs.jsonl), one engine for all, and the table the README shows.

    python bench/eval.py [--quick] [--model SPEC] [--judges logprob,cot,grm] [--principles-per-pair K]
                         [--constitution NAME] [--data FILE]

Prints one row per judge: accuracy (strict; ties wrong), one-order and one-principle accuracy, the accuracy
with the preferred answer shown as (A) and as (B), position consistency, ECE, failures and pairs/s; then
`both_orders_minus_one_order` per judge. The same command with a real model on a GPU gives the figures that
matter; the 135M embedded model is near chance.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the first 24 pairs, logprob and grm only")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--judges", default="logprob,grm,cot")
    ap.add_argument("--principles-per-pair", type=int, default=2)
    ap.add_argument("--cot-max-tokens", type=int, default=128)
    ap.add_argument("--constitution", default="harmless")
    ap.add_argument("--data", default=str(ROOT / "data" / "eval" / "prefs.jsonl"))
    args = ap.parse_args()
    judges = args.judges.split(",")
    data = args.data
    if args.quick:
        judges = [j for j in judges if j != "cot"]
        lines = Path(data).read_text().splitlines()
        tmp = Path(tempfile.mkdtemp()) / "quick.jsonl"
        tmp.write_text("\n".join(lines[::4][:24]) + "\n")  # every subset, in file order
        data = str(tmp)

    from cai.backends.vllm import VLLMBackend, on_gpu
    from cai.commands.evaluation.judge import evaluate
    from cai.config import RunConfig

    def pct(x):
        return "  n/a" if x is None else f"{100 * x:5.1f}"

    k = args.principles_per_pair
    print(f"model {args.model}; {args.constitution} constitution, {k} principles/pair (logprob, cot)")
    print(f"data {args.data}" + (" (quick: 24 pairs)" if args.quick else ""))
    engine = VLLMBackend(args.model, max_model_len=4096, progress=False)
    print(f"device {'GPU' if on_gpu() else f'CPU ({platform.processor() or platform.machine()})'}")
    head = ["judge", "pairs", "acc", "1-order", "1-princ", "pref(A)", "pref(B)", "consist", "ECE", "failed", "pairs/s"]
    print(" ".join(f"{h:>8}" for h in head), flush=True)
    gaps = []
    try:
        for judge in judges:
            per_pair = {"principles_per_pair": k} if judge in ("logprob", "cot") else {}  # GRM writes its own
            config = RunConfig(
                stage="rl",
                judge=judge,
                model=args.model,
                constitution=args.constitution,
                max_tokens=256,
                **per_pair,
                **({"cot_max_tokens": args.cot_max_tokens} if judge == "cot" else {}),
            )
            engine.llm.reset_prefix_cache()  # each judge from a cold cache
            t0 = time.monotonic()
            r = evaluate(config, data, backend=engine, log=lambda *_: None)
            rate = r["pairs"] / (time.monotonic() - t0)
            cells = [
                judge,
                r["pairs"],
                pct(r["accuracy"]),
                pct(r.get("one_order_accuracy")),
                pct(r.get("one_principle_accuracy")),
                pct(r.get("preferred_as_a_accuracy")),
                pct(r.get("preferred_as_b_accuracy")),
                pct(r.get("position_consistent")),
                f"{r['ece']:.3f}",
                r["failed"],
                f"{rate:.2f}",
            ]
            print(" ".join(f"{c:>8}" for c in cells))
            for name, g in r["subsets"].items():
                print(f"{'':>8} {name:<26} acc {pct(g['accuracy'])}  1-order {pct(g.get('one_order_accuracy'))}")
            if r.get("one_order_accuracy") is not None:
                gaps.append(f"both_orders_minus_one_order[{judge}]: {r['accuracy'] - r['one_order_accuracy']:+.3f}")
            sys.stdout.flush()
    finally:
        engine.close()
    print("\n".join(gaps))


if __name__ == "__main__":
    main()
