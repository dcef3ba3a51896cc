"""RL-CAI: candidate pairs for every prompt, labelled by a judge into TRL's preference format with soft labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cai.core import columns
from cai.core.columns import Messages
from cai.core.context import RunContext
from cai.core.inputs import Prompt
from cai.core.prompts import TemplateSpec
from cai.core.records import ChunkResult, Failure, assistant
from cai.core.rules import RuleResult
from cai.core.views import PairView
from cai.errors import CaiError
from cai.judges import Pair
from cai.judges.base import FailedRead, VoteRow
from cai.judges.labels import Judged, Labeller, LabelOptions
from cai.settings import setting
from cai.stages import candidates
from cai.stages.base import Stage
from cai.stages.candidates import Candidate, Candidates
from cai.stages.rl_report import RLReport
from cai.stages.sl import SLOptions

if TYPE_CHECKING:
    from cai.config import RunConfig

PAIRS = ("sampled", "revision", "file")
SOURCES = {"sampled": candidates.SAMPLED, "revision": candidates.TRACE, "file": candidates.FILE}


@dataclass(frozen=True)
class RLOptions:
    pairs: str = setting(
        "sampled",
        "Candidates: sampled (2 answers), revision (initial vs final revision), file (your pairs).",
        identity=True,
        choices=lambda: PAIRS,
    )
    pairs_from: str | None = setting(
        None,
        "With --pairs revision: an SL run folder; with --pairs file: the pairs file.",
        identity=True,
        path=True,
        when=("pairs", ("revision", "file")),
        aliases=("--from",),
    )
    pair_temperature: float = setting(
        1.0,
        "Temperature of the two sampled candidates (they need diversity, or the two answers are often identical).",
        identity=True,
        minimum=0,
        maximum=5,
        temperature=True,
    )


@dataclass(frozen=True)
class PrefRow:
    """A row of the prefs split: TRL's explicit-prompt conversational preference format, plus the soft label and
    its evidence. The judge's own evidence columns go before `judge`."""

    id: str  # the prompt's id; <prompt id>/<k> for the k-th of a prompt's several pairs (a file's K-way group)
    prompt_id: str
    prompt: Messages
    chosen: Messages
    rejected: Messages
    p_chosen: float
    votes: list[VoteRow]
    tie: bool
    failed_votes: list[FailedRead]
    decided_by: str  # judge, rules, judge+rules, hard rule, none
    reference: str | None  # the prompt record's known answer, if it had one
    rules_chosen: list[RuleResult]  # the constitution's rules on each answer
    rules_rejected: list[RuleResult]
    judge: str
    model: str


def pair_from_record(where: str, record: dict) -> list[Candidate[str]]:
    """Pairs supplied by the user: each record has a prompt and either `responses` (two answers, or more: a ranked
    group whose every pair is judged, with optional `scores` or `ranks` checked here and read by train-pm when it
    trains on the file itself) or `chosen`/`rejected` (texts or assistant message lists). The judge labels every
    pair afresh."""
    if "responses" in record:
        pair = record["responses"]
        if not isinstance(pair, list) or len(pair) < 2:
            raise CaiError(f"{where}: 'responses' must be a list of two or more answers")
        for key in ("scores", "ranks"):
            given = record.get(key)
            if given is not None and (
                not isinstance(given, list)
                or len(given) != len(pair)
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in given)
            ):
                raise CaiError(f"{where}: '{key}' must be a list of {len(pair)} numbers, one per response")
    elif "chosen" in record and "rejected" in record:
        pair = [record["chosen"], record["rejected"]]
    else:
        raise CaiError(f"{where}: a pair needs 'responses' [a, b] or 'chosen' and 'rejected'")
    texts = []
    for answer in pair:
        if isinstance(answer, list) and answer and isinstance(answer[-1], dict):
            answer = answer[-1].get("content")
        if not isinstance(answer, str) or not answer.strip():
            raise CaiError(f"{where}: each answer must be non-empty text")
        texts.append(Candidate("file", answer.strip()))
    return texts


def revision_pair(row: dict, by_p_true: bool) -> tuple[str, str]:
    """An SL row as a pair: its initial answer and its completion; or, when the completion was picked by
    P(True) (`by_p_true`, --keep best), the completion and the text of the trace the model rated least likely
    true (where the row has P(True) for another text)."""
    completion = row["completion"][-1]["content"]
    if by_p_true:
        texts = [(row.get("initial_p_true"), row["initial"])] + [(r["p_true"], r["revision"]) for r in row["revisions"]]
        others = [(p, text) for i, (p, text) in enumerate(texts) if p is not None and i != row["kept"]]
        if others:
            return completion, min(others, key=lambda x: x[0])[1]
    return row["initial"], completion


