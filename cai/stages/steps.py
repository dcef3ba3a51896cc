"""Process supervision: solutions split into steps, each step labelled by the model under the constitution.

Rows are TRL's stepwise-supervision format with the soft labels and every read beside the boolean labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cai import inputs, stepjudge
from cai import steps as steps_mod
from cai.backends import Sampling
from cai.errors import CaiError
from cai.inputs import Prompt
from cai.records import ChunkResult, Failure, messages_type, with_system
from cai.rules import check_all, result_type
from cai.run import RunContext
from cai.sampling import request_seed
from cai.settings import setting
from cai.stages.steps_report import StepsReport
from cai.stepjudge import Solution, StepVerdict
from cai.store import RunStore

if TYPE_CHECKING:
    import pyarrow as pa

SOURCES = ("sampled", "sl", "file")


@dataclass(frozen=True)
class StepsOptions:
    solutions: str = setting(
        "sampled",
        "Where the solutions come from: sampled (the model, --solutions-per-prompt each), sl (the initial answer "
        "and every revision of an SL run) or file (records with a prompt and 'solution' text, 'steps' (a list), "
        "or 'solutions' (a list of either)).",
        identity=True,
        choices=lambda: SOURCES,
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
    )
    step_separator: str = setting(
        "line",
        "How a solution is split into steps: line (non-empty lines), paragraph (blank-line separated), or any "
        "other text as a literal separator ('\\n' is a newline).",
        identity=True,
    )
    step_principles: int = setting(
        1,
        "Principles sampled per solution to judge its steps; a step's label is the mean over them. Each costs "
        "two one-token reads per step on the shared prefix.",
        identity=True,
        minimum=1,
    )


def prompt_text(messages) -> str:
    """The prompt as the plain string TRL's PRMTrainer takes: the user's text for a one-turn prompt, else the
    conversation as "Role: content" lines (the messages stay in their own column)."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def solutions_from_file(source: str, separator: str) -> dict[str, list[tuple[str, ...]]]:
    """Solutions supplied by the user, already split into steps, by prompt id. Every bad record is one line
    naming the file and line, raised before the engine starts."""
    path = Path(source)
    if not path.is_file():
        raise CaiError(f"--solutions file: {source}: file not found")
    records = inputs.read_parquet(path) if path.suffix == ".parquet" else inputs.read_jsonl(path)
    out: dict[str, list[tuple[str, ...]]] = {}
    for where, record in records:
        messages = inputs.to_messages(record, where, None)
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
        for n, item in enumerate(items, 1):
            what = f"solution {n}" if key == "solutions" else key
            out.setdefault(inputs.prompt_id(messages), []).append(_steps_of(item, separator, where, what))
    return out


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


