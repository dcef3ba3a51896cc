"""Process supervision: solutions split into steps, each step labelled by the step judge under the constitution.

Rows are TRL's stepwise-supervision format with the soft labels and every read beside the boolean labels. As in
PRM800K, a solution is labelled up to its first mistake: `completions` and `labels` (what a PRM trains on) stop
at the first negative step unless --label-after-first-error; `steps` holds the whole solution."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cai.core import columns
from cai.core import steps as steps_mod
from cai.core.columns import Messages
from cai.core.context import RunContext
from cai.core.inputs import Prompt
from cai.core.prompts import TemplateSpec
from cai.core.records import ChunkResult, Failure
from cai.core.rules import RuleResult, check_all
from cai.core.views import StepsView
from cai.errors import CaiError
from cai.judges import step as stepjudge
from cai.judges.step import Solution, StepFailure, StepJudgingOptions, StepVerdict, StepVote
from cai.settings import setting
from cai.stages import candidates
from cai.stages.base import Stage
from cai.stages.candidates import Candidate, Candidates
from cai.stages.steps_report import StepsReport

if TYPE_CHECKING:
    from cai.config import RunConfig

SOURCES = {"sampled": candidates.SAMPLED, "sl": candidates.TRACE, "file": candidates.FILE}
Steps = str | tuple[str, ...]  # a solution: text to split, or its steps already


@dataclass(frozen=True)
class StepsOptions:
    solutions: str = setting(
        "sampled",
        "Where the solutions come from: sampled (the model, --solutions-per-prompt each), sl (the initial answer "
        "and every revision of an SL run) or file (records with a prompt and 'solution' text, 'steps' (a list), "
        "or 'solutions' (a list of either)).",
        identity=True,
        choices=lambda: list(SOURCES),
    )
    solutions_from: str | None = setting(
        None,
        "With --solutions sl: an SL run folder (default: this run's sft/ split); with --solutions file: the "
        "solutions file (default: the prompts file).",
        identity=True,
        path=True,
        when=("solutions", ("sl", "file")),
    )
    solutions_per_prompt: int = setting(
        4,
        "Solutions sampled per prompt (Lightman et al. sampled many per problem).",
        identity=True,
        minimum=1,
        when=("solutions", ("sampled",)),
    )
    solution_temperature: float = setting(
        1.0,
        "Temperature of the sampled solutions (they need diversity: best-of-N ranks them).",
        identity=True,
        minimum=0,
        maximum=5,
        when=("solutions", ("sampled",)),
        temperature=True,
    )
    label_after_first_error: bool = setting(
        False,
        "Label and train on the steps after the first mistake too (PRM800K labels up to the first mistake, and "
        "the steps after it, which build on a mistake, are left out of PRM training).",
        identity=True,
    )


@dataclass(frozen=True)
class StepsRow:
    """A row of the steps split: TRL's stepwise-supervision format (prompt: str, completions: list[str], labels:
    list[bool]) over the labelled steps, and the evidence: every step of the solution, its class and soft label,
    and every read."""

    id: str  # the row: <prompt_id>-<solution>
    prompt_id: str
    solution: int  # tells a prompt's solutions apart
    source: str  # sampled, sl initial, sl revision N, file
    prompt: str
    messages: Messages  # the prompt as chat messages
    completions: list[str]  # the labelled steps: up to the first mistake, or all with label_after_first_error
    labels: list[bool]  # per labelled step: positive (a neutral step counts as not positive, as in PRM800K)
    steps: list[str]  # every step of the solution
    step_class: list[str | None]  # per step: positive, neutral, negative; null where left unlabelled
    step_p: list[float]  # per step: P(the step is correct and acceptable), the soft label
    first_error: int | None  # index of the first negative step (the first mistake); null if none
    labelled_after_error: bool  # whether the steps after the first mistake were labelled
    solution_p: float  # the product of step_p
    principles: list[str]
    votes: list[StepVote]
    failed_votes: list[StepFailure]
    reference: str | None
    rules: list[RuleResult]  # the constitution's rules on the whole solution
    correct: bool | None  # the final answer against the reference (accuracy rules); null if none
    judge: str
    model: str


def solution_from_record(separator: str):
    """Solutions supplied by the user, already split into steps: a record has exactly one of 'solution' (text),
    'steps' (a list of texts) or 'solutions' (a list of either). Every bad record is one line naming the file and
    line, raised before the engine starts."""

    def parse(where: str, record: dict) -> list[Candidate[Steps]]:
        given = [k for k in ("solution", "steps", "solutions") if k in record]
        if len(given) != 1:
            raise CaiError(
                f"{where}: a solutions record needs exactly one of 'solution' (text), 'steps' (a list of texts) or "
                f"'solutions' (a list of either); got {', '.join(given) or 'none'}"
            )
        (key,) = given
        items = record[key] if key == "solutions" else [record[key]]
        if key == "solutions" and (not isinstance(items, list) or not items):
            raise CaiError(f"{where}: 'solutions' must be a non-empty list")
        what = [f"solution {n}" if key == "solutions" else key for n in range(1, len(items) + 1)]
        return [Candidate("file", _steps_of(item, separator, where, w)) for item, w in zip(items, what, strict=True)]

    return parse


def _steps_of(item, separator: str, where: str, what: str) -> tuple[str, ...]:
    if isinstance(item, str):
        found = steps_mod.split(item, separator)
        if not found:
            raise CaiError(f"{where}: {what} has no steps after splitting by {separator!r}")
        return tuple(found)
    if isinstance(item, list) and item and all(isinstance(s, str) for s in item):
        if not all(s.strip() for s in item):
            raise CaiError(f"{where}: {what}: a step is empty")
        return tuple(s.strip() for s in item)
    raise CaiError(f"{where}: {what} must be text or a non-empty list of texts, got {type(item).__name__}")


def trace_solutions(row: dict) -> list[Candidate[Steps]]:
    """An SL row's initial answer and every revision."""
    return [Candidate("sl initial", row["initial"])] + [
        Candidate(f"sl revision {x['round']}", x["revision"]) for x in row["revisions"]
    ]


