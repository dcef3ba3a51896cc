"""Sample N answers per prompt and score every one with every signal the run asks for (R1's rejection sampling,
InstructGPT's K-way rankings, Kadavath's P(IK), best-of-N all start here).

The N answers are one request with n = N, so the engine prefills the prompt once. Each answer is scored by the
constitution's rules, by the model's own P(True) (`--self-eval`; with `--self-eval-samples K` it is shown K of
its other answers first, as Kadavath et al. do, at no extra sampling), by a trained preference model (`--pm`),
by a process reward model (`--prm`, its step scores multiplied or their minimum) and by a DeepSeek-GRM judgement
of the prompt's answers together (`--sample-grm`, each answer's 1-9 score read from token probabilities). The
combined score is the weighted mean of those on [0, 1] (cai.signals.ranking). Every sample and every score is kept in
the `samples/` split, with P(IK) per prompt (the share of its answers that pass the accuracy rules); a sample
the engine failed and a signal that failed are on record with the reason. The `select` and `rank` stages turn
the split into SFT rows and K-way preference pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cai import signals
from cai.core import columns
from cai.core.columns import Messages
from cai.core.context import RunContext
from cai.core.inputs import Prompt
from cai.core.prompts import TemplateSpec
from cai.core.records import ChunkResult, Failure
from cai.core.rules import RuleResult
from cai.core.views import View
from cai.settings import setting
from cai.signals import SignalFailure, SignalSet, WeightOptions, ranking
from cai.signals.rules import ACCURACY
from cai.stages import candidates
from cai.stages.base import Stage
from cai.stages.candidates import Candidates
from cai.stages.sample_report import SampleReport

if TYPE_CHECKING:
    import pyarrow as pa

    from cai.config import RunConfig


@dataclass(frozen=True)
class SampleOptions:
    samples: int = setting(
        4,
        "Answers sampled per prompt, in one request of n = N (the engine prefills the prompt once).",
        identity=True,
        minimum=1,
    )
    sample_temperature: float = setting(
        1.0,
        "Temperature of the sampled answers (they need diversity: selection and ranking choose among them).",
        identity=True,
        minimum=0,
        maximum=5,
        temperature=True,
    )


@dataclass(frozen=True)
class Sample:
    """One sampled answer and what is known of it beside the signals' values (each signal's value and detail are
    columns of their own, named by the signal: `Signal.value_column`, `Signal.detail_column`)."""

    index: int
    text: str  # empty when the engine gave no answer (`error` says why)
    error: str | None
    correct: bool | None  # every accuracy rule passed; None where none applied or one could not finish
    score: float | None  # the reference-free combined score on [0, 1] (the signals that do not read the reference)
    graded_score: float | None  # the combined score of every signal, the accuracy rules (the answer key) too
    failures: list[SignalFailure]


@dataclass(frozen=True)
class SamplesRow:
    """A row of the samples split: one prompt, its N samples with their scores, and P(IK)."""

    id: str
    prompt: Messages
    reference: str | None
    texts: list[str]  # the samples' texts (searched and shown by the review page)
    samples: list[Sample]
    answered: int  # samples with a text
    graded: int  # samples whose accuracy is known
    correct: int  # of those, the ones whose final answer passes the accuracy rules
    p_ik: float | None  # correct / graded: Kadavath's P(I know), the target of `train-pm --kind pik`
    p_true_mean: float | None  # the mean P(True) of the answered samples
    best: int | None  # the sample with the highest reference-free score
    model: str
    subset: str | None  # the prompt record's `subset`: P(IK)'s out-of-distribution figure holds subsets out


def sample_columns() -> list[tuple[str, Any]]:
    """Every registered signal's columns in a sample (name, Python type): its value and, if it keeps one, its
    detail. Every signal's, computed or not, so one installation writes one schema."""
    out: list[tuple[str, Any]] = []
    for name in signals.names():
        cls = signals.get(name)
        out.append((cls.value_column(), float | None))
        if cls.detail_column:
            out.append((cls.detail_column, cls.detail_type))
    return out


