"""Benchmark: pairs/s of the log-prob judge vs the chain-of-thought judge, on the same pairs, one run.

    python bench/judge.py [--quick] [--pairs N] [--model SPEC] [--principles-per-pair K]

Candidates are sampled once; then both judges label exactly those pairs with the same engine.
Prints `logprob_vs_cot: X` (goal >= 5).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 pairs, short reasoning: a few minutes on 2 CPU cores")
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--principles-per-pair", type=int, default=2)
    ap.add_argument("--cot-max-tokens", type=int, default=256)
    ap.add_argument("--no-reset", action="store_true", help="keep the prefix cache between the two judges")
    args = ap.parse_args()
    if args.quick:
        args.pairs, args.cot_max_tokens = 8, 128

    from cai import rl
    from cai.backends.vllm import VLLMBackend, on_gpu
    from cai.config import RunConfig
    from cai.constitution import load as load_constitution
    from cai.inputs import load as load_prompts
    from cai.prompts import Templates
    from cai.sl import ChunkResult

    const = load_constitution(ROOT / "constitution" / "harmless.yaml")
    templates = Templates()
    prompts, _ = load_prompts(str(ROOT / "data" / "prompts" / "red_team.jsonl"), limit=args.pairs)
    engine = VLLMBackend(args.model, max_model_len=4096, progress=False)
    device = "GPU" if on_gpu() else f"CPU ({platform.processor() or platform.machine()})"

    base = dict(constitution=str(const.path), max_tokens=96, principles_per_pair=args.principles_per_pair,
                cot_max_tokens=args.cot_max_tokens, model=args.model)
    pairs = rl._candidates(engine, prompts, const, RunConfig(prompts="-", out="-", **base), None, ChunkResult())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl"
        path.write_text("".join(json.dumps({"messages": list(p.messages), "responses": list(xy)}) + "\n"
                                for p, xy in pairs))
        kept = [p for p, _ in pairs]
        results = {}
        for judge in ("logprob", "cot"):
            config = RunConfig(prompts=str(path), out=tmp, stage="rl", pairs="file", judge=judge, **base)
            # Each judge starts from a cold prefix cache: the two templates share most of their text, so
            # whichever ran second would otherwise get its prefill nearly free.
            if not args.no_reset:
                engine.llm.reset_prefix_cache()
            t0 = time.perf_counter()
            out = rl.run(engine, kept, const, templates, config)
            seconds = time.perf_counter() - t0
            results[judge] = (len(out.rows), seconds, out.output_tokens, len(out.skips))
            for skip in out.skips[:2]:
                print(f"  {judge}: skipped {skip['id']}: {skip['reason'][:300]}")
    engine.close()

    print(f"model: {args.model}  device: {device}  pairs: {len(pairs)}  principles_per_pair: "
          f"{args.principles_per_pair}  requests per pair: {2 * args.principles_per_pair}")
    for judge, (rows, seconds, tokens, skipped) in results.items():
        print(f"judge_{judge}: {len(pairs)} pairs judged in {seconds:.2f}s = {len(pairs) / seconds:.3f} pairs/s "
              f"({rows} labelled, {skipped} without any complete vote; {tokens} generated tokens)")
    ratio = results["cot"][1] / results["logprob"][1]
    print(f"logprob_vs_cot: {ratio:.2f}")


if __name__ == "__main__":
    main()
