"""Benchmark: the cai SL pipeline against the raw engine, a naive one-prompt-at-a-time loop, and prefix
caching on vs off. Every figure is measured in this one run, on the same prompts and token budgets.

    python bench/generate.py [--quick] [--prompts N] [--max-tokens T] [--model SPEC]

EOS is ignored and max_tokens fixed, so every request generates exactly T tokens and the token counts of
the compared runs match. Prints `pipeline_vs_engine`, `pipeline_vs_naive`, `prefix_cache_on_vs_off`.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class FixedLength:
    """Wraps a backend so every request ignores EOS: equal token counts across the compared runs.
    Records each call's chats, so the raw engine can replay exactly the pipeline's requests."""

    def __init__(self, inner):
        self.inner, self.model = inner, inner.model
        self.calls = []

    def generate(self, chats, sampling, seeds=None):
        sampling = dataclasses.replace(sampling, ignore_eos=True, label="")
        self.calls.append((chats, sampling))
        return self.inner.generate(chats, sampling, seeds)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 prompts x 32 tokens: a few minutes on 2 CPU cores")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--naive-prompts", type=int, default=8, help="prompts for the (slow) naive loop")
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.max_tokens, args.naive_prompts = 16, 32, 4

    from cai.backends import Sampling
    from cai.backends.vllm import VLLMBackend, on_gpu
    from cai.config import RunConfig
    from cai.constitution import load as load_constitution
    from cai.inputs import load as load_prompts
    from cai.prompts import Templates
    from cai.records import with_system
    from cai.run import RunContext
    from cai.stages.sl import SLStage, demonstrations
    from cai.store import RunStore

    const = load_constitution(ROOT / "constitution" / "harmless.yaml")
    templates = Templates()
    prompts, _ = load_prompts(str(ROOT / "data" / "prompts" / "red_team.jsonl"), limit=args.prompts)
    config = RunConfig(prompts="-", out="-", rounds=1, max_tokens=args.max_tokens, model=args.model)
    engine = VLLMBackend(args.model, progress=False)
    device = "GPU" if on_gpu() else f"CPU ({platform.machine()}, {__import__('os').cpu_count()} cores)"
    fixed = FixedLength(engine)
    stage = SLStage(config)
    # A stage's run writes nothing itself (the generate loop does), so the store is never opened here.
    ctx = RunContext(config, const, templates, RunStore(ROOT / "data" / "runs" / "bench"), backend=fixed)

    # 1. the raw engine: one call over every prompt
    chats = [with_system(const, p.messages) for p in prompts]
    sampling = Sampling(max_tokens=args.max_tokens, temperature=config.temperature, top_p=config.top_p)
    outs, raw_s = timed(lambda: fixed.generate(chats, sampling))
    raw_tokens = sum(c.tokens for (c,) in outs)
    raw_prompt_tokens = sum(c.prompt_tokens for (c,) in outs)

    # 2. the cai SL pipeline: initial answer + one round of critique and revision, three engine calls
    engine.llm.reset_prefix_cache()
    first_call = len(fixed.calls)
    result, pipe_s = timed(lambda: stage.run(ctx, prompts))
    pipe_tokens = result.output_tokens

    # 2b. the raw engine on exactly the pipeline's requests (same chats, same three calls), with no cai
    # code between the calls: what remains of the gap is cai's own overhead.
    from vllm import SamplingParams

    pipeline_calls = fixed.calls[first_call:]
    engine.llm.reset_prefix_cache()
    t0 = time.perf_counter()
    replay_tokens = replay_prompt_tokens = 0
    for chats_, sampling_ in pipeline_calls:
        outs = engine.llm.chat(
            chats_,
            SamplingParams(
                max_tokens=sampling_.max_tokens,
                temperature=sampling_.temperature,
                top_p=sampling_.top_p,
                ignore_eos=True,
            ),
            use_tqdm=False,
        )
        replay_tokens += sum(len(o.outputs[0].token_ids) for o in outs)
        replay_prompt_tokens += sum(len(o.prompt_token_ids) for o in outs)
    replay_s = time.perf_counter() - t0

    # 3. the same pipeline, naively: one prompt at a time
    engine.llm.reset_prefix_cache()
    naive, naive_s = timed(lambda: [stage.run(ctx, [p]) for p in prompts[: args.naive_prompts]])
    naive_tokens = sum(r.output_tokens for r in naive)

    # 4. prefix caching on vs off: one critique step, whose chats share system + few-shot turns
    demos = demonstrations(const, templates)
    principle = const.principles[0]
    critique_chats = [
        c[:1]
        + demos
        + c[1:]
        + [
            {"role": "assistant", "content": "I can't help with that."},
            {"role": "user", "content": templates.render("critique.j2", principle=principle, round=1)},
        ]
        for c in chats
    ]
    engine.llm.reset_prefix_cache()
    outs, on_s = timed(lambda: fixed.generate(critique_chats, sampling))
    on_tokens = sum(c.tokens for (c,) in outs)
    engine.close()
    cold = FixedLength(VLLMBackend(args.model, progress=False, prefix_caching=False))
    outs, off_s = timed(lambda: cold.generate(critique_chats, sampling))
    off_tokens = sum(c.tokens for (c,) in outs)
    cold.inner.close()

    raw_tps, pipe_tps, naive_tps = raw_tokens / raw_s, pipe_tokens / pipe_s, naive_tokens / naive_s
    print(
        f"model: {args.model}  device: {device}  prompts: {len(prompts)}  max_tokens: {args.max_tokens} (EOS ignored)"
    )
    print(
        f"raw_engine: {raw_tokens} tokens in {raw_s:.2f}s = {raw_tps:.1f} tokens/s (one call, {len(prompts)} prompts; "
        f"{raw_prompt_tokens} prompt tokens)"
    )
    print(
        f"pipeline:   {pipe_tokens} tokens in {pipe_s:.2f}s = {pipe_tps:.1f} tokens/s (initial + critique + revision; "
        f"{result.prompt_tokens} prompt tokens)"
    )
    print(
        f"naive:      {naive_tokens} tokens in {naive_s:.2f}s = {naive_tps:.1f} tokens/s "
        f"(same pipeline, one prompt at a time, {args.naive_prompts} prompts)"
    )
    print(
        f"prefix_cache: on {on_tokens} tokens in {on_s:.2f}s, off {off_tokens} tokens in {off_s:.2f}s "
        "(one critique step with few-shot turns)"
    )
    print(
        f"raw_engine_same_requests: {replay_tokens} tokens in {replay_s:.2f}s = {replay_tokens / replay_s:.1f} "
        f"tokens/s (LLM.chat over exactly the pipeline's three calls; {replay_prompt_tokens} prompt tokens)"
    )
    print(f"pipeline_vs_engine: {pipe_tps / raw_tps:.2f}")
    print(f"pipeline_vs_engine_same_requests: {pipe_tps / (replay_tokens / replay_s):.2f}")
    print(f"pipeline_vs_naive: {pipe_tps / naive_tps:.2f}")
    print(f"prefix_cache_on_vs_off: {off_s / on_s:.2f}")


if __name__ == "__main__":
    main()
