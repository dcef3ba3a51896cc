"""Benchmark: what the shared prefix saves when every step of a solution is judged (the steps stage).

    python bench/steps.py [--quick] [--problems N] [--solutions N] [--max-tokens T] [--model SPEC]

Solutions to the shipped math word problems are sampled once (EOS honoured: realistic lengths), split into
steps by line, and the same step reads (every step, --step-principles principles, both option orders) are then
sent two ways on one engine, each from a cold prefix cache:

  shared     the stage's way: one call; the reads of a solution share the prefix of the steps before them
  separate   each read on its own: a cache salt per request, so no read reuses another's prefix

Prints per way the seconds, prompt tokens and tokens computed (not found in the cache) per solution, then
`steps_shared_vs_separate` (seconds, separate / shared) and `steps_prefill_separate_vs_shared` (tokens
computed), and the largest difference in a step's P(good) between the ways (the same reads give the same
labels, whatever the cache). The cache reuses whole blocks: --block-size (vLLM's default: 16 on GPU, 128 on
CPU) sets how much of each read's shared prefix can be reused.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 problems x 2 solutions of 128 tokens: minutes on 2 cores")
    ap.add_argument("--problems", type=int, default=24)
    ap.add_argument("--solutions", type=int, default=4, help="solutions per problem")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--step-principles", type=int, default=1)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--block-size", type=int, help="the engine's KV-cache block size (default: vLLM's)")
    args = ap.parse_args()
    if args.quick:
        args.problems, args.solutions, args.max_tokens = 8, 2, 128

    from cai.backends.vllm import VLLMBackend, on_gpu
    from cai.config import RunConfig
    from cai.core.constitution import load as load_constitution
    from cai.core.context import RunContext
    from cai.core.inputs import load as load_prompts
    from cai.core.prompts import Templates
    from cai.core.records import ChunkResult
    from cai.core.store import RunStore
    from cai.judges import step as stepjudge
    from cai.judges.step_logprob import LogprobStepJudge, verdicts
    from cai.signals import reads
    from cai.stages.steps import StepsStage

    const = load_constitution("reasoning")
    prompts, _ = load_prompts(str(ROOT / "data" / "prompts" / "math.jsonl"), limit=args.problems)
    engine = VLLMBackend(args.model, max_model_len=4096, block_size=args.block_size, progress=False)
    device = "GPU" if on_gpu() else f"CPU ({platform.processor() or platform.machine()})"
    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig(
            prompts="-",
            out=tmp,
            stage="steps",
            constitution="reasoning",
            model=args.model,
            max_tokens=args.max_tokens,
            solutions_per_prompt=args.solutions,
            step_principles=args.step_principles,
        )
        ctx = RunContext(config, const, Templates(), RunStore(tmp), backend=engine)
        stage = StepsStage(config)
        solutions = stage.solutions(ctx, prompts, ChunkResult(), {})
        asked, chosen = LogprobStepJudge(config).questions(ctx, solutions)
        steps = sum(len(s.steps) for s in solutions)
        print(
            f"device: {device}; model {args.model}; {len(solutions)} solutions of {len(prompts)} problems, "
            f"{steps} steps ({steps / max(1, len(solutions)):.1f} per solution), {2 * len(asked)} one-token reads; "
            f"KV block size {engine.llm.llm_engine.vllm_config.cache_config.block_size}",
            flush=True,
        )
        ways = {"shared": True, "separate": False}
        measured, labels = {}, {}
        for name, share in ways.items():
            engine.llm.reset_prefix_cache()
            result = ChunkResult()
            t0 = time.perf_counter()
            answers = reads.ask_both(engine, [q.chats for q in asked], result, label="step judge", share_prefix=share)
            seconds = time.perf_counter() - t0
            got = verdicts(solutions, chosen, asked, answers)
            labels[name] = [v.step_p for v in got if isinstance(v, stepjudge.StepVerdict)]
            computed = result.prompt_tokens - result.cached_tokens
            measured[name] = (seconds, result.prompt_tokens, computed)
            n, hit = max(1, len(solutions)), result.cached_tokens / max(1, result.prompt_tokens)
            print(
                f"{name:<10} {seconds:8.1f} s  {result.prompt_tokens / n:8.0f} prompt tokens/solution  "
                f"{computed / n:8.0f} computed/solution  ({100 * hit:.0f}% from the prefix cache)",
                flush=True,
            )
    drift = max(
        (abs(a - b) for xs, ys in zip(labels["shared"], labels["separate"]) for a, b in zip(xs, ys)),
        default=0.0,
    )
    (s_shared, _, c_shared), (s_sep, _, c_sep) = measured["shared"], measured["separate"]
    print(f"largest step_p difference between the ways: {drift:.2e}")
    print(f"steps_shared_vs_separate: {s_sep / s_shared:.2f}")
    print(f"steps_prefill_separate_vs_shared: {c_sep / max(1, c_shared):.2f}")
    engine.close()


if __name__ == "__main__":
    main()
