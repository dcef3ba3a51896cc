"""From a prompt's scored samples (the samples split) to the ecosystem's training formats, without the engine:

select  SFT rows by rejection sampling (DeepSeek-R1): the samples that meet `--require` (by default the
        constitution's hard rules), every one of them, the best, or the top k by the combined score. A prompt
        where none passes is skipped on record with the reason (how many failed which requirement).
rank    K-way preference pairs (InstructGPT): every pair among a prompt's ranked samples, or the best against each
        other, with a Bradley-Terry soft label from their score difference (cai.signals.ranking) and the prompt as the
        group, so `train-pm` puts a prompt's K-choose-2 comparisons in one batch element.

Both run whenever the sample stage runs (`runs_with`), so `--stage sample` gives all three splits; each may be
run alone on a folder that holds samples.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from cai.core import columns
from cai.core.columns import Messages
from cai.core.context import RunContext
from cai.core.inputs import Prompt
from cai.core.records import ChunkResult, assistant
from cai.core.views import PairView, View
from cai.errors import CaiError
from cai.settings import setting
from cai.signals import ranking
from cai.stages.base import Stage
from cai.stages.selection_report import RankReport, SelectReport

if TYPE_CHECKING:
    import polars as pl

    from cai.config import RunConfig


@dataclass(frozen=True)
class SelectOptions:
    select: str = setting(
        "passing",
        "Which samples become SFT rows: passing (every one that meets --require: R1's rejection sampling), best "
        "(the passing one with the highest combined score) or top-k (the --top-k best passing ones).",
        identity=True,
        choices=lambda: ranking.SELECT,
    )
    top_k: int = setting(
        2, "With --select top-k: how many per prompt.", identity=True, minimum=1, when=("select", ("top-k",))
    )
    require: str | None = setting(
        None,
        "What a kept sample must meet, comma-separated: rule ids that must pass (math.accuracy) and thresholds on a "
        "signal or the combined score (p_true>=0.6, pm>0, prm>=0.5, score>=0.5). Default: the constitution's hard "
        "rules.",
        identity=True,
    )


@dataclass(frozen=True)
class RankOptions:
    ranked_pairs: str = setting(
        "all",
        "Preference pairs among a prompt's ranked samples: all (K choose 2, InstructGPT) or best-vs-rest.",
        identity=True,
        choices=lambda: ranking.PAIRS,
    )
    rank_temperature: float = setting(
        0.1,
        "Soft labels: P(a beats b) = sigmoid((score_a - score_b) / T) on the combined scores (Bradley-Terry).",
        identity=True,
        above=0,
    )


@dataclass(frozen=True)
class SelectedRow:
    """A kept sample: TRL's conversational prompt-completion format, and why it was kept."""

    id: str  # <prompt id>/<sample index>
    prompt_id: str
    prompt: Messages
    completion: Messages
    messages: Messages
    sample: int
    score: float | None
    rank: int  # 0: the prompt's best-scored kept sample
    passing: int  # the prompt's samples that met the requirements
    samples: int  # the prompt's samples
    model: str


@dataclass(frozen=True)
class RankedRow:
    """A pair of a prompt's samples: TRL's explicit-prompt preference format, a soft label and the group."""

    id: str  # <prompt id>/<better sample>-<worse sample>
    prompt_id: str
    group: str  # the batch element train-pm puts this pair in (the prompt)
    prompt: Messages
    chosen: Messages
    rejected: Messages
    p_chosen: float
    tie: bool
    score_chosen: float
    score_rejected: float
    sample_chosen: int
    sample_rejected: int
    model: str


@dataclass(frozen=True)
class RankView(PairView):
    """Ranked pairs: chosen and rejected with a soft label from scores (no judge's votes to flag)."""

    def flags(self) -> dict[str, pl.Expr]:
        import polars as pl

        return {"tie": pl.col("tie")}


class FromSamples(Stage):
    """A stage that reads the samples split and needs no engine."""

    inputs = ("samples",)
    in_all = False
    runs_with: ClassVar[str | None] = "sample"
    key = "prompt_id"

    def __init__(self, config: RunConfig):
        super().__init__(config)
        self._table: dict[str, dict] | None = None

    def needs_engine(self, ctx: RunContext) -> bool:
        return False

    def check(self, ctx: RunContext) -> None:
        alone = ctx.config.run.stage == self.name
        if alone and (ctx.store is None or not ctx.store.count("samples")):
            raise CaiError(f"--stage {self.name}: the run has no samples/ rows; run --stage sample first")

    def begin(self, ctx: RunContext) -> None:
        assert ctx.store is not None
        self._table = {r["id"]: r for r in ctx.store.read("samples")}

    def rows_of(self, ctx: RunContext, chunk: list[Prompt], result: ChunkResult) -> list[tuple[Prompt, dict]]:
        assert self._table is not None
        out = []
        for p in chunk:
            row = self._table.get(p.id)
            if row is None:
                result.skip(p.id, "no samples row for this prompt (see the sample stage's skips)")
            else:
                out.append((p, row))
        return out


