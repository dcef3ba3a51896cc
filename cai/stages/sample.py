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

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cai.core import columns
from cai.core.columns import Messages
from cai.core.context import RunContext
from cai.core.inputs import Prompt
from cai.core.prompts import TemplateSpec
from cai.core.records import ChunkResult, Failure
from cai.core.rules import RuleResult, check_all, mean_score
from cai.core.views import View
from cai.errors import CaiError
from cai.judges.grm import GROUP_TEMPLATES, GrmJudge
from cai.settings import setting
from cai.signals import p_true as selfeval
from cai.signals import ranking
from cai.signals import steps as steps_mod
from cai.stages import candidates
from cai.stages.base import Stage
from cai.stages.candidates import Candidates
from cai.stages.sample_report import SampleReport

if TYPE_CHECKING:
    from cai.config import RunConfig

DEFAULT_WEIGHTS = "rules=1,p_true=1,pm=1,prm=1,grm=1"
# One trained model at a time on this process's CPU threads (or GPU): the streaming executor calls the stage from
# many threads, and torch gains nothing from several forward passes competing for the same cores.
_TORCH = threading.Lock()


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
    pm: str | None = setting(
        None,
        "Score every sample with this preference model (a folder `cai train-pm --kind pm` wrote); its normalised "
        "reward z enters the combined score as sigmoid(z).",
        identity=True,
        path=True,
    )
    prm: str | None = setting(
        None,
        "Score every sample with this process reward model (`cai train-pm --kind prm`): the product (or, with "
        "--prm-aggregate min, the minimum) of its step scores, the steps split by --step-separator.",
        identity=True,
        path=True,
    )
    prm_aggregate: str = setting(
        "product",
        "How a PRM's step scores make the sample's: product (P(every step is right), Lightman et al.) or min.",
        identity=True,
        choices=lambda: steps_mod.AGGREGATES,
    )
    sample_grm: bool = setting(
        False,
        "Score every sample by a DeepSeek-GRM judgement: the model writes principles and a critique of a prompt's "
        "answers shown together, then each answer's 1-9 score is read from the next token's probabilities (their "
        "expectation).",
        identity=True,
    )
    weights: str = setting(
        DEFAULT_WEIGHTS,
        "Weights of the combined score, SIGNAL=W,...: rules (their weighted mean score), p_true, pm, prm, grm; a "
        "signal the run does not compute is left out.",
        identity=True,
    )


@dataclass(frozen=True)
class SignalFailure:
    """A signal that gave a sample no score, and why."""

    signal: str
    reason: str


@dataclass(frozen=True)
class Sample:
    """One sampled answer and every score it got (None where a signal was not asked for or failed)."""

    index: int
    text: str  # empty when the engine gave no answer (`error` says why)
    error: str | None
    rules: list[RuleResult]
    rules_score: float | None  # the weighted mean score of the rules that apply and finished
    correct: bool | None  # every accuracy rule passed; None where none applied or one could not finish
    p_true: float | None
    pm: float | None  # the PM's normalised reward (standard units)
    prm: float | None  # the PRM's solution score
    prm_steps: list[float]
    grm: float | None  # the GRM judgement's expected 1-9 score
    score: float | None  # the combined score on [0, 1]
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
    best: int | None  # the sample with the highest combined score
    model: str


