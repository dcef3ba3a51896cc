"""Benchmark: the judges on the same pairs in one run: pairs/s of the log-prob judge vs the
chain-of-thought judge, and the GRM judge's inference-time scaling table (k = 1, 2, 4, 8 samples:
pairs/s, coverage and agreement with the log-prob judge), with its scores read from token probabilities
(`--grm-scores read`, the default) and parsed from text (`parse`, the earlier way).

    python bench/judge.py [--quick] [--pairs N] [--model SPEC] [--principles-per-pair K] [--grm-k 1,2,4,8]

Candidates are sampled once; every judge then labels exactly those pairs with the same engine, each
from a cold prefix cache. Prints `logprob_vs_cot: X` (goal >= 5), the GRM table, and for each k
`grm_read_vs_parse_coverage` and `grm_read_vs_parse_pairs_per_s`.
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
    ap.add_argument("--principles-per-pair", type=int, default=4, help="default: cai generate's default")
    ap.add_argument("--cot-max-tokens", type=int, default=256)
    ap.add_argument("--no-reset", action="store_true", help="keep the prefix cache between the judges")
    ap.add_argument("--grm-k", default="1,2,4,8", help="GRM sample counts to measure ('' to skip)")
    args = ap.parse_args()
    if args.quick:
        args.pairs, args.cot_max_tokens = 8, 128

    from cai.backends.vllm import VLLMBackend, on_gpu
    from cai.config import RunConfig
    from cai.core.constitution import load as load_constitution
    from cai.core.context import RunContext
    from cai.core.inputs import load as load_prompts
    from cai.core.prompts import Templates
    from cai.core.records import ChunkResult
    from cai.core.store import RunStore
    from cai.stages.rl import RLStage

    const = load_constitution(ROOT / "constitution" / "harmless.yaml")
    templates = Templates()
    prompts, _ = load_prompts(str(ROOT / "data" / "prompts" / "red_team.jsonl"), limit=args.pairs)
    engine = VLLMBackend(args.model, max_model_len=4096, progress=False)
    device = "GPU" if on_gpu() else f"CPU ({platform.processor() or platform.machine()})"

    base = dict(constitution=str(const.path), max_tokens=96, model=args.model)
    sampled = RunConfig(prompts="-", out="-", **base)
    ctx = RunContext(sampled, const, templates, RunStore(ROOT / "data" / "runs" / "bench"), backend=engine)
    pairs = [(p.prompt, (p.first, p.second)) for _, p in RLStage(sampled).pairs(ctx, prompts, ChunkResult())]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl"
        path.write_text(
            "".join(json.dumps({"messages": list(p.messages), "responses": list(xy)}) + "\n" for p, xy in pairs)
        )
        kept = [p for p, _ in pairs]
        results, chosen = {}, {}
        pairwise = {"principles_per_pair": args.principles_per_pair}
        runs = [("logprob", pairwise), ("cot", {**pairwise, "cot_max_tokens": args.cot_max_tokens})] + [
            (f"grm {path} k={k}", {"grm_samples": int(k), "cot_max_tokens": args.cot_max_tokens, "grm_scores": path})
            for k in args.grm_k.split(",")
            if k.strip()
            for path in ("parse", "read")
        ]
        for judge, extra in runs:
            config = RunConfig(
                prompts=str(path), out=tmp, stage="rl", pairs="file", judge=judge.split()[0], **base, **extra
            )
            # Each judge starts from a cold prefix cache: the two templates share most of their text, so
            # whichever ran second would otherwise get its prefill nearly free.
            if not args.no_reset:
                engine.llm.reset_prefix_cache()
            stage = RLStage(config)
            judged = RunContext(config, const, templates, RunStore(tmp), backend=engine)
            stage.check(judged)
            t0 = time.perf_counter()
            out = stage.run(judged, kept)
            seconds = time.perf_counter() - t0
            results[judge] = (len(out.rows), seconds, out.output_tokens, len(out.skips))
            chosen[judge] = {r["id"]: r["chosen"][0]["content"] for r in out.rows if not r["tie"]}
            for skip in out.skips[:2]:
                print(f"  {judge}: skipped {skip.id}: {skip.reason[:300]}")
    engine.close()

    print(
        f"model: {args.model}  device: {device}  pairs: {len(pairs)}  principles_per_pair: "
        f"{args.principles_per_pair}  requests per pair: {2 * args.principles_per_pair}"
    )
    for judge in ("logprob", "cot"):
        rows, seconds, tokens, skipped = results[judge]
        print(
            f"judge_{judge}: {len(pairs)} pairs judged in {seconds:.2f}s = {len(pairs) / seconds:.3f} pairs/s "
            f"({rows} labelled, {skipped} without any complete vote; {tokens} generated tokens)"
        )
    ratio = results["cot"][1] / results["logprob"][1]
    print(f"logprob_vs_cot: {ratio:.2f}")
    grm_runs = [j for j in results if j.startswith("grm")]
    if grm_runs:
        print("\nGRM inference-time scaling (same pairs; agreement = same chosen answer as the log-prob judge,")
        print("over pairs both labelled without a tie; coverage = labelled pairs / pairs):")
        print(f"{'scores':>7} {'k':>3} {'pairs/s':>9} {'coverage':>9} {'ties':>5} {'agreement':>10} {'tokens':>8}")
        for judge in grm_runs:
            rows, seconds, tokens, _ = results[judge]
            both = [i for i in chosen[judge] if i in chosen["logprob"]]
            agree = f"{sum(chosen[judge][i] == chosen['logprob'][i] for i in both) / len(both):.2f}" if both else "n/a"
            ties = rows - len(chosen[judge])
            path, k = judge.split()[1], judge.split("=")[1]
            print(
                f"{path:>7} {k:>3} {len(pairs) / seconds:>9.3f} {rows / len(pairs):>9.2f} {ties:>5} {agree:>10} "
                f"{tokens:>8}"
            )
        for k in dict.fromkeys(j.split("=")[1] for j in grm_runs):
            (r_rows, r_s, _, _), (p_rows, p_s, _, _) = results[f"grm read k={k}"], results[f"grm parse k={k}"]
            print(f"grm_read_vs_parse_coverage k={k}: {r_rows / len(pairs):.2f} vs {p_rows / len(pairs):.2f}")
            print(
                f"grm_read_vs_parse_pairs_per_s k={k}: {p_s / r_s:.2f} ({len(pairs) / r_s:.3f} vs "
                f"{len(pairs) / p_s:.3f} pairs/s)"
            )


if __name__ == "__main__":
    main()
