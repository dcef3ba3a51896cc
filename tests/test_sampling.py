"""Principle sampling: seeded, order-independent, weighted, without replacement."""

from collections import Counter

from cai.core.constitution import Principle
from cai.core.sampling import request_seed, sample_principles

PRINCIPLES = tuple(Principle(id=f"p{i}", critique="c", revision="r", weight=1.0) for i in range(6))


def test_same_seed_same_choices_whatever_the_order():
    ids = [f"id{i}" for i in range(50)]
    first = {i: sample_principles(PRINCIPLES, 1, 1, i, "r1")[0].id for i in ids}
    again = {i: sample_principles(PRINCIPLES, 1, 1, i, "r1")[0].id for i in reversed(ids)}
    assert first == again
    other = {i: sample_principles(PRINCIPLES, 1, 2, i, "r1")[0].id for i in ids}
    assert other != first
    rounds = {i: sample_principles(PRINCIPLES, 1, 1, i, "r2")[0].id for i in ids}
    assert rounds != first


def test_k_distinct_principles():
    for i in range(100):
        chosen = sample_principles(PRINCIPLES, 4, 0, f"id{i}", "rl")
        assert len({p.id for p in chosen}) == 4


def test_weights_shift_the_draw():
    weighted = (Principle("heavy", "c", "r", weight=9.0), Principle("light", "c", "r", weight=1.0))
    counts = Counter(sample_principles(weighted, 1, 0, f"id{i}", "r")[0].id for i in range(2000))
    assert 0.85 < counts["heavy"] / 2000 < 0.95


def test_every_principle_is_used():
    counts = Counter(sample_principles(PRINCIPLES, 1, 0, f"id{i}", "r")[0].id for i in range(600))
    assert set(counts) == {p.id for p in PRINCIPLES}


def test_request_seeds_are_stable_and_distinct():
    assert request_seed(0, "a", "initial") == request_seed(0, "a", "initial")
    assert request_seed(0, "a", "initial") != request_seed(0, "b", "initial")
