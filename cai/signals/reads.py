"""Reading a choice from the model: P(option) from the next token's log-probs, asked in both option orders.

One question is asked twice: once with the thing being judged shown as option (A), once as (B). Each ask is
one forward pass that continues an answer prefix ending in "(" and reads the log-probs of the option letters.
A model that always says (A) reads 1.0 then 0.0: the mean of the two orders is 0.5, not 1.0, which is what
makes a small judge usable (Lee et al. 2023 for pairs, Kadavath et al. 2022 for P(True), both here). The
pairwise judge, the step judge and self-evaluation ask through `ask_both`; every ask of one call goes to the
engine at once, so asks that share a prefix (a solution's steps, a prompt's answers) are prefilled once.
"""

from __future__ import annotations

from dataclasses import dataclass

from cai.backends.base import Backend, Completion, Sampling, option_probability
from cai.core.records import ChunkResult, Failure

OPTIONS = ("A", "B")


@dataclass(frozen=True)
class TwoOrders:
    """One question as two chats: `first` shows the judged thing as (A), `second` as (B). A Failure in a slot
    (an earlier step, such as a chain of thought, gave nothing to ask) is passed through unasked."""

    first: list[dict] | Failure
    second: list[dict] | Failure


@dataclass(frozen=True)
class TwoOrderRead:
    """P(the judged thing) with it shown as (A) (`p_ab`) and as (B) (`p_ba`), or why a read gave none."""

    p_ab: float | Failure
    p_ba: float | Failure

    @property
    def both(self) -> bool:
        return isinstance(self.p_ab, float) and isinstance(self.p_ba, float)

    @property
    def p(self) -> float | None:
        """The mean of both orders (None unless both were read: one order alone is position-biased)."""
        if isinstance(self.p_ab, float) and isinstance(self.p_ba, float):
            return (self.p_ab + self.p_ba) / 2
        return None

    @property
    def failures(self) -> list[tuple[str, Failure]]:
        """(order, failure) for each order that gave no probability: ab = shown as (A)."""
        return [(order, p) for order, p in (("ab", self.p_ab), ("ba", self.p_ba)) if isinstance(p, Failure)]


def read_options(
    c: Completion, result: ChunkResult, options: tuple[str, str] = OPTIONS, what: str = "read"
) -> float | Failure:
    """P(first option) / (P(first) + P(second)) from one ask's option log-probs, or why there is none."""
    result.tally(c)
    if not c.ok:
        return Failure(f"{what}: {c.error}")
    missing = [o for o in options if o not in c.option_logprobs]
    if missing:
        return Failure(f"{what}: no log-prob for option {missing[0]}")
    return option_probability(c.option_logprobs, *options)


def ask(
    engine: Backend,
    chats: list[list[dict] | Failure],
    result: ChunkResult,
    *,
    label: str,
    what: str = "read",
    options: tuple[str, str] = OPTIONS,
    share_prefix: bool = True,
) -> list[float | Failure]:
    """P(first option) of every chat, in one engine call (a Failure in the input is passed through).
    `share_prefix=False` (benchmarks only) keeps every ask from reusing another's cached prefix."""
    live = [(i, chat) for i, chat in enumerate(chats) if not isinstance(chat, Failure)]
    out: list[float | Failure] = [chat if isinstance(chat, Failure) else Failure("unasked") for chat in chats]
    if live:
        sampling = Sampling(options=options, continue_final=True, share_prefix=share_prefix, label=label)
        completions = engine.generate([chat for _, chat in live], sampling)
        for (i, _), (c,) in zip(live, completions, strict=True):
            out[i] = read_options(c, result, options, what)
    return out


def ask_both(
    engine: Backend,
    questions: list[TwoOrders],
    result: ChunkResult,
    *,
    label: str,
    what: str = "read",
    share_prefix: bool = True,
) -> list[TwoOrderRead]:
    """Every question in both orders, in one engine call. The second order's P(A) is P(the other option), so
    its read is 1 - P(A) (`from_asks`): both reads are P(the judged thing)."""
    chats = [chat for q in questions for chat in (q.first, q.second)]
    got = ask(engine, chats, result, label=label, what=what, share_prefix=share_prefix)
    return [from_asks(got[2 * i], got[2 * i + 1]) for i in range(len(questions))]


def from_asks(p_a_first: float | Failure, p_a_second: float | Failure) -> TwoOrderRead:
    """The two-order read from P(A) asked with the judged thing as (A), and P(A) asked with it as (B) (where (A)
    is the other option, so P(the judged thing) is 1 - P(A) there)."""
    return TwoOrderRead(p_a_first, 1.0 - p_a_second if isinstance(p_a_second, float) else p_a_second)
