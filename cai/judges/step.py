"""The StepJudge interface: given solutions split into steps, say how likely each step is correct.

Process supervision (Lightman et al. 2023) with AI feedback. A step judge is a plug-in found by name through
the `cai.step_judges` entry-point group (`--step-judge`), as a pairwise judge is through `cai.judges`; the
steps stage and `cai eval steps` ask the same one. The built-in one, `logprob` (cai.judges.step_logprob), reads
a Yes/No question about each step in both option orders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from cai import plugins
from cai.core import steps as steps_mod
from cai.errors import CaiError
from cai.settings import setting

if TYPE_CHECKING:
    from cai.config import RunConfig
    from cai.core.context import RunContext
    from cai.core.inputs import Prompt
    from cai.core.prompts import TemplateSpec
    from cai.core.records import ChunkResult, Failure


@dataclass(frozen=True)
class StepJudgingOptions:
    """Shared by everything that labels steps: the steps stage and `cai eval steps`."""

    step_judge: str = setting(
        "logprob",
        "The judge that labels each step (registered under the 'cai.step_judges' entry points).",
        identity=True,
        selects="step_judge",
    )
    neutral_band: str = setting(
        steps_mod.NEUTRAL_BAND,
        "The neutral band LOW,HIGH of P(good step): a step read below it is negative, above it positive, within it "
        "neutral (PRM800K's three classes; the first negative step is the first mistake).",
        identity=True,
    )


def neutral_band(config: RunConfig) -> tuple[float, float]:
    """The declared neutral band; a bad one is CaiError naming the flag (checked before the engine starts)."""
    text = config.options(StepJudgingOptions).neutral_band
    try:
        return steps_mod.band(text)
    except ValueError as e:
        raise CaiError(f"--neutral-band {e}") from None


@dataclass(frozen=True)
class Solution:
    """One solution to a prompt, already split into steps. `index` tells a prompt's solutions apart;
    `source` says where it came from (sampled, sl initial, sl revision 2, file)."""

    prompt: Prompt
    index: int
    source: str
    steps: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.steps)


@dataclass(frozen=True)
class StepVote:
    """One principle's read of one step in both orders: P(Yes) with Yes shown as (A) (`p_yes_ab`), and with Yes
    shown as (B) (`p_yes_ba`). The field names are the split's column names."""

    step: int
    principle: str
    p_yes_ab: float
    p_yes_ba: float

    @property
    def p(self) -> float:
        return (self.p_yes_ab + self.p_yes_ba) / 2


@dataclass(frozen=True)
class StepFailure:
    step: int
    principle: str
    order: str
    reason: str


@dataclass(frozen=True)
class StepVerdict:
    """A judged solution: `step_p[k]` is P(step k is correct and acceptable), the soft label of every step
    (the steps after the first mistake are read too: a setting may label them)."""

    solution: Solution
    principles: tuple[str, ...]
    step_p: tuple[float, ...]
    votes: tuple[StepVote, ...]
    failed: tuple[StepFailure, ...]

    def labelled(self, neutral: tuple[float, float], after_error: bool = False) -> steps_mod.Labelling:
        """Its steps' classes and labels under the neutral band, up to the first mistake (or every step)."""
        return steps_mod.label(self.step_p, neutral, after_error)

    @property
    def solution_p(self) -> float:
        return steps_mod.aggregate(self.step_p, "product")


class StepJudge:
    """A step judge. Subclasses set the class attributes and implement `judge` (one batched pass over the
    solutions, returning one StepVerdict or Failure per solution, in order) and `describe`.

    settings   its settings groups (cai.settings); the CLI makes flags of them
    templates  the templates it renders, with sample values, checked before the engine starts
    """

    name: ClassVar[str]
    settings: ClassVar[tuple[type, ...]] = ()
    templates: ClassVar[tuple[TemplateSpec, ...]] = ()

    def __init__(self, config: RunConfig):
        self.config = config

    def check(self, ctx: RunContext) -> None:
        """Everything that can be wrong before the engine starts; raise CaiError naming it."""

    def needs_engine(self, ctx: RunContext) -> bool:
        return True

    def judge(self, ctx: RunContext, solutions: list[Solution], result: ChunkResult) -> list[StepVerdict | Failure]:
        raise NotImplementedError

    def describe(self) -> str:
        """A sentence for the dataset card: how each step was labelled."""
        raise NotImplementedError


def get(name: str) -> type[StepJudge]:
    """The step judge class registered under `name` (as `cai.judges.get` finds a judge)."""
    cls = plugins.get("step_judge", name)
    if not (isinstance(cls, type) and issubclass(cls, StepJudge)):
        raise CaiError(f"--step-judge {name}: {cls!r} is not a StepJudge")
    return cls