class SampleStage(Stage):
    name = "sample"
    split = "samples"
    row_type = SamplesRow
    view = View(answer="texts", trains="pik")
    in_all = False  # a run for selection: run it by name (`--stage sample` runs select and rank too)
    settings = (SampleOptions, selfeval.SelfEvalOptions)

    def __init__(self, config: RunConfig):
        super().__init__(config)
        self.o = config.options(SampleOptions)
        self.self_eval = config.options(selfeval.SelfEvalOptions)
        try:
            self.weights = ranking.parse_weights(self.o.weights)
        except ValueError as e:
            raise CaiError(f"--weights {e}") from None
        from cai.stages.steps import StepsOptions

        self.separator = config.options(StepsOptions).step_separator
        self.candidates: Candidates[str] = Candidates(
            candidates.Source(
                mode=candidates.SAMPLED,
                traces="",
                path=None,
                n=self.o.samples,
                temperature=self.o.sample_temperature,
                flag="--samples",
                from_flag="",
                step="samples",
            )
        )

    def signals(self) -> list[str]:
        """The signals this run computes, in SIGNALS order."""
        on = {
            "rules": True,
            "p_true": self.self_eval.self_eval,
            "pm": bool(self.o.pm),
            "prm": bool(self.o.prm),
            "grm": self.o.sample_grm,
        }
        return [s for s in ranking.SIGNALS if on[s]]

    def template_specs(self) -> tuple[TemplateSpec, ...]:
        return (selfeval.TEMPLATES if self.self_eval.self_eval else ()) + (GROUP_TEMPLATES if self.o.sample_grm else ())

    def report(self) -> SampleReport:
        return SampleReport(self.split, self.o.samples, self.signals(), self.o.weights)

    def check(self, ctx: RunContext) -> None:
        from cai.signals.rewardmodels import PM, PRM, check_pm

        if self.o.pm:
            check_pm(self.o.pm, "--pm", PM)
        if self.o.prm:
            check_pm(self.o.prm, "--prm", PRM)
        unused = [s for s, w in self.weights.items() if w > 0 and s not in self.signals()]
        if unused and "weights" in ctx.config.given:
            flags = {"p_true": "--self-eval", "pm": "--pm", "prm": "--prm", "grm": "--sample-grm"}
            raise CaiError(
                f"--weights gives {unused[0]} a weight, but the run does not compute it ({flags[unused[0]]})"
            )

    def run(self, ctx: RunContext, chunk: list[Prompt]) -> ChunkResult:
        result = ChunkResult()
        groups = self.candidates.get(ctx, chunk, result)
        prompts, drafts = [], []
        for p, found in zip(chunk, groups, strict=True):
            assert not isinstance(found, Failure)  # sampled candidates always come back, a failure per sample
            prompts.append(p)
            drafts.append([Draft(i, c.value) for i, c in enumerate(found[0])])
        for p, group in zip(prompts, drafts, strict=True):
            for d in group:
                if d.text:
                    d.rules = check_all(ctx.constitution.rules, d.text, p.reference)
        if self.self_eval.self_eval:
            self.score_p_true(ctx, prompts, drafts, result)
        if self.o.pm:
            self.score_pm(prompts, drafts)
        if self.o.prm:
            self.score_prm(prompts, drafts)
        if self.o.sample_grm:
            self.score_grm(ctx, prompts, drafts, result)
        for p, group in zip(prompts, drafts, strict=True):
            result.rows.append(columns.record(self._row(ctx, p, group)))
        return result

    def score_p_true(
        self, ctx: RunContext, prompts: list[Prompt], drafts: list[list[Draft]], result: ChunkResult
    ) -> None:
        k = self.self_eval.self_eval_samples
        items, owners = [], []
        for p, group in zip(prompts, drafts, strict=True):
            answered = [d for d in group if d.text]
            for d in answered:
                others = [o.text for o in answered if o is not d][:k]  # its own other samples, not new ones
                items.append((list(p.messages), d.text, others))
                owners.append(d)
        for d, read in zip(owners, selfeval.evaluate(ctx, items, result), strict=True):
            if read.p_true is None:
                d.failures.append(SignalFailure("p_true", read.error or "no P(True)"))
            d.p_true = read.p_true

    def score_pm(self, prompts: list[Prompt], drafts: list[list[Draft]]) -> None:
        from cai.signals.rewardmodels import rewards

        owners = [(p, d) for p, group in zip(prompts, drafts, strict=True) for d in group if d.text]
        if not owners:
            return
        assert self.o.pm is not None
        try:
            with _TORCH:
                scores = rewards(self.o.pm, [(list(p.messages), d.text) for p, d in owners])["scores"]
        except Exception as e:  # a model that fails on this input is recorded per sample, not a lost prompt
            for _, d in owners:
                d.failures.append(SignalFailure("pm", f"{type(e).__name__}: {str(e)[:200]}"))
            return
        for (_, d), z in zip(owners, scores, strict=True):
            d.pm = z

    def score_prm(self, prompts: list[Prompt], drafts: list[list[Draft]]) -> None:
        from cai.signals.rewardmodels import StepRow, solution_score, step_scores

        owners, rows = [], []
        for p, group in zip(prompts, drafts, strict=True):
            for d in group:
                found = steps_mod.split(d.text, self.separator) if d.text else []
                if d.text and not found:
                    d.failures.append(SignalFailure("prm", f"no steps after splitting by {self.separator!r}"))
                elif found:
                    owners.append(d)
                    rows.append(StepRow(p.id, steps_mod.prompt_text(p.messages), found, None))
        if not rows:
            return
        assert self.o.prm is not None
        try:
            with _TORCH:
                scored = step_scores(self.o.prm, rows)["steps"]
        except Exception as e:
            for d in owners:
                d.failures.append(SignalFailure("prm", f"{type(e).__name__}: {str(e)[:200]}"))
            return
        for d, step_p in zip(owners, scored, strict=True):
            d.prm_steps = step_p
            d.prm = solution_score(step_p, self.o.prm_aggregate)
            if d.prm is None:
                d.failures.append(SignalFailure("prm", "every step lay past the PRM's max length"))

    def score_grm(self, ctx: RunContext, prompts: list[Prompt], drafts: list[list[Draft]], result: ChunkResult) -> None:
        """One GRM judgement per prompt of all its answers (sampled, as the GRM judge writes its own), then each
        answer's score read from one forward pass after `Score of Response N: [` (G-Eval's expectation)."""
        jobs = [
            (p, answered)
            for p, group in zip(prompts, drafts, strict=True)
            if (answered := [d for d in group if d.text])
        ]
        if not jobs:
            return
        groups = [(p, [d.text for d in answered]) for p, answered in jobs]
        judged = GrmJudge(ctx.config).sampled_group(ctx, groups, result, 1, "sample-grm", "sample grm judgements")
        for (_, answered), j in zip(jobs, judged, strict=True):
            if j.soft is None:
                for d in answered:
                    d.failures.append(SignalFailure("grm", j.error or "no scores"))
            else:
                for d, x in zip(answered, j.soft, strict=True):
                    d.grm = x

    def _row(self, ctx: RunContext, p: Prompt, group: list[Draft]) -> SamplesRow:
        rules = {r.id: r for r in ctx.constitution.rules}
        samples = [d.sample(rules, self.weights) for d in group]
        graded = [s for s in samples if s.correct is not None]
        correct = sum(bool(s.correct) for s in graded)
        p_true = [s.p_true for s in samples if s.p_true is not None]
        best = ranking.ranked([s.score for s in samples])
        return SamplesRow(
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
        )


