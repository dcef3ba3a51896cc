"""Benchmark: what checking the constitution's rules costs next to generating the answers they check.

    python bench/rules.py [--quick] [--prompts N] [--max-tokens T] [--model SPEC]

In one run: the engine answers the shipped math prompts under the `reasoning` constitution (the SL stage's
first step, realistic lengths: EOS is honoured), then every rule of that constitution is checked on every
answer. Prints the rule-checking time per 1,000 answers (on these answers, and on long answers of
`--long-words` words), the one-off cost of loading the language models, and `rules_share_of_generation`:
rule time / generation time for the same answers.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ms_per_thousand(rules, texts, references) -> float:
    """Milliseconds to check every rule on 1,000 such texts (measured on `texts`, one by one)."""
    from cai.rules import check_all

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
    from cai.constitution import load as load_constitution
    from cai.inputs import load as load_prompts
    from cai.records import with_system
    from cai.rules import check_all

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
    long_ms = ms_per_thousand(const.rules, long, ["7"] * len(long))
    print(f"rules_ms_per_1000_long_answers ({args.long_words} words): {long_ms:.0f}")
    print(f"rules_share_of_generation: {rules_s / gen_s:.4f}")


if __name__ == "__main__":
    main()