class StepsStage(StepsReport):
    name = "steps"
    split = "steps"
    inputs = ("sft",)  # with --solutions sl
    in_all = False  # it wants problems whose solutions have checkable steps: run it by name
    key = "prompt_id"  # a prompt makes several rows (one per solution); `id` names the row
    settings = (StepsOptions,)
    templates = stepjudge.TEMPLATES
    task_categories = ("text-generation", "token-classification")
    readers = "TRL's PRMTrainer reads prompt/completions/labels as is"

    def __init__(self, config):
        super().__init__(config)
        self.o: StepsOptions = config.options(StepsOptions)
        # --solutions sl / file: (source, text or steps) per prompt id
        self._table: dict[str, list[tuple[str, str | tuple[str, ...]]]] | None = None

    def schema(self) -> pa.Schema:
        import pyarrow as pa

        # TRL's stepwise-supervision format (prompt: str, completions: list[str], labels: list[bool]) and the
        # evidence behind each label: the soft label it came from and every read.
        return pa.schema(
            [
                ("id", pa.string()),  # the row: <prompt_id>-<solution>
                ("prompt_id", pa.string()),
                ("solution", pa.int32()),  # tells a prompt's solutions apart
                ("source", pa.string()),  # sampled, sl initial, sl revision N, file
                ("prompt", pa.string()),
                ("messages", messages_type()),  # the prompt as chat messages
                ("completions", pa.list_(pa.string())),
                ("labels", pa.list_(pa.bool_())),
                ("step_p", pa.list_(pa.float64())),  # P(the step is correct and acceptable), the soft label
                ("first_error", pa.int32()),  # index of the first step labelled bad; null if none
                ("solution_p", pa.float64()),  # the product of step_p
                ("principles", pa.list_(pa.string())),
                (
                    "votes",
                    pa.list_(
                        pa.struct(
                            [
                                ("step", pa.int32()),
                                ("principle", pa.string()),
                                ("p_yes_ab", pa.float64()),  # P(Yes) with Yes shown as (A)
                                ("p_yes_ba", pa.float64()),  # ... and as (B)
                            ]
                        )
                    ),
                ),
                (
                    "failed_votes",
                    pa.list_(
                        pa.struct(
                            [
                                ("step", pa.int32()),
                                ("principle", pa.string()),
                                ("order", pa.string()),
                                ("reason", pa.string()),
                            ]
                        )
                    ),
                ),
                ("reference", pa.string()),
                ("rules", result_type()),  # the constitution's rules on the whole solution
                ("correct", pa.bool_()),  # the final answer against the reference (accuracy rules); null if none
                ("judge", pa.string()),
                ("model", pa.string()),
            ]
        )

    def check(self, ctx: RunContext) -> None:
        o, (sft,) = self.o, self.inputs
        self.check_judging(ctx)
        if not o.step_separator:
            raise CaiError("--step-separator: empty; use line, paragraph or a separator text")
        if o.solutions == "sl" and not o.solutions_from and ctx.config.stage == self.name and not ctx.store.count(sft):
            raise CaiError(
                f"--solutions sl: {ctx.store.root / sft} has no SL rows; run --stage sl first, or "
                "point --solutions-from at an SL run"
            )
        if o.solutions == "sl" and o.solutions_from and not RunStore(o.solutions_from).count(sft):
            raise CaiError(f"--solutions-from {o.solutions_from}: not a cai run with an {sft}/ split")
        if o.solutions == "file":
            self._table = self._file_table(ctx)

    def begin(self, ctx: RunContext) -> None:
        if self.o.solutions != "sampled":
            self._solutions_table(ctx)

    def check_judging(self, ctx: RunContext) -> None:
        """What judging steps needs, whatever their source (also `cai eval steps`'s check)."""
        o = self.o
        if not ctx.constitution.steppable:
            raise CaiError(
                f"{ctx.constitution.path}: no principle has a 'step' question or a critique request: nothing can "
                "judge the steps"
            )
        if o.step_principles > len(ctx.constitution.steppable):
            raise CaiError(
                f"{ctx.constitution.path}: --step-principles {o.step_principles} but only "
                f"{len(ctx.constitution.steppable)} principles can judge a step"
            )

    def run(self, ctx: RunContext, chunk: list[Prompt]) -> ChunkResult:
        """Solutions, then every step judged in one engine call for the chunk, as rows of TRL's stepwise format.
        A solution that cannot be labelled is on record in the skip log: one line per prompt naming each lost
        solution and why (a prompt whose other solutions made rows counts as done)."""
        result = ChunkResult()
        lost: dict[str, list[str]] = {}
        solutions = self.solutions(ctx, chunk, result, lost)
        verdicts = stepjudge.judge(ctx, solutions, self.o.step_principles, result)
        accuracy = {r.id for r in ctx.constitution.rules if r.kind == "accuracy"}
        for s, v in zip(solutions, verdicts, strict=True):
            if isinstance(v, Failure):
                lost.setdefault(s.prompt.id, []).append(f"solution {s.index}: {v.reason}")
            else:
                result.rows.append(self._row(ctx, v, accuracy))
        for pid, reasons in lost.items():
            result.skip(pid, "; ".join(reasons))
        return result

    def _row(self, ctx: RunContext, v: StepVerdict, accuracy: set[str]) -> dict:
        """One solution's row; `accuracy`: the ids of the constitution's accuracy rules (they grade `correct`)."""
        s = v.solution
        checked = check_all(ctx.constitution.rules, s.text, s.prompt.reference)
        graded = [r.passed for r in checked if r.rule in accuracy]
        return {
            "id": f"{s.prompt.id}-{s.index}",
            "prompt_id": s.prompt.id,
            "solution": s.index,
            "source": s.source,
            "prompt": prompt_text(s.prompt.messages),
            "messages": list(s.prompt.messages),
            "completions": list(s.steps),
            "labels": v.labels,
            "step_p": list(v.step_p),
            "first_error": v.first_error,
            "solution_p": v.solution_p,
            "principles": list(v.principles),
            "votes": [x.row() for x in v.votes],
            "failed_votes": [x.row() for x in v.failed],
            "reference": s.prompt.reference,
            "rules": [r.row() for r in checked],
            "correct": all(graded) if graded else None,
            "judge": "logprob",
            "model": ctx.config.model,
        }

    def solutions(
        self, ctx: RunContext, chunk: list[Prompt], result: ChunkResult, lost: dict[str, list[str]]
    ) -> list[Solution]:
        """The chunk's solutions, split into steps; what could not become one goes to `lost` with the reason."""
        o, c, out = self.o, ctx.config, []
        if o.solutions == "sampled":
            n = o.solutions_per_prompt
            sampling = Sampling(
                max_tokens=c.max_tokens, temperature=o.solution_temperature, top_p=c.top_p, n=n, label="steps solutions"
            )
            seeds = [request_seed(c.seed, p.id, "steps-solutions") for p in chunk]
            outs = ctx.engine.generate([with_system(ctx.constitution, p.messages) for p in chunk], sampling, seeds)
            for p, samples in zip(chunk, outs, strict=True):
                for i, got in enumerate(samples):
                    result.tally(got)
                    out += self._solution(p, i, "sampled", got.text if got.ok else Failure(str(got.error)), lost)
            return out
        table = self._solutions_table(ctx)
        for p in chunk:
            if p.id not in table:
                what = "no SL row for this prompt" if o.solutions == "sl" else "the solutions file has none for it"
                lost.setdefault(p.id, []).append(f"solutions: {what}")
            for i, (source, text) in enumerate(table.get(p.id, [])):
                out += self._solution(p, i, source, text, lost)
        return out

    def _solution(
        self, p: Prompt, i: int, source: str, text: str | tuple[str, ...] | Failure, lost: dict[str, list[str]]
    ) -> list[Solution]:
        """[the solution] once split into steps; [] with the reason in `lost` when it failed or has no steps."""
        if isinstance(text, Failure):
            lost.setdefault(p.id, []).append(f"solution {i}: {text.reason}")
            return []
        found = tuple(steps_mod.split(text, self.o.step_separator)) if isinstance(text, str) else text
        if not found:
            why = f"no steps after splitting by {self.o.step_separator!r}"
            lost.setdefault(p.id, []).append(f"solution {i} ({source}): {why}")
            return []
        return [Solution(p, i, source, found)]

    def _solutions_table(self, ctx: RunContext) -> dict[str, list[tuple[str, str | tuple[str, ...]]]]:
        """The solutions of --solutions sl or file, read once per run."""
        if self._table is None:
            if self.o.solutions == "file":
                self._table = self._file_table(ctx)
            else:
                store = RunStore(self.o.solutions_from) if self.o.solutions_from else ctx.store
                self._table = {
                    r["id"]: [("sl initial", r["initial"])]
                    + [(f"sl revision {x['round']}", x["revision"]) for x in r["revisions"]]
                    for r in store.read(self.inputs[0], columns=["id", "initial", "revisions"])
                }
        return self._table

    def _file_table(self, ctx: RunContext) -> dict[str, list[tuple[str, str | tuple[str, ...]]]]:
        found = solutions_from_file(self.o.solutions_from or ctx.config.prompts, self.o.step_separator)
        return {pid: [("file", s) for s in sols] for pid, sols in found.items()}