class Draft:
    """A sample while its scores come in (one thread owns a prompt's drafts; each score_* method of the stage fills
    one signal in, so a benchmark can time each)."""

    def __init__(self, index: int, value: str | Failure):
        self.index = index
        self.error = value.reason if isinstance(value, Failure) else None
        text = value.strip() if isinstance(value, str) else ""
        if not text and self.error is None:
            self.error = "the model returned an empty answer"
        self.text = text
        self.rules: list[RuleResult] = []
        self.p_true: float | None = None
        self.pm: float | None = None
        self.prm: float | None = None
        self.prm_steps: list[float] = []
        self.grm: float | None = None
        self.failures: list[SignalFailure] = []

    def sample(self, rules: dict, weights: dict[str, float]) -> Sample:
        rules_score = mean_score(self.rules, rules) if self.rules else None
        accuracy = [r for r in self.rules if rules[r.rule].kind == "accuracy"]
        correct = all(r.passed for r in accuracy) if accuracy and all(r.known for r in accuracy) else None
        scores = {"rules": rules_score, "p_true": self.p_true, "pm": self.pm, "prm": self.prm, "grm": self.grm}
        return Sample(
            index=self.index,
            text=self.text,
            error=self.error,
            rules=self.rules,
            rules_score=rules_score,
            correct=correct,
            p_true=self.p_true,
            pm=self.pm,
            prm=self.prm,
            prm_steps=self.prm_steps,
            grm=self.grm,
            score=ranking.combined(scores, weights) if self.text else None,
            failures=self.failures,
        )
