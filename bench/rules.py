"""Benchmark: what checking the constitution's rules costs next to generating the answers they check.

    python bench/rules.py [--quick] [--prompts N] [--max-tokens T] [--model SPEC]

In one run: the engine answers the shipped math prompts under the `reasoning` constitution (the SL stage's
first step, realistic lengths: EOS is honoured), then every rule of that constitution is checked on every
answer. Prints the rule-checking time per 1,000 answers (on these answers, and on long answers of
`--long-words` words), the one-off cost of loading the language models, and `rules_share_of_generation`:
rule time / generation time for the same answers. Then the cost of bounding math-verify: the accuracy check per
1,000 answers with math-verify in a worker process killed at a deadline (cai.core.bounded, what the rules do, on any
thread) against math-verify called in this process (the earlier way, bounded only on the main thread), and the
code sandbox's cost per test on the shipped code problems' right answers.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ms_per_thousand(rules, texts, references) -> float:
    """Milliseconds to check every rule on 1,000 such texts (measured on `texts`, one by one)."""
    from cai.core.rules import check_all

    t0 = time.perf_counter()
    for text, ref in zip(texts, references, strict=True):
        check_all(rules, text, ref)
    return (time.perf_counter() - t0) / len(texts) * 1000 * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="24 prompts x 96 tokens: about a minute on 2 CPU cores")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--long-words", type=int, default=400, help="length of the synthetic long answers")
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    if args.quick:
        args.max_tokens = 96

    from cai.backends import Sampling
    from cai.backends.vllm import VLLMBackend, on_gpu
    from cai.core.constitution import load as load_constitution
    from cai.core.inputs import load as load_prompts
    from cai.core.records import with_system
    from cai.core.rules import check_all

    const = load_constitution("reasoning")
    prompts, _ = load_prompts(str(ROOT / "data" / "prompts" / "math.jsonl"), limit=args.prompts)
    refs = [p.reference for p in prompts]
    engine = VLLMBackend(args.model, progress=False)
    device = "GPU" if on_gpu() else f"CPU ({platform.machine()}, {__import__('os').cpu_count()} cores)"
    sampling = Sampling(max_tokens=args.max_tokens, temperature=0.7, top_p=0.95)
    t0 = time.perf_counter()
    outs = engine.generate([with_system(const, p.messages) for p in prompts], sampling)
    gen_s = time.perf_counter() - t0
    engine.close()
    answers = [c.text for (c,) in outs]
    tokens = sum(c.tokens for (c,) in outs)

    t0 = time.perf_counter()
    # Once per process: the language models and math-verify's parser load on first use.
    check_all(const.rules, "<think>Warm-up. Das ist ein Satz.</think> \\boxed{\\frac{1}{2}}", "0.5")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for text, ref in zip(answers, refs, strict=True):
        check_all(const.rules, text, ref)
    rules_s = time.perf_counter() - t0
    by_kind = {}
    for r in const.rules:
        by_kind[r.id] = ms_per_thousand((r,), answers, refs)
    sentence = "We multiply the number of rows by the number of seats in each row to get the total. "
    long = [f"<think>{sentence * (args.long_words // 16)}</think> So the answer is \\boxed{{{i}}}." for i in range(50)]

    print(
        f"model: {args.model}  device: {device}  answers: {len(answers)}  max_tokens: {args.max_tokens} "
        f"(EOS honoured; {tokens} tokens, mean {sum(len(a.split()) for a in answers) / len(answers):.0f} words)"
    )
    print(f"generation: {gen_s:.2f}s for {len(answers)} answers")
    print(
        f"rules: {len(const.rules)} rules in {rules_s * 1000:.1f} ms for {len(answers)} answers; language models "
        f"and math parser loaded once in {load_s:.2f}s"
    )
    print("per rule, ms per 1000 answers: " + ", ".join(f"{k} {v:.0f}" for k, v in by_kind.items()))
    print(f"rules_ms_per_1000_answers: {rules_s / len(answers) * 1e6:.0f}")
    first = ms_per_thousand(const.rules, long, ["7"] * len(long))  # first pass: caches and the detector warm up
    long_ms = ms_per_thousand(const.rules, long, ["7"] * len(long))
    print(f"rules_ms_per_1000_long_answers ({args.long_words} words): {long_ms:.0f} (first pass {first:.0f})")
    print(f"rules_share_of_generation: {rules_s / gen_s:.4f}")
    bounded_cost(answers, refs)
    sandbox_cost()


def bounded_cost(answers, refs) -> None:
    """math-verify through the worker pool vs in this process, on the answers' final answers (same comparisons)."""
    from cai.core import answer, bounded

    pairs = [
        (a, r) for text, r in zip(answers, refs, strict=True) if (a := answer.final(answer.scoped(text, "answer")))
    ]
    pairs = pairs or [("\\frac{1}{2}", "0.5")] * 24  # the model gave no final answer: time a stand-in
    pairs = (pairs * (200 // len(pairs) + 1))[:200]
    bounded.pool().call("math_equal", "1", "1", seconds=60)  # the workers start once per process
    t0 = time.perf_counter()
    for a, r in pairs:
        bounded.pool().call("math_equal", a, r, seconds=6)
    pooled = (time.perf_counter() - t0) / len(pairs) * 1e6
    t0 = time.perf_counter()
    for a, r in pairs:
        bounded.math_equal(a, r)
    direct = (time.perf_counter() - t0) / len(pairs) * 1e6
    print(
        f"accuracy (math-verify) ms per 1000 comparisons: in a worker process {pooled:.0f} (bounded on any thread) "
        f"vs in process {direct:.0f} (bounded on the main thread only); bounded_vs_in_process {pooled / direct:.2f}"
    )


def sandbox_cost() -> None:
    """One sandboxed run per test: the shipped code problems with right programs."""
    import json

    from cai.core import sandbox

    programs = {
        0: "n = int(input())\nprint(n * n)",
        2: "a, b = map(int, input().split())\nprint(a + b)",
        5: "import math\nprint(math.factorial(int(input())))",
    }
    records = [json.loads(line) for line in (ROOT / "data" / "prompts" / "code.jsonl").read_text().splitlines()]
    t0, tests = time.perf_counter(), 0
    for i, program in programs.items():
        out = sandbox.run_tests(program, records[i]["tests"])
        assert out.score == 1.0, out
        tests += out.total
    ms = (time.perf_counter() - t0) / tests * 1000
    print(
        f"code sandbox: {ms:.0f} ms per test ({tests} tests, one fresh process each); network isolated: "
        f"{sandbox.network_isolated()}"
    )


if __name__ == "__main__":
    main()