class SelectStage(FromSamples):
    """Rejection sampling (DeepSeek-R1): the sampled answers that meet --require become SFT rows."""

    name = "select"
    split = "selected"
    row_type = SelectedRow
    view = View(answer="completion", scores="completion")
    settings = (SelectOptions,)

    def __init__(self, config: RunConfig):
        super().__init__(config)
        self.o = config.options(SelectOptions)

    def requirements(self, ctx: RunContext) -> list[ranking.Requirement]:
        rules = ctx.constitution.rules
        if self.o.require is None:
            return [ranking.Requirement(r.id, rule=r.id) for r in rules if r.hard]
        try:
            return ranking.parse_require(self.o.require, [r.id for r in rules])
        except ValueError as e:
            raise CaiError(f"--require {e}") from None

    def check(self, ctx: RunContext) -> None:
        super().check(ctx)
        self.requirements(ctx)

    def report(self) -> SelectReport:
        return SelectReport(self.split, self.o.select, self.o.require)

    def run(self, ctx: RunContext, chunk: list[Prompt]) -> ChunkResult:
        result = ChunkResult()
        need = self.requirements(ctx)
        for p, row in self.rows_of(ctx, chunk, result):
            samples = row["samples"]
            verdicts = [_verdicts(s, need) for s in samples]
            passing = [bool(s["text"]) and all(v is True for v in vs) for s, vs in zip(samples, verdicts, strict=True)]
            kept = ranking.select([s["score"] for s in samples], passing, self.o.select, self.o.top_k)
            if not kept:
                result.skip(p.id, _why_none(samples, verdicts, need))
                continue
            by_score = ranking.ranked([samples[i]["score"] for i in kept])
            rank = {kept[j]: r for r, j in enumerate(by_score)}
            for i in kept:
                s = samples[i]
                completion = assistant(s["text"])
                selected = SelectedRow(
                    id=f"{p.id}/{i}",
                    prompt_id=p.id,
                    prompt=row["prompt"],
                    completion=completion,
                    messages=row["prompt"] + completion,
                    sample=i,
                    score=s["score"],
                    rank=rank.get(i, len(kept) - 1),
                    passing=sum(passing),
                    samples=len(samples),
                    model=row["model"],
                )
                result.rows.append(columns.record(selected))
        return result


def _verdicts(sample: dict, need: list[ranking.Requirement]) -> list[bool | None]:
    passed = {r["rule"]: (r["passed"] if r["error"] is None else None) for r in sample["rules"]}
    scores = {k: sample[k] for k in (*ranking.SIGNALS, "score") if k in sample}
    scores["rules"] = sample["rules_score"]
    return [r.met(passed, scores) for r in need]


def _why_none(samples: list[dict], verdicts: list[list[bool | None]], need: list[ranking.Requirement]) -> str:
    """Why no sample of a prompt was kept, counted: `no sample of 4 passes: math.accuracy failed 3, unknown 1`."""
    counts: Counter[str] = Counter()
    for s, vs in zip(samples, verdicts, strict=True):
        if not s["text"]:
            counts["no answer"] += 1
            continue
        for r, v in zip(need, vs, strict=True):
            if v is not True:
                counts[f"{r.text} {'failed' if v is False else 'unknown'}"] += 1
    detail = ", ".join(f"{k} {n}" for k, n in counts.most_common())
    return f"select: no sample of {len(samples)} passes ({detail})"


class RankStage(FromSamples):
    """K-way preferences (InstructGPT): pairs among a prompt's ranked samples, soft labels from score differences."""

    name = "rank"
    split = "ranked"
    row_type = RankedRow
    view = RankView(answer="chosen", search=("rejected",), label="p_chosen", trains="pm", scores="pair")
    settings = (RankOptions,)

    def __init__(self, config: RunConfig):
        super().__init__(config)
        self.o = config.options(RankOptions)

    def report(self) -> RankReport:
        return RankReport(self.split, self.o.ranked_pairs, self.o.rank_temperature)

    def run(self, ctx: RunContext, chunk: list[Prompt]) -> ChunkResult:
        result = ChunkResult()
        for p, row in self.rows_of(ctx, chunk, result):
            samples = row["samples"]
            scores = [s["score"] if s["text"] else None for s in samples]
            found = ranking.pairs([s["text"] for s in samples], scores, self.o.ranked_pairs, self.o.rank_temperature)
            if not found:
                scored = sum(x is not None for x in scores)
                result.skip(p.id, f"rank: fewer than two distinct scored samples ({scored} of {len(samples)} scored)")
                continue
            for a, b, prob in found:
                ranked_row = RankedRow(
                    id=f"{p.id}/{a}-{b}",
                    prompt_id=p.id,
                    group=p.id,
                    prompt=row["prompt"],
                    chosen=assistant(samples[a]["text"]),
                    rejected=assistant(samples[b]["text"]),
                    p_chosen=prob,
                    tie=prob == 0.5,
                    score_chosen=samples[a]["score"],
                    score_rejected=samples[b]["score"],
                    sample_chosen=a,
                    sample_rejected=b,
                    model=row["model"],
                )
                result.rows.append(columns.record(ranked_row))
        return result