class StepsStage(Stage):
    name = "steps"
    split = "steps"
    row_type = StepsRow
    view = StepsView(
        answer="steps", messages="messages", principles="votes", extra=("solution",), trains="prm", scores="steps"
    )
    inputs = ("sft",)  # with --solutions sl
    in_all = False  # it wants problems whose solutions have checkable steps: run it by name
    key = "prompt_id"  # a prompt makes several rows (one per solution); `id` names the row
    settings = (StepsOptions, steps_mod.SeparatorOptions, StepJudgingOptions)

    def __init__(self, config: RunConfig):
        super().__init__(config)
        self.o: StepsOptions = config.options(StepsOptions)
        self.separator = config.options(steps_mod.SeparatorOptions).step_separator
        self.judge = stepjudge.get(config.options(stepjudge.StepJudgingOptions).step_judge)(config)
        source = candidates.Source(
            mode=SOURCES[self.o.solutions],
            traces=self.inputs[0],
            path=self.o.solutions_from,
            n=self.o.solutions_per_prompt,
            temperature=self.o.solution_temperature,
            flag=f"--solutions {self.o.solutions}",
            from_flag="--solutions-from",
            step="steps solutions",
        )
        self.candidates: Candidates[Steps] = Candidates(
            source, solution_from_record(self.separator), trace_solutions, ["id", "initial", "revisions"]
        )

    def template_specs(self) -> tuple[TemplateSpec, ...]:
        return self.templates + self.judge.templates

    def needs_engine(self, ctx: RunContext) -> bool:
        return self.candidates.sampled or self.judge.needs_engine(ctx)

    def report(self) -> StepsReport:
        band = self.config.options(stepjudge.StepJudgingOptions).neutral_band
        after = self.o.label_after_first_error
        return StepsReport(self.split, self.o.solutions, self.separator, self.judge.describe(), band, after)

    def check(self, ctx: RunContext) -> None:
        stepjudge.neutral_band(ctx.config)  # a bad band is one line before the engine starts
        self.judge.check(ctx)
        if not self.separator:
            raise CaiError("--step-separator: empty; use line, paragraph or a separator text")
        self.candidates.check(ctx, alone=ctx.config.run.stage == self.name)

    def begin(self, ctx: RunContext) -> None:
        self.candidates.begin(ctx)

    def run(self, ctx: RunContext, chunk: list[Prompt]) -> ChunkResult:
        """Solutions, then every step judged in one engine call for the chunk, as rows of TRL's stepwise format.
        A solution that cannot be labelled is on record in the skip log: one line per prompt naming each lost
        solution and why (a prompt whose other solutions made rows counts as done)."""
        result = ChunkResult()
        lost: dict[str, list[str]] = {}
        solutions = self.solutions(ctx, chunk, result, lost)
        verdicts = self.judge.judge(ctx, solutions, result)
        accuracy = {r.id for r in ctx.constitution.rules if r.kind == "accuracy"}
        neutral = stepjudge.neutral_band(ctx.config)
        for s, v in zip(solutions, verdicts, strict=True):
            if isinstance(v, Failure):
                lost.setdefault(s.prompt.id, []).append(f"solution {s.index}: {v.reason}")
            else:
                result.rows.append(self._row(ctx, v, v.labelled(neutral, self.o.label_after_first_error), accuracy))
        for pid, reasons in lost.items():
            result.skip(pid, "; ".join(reasons))
        return result

    def _row(self, ctx: RunContext, v: StepVerdict, labelled: steps_mod.Labelling, accuracy: set[str]) -> dict:
        """One solution's row; `accuracy`: the ids of the constitution's accuracy rules (they grade `correct`)."""
        s = v.solution
        checked = check_all(ctx.constitution.rules, s.text, s.prompt.reference)
        graded = [r.passed for r in checked if r.rule in accuracy]
        row = StepsRow(
            id=f"{s.prompt.id}-{s.index}",
            prompt_id=s.prompt.id,
            solution=s.index,
            source=s.source,
            prompt=steps_mod.prompt_text(s.prompt.messages),
            messages=list(s.prompt.messages),
            completions=list(s.steps[: labelled.labelled]),
            labels=labelled.labels,
            steps=list(s.steps),
            step_class=labelled.classes,
            step_p=list(v.step_p),
            first_error=labelled.first_error,
            labelled_after_error=self.o.label_after_first_error,
            solution_p=v.solution_p,
            principles=list(v.principles),
            votes=list(v.votes),
            failed_votes=list(v.failed),
            reference=s.prompt.reference,
            rules=checked,
            correct=all(graded) if graded else None,
            judge=self.judge.name,
            model=ctx.config.run.model,
        )
        return columns.record(row)

    def solutions(
        self, ctx: RunContext, chunk: list[Prompt], result: ChunkResult, lost: dict[str, list[str]]
    ) -> list[Solution]:
        """The chunk's solutions, split into steps; what could not become one goes to `lost` with the reason."""
        out = []
        for p, found in zip(chunk, self.candidates.get(ctx, chunk, result), strict=True):
            if isinstance(found, Failure):
                lost.setdefault(p.id, []).append(f"solutions: {found.reason}")
                continue
            for i, c in enumerate(c for group in found for c in group):
                out += self._solution(p, i, c, lost)
        return out

    def _solution(self, p: Prompt, i: int, c: Candidate[Steps], lost: dict[str, list[str]]) -> list[Solution]:
        """[the solution] once split into steps; [] with the reason in `lost` when it failed or has no steps."""
        if isinstance(c.value, Failure):
            lost.setdefault(p.id, []).append(f"solution {i}: {c.value.reason}")
            return []
        found = tuple(steps_mod.split(c.value, self.separator)) if isinstance(c.value, str) else c.value
        if not found:
            why = f"no steps after splitting by {self.separator!r}"
            lost.setdefault(p.id, []).append(f"solution {i} ({c.source}): {why}")
            return []
        return [Solution(p, i, c.source, found)]
