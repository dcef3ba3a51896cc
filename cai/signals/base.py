"""The Signal interface: anything that scores an answer (the rules, P(True), a PM, a PRM, a GRM judgement).

A signal is one module and one entry point in the `cai.signals` group, as a stage or a judge is. Everything that
scores answers derives from the registry: the sample stage (a value per sample, a column of the samples split),
`cai serve` (a component of each reward), the TRL reward functions (`cai.rewards`), `cai eval bestofn` (a
selector) and `--weights` (a weight in the combined score). So the same prompt, answer and model get the same
value from every entry point, and a new signal appears in all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from cai.config import RunConfig
    from cai.core.constitution import Constitution
    from cai.core.context import RunContext
    from cai.core.prompts import TemplateSpec
    from cai.core.records import ChunkResult, Failure


@dataclass(frozen=True)
class Item:
    """One answer to score: the prompt as chat messages, the whole completion (reasoning and answer: each signal
    reads the part the constitution's `scope` names), and the reference when the prompt has one."""

    prompt: Sequence[dict]
    text: str
    reference: str | None = None


@dataclass(frozen=True)
class Score:
    """A signal's value for one item. `value` is None where the signal has nothing to say of it without having
    failed (no rule applies to it); `detail` is what the value was made of, kept beside it (the rules' results, a
    PRM's step scores); `notes` name parts that could not be scored, with why (the value stands without them)."""

    value: float | None
    detail: Any = None
    notes: tuple[str, ...] = ()


class Signal:
    """A signal. Subclasses set the class attributes and implement `enabled` and `score`; the rest has defaults.

    name            the name in --weights, in the samples split's columns, in `cai serve`'s components
    label           how reports name it ("P(True)")
    column          the samples split's column of its value (its name unless that is taken)
    detail_column   the column of its detail, and `detail_type` that column's Python type (cai.core.columns)
    settings        its settings groups (cai.settings): flags of `cai generate`, `cai eval bestofn`, `cai serve`
    switch          the setting that turns it on: named when --weights gives it a weight it cannot have
    reads_reference whether it reads the reference answer (the answer key): a selector or a policy's reward
                    that must work without one cannot use it
    uses_engine     whether it asks the model (it then needs the engine started)
    batches         whether requests from many callers gain from one batch (a trained model's forward pass):
                    `cai serve` then gathers concurrent requests for it
    order           where it stands among the signals in reports (smaller first)
    reward_name     its TRL reward function's name (TRL logs rewards by it); its name unless set

    The value is on the signal's own scale (a PM's reward in standard units, a GRM score on 1-9); `unit` maps it
    onto [0, 1] for the combined score.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    column: ClassVar[str | None] = None
    detail_column: ClassVar[str | None] = None
    detail_type: ClassVar[Any] = None
    settings: ClassVar[tuple[type, ...]] = ()
    switch: ClassVar[str | None] = None
    reads_reference: ClassVar[bool] = False
    uses_engine: ClassVar[bool] = False
    batches: ClassVar[bool] = False
    order: ClassVar[int] = 100
    reward_name: ClassVar[str | None] = None

    def __init__(self, config: RunConfig):
        self.config = config

    @classmethod
    def value_column(cls) -> str:
        return cls.column or cls.name

    def enabled(self) -> bool:
        """Whether the run computes it (its switch is on, its model given)."""
        raise NotImplementedError

    def needs_engine(self, ctx: RunContext) -> bool:
        return self.uses_engine and self.enabled()

    def template_specs(self) -> tuple[TemplateSpec, ...]:
        """The templates it renders, checked before the engine starts."""
        return ()

    def check(self, ctx: RunContext) -> None:
        """Everything that can be wrong before the engine starts (a model folder of the wrong kind): raise CaiError."""

    def warm(self) -> None:
        """Load what it needs (a trained model) before the first item, so no caller pays for it."""

    def score(self, ctx: RunContext, items: list[Item], result: ChunkResult) -> list[Score | Failure]:
        """A Score or a Failure (with its reason) for every item, in order, in one batched pass."""
        raise NotImplementedError

    def default_weight(self, constitution: Constitution) -> float:
        """Its weight in the combined scores when --weights names none."""
        return 1.0

    def unit(self, value: float) -> float:
        """The value on [0, 1], for the combined score."""
        return value


def by_prompt(items: Sequence[Item]) -> list[list[int]]:
    """The items' indices grouped by prompt, in order of first appearance: one prompt's answers (a GRPO group, a
    prompt's N samples) are judged together by a GRM and shown to P(True) as the model's other samples."""
    from cai.core.inputs import prompt_id

    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(prompt_id(list(item.prompt)), []).append(i)
    return list(groups.values())
