"""The Judge interface: given pairs of answers, say how likely the first is the better, with evidence."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from cai.records import Failure

if TYPE_CHECKING:
    import pyarrow as pa

    from cai.inputs import Prompt
    from cai.prompts import TemplateSpec
    from cai.records import ChunkResult
    from cai.run import RunContext


@dataclass(frozen=True)
class Pair:
    """Two candidate answers to one prompt, in the order the candidates came (not the order shown)."""

    prompt: Prompt
    first: str
    second: str


class Evidence(Protocol):
    """A record of how a verdict was reached, written to the preference row from the chosen answer's side."""

    def row(self, first_wins: bool) -> dict: ...


@dataclass(frozen=True)
class Vote:
    """One principle's read in both orders, seen from the first candidate: `p_ab` = P(first is better) with
    it shown as (A), `p_ba` = the same with it shown as (B)."""

    principle: str
    p_ab: float
    p_ba: float
    kind: str = "ai"  # "ai": the judge model's read; "rule": a rule checked by code (then p_ab == p_ba)
    weight: float = 1.0

    def row(self, first_wins: bool) -> dict:
        a, b = (self.p_ab, self.p_ba) if first_wins else (1 - self.p_ba, 1 - self.p_ab)
        # When the second candidate is chosen, it was shown first in the BA order, second in the AB order.
        return {
            "principle": self.principle,
            "p_chosen_ab": a,
            "p_chosen_ba": b,
            "kind": self.kind,
            "weight": self.weight,
        }


@dataclass(frozen=True)
class FailedRead:
    """A read that produced no probability, with its reason (`order`: ab = first candidate shown first)."""

    principle: str
    order: str
    reason: str

    def row(self, first_wins: bool) -> dict:
        return {"principle": self.principle, "order": self.order, "reason": self.reason}


@dataclass(frozen=True)
class Verdict:
    """A judged pair: P(first is better) and the evidence behind it. `evidence` maps the judge's own
    columns (declared in `Judge.evidence_fields`) to their records."""

    p_first: float
    votes: tuple[Vote, ...] = ()
    failed: tuple[FailedRead, ...] = ()
    evidence: Mapping[str, tuple[Evidence, ...]] = field(default_factory=dict)

    @property
    def first_wins(self) -> bool:
        return self.p_first >= 0.5

    @property
    def p_chosen(self) -> float:
        return self.p_first if self.first_wins else 1 - self.p_first


@dataclass(frozen=True)
class Description:
    """How a judge describes its labels to people: in the dataset card, `cai stats` and the run summary."""

    label_source: str  # a sentence for the card: where p_chosen comes from
    failures: str  # what its failed_votes are, e.g. "failed CoT votes"
    pairwise_votes: bool  # whether its `votes` are two-order reads (position consistency applies)


class Judge:
    """A judge. Subclasses set the class attributes and implement `judge` (one batched pass over a chunk's
    pairs, returning one Verdict or Failure per pair, in order) and `describe`.

    settings        its settings groups (cai.settings); the CLI makes flags of them
    templates       the templates it renders, with sample values, checked before the engine starts
    """

    name: ClassVar[str]
    settings: ClassVar[tuple[type, ...]] = ()
    templates: ClassVar[tuple[TemplateSpec, ...]] = ()

    def __init__(self, config: Any):
        self.config = config

    def evidence_fields(self) -> list[pa.Field]:
        """The preference-split columns this judge fills beyond the shared ones."""
        return []

    def needs_engine(self) -> bool:
        """Whether `judge` asks the engine (a judge of rules checked by code may not)."""
        return True

    def check(self, ctx: RunContext) -> None:
        """Everything that can be wrong before the engine starts; raise CaiError naming it."""

    def judge(self, ctx: RunContext, pairs: list[Pair], result: ChunkResult) -> list[Verdict | Failure]:
        raise NotImplementedError

    def describe(self) -> Description:
        raise NotImplementedError