class RLStage(Stage):
    name = "rl"
    split = "prefs"
    row_type = PrefRow
    view = PairView(
        answer="chosen", search=("rejected",), principles="votes", label="p_chosen", trains="pm", scores="pair"
    )
    inputs = ("sft",)  # with --pairs revision
    key = "prompt_id"  # a prompt may make several rows (a file's K-way group)
    settings = (RLOptions, LabelOptions)

    def __init__(self, config: RunConfig):
        super().__init__(config)
        self.o = config.options(RLOptions)
        self.labeller = Labeller(config)
        # --keep best picks the completion by P(True): the pair is then the completion vs the least likely text
        by_p_true = config.options(SLOptions).keep == "best"
        source = candidates.Source(
            mode=SOURCES[self.o.pairs],
            traces=self.inputs[0],
            path=self.o.pairs_from,
            n=2,
            temperature=self.o.pair_temperature,
            flag=f"--pairs {self.o.pairs}",
            from_flag="--pairs-from",
            step="rl candidates",
        )
        self.candidates: Candidates[str] = Candidates(
            source,
            pair_from_record,
            lambda row: [Candidate("sl", text) for text in revision_pair(row, by_p_true)],
        )

    def needs_engine(self, ctx: RunContext) -> bool:
        return self.candidates.sampled or self.labeller.needs_engine(ctx)

    def template_specs(self) -> tuple[TemplateSpec, ...]:
        return self.templates + self.labeller.judge.templates

    def schema(self):
        return columns.schema(PrefRow, self.labeller.judge.evidence_fields(), before="judge")

    def report(self) -> RLReport:
        return RLReport(
            self.split, self.o.pairs, self.labeller.name, self.labeller.judge.describe(), self.labeller.hard_p
        )

    def check(self, ctx: RunContext) -> None:
        self.candidates.check(ctx, alone=ctx.config.run.stage == self.name)
        self.labeller.check(ctx)

    def run(self, ctx: RunContext, chunk: list[Prompt]) -> ChunkResult:
        """Candidates, then one label per pair (cai.judges.labels), as rows of TRL's preference format."""
        result = ChunkResult()
        named = self.pairs(ctx, chunk, result)
        ids = {id(pair): key for key, pair in named}
        for j in self.labeller.label(ctx, [pair for _, pair in named], result):
            result.rows.append(self._row(ctx, j, ids[id(j.pair)]))
        return result

    def begin(self, ctx: RunContext) -> None:
        self.candidates.begin(ctx)
        if not self.candidates.sampled and self.o.pairs == "file":
            repeats = sum(_pairs(Prompt(pid, ()), found)[1] for pid, found in self.candidates.table(ctx).items())
            if repeats:
                ctx.log(
                    f"rl: {repeats} pair(s) of the file repeat an earlier pair of their prompt exactly: judged once"
                )

    def pairs(self, ctx: RunContext, chunk: list[Prompt], result: ChunkResult) -> list[tuple[str, Pair]]:
        """The chunk's candidate pairs (every pair of every group a prompt has) with their row ids: a prompt's one
        pair has the prompt's id, its several pairs are numbered in the file's order. A prompt without one is
        skipped in `result` with the reason."""
        out = []
        for p, found in zip(chunk, self.candidates.get(ctx, chunk, result), strict=True):
            pairs, _ = _pairs(p, found)
            if isinstance(pairs, Failure):
                result.skip(p.id, f"candidates: {pairs.reason}")
            else:
                out += [(p.id if len(pairs) == 1 else f"{p.id}/{k}", pair) for k, pair in enumerate(pairs)]
        return out

    def _row(self, ctx: RunContext, j: Judged, pair_id: str) -> dict:
        fw = j.label.p_first >= 0.5
        p_chosen = j.label.p_first if fw else 1 - j.label.p_first
        pair = j.pair
        chosen, rejected = (pair.first, pair.second) if fw else (pair.second, pair.first)
        rules_chosen, rules_rejected = j.rules if fw else j.rules[::-1]
        row = PrefRow(
            id=pair_id,
            prompt_id=pair.prompt.id,
            prompt=list(pair.prompt.messages),
            chosen=assistant(chosen),
            rejected=assistant(rejected),
            p_chosen=p_chosen,
            votes=j.votes(fw),
            tie=p_chosen == 0.5,
            failed_votes=j.failed_votes(fw),
            decided_by=j.label.decided_by,
            reference=pair.prompt.reference,
            rules_chosen=rules_chosen,
            rules_rejected=rules_rejected,
            judge=self.labeller.name,
            model=ctx.config.run.model,
        )
        return columns.record(row, **j.evidence(fw, self.labeller.judge))


def _pairs(prompt: Prompt, found: list[list[Candidate[str]]] | Failure) -> tuple[list[Pair] | Failure, int]:
    """Every pair of the prompt's groups (two answers: one pair; K answers: K choose 2), an exact repeat of an
    earlier pair (the same two answers, in either order) left out and counted; or why there is none."""
    if isinstance(found, Failure):
        return found, 0
    out: list[Pair] = []
    seen: set[frozenset[str]] = set()
    repeats = 0
    why = None
    for group in found:
        bad = next((c.value for c in group if isinstance(c.value, Failure)), None)
        if bad is not None:
            why = why or bad
            continue
        texts = [c.value.strip() for c in group if isinstance(c.value, str)]
        if not all(texts):
            why = why or Failure("the model returned an empty answer")
            continue
        for i, a in enumerate(texts):
            for b in texts[i + 1 :]:
                if a == b:  # identical answers carry no preference; judging them adds only noise
                    why = why or Failure("the two answers are identical")
                elif frozenset((a, b)) in seen:
                    repeats += 1
                else:
                    seen.add(frozenset((a, b)))
                    out.append(Pair(prompt, a, b))
    if not out:
        return why or Failure("no pair of different answers"), repeats
    return out, repeats
