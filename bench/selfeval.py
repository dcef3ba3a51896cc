"""Benchmark: what self-evaluation (P(True) of every answer) costs next to the SL stage it scores.

    python bench/selfeval.py [--quick] [--prompts N] [--max-tokens T] [--model SPEC]

In one run, on one engine: the SL stage (initial answer + one round of critique and revision, EOS honoured,
so lengths are the model's own), timed per engine call; then P(True) of both texts of every trace (one
forward pass per text and option order), with and without K brainstormed samples. Prints
`self_eval_vs_sl_stage` and `self_eval_vs_one_revision_round` (critique + revision calls).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Timed:
    """Wraps a backend and adds up the seconds of its calls by progress label."""

    def __init__(self, inner):
        self.inner, self.model = inner, inner.model
        self.seconds: dict[str, float] = defaultdict(float)

    def generate(self, chats, sampling, seeds=None):
        t0 = time.perf_counter()
        out = self.inner.generate(chats, sampling, seeds)
        self.seconds[sampling.label] += time.perf_counter() - t0
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 prompts x 64 tokens: a few minutes on 2 CPU cores")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--brainstorm", type=int, default=2, help="K samples shown before the answer (the variant)")
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.max_tokens = 16, 64

    from cai.backends.vllm import VLLMBackend, on_gpu
    from cai.config import RunConfig
    from cai.core.constitution import load as load_constitution
    from cai.core.context import RunContext
    from cai.core.inputs import load as load_prompts
    from cai.core.prompts import Templates
    from cai.core.records import ChunkResult
    from cai.core.store import RunStore
    from cai.signals import p_true as selfeval
    from cai.stages.sl import SLStage

    const = load_constitution("harmless")
    prompts, _ = load_prompts(str(ROOT / "data" / "prompts" / "red_team.jsonl"), limit=args.prompts)
    config = RunConfig(rounds=1, max_tokens=args.max_tokens, model=args.model)
    engine = Timed(VLLMBackend(args.model, progress=False))
    device = "GPU" if on_gpu() else f"CPU ({platform.machine()}, {__import__('os').cpu_count()} cores)"
    # A stage's run writes nothing itself (the generate loop does), so the store is never opened here.
    ctx = RunContext(config, const, Templates(), RunStore(ROOT / "data" / "runs" / "bench"), backend=engine)

    t0 = time.perf_counter()
    rows = SLStage(config).run(ctx, prompts).rows
    sl_s = time.perf_counter() - t0
    round_s = sum(s for label, s in engine.seconds.items() if "critique" in label or "revision" in label)
    items = [(row["prompt"], text, []) for row in rows for text in (row["initial"], row["revisions"][0]["revision"])]
    engine.inner.llm.reset_prefix_cache()
    t0 = time.perf_counter()
    reads = selfeval.evaluate(ctx, items, ChunkResult())
    eval_s = time.perf_counter() - t0
    engine.inner.llm.reset_prefix_cache()
    t0 = time.perf_counter()
    samples = selfeval.brainstorm(
        ctx, [p for p in prompts if any(r["id"] == p.id for r in rows)], args.brainstorm, ChunkResult()
    )
    with_samples = [
        (row["prompt"], text, samples.get(row["id"], []))
        for row in rows
        for text in (row["initial"], row["revisions"][0]["revision"])
    ]
    selfeval.evaluate(ctx, with_samples, ChunkResult())
    brainstorm_s = time.perf_counter() - t0
    engine.inner.close()

    disagree = sum(r.orders_disagree for r in reads) / len(reads)
    print(
        f"model: {args.model}  device: {device}  prompts: {len(prompts)} ({len(rows)} traces)  max_tokens: "
        f"{args.max_tokens} (EOS honoured)"
    )
    print(
        f"sl_stage: {sl_s:.2f}s (initial {engine.seconds['sl initial']:.2f}s, one critique+revision round "
        f"{round_s:.2f}s)"
    )
    print(
        f"self_eval: {eval_s:.2f}s for {len(items)} answers x 2 option orders (cold prefix cache); option orders "
        f"disagree on {100 * disagree:.1f}%"
    )
    print(f"self_eval_brainstorm_k{args.brainstorm}: {brainstorm_s:.2f}s (sampling K answers per prompt included)")
    print(f"self_eval_vs_sl_stage: {eval_s / sl_s:.2f}")
    print(f"self_eval_vs_one_revision_round: {eval_s / round_s:.2f}")
    print(f"self_eval_brainstorm_vs_sl_stage: {brainstorm_s / sl_s:.2f}")


if __name__ == "__main__":
    main()
