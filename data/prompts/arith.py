"""Writes data/prompts/arith.jsonl: easy arithmetic with reference answers, seeded, split into train and test.

    python data/prompts/arith.py [--seed 0] [--per-kind 40] [--test-share 0.3] [--out data/prompts/arith.jsonl]

The problem set of bench/loops.py (R1's rejection sampling -> SFT -> pass@1): easy enough that the embedded 135M
model is sometimes right (see arith.md), in four kinds of rising difficulty. Each line: `id`, `prompt`,
`reference`, `subset` (the kind) and `split` (train or test, a fixed share of each kind). The same seed writes the
same file, byte for byte; no two problems are the same question.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent


def problems(rng: random.Random, kind: str, count: int) -> list[tuple[str, int]]:
    """`count` different (question, answer) pairs of one kind."""
    made: dict[str, int] = {}
    while len(made) < count:
        if kind == "add-1digit":
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            q, answer = f"What is {a} + {b}?", a + b
        elif kind == "add-2digit":
            a, b = rng.randint(10, 49), rng.randint(2, 9)
            q, answer = f"What is {a} + {b}?", a + b
        elif kind == "subtract":
            a = rng.randint(6, 19)
            b = rng.randint(1, a - 1)
            q, answer = f"What is {a} - {b}?", a - b
        elif kind == "multiply":
            a, b = rng.randint(2, 9), rng.randint(2, 9)
            q, answer = f"What is {a} x {b}?", a * b
        else:
            raise ValueError(kind)
        made.setdefault(q, answer)
    return list(made.items())


KINDS = ("add-1digit", "add-2digit", "subtract", "multiply")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-kind", type=int, default=40, help="problems of each kind")
    ap.add_argument("--test-share", type=float, default=0.3, help="share of each kind held out for testing")
    ap.add_argument("--out", default=str(HERE / "arith.jsonl"))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    lines = []
    for kind in KINDS:
        made = problems(rng, kind, args.per_kind)
        test = round(len(made) * args.test_share)
        for i, (question, answer) in enumerate(made):
            record = {
                "id": f"{kind}-{i:03d}",
                "prompt": question,
                "reference": str(answer),
                "subset": kind,
                "split": "test" if i < test else "train",
            }
            lines.append(json.dumps(record))
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"{args.out}: {len(lines)} problems ({len(KINDS)} kinds x {args.per_kind}, {args.test_share:.0%} held out)")


if __name__ == "__main__":
    main()
