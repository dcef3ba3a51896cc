"""The Judge interface: given pairs of answers, say how likely the first is the better, with evidence."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from cai.core.records import Failure

if TYPE_CHECKING:
    import pyarrow as pa

    from cai.config import RunConfig
    from cai.core.context import RunContext
    from cai.core.inputs import Prompt
    from cai.core.prompts import TemplateSpec
    from cai.core.records import ChunkResult


@dataclass(frozen=True)
class Pair:
    """Two candidate answers to one prompt, in the order the candidates came (not the order shown)."""

    prompt: Prompt
    first: str
    second: str


class Evidence(Protocol):
    """A record of how a verdict was reached, written to the preference row from the chosen answer's side: `row`
    returns an instance of the row type the judge declares for the column (`Judge.evidence`)."""

    def row(self, first_wins: bool) -> Any: ...


@dataclass(frozen=True)
class VoteRow:
    """A vote as the preference split stores it: seen from the chosen answer's side."""

    principle: str  # the principle, or the rule's id for a rule's vote
    p_chosen_ab: float
    p_chosen_ba: float
    kind: str  # ai or rule
    weight: float


@dataclass(frozen=True)
class Vote:
    """One principle's read in both orders, seen from the first candidate: `p_ab` = P(first is better) with
    it shown as (A), `p_ba` = the same with it shown as (B)."""

    principle: str
    p_ab: float
    p_ba: float
    kind: str = "ai"  # "ai": the judge model's read; "rule": a rule checked by code (then p_ab == p_ba)
    weight: float = 1.0

    def row(self, first_wins: bool) -> VoteRow:
        a, b = (self.p_ab, self.p_ba) if first_wins else (1 - self.p_ba, 1 - self.p_ab)
        # When the second candidate is chosen, it was shown first in the BA order, second in the AB order.
        return VoteRow(self.principle, a, b, self.kind, self.weight)


@dataclass(frozen=True)
class FailedRead:
    """A read that produced no probability, with its reason (`order`: ab = first candidate shown first)."""

    principle: str
    order: str
    reason: str

    def row(self, first_wins: bool) -> FailedRead:
        return self


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
    evidence        the preference-split columns it fills beyond the shared ones: column name -> the row type
                    (a dataclass) of each record in that list column (cai.core.columns)
    """

    name: ClassVar[str]
    settings: ClassVar[tuple[type, ...]] = ()
    templates: ClassVar[tuple[TemplateSpec, ...]] = ()
    evidence: ClassVar[dict[str, type]] = {}

    def __init__(self, config: RunConfig):
        self.config = config

    def evidence_fields(self) -> tuple[pa.Field, ...]:
        """The parquet fields of `evidence`."""
        import pyarrow as pa

        from cai.core.columns import arrow_type

        return tuple(pa.field(name, pa.list_(arrow_type(t))) for name, t in self.evidence.items())

    def needs_engine(self) -> bool:
        """Whether `judge` asks the engine (a judge of rules checked by code may not)."""
        return True

    def check(self, ctx: RunContext) -> None:
        """Everything that can be wrong before the engine starts; raise CaiError naming it."""

    def judge(self, ctx: RunContext, pairs: list[Pair], result: ChunkResult) -> list[Verdict | Failure]:
        raise NotImplementedError

    def describe(self) -> Description:
        raise NotImplementedError
