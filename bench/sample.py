"""Benchmark: N samples per prompt in one request (n = N) against N requests of one, and what each score costs.

    python bench/sample.py [--quick] [--prompts P] [--n N] [--max-tokens T] [--model SPEC] [--backbone SPEC]

Part 1, on one engine, the prefix cache emptied before each: the math problems behind the reasoning
constitution's system prompt, N samples each, sent (a) as one request of n = N per problem, as the sample stage
sends them, and (b) as N requests of n = 1. Three times: with every sample run to --max-tokens (ignore_eos,
equal token counts), with EOS honoured (the model's own lengths), and run to --max-tokens behind a long shared
prompt (a page of notes after each question, ~700 tokens), where prefilling once matters most. Prints the
wall time, output tokens/s and the prompt tokens the engine computed (prompt tokens less those found in its
prefix cache) of each, and `one_request_vs_n_requests` (time ratio, and the ratio of output tokens/s).

Part 2: the cost per sample of each signal the sample stage can add, on the answers of part 1: the
constitution's rules, P(True) (two forward passes per answer), a preference model and a process reward model
(trained here for one epoch on the shipped evaluation sets, so their size is a real one: --backbone), and a GRM
judgement of each problem's answers (one written judgement per problem, one forward pass per answer), each through
the sample stage's own scorer.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 problems x 4 samples x 64 tokens")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--backbone", default="all-minilm-l6-v2", help="the PM's and PRM's backbone")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each way; the fastest counts")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.n, args.max_tokens = 8, 4, 64

    from cai.backends import Sampling
    from cai.backends.vllm import VLLMBackend, on_gpu
    from cai.config import RunConfig
    from cai.core.constitution import load as load_constitution
    from cai.core.context import RunContext
    from cai.core.inputs import load as load_prompts
    from cai.core.prompts import Templates
    from cai.core.records import ChunkResult, with_system
    from cai.core.rules import check_all
    from cai.stages.sample import Draft, SampleStage
    from cai.train import train

    const = load_constitution("reasoning")
    prompts, _ = load_prompts(str(ROOT / "data" / "prompts" / "math.jsonl"), limit=args.prompts)
    chats = [with_system(const, p.messages) for p in prompts]
    engine = VLLMBackend(args.model, progress=False)
    device = "GPU" if on_gpu() else f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    print(
        f"model: {args.model}  device: {device}  problems: {len(prompts)}  N: {args.n}  max_tokens: {args.max_tokens}"
    )

    # A long shared prompt, where prefilling once matters: every problem behind the same page of notes (all the
    # shipped problems), as a question about a long document is.
    notes = "Notes:\n" + "\n".join(
        p.messages[-1]["content"] for p in load_prompts(str(ROOT / "data" / "prompts" / "math.jsonl"))[0]
    )
    # The question first: each problem's long prompt is its own (shared by its N samples, not across problems).
    long_chats = [c[:-1] + [{"role": "user", "content": f"Question: {c[-1]['content']}\n\n{notes}"}] for c in chats]
    texts: list[tuple[int, str]] = []
    for fixed, long in ((True, False), (False, False), (True, True)):
        label = "fixed length (ignore_eos)" if fixed else "realistic length (EOS honoured)"
        label += ", a long shared prompt" if long else ""
        measured = {}
        for mode in ("one", "many"):
            engine.llm.reset_prefix_cache()
            n = args.n if mode == "one" else 1
            sampling = Sampling(max_tokens=args.max_tokens, temperature=1.0, n=n, ignore_eos=fixed)
            base = long_chats if long else chats
            if mode == "one":
                batch, seeds = base, [1000 + i for i in range(len(base))]
            else:
                batch = [c for c in base for _ in range(args.n)]
                seeds = [1000 + i * args.n + k for i in range(len(chats)) for k in range(args.n)]
            seconds = float("inf")
            for _ in range(args.repeats):  # the best of a few: a 2-core machine's timings wander
                engine.llm.reset_prefix_cache()
                t0 = time.perf_counter()
                outs = engine.generate(batch, sampling, seeds)
                seconds = min(seconds, time.perf_counter() - t0)
            done = [c for got in outs for c in got]
            computed = sum(c.prompt_tokens - c.cached_tokens for c in done)
            measured[mode] = (seconds, computed, sum(c.tokens for c in done))
            if mode == "one" and not fixed and not long:
                texts = [(i // args.n, c.text) for i, c in enumerate(done) if c.ok and c.text.strip()]
        (s1, p1, o1), (s2, p2, o2) = measured["one"], measured["many"]
        print(f"\n{label}: {len(chats) * args.n} samples")
        for name, (sec, computed, output) in (
            (f"one request of n={args.n} per problem", measured["one"]),
            (f"{args.n} requests of n=1 per problem", measured["many"]),
        ):
            print(
                f"  {name:<34}{sec:7.2f}s  prompt tokens computed {computed:6d}  output {output} "
                f"({output / sec:.0f} tokens/s)"
            )
        key = ("fixed" if fixed else "realistic") + ("_long_prompt" if long else "")
        print(f"one_request_vs_n_requests_{key}: {s1 / s2:.2f} (time)  {(o1 / s1) / (o2 / s2):.2f} (output tokens/s)")
        print(f"prompt_tokens_computed_one_vs_n_{key}: {p1 / max(1, p2):.2f}")

    # Part 2: each signal's cost per sample, on the realistic answers, through the sample stage's own scorers
    with tempfile.TemporaryDirectory() as tmp:
        quiet = dict(log=lambda *_: None, backbone=args.backbone, epochs=1, eval_fraction=0.0)
        train(str(ROOT / "data" / "eval" / "prefs.jsonl"), f"{tmp}/pm", **quiet)
        train(str(ROOT / "data" / "eval" / "steps.jsonl"), f"{tmp}/prm", kind="prm", **quiet)
        config = RunConfig(
            constitution="reasoning",
            self_eval=True,
            sample_grm=True,
            pm=f"{tmp}/pm",
            prm=f"{tmp}/prm",
            max_tokens=args.max_tokens,
            model=args.model,
        )
        stage = SampleStage(config)
        ctx = RunContext(config, const, Templates(), None, backend=engine)
        by_prompt: dict[int, list[str]] = {}
        for i, text in texts:
            by_prompt.setdefault(i, []).append(text)
        chosen = [prompts[i] for i in by_prompt]

        def drafts():
            return [[Draft(k, text) for k, text in enumerate(by_prompt[i])] for i in by_prompt]

        n = sum(len(v) for v in by_prompt.values())
        per = {}
        t0 = time.perf_counter()
        for p, group in zip(chosen, drafts(), strict=True):
            for d in group:
                check_all(const.rules, d.text, p.reference)
        per["rules"] = (time.perf_counter() - t0) / n
        stage.score_pm(chosen[:1], drafts()[:1])  # each model loads once, as in a run
        stage.score_prm(chosen[:1], drafts()[:1])
        for name, score in (
            ("p_true", lambda g: stage.score_p_true(ctx, chosen, g, ChunkResult())),
            ("pm", lambda g: stage.score_pm(chosen, g)),
            ("prm", lambda g: stage.score_prm(chosen, g)),
            ("grm", lambda g: stage.score_grm(ctx, chosen, g, ChunkResult())),
        ):
            engine.llm.reset_prefix_cache()
            t0 = time.perf_counter()
            score(drafts())
            per[name] = (time.perf_counter() - t0) / n
    engine.close()
    items = texts
    print(f"\nscoring cost per sample ({len(items)} answers, EOS honoured; PM and PRM on {args.backbone}, {device}):")
    for name, seconds in per.items():
        print(f"  {name:<8}{1000 * seconds:8.1f} ms")
    for name, seconds in per.items():
        print(f"score_ms_per_sample_{name}: {1000 * seconds:.1f}")


if __name__ == "__main__":
    main()