class SampleStage(Stage):
    name = "sample"
    split = "samples"
    row_type = SamplesRow
    view = View(answer="texts", trains="pik")
    in_all = False  # a run for selection: run it by name (`--stage sample` runs select and rank too)
    settings = (SampleOptions, WeightOptions)

    def __init__(self, config: RunConfig):
        super().__init__(config)
        self.o = config.options(SampleOptions)
        self.signals = SignalSet(config)
        self.candidates: Candidates[str] = Candidates(
            candidates.Source.sampling(self.o.samples, self.o.sample_temperature, "--samples", "samples")
        )

    def schema(self) -> pa.Schema:
        """The split's columns: a sample's own fields and every registered signal's (cai.signals)."""
        import pyarrow as pa

        base = columns.schema(SamplesRow)
        sample = pa.struct(
            list(columns.arrow_type(Sample)) + [pa.field(n, columns.arrow_type(tp)) for n, tp in sample_columns()]
        )
        return base.set(base.get_field_index("samples"), pa.field("samples", pa.list_(sample)))

    def template_specs(self) -> tuple[TemplateSpec, ...]:
        return self.signals.template_specs()

    def report(self) -> SampleReport:
        return SampleReport(self.split, self.o.samples, self.signals)

    def check(self, ctx: RunContext) -> None:
        self.signals.check(ctx)

    def run(self, ctx: RunContext, chunk: list[Prompt]) -> ChunkResult:
        result = ChunkResult()
        groups = self.candidates.get(ctx, chunk, result)
        drafts: list[list[Draft]] = []
        items: list[signals.Item] = []
        owners: list[Draft] = []
        for p, found in zip(chunk, groups, strict=True):
            assert not isinstance(found, Failure)  # sampled candidates always come back, a failure per sample
            drafts.append([Draft(i, c.value) for i, c in enumerate(found[0])])
            for d in drafts[-1]:
                if d.text:
                    items.append(signals.Item(p.messages, d.text, p.reference))
                    owners.append(d)
        for d, scored in zip(owners, self.signals.score(ctx, items, result), strict=True):
            d.scored = scored
        for p, group in zip(chunk, drafts, strict=True):
            result.rows.append(self._row(ctx, p, group))
        return result

    def _row(self, ctx: RunContext, p: Prompt, group: list[Draft]) -> dict:
        samples = [d.sample() for d in group]
        graded = [s for s in samples if s.correct is not None]
        correct = sum(bool(s.correct) for s in graded)
        p_true = [v for d in group if (v := d.scored.values.get("p_true")) is not None]
        best = ranking.ranked([s.score for s in samples])
        row = SamplesRow(
            id=p.id,
            prompt=list(p.messages),
            reference=p.reference,
            texts=[s.text for s in samples],
            samples=samples,
            answered=sum(bool(s.text) for s in samples),
            graded=len(graded),
            correct=correct,
            p_ik=correct / len(graded) if graded else None,
            p_true_mean=sum(p_true) / len(p_true) if p_true else None,
            best=best[0] if best else None,
            model=ctx.config.run.model,
            subset=p.subset,
        )
        out = columns.record(row)
        for sample, d in zip(out["samples"], group, strict=True):
            sample.update(d.signal_columns())
        return out


class Draft:
    """A sample while its scores come in (one thread owns a prompt's drafts)."""

    def __init__(self, index: int, value: str | Failure):
        self.index = index
        self.error = value.reason if isinstance(value, Failure) else None
        text = value.strip() if isinstance(value, str) else ""
        if not text and self.error is None:
            self.error = "the model returned an empty answer"
        self.text = text
        self.scored = signals.Scored()

    def sample(self) -> Sample:
        graded: list[RuleResult] = self.scored.details.get(ACCURACY, [])
        correct = all(r.passed for r in graded) if graded and all(r.known for r in graded) else None
        return Sample(
            index=self.index,
            text=self.text,
            error=self.error,
            correct=correct,
            score=self.scored.score if self.text else None,
            graded_score=self.scored.graded if self.text else None,
            failures=self.scored.failures,
        )

    def signal_columns(self) -> dict[str, Any]:
        """Every registered signal's value and detail columns for this sample (None where not computed)."""
        out: dict[str, Any] = {}
        for name in signals.names():
            cls = signals.get(name)
            out[cls.value_column()] = self.scored.values.get(name)
            if cls.detail_column:
                out[cls.detail_column] = columns.plain(self.scored.details.get(name, []))
        return out
