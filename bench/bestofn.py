"""Benchmark: best-of-N with every selector, the reward models trained on the model's own data (Let's Verify in
miniature), through `cai eval bestofn`.

    python bench/bestofn.py [--quick] [--n N] [--max-tokens T] [--model SPEC] [--backbone SPEC] [--keep DIR]

On the shipped math problems (data/prompts/math.jsonl, each with a reference answer), split in two halves
(seeded), on one engine:

  1. on the first half, the pipeline a user runs: `--stage steps` (N solutions per problem, every step labelled
     by the model) trains a process reward model, and `--stage sample --self-eval` (N answers ranked by the rules
     and P(True)) trains a preference model on its ranked pairs;
  2. on the other half, `cai eval bestofn` with both models and P(True): the share of problems whose chosen
     sample is right, for each selector, beside pass@1 and pass@N.

With the embedded 135M model few answers are right and the figures are small and noisy; they are printed as
measured. Prints `best_of_n_<selector>: share` for each selector.
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
    ap.add_argument("--quick", action="store_true", help="N=4 samples of 128 tokens: minutes on 2 CPU cores")
    ap.add_argument("--n", type=int, default=8, help="samples per problem")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--backbone", default="all-minilm-l6-v2", help="the PRM's and PM's backbone")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", help="keep the runs and the models in this folder")
    args = ap.parse_args()
    if args.quick:
        args.n, args.max_tokens = 4, 128

    from cai import backends
    from cai.commands.evaluation import bestofn
    from cai.config import RunConfig
    from cai.core.sampling import stable_unit
    from cai.generate import generate
    from cai.train import train

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        lines = (ROOT / "data" / "prompts" / "math.jsonl").read_text().splitlines()
        halves = {"train": folder / "train.jsonl", "test": folder / "test.jsonl"}
        for name, path in halves.items():
            picked = [ln for ln in lines if (stable_unit("bestofn", args.seed, ln) < 0.5) == (name == "test")]
            path.write_text("\n".join(picked) + "\n")
        common = dict(
            constitution="reasoning", model=args.model, max_tokens=args.max_tokens, seed=args.seed, samples=args.n
        )
        started = time.perf_counter()
        engine = backends.get("vllm").from_config(RunConfig(**common))
        try:
            quiet = dict(backend=engine, log=lambda *_: None)
            steps = RunConfig(
                **common,
                prompts=str(halves["train"]),
                out=str(folder / "steps"),
                stage="steps",
                solutions_per_prompt=args.n,
            )
            generate(steps, **quiet)
            sampled = RunConfig(
                **common, prompts=str(halves["train"]), out=str(folder / "sampled"), stage="sample", self_eval=True
            )
            generate(sampled, **quiet)
            settings = dict(log=lambda *_: None, backbone=args.backbone, epochs=args.epochs, seed=args.seed)
            prm = train(str(folder / "steps"), str(folder / "prm"), kind="prm", eval_fraction=0.0, **settings)
            pm = train(str(folder / "sampled"), str(folder / "pm"), eval_fraction=0.0, **settings)
            print(
                f"trained the PRM on {prm['solutions']} solutions and the PM on {pm['pairs']} ranked pairs of the "
                f"first half ({time.perf_counter() - started:.0f} s so far)",
                flush=True,
            )
            evaluation = RunConfig(
                **common,
                out=str(folder / "bestofn"),
                self_eval=True,
                pm=str(folder / "pm"),
                prm=str(folder / "prm"),
            )
            r = bestofn.evaluate(evaluation, str(halves["test"]), **quiet)
        finally:
            engine.close()
        device = f"{engine.__class__.__name__} on {platform.processor() or platform.machine()}"
        print(f"{device}; {time.perf_counter() - started:.0f} s in all\n")
        print("\n".join(bestofn.lines(r)))
        for name, share in r["best_of_n"].items():
            print(f"best_of_n_{name}: {share:.3f}")
        print(f"pass_at_1: {r['pass_at_1']:.3f}")
        print(f"pass_at_n: {r['pass_at_n']:.3f}")


if __name__ == "__main__":
    main()
