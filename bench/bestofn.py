"""Benchmark: best-of-N with process vs outcome supervision (Lightman et al. 2023, in miniature).

    python bench/bestofn.py [--quick] [--n N] [--max-tokens T] [--model SPEC] [--backbone SPEC] [--keep DIR]

On the shipped math word problems (data/prompts/math.jsonl, each with a reference answer), the pipeline a GPU
user runs, unchanged:

  1. `cai generate --stage steps --constitution reasoning`: N sampled solutions per problem, every step labelled
     by the model (AI feedback), the final answer graded against the reference (the accuracy rule);
  2. half of the problems (seeded) train two models with `cai train-pm --kind prm`: a process reward model on
     the AI step labels, and an outcome reward model on final-answer correctness (each solution as one step
     labelled correct or not: Lightman et al.'s ORM);
  3. on the other half, each problem's N solutions are ranked by the PRM's solution score (product of its
     step scores), by the ORM's score, by the judge's own solution_p (no training), and by majority vote over
     the final answers; the share of problems whose top-ranked solution is correct is printed for each, with
     pass@N (some solution is correct) and the mean correctness of one random solution as the bounds.

With the embedded 135M model few solutions are correct and the figures are small and noisy; they are printed
as measured. Prints `best_of_n_process`, `best_of_n_outcome`, `best_of_n_majority`.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def majority(solutions: list[dict]) -> dict | None:
    """The first solution whose normalised final answer is the most common one (None: no answer found)."""
    from cai.rules import final_answer

    answers = [(" ".join(a.lower().split()) if (a := final_answer(s["text"])) else None) for s in solutions]
    counted = Counter(a for a in answers if a)
    if not counted:
        return None
    top = counted.most_common(1)[0][0]
    return solutions[answers.index(top)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N=4 solutions of 128 tokens: minutes on 2 CPU cores")
    ap.add_argument("--n", type=int, default=8, help="solutions per problem")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--backbone", default="all-minilm-l6-v2", help="the PRM's and ORM's backbone")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", help="keep the run and the models in this folder")
    args = ap.parse_args()
    if args.quick:
        args.n, args.max_tokens = 4, 128

    from cai import backends, rewardmodels
    from cai.config import RunConfig
    from cai.generate import generate
    from cai.pm import train
    from cai.sampling import stable_unit
    from cai.store import RunStore

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        run = folder / "run"
        config = RunConfig(
            constitution="reasoning",
            prompts=str(ROOT / "data" / "prompts" / "math.jsonl"),
            out=str(run),
            stage="steps",
            model=args.model,
            max_tokens=args.max_tokens,
            solutions_per_prompt=args.n,
            seed=args.seed,
        )
        started = time.perf_counter()
        engine = backends.get("vllm").from_config(config)
        try:
            summary = generate(config, backend=engine, log=lambda *_: None)
        finally:
            engine.close()
        gen_seconds = time.perf_counter() - started
        rows = RunStore(run).read("steps")
        test_ids = {r["prompt_id"] for r in rows if stable_unit("bestofn", args.seed, r["prompt_id"]) < 0.5}
        train_rows = [r for r in rows if r["prompt_id"] not in test_ids]
        test_rows = [r for r in rows if r["prompt_id"] in test_ids]
        device = engine.__class__.__name__ + f" on {platform.processor() or platform.machine()}"
        print(
            f"{device}; model {args.model}: {len(rows)} solutions of {summary.prompts} problems in {gen_seconds:.0f} s "
            f"({len(train_rows)} train / {len(test_rows)} test solutions); "
            f"{sum(r['correct'] for r in rows)} correct final answers",
            flush=True,
        )

        process = folder / "process.jsonl"
        outcome = folder / "outcome.jsonl"
        process.write_text(
            "".join(
                json.dumps({k: r[k] for k in ("prompt", "completions", "labels", "step_p")}) + "\n" for r in train_rows
            )
        )
        outcome.write_text(
            "".join(
                json.dumps(
                    {
                        "prompt": r["prompt"],
                        "completions": ["\n".join(r["completions"])],
                        "step_p": [float(r["correct"])],
                    }
                )
                + "\n"
                for r in train_rows
            )
        )
        settings = dict(kind="prm", backbone=args.backbone, epochs=args.epochs, seed=args.seed, eval_fraction=0.0)
        for name, data in (("prm", process), ("orm", outcome)):
            m = train(str(data), str(folder / name), log=lambda *_: None, **settings)
            print(f"trained the {name.upper()} on {m['solutions']} solutions in {m['seconds']:.0f} s", flush=True)

        rank_rows = [rewardmodels.StepRow(r["prompt"], r["prompt"], r["completions"], None) for r in test_rows]
        whole = [rewardmodels.StepRow(r["prompt"], r["prompt"], ["\n".join(r["completions"])], None) for r in test_rows]
        prm_scores = rewardmodels.step_scores(str(folder / "prm"), rank_rows)["steps"]
        orm_scores = rewardmodels.step_scores(str(folder / "orm"), whole)["steps"]
        by_problem: dict[str, list[dict]] = {}
        for r, ps, os_ in zip(test_rows, prm_scores, orm_scores, strict=True):
            by_problem.setdefault(r["prompt_id"], []).append(
                {
                    "correct": bool(r["correct"]),
                    "text": "\n".join(r["completions"]),
                    "process": rewardmodels.solution_score(ps, "product") if ps else -1.0,
                    "outcome": os_[0] if os_ else -1.0,
                    "judge": r["solution_p"],
                }
            )
        problems = list(by_problem.values())
        shares = {}
        for ranker in ("process", "outcome", "judge"):
            shares[ranker] = sum(max(sols, key=lambda s: s[ranker])["correct"] for sols in problems) / len(problems)
        shares["majority"] = sum(bool((m := majority(sols)) and m["correct"]) for sols in problems) / len(problems)
        pass_n = sum(any(s["correct"] for s in sols) for sols in problems) / len(problems)
        one = sum(sum(s["correct"] for s in sols) / len(sols) for sols in problems) / len(problems)
        print(f"\n{len(problems)} test problems, N = {args.n}: share whose top-ranked solution is correct")
        for name, label in (
            ("process", "PRM (product of step scores)"),
            ("outcome", "ORM (final-answer correctness)"),
            ("judge", "judge's solution_p, untrained"),
            ("majority", "majority vote on final answers"),
        ):
            print(f"  {label:<34}{100 * shares[name]:6.1f}%")
        print(f"  {'pass@N (some solution correct)':<34}{100 * pass_n:6.1f}%")
        print(f"  {'one random solution':<34}{100 * one:6.1f}%")
        print(f"best_of_n_process: {shares['process']:.3f}")
        print(f"best_of_n_outcome: {shares['outcome']:.3f}")
        print(f"best_of_n_majority: {shares['majority']:.3f}")


if __name__ == "__main__":
    main()
