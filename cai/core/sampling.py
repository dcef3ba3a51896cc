"""Seeded choices: which principle judges which prompt in which round, and each request's seed.

Every choice is a pure function of (run seed, prompt id, step), never of batch order or chunking, so a
resumed or re-chunked run makes exactly the same choices as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import random

from cai.core.constitution import Principle


def stable_int(*parts) -> int:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFFFFFF


def stable_unit(*parts) -> float:
    """A number in [0, 1) fixed by `parts`: which side of a seeded split an id falls on."""
    return stable_int(*parts) / 0x80000000


def request_seed(seed: int, prompt_id: str, step: str) -> int:
    return stable_int("request", seed, prompt_id, step)


def sample_principles(
    principles: tuple[Principle, ...], k: int, seed: int, prompt_id: str, step: str
) -> list[Principle]:
    """k distinct principles, drawn by weight without replacement."""
    if k > len(principles):
        raise ValueError(f"cannot sample {k} principles from {len(principles)}")
    rng = random.Random(stable_int("principle", seed, prompt_id, step))
    pool, chosen = list(principles), []
    for _ in range(k):
        pick = rng.choices(range(len(pool)), weights=[p.weight for p in pool])[0]
        chosen.append(pool.pop(pick))
    return chosen
