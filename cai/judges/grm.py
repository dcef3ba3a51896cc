"""A pointwise generative judge with inference-time scaling (Liu et al. 2025, DeepSeek-GRM style).

For each pair the model writes k judgements: principles for this query, a critique of each answer, and
an integer score from 1 to 10 per answer. The candidates' order is drawn afresh for every sample, all
k samples of all pairs go to the engine in one call, and the scores are read after a forced
`Scores: [[` prefix so their format is fixed. Unparseable samples are recorded and excluded, never
guessed. An optional meta judge (the model's own P(Yes) that a judgement is correct, or a trained meta reward
model's P(its verdict is correct), `cai train-pm --kind meta`) keeps the better half of the samples before the
vote, which sums each answer's scores over the kept samples (the paper's meta-RM-guided voting).

The sampled judgements are public (`GrmJudge.sampled`, `GrmJudge.sampled_group`): `cai judge-data` keeps the
ones whose verdict agrees with a known label as SFT data for the judge (the paper's rejective fine-tuning) and
every one, right or wrong, as the meta reward model's training data.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, TypeVar

from cai.backends import Sampling
from cai.backends.base import option_probability
from cai.core import answer
from cai.core.context import RunContext
from cai.core.inputs import Prompt
from cai.core.prompts import SAMPLE_CONVERSATION, TemplateSpec
from cai.core.records import ChunkResult, Failure, continued
from cai.core.sampling import stable_int
from cai.errors import CaiError
from cai.judges import reasoning
from cai.judges.base import Description, FailedRead, Judge, Pair, Verdict
from cai.settings import setting

if TYPE_CHECKING:
    from cai.config import RunConfig

_SCORES = re.compile(r"^\s*(\d{1,2})\s*,\s*(\d{1,2})\s*\]")  # after the forced "Scores: [["
META = (" Yes", " No")
# The score scale when scores are read: single digits, one token each in common tokenizers (10 is often two).
T = TypeVar("T")
SCALE = tuple(str(i) for i in range(1, 10))
PATHS = ("read", "parse")
SCORES_REGEX = r" ?([1-9]|10), ?([1-9]|10)\]\]"  # what may follow the forced "Scores: [[" on the parse path
# Judging a group of answers together (any number, one included), each one's score read: `GrmJudge.sampled_group`.
GROUP_TEMPLATES = (
    TemplateSpec(
        "grm_samples.j2",
        {"conversation": [{"role": "user", "content": "q"}], "principles": ["p"], "responses": ["a", "b"]},
    ),
    TemplateSpec("grm_reasoning.j2"),
    TemplateSpec("grm_score.j2", {"reasoning": "r", "response": 1}, ends_with="["),
)


@dataclass(frozen=True)
class GrmOptions:
    grm_samples: int = setting(
        4, "Judgements sampled per pair (inference-time scaling); votes are summed.", identity=True, minimum=1
    )
    grm_meta: bool = setting(
        False, "Keep the half of the samples the model itself rates most likely correct.", identity=True
    )
    grm_meta_rm: str | None = setting(
        None,
        "A meta reward model folder (cai train-pm --kind meta, trained on cai judge-data's judgements) that "
        "rates each sampled judgement's P(its verdict is correct); the better half votes (implies the filter).",
        identity=True,
        path=True,
    )
    grm_seed_principles: bool = setting(True, "Show the constitution's principles as a starting point.", identity=True)
    grm_scores: str = setting(
        "read",
        "read: each response's score from the next token's probabilities over 1-9 (soft score: their expectation, "
        "as G-Eval; hard score: the most likely), so no sample is lost to parsing; parse: the model writes "
        "'Scores: [[x, y]]' and the text is parsed (for servers that return no log-probs).",
        identity=True,
        choices=lambda: PATHS,
    )


@dataclass
class Judgement:
    """One sampled judgement while it is being read (it becomes a GrmSample or a FailedRead), of `responses`
    answers shown together: two for a pair, one for a pointwise judgement of a single answer."""

    pair: int
    prompt_id: str
    k: int
    first_shown_first: bool
    question: str
    responses: int = 2
    text: str = ""
    shown: tuple[int, ...] | None = None  # the (hard) scores in the order shown: (shown first, shown second)
    soft: tuple[float, ...] | None = None  # read path: the expected scores, in the order shown
    error: str | None = None
    meta: float | None = None
    meta_error: str | None = None  # why the meta judge gave no score (the sample then ranks last)

    @property
    def verdict_scores(self) -> tuple[float, ...]:
        """The scores the vote sums, in the order shown: read, the expected scores; parsed, the written ones."""
        assert self.shown is not None
        return self.soft if self.soft is not None else tuple(float(x) for x in self.shown)

    def conversation(self, templates) -> list[dict]:
        """The judgement as one chat exchange, TRL's conversational format: the question the judge was asked,
        and as the reply the judgement followed by the scores its verdict rests on, in the order shown
        (`grm_target.j2`): the written integers, or read from token probabilities their expectations to one
        decimal (the most likely digit alone ties too often to carry the verdict the vote counted). It is the
        form a judge fine-tuned on it writes and what the meta reward model reads."""
        assert self.shown is not None
        scores = [f"{x:.1f}" for x in self.soft] if self.soft is not None else [str(x) for x in self.shown]
        reply = templates.render("grm_target.j2", reasoning=self.text, scores=scores)
        return [{"role": "user", "content": self.question}, {"role": "assistant", "content": reply}]

    @property
    def scores(self) -> tuple[int, int]:
        """A pair's (first candidate's score, second candidate's score)."""
        assert self.shown is not None
        a, b = self.shown
        return (a, b) if self.first_shown_first else (b, a)

    @property
    def soft_scores(self) -> tuple[float, float] | None:
        if self.soft is None:
            return None
        a, b = self.soft
        return (a, b) if self.first_shown_first else (b, a)


@dataclass(frozen=True)
class GrmRow:
    """A judgement as the preference split stores it (the `grm` column): seen from the chosen answer's side."""

    sample: int
    chosen_first: bool
    text: str
    score_chosen: int
    score_rejected: int
    soft_chosen: float | None
    soft_rejected: float | None
    path: str
    meta: float | None
    kept: bool


@dataclass(frozen=True)
class GrmSample:
    """Evidence: one parseable judgement, its scores for the first and second candidates, the meta score
    (None when the meta filter is off) and whether it counted in the vote."""

    sample: int
    first_shown_first: bool
    text: str
    score_first: int  # the hard scores: read, the most likely; parsed, as written
    score_second: int
    meta: float | None = None
    kept: bool = True
    soft_first: float | None = None  # read path: the probability-weighted scores (None when parsed)
    soft_second: float | None = None
    path: str = "parse"  # how the scores were obtained: read (token probabilities) or parse (text)

    @property
    def first(self) -> float:
        return self.score_first if self.soft_first is None else self.soft_first

    @property
    def second(self) -> float:
        return self.score_second if self.soft_second is None else self.soft_second

    def row(self, first_wins: bool) -> GrmRow:
        return GrmRow(
            sample=self.sample,
            chosen_first=self.first_shown_first == first_wins,
            text=self.text,
            score_chosen=self.score_first if first_wins else self.score_second,
            score_rejected=self.score_second if first_wins else self.score_first,
            soft_chosen=self.soft_first if first_wins else self.soft_second,
            soft_rejected=self.soft_second if first_wins else self.soft_first,
            path=self.path,
            meta=self.meta,
            kept=self.kept,
        )


def parse_scores(text: str) -> tuple[int, int] | Failure:
    """The two scores after the forced `Scores: [[`, or the reason they cannot be read."""
    m = _SCORES.match(text)
    if not m:
        return Failure(f"scores: not two integers 'x, y]]': {text[:40]!r}")
    a, b = int(m.group(1)), int(m.group(2))
    if not (1 <= a <= 10 and 1 <= b <= 10):
        return Failure(f"scores: out of range 1-10: {a}, {b}")
    return a, b


def read_score(logprobs: dict[str, float]) -> tuple[float, int] | Failure:
    """(soft, hard) score from the next token's log-probs over the scale: the expectation of the score under
    the model's distribution renormalised over the scale's tokens (G-Eval), and the most likely score."""
    present = {int(t): math.exp(lp) for t, lp in logprobs.items() if t in SCALE}
    total = sum(present.values())
    if not present or total <= 0:
        return Failure("scores: no log-prob for any score token")
    soft = sum(s * p for s, p in present.items()) / total
    return soft, max(present, key=lambda s: (present[s], -s))


def vote(samples: list[GrmSample]) -> tuple[float, int]:
    """The first candidate's share of the kept samples' summed scores, and how many samples were kept.

    DeepSeek-GRM votes by summing each answer's pointwise scores over the samples: the higher sum wins,
    equal sums are a tie (exactly 0.5), and a sample that scores 9 vs 2 weighs more than one that scores
    6 vs 5. The share of the summed score points is that vote as a probability in (0, 1). Read scores are
    summed soft (expected) scores, so exact ties become rare."""
    kept = [s for s in samples if s.kept]
    if not kept:
        return 0.5, 0
    x, y = sum(s.first for s in kept), sum(s.second for s in kept)
    return x / (x + y), len(kept)


class GrmJudge(Judge):
    name = "grm"
    settings = (reasoning.ReasoningOptions, GrmOptions)
    evidence: ClassVar[dict[str, type]] = {"grm": GrmRow}
    templates = (
        TemplateSpec(
            "grm.j2",
            {
                "conversation": SAMPLE_CONVERSATION,
                "principles": ["p"],
                "response_1": "a",
                "response_2": "b",
                "read": True,
            },
        ),
        TemplateSpec("grm_reasoning.j2"),
        TemplateSpec("grm_score.j2", {"reasoning": "r", "response": 1}, ends_with="["),
        TemplateSpec("grm_scores.j2", {"reasoning": "r"}, ends_with="[["),
        TemplateSpec("grm_meta.j2", {"judgement": "j"}),
        TemplateSpec("grm_meta_prefix.j2"),
        TemplateSpec("grm_target.j2", {"reasoning": "r", "scores": [7, 3]}),
    )

    def __init__(self, config: RunConfig):
        super().__init__(config)
        self.o = config.options(GrmOptions)
        self.max_tokens = config.options(reasoning.ReasoningOptions).cot_max_tokens

    def check(self, ctx: RunContext) -> None:
        if self.o.grm_meta_rm is not None:
            from cai.signals.rewardmodels import META, check_pm

            check_pm(self.o.grm_meta_rm, "--grm-meta-rm", META)
        if self.o.grm_meta_rm is not None and self.o.grm_meta:
            raise CaiError("--grm-meta and --grm-meta-rm are two meta judges: choose one")

    def describe(self) -> Description:
        meta = {True: " The better half of the samples by the meta judge's score was kept before the vote.", False: ""}[
            bool(self.o.grm_meta or self.o.grm_meta_rm)
        ]
        read = self.o.grm_scores == "read"
        how = (
            (
                "each answer's 1-9 score read from the next token's probabilities (the soft score is their "
                "expectation, the hard score the most likely)"
            )
            if read
            else "a 1-10 score per answer, parsed from its text"
        )
        return Description(
            label_source=f"the model wrote {self.o.grm_samples} judgement(s) per pair (principles and a critique of "
            f"each answer, with the answers' order drawn afresh for each), then {how}, DeepSeek-GRM style; "
            f"`p_chosen` is the chosen answer's share of the {'soft ' if read else ''}scores summed over the "
            f"samples (`grm`).{meta}",
            failures="failed GRM judgements" if read else "unparseable GRM judgements",
            pairwise_votes=False,
        )

    def _principles(self, ctx: RunContext) -> list[str]:
        shown = [p.compare or p.critique for p in ctx.constitution.principles] if self.o.grm_seed_principles else []
        return [text for text in shown if text]  # principles checked only by rules have neither

    def sampled(self, ctx: RunContext, pairs: list[Pair], result: ChunkResult) -> list[Judgement]:
        """The k judgements of every pair (the answers' order drawn afresh for each), written in one engine call
        and scored; a judgement that could not be scored keeps its `error`."""
        seed = ctx.config.run.seed
        principles = self._principles(ctx)
        samples = []
        for i, pair in enumerate(pairs):
            for k in range(self.o.grm_samples):
                first_shown = random.Random(stable_int("grm-order", seed, pair.prompt.id, k)).random() < 0.5
                shown_a, shown_b = (answer.scoped(t, ctx.constitution.scope) for t in (pair.first, pair.second))
                r1, r2 = (shown_a, shown_b) if first_shown else (shown_b, shown_a)
                question = ctx.templates.render(
                    "grm.j2",
                    read=self.o.grm_scores == "read",
                    conversation=list(pair.prompt.messages),
                    principles=principles,
                    response_1=r1,
                    response_2=r2,
                )
                samples.append(Judgement(i, pair.prompt.id, k, first_shown, question))
        self._write_and_score(ctx, samples, result)
        return samples

    def sampled_group(
        self,
        ctx: RunContext,
        groups: list[tuple[Prompt, list[str]]],
        result: ChunkResult,
        k: int,
        tag: str = "grm",
        label: str = "grm judgements",
    ) -> list[Judgement]:
        """k judgements of each group of answers shown together (`pair` = the group's index; one answer: a
        pointwise judgement), every answer's score read from the score token's probabilities after
        `Score of Response N: [` (`GROUP_TEMPLATES`); `tag` names the judgements' seeds."""
        principles = self._principles(ctx)
        samples = []
        for i, (prompt, texts) in enumerate(groups):
            question = ctx.templates.render(
                "grm_samples.j2",
                conversation=list(prompt.messages),
                principles=principles,
                responses=[answer.scoped(t, ctx.constitution.scope) for t in texts],
            )
            samples += [Judgement(i, prompt.id, j, True, question, len(texts)) for j in range(k)]
        self._write_and_score(ctx, samples, result, read=True, tag=tag, label=label)
        return samples

    def judge(self, ctx: RunContext, pairs: list[Pair], result: ChunkResult) -> list[Verdict | Failure]:
        samples = self.sampled(ctx, pairs, result)
        good = [s for s in samples if s.shown is not None]
        kept = {id(s) for s in good}
        if good and self.o.grm_meta_rm:
            self._rm_meta(ctx, good)
            kept = _top_half(good)
        elif good and self.o.grm_meta:
            self._self_meta(ctx, good, result)
            kept = _top_half(good)

        evidence: list[list[GrmSample]] = [[] for _ in pairs]
        failed: list[list[FailedRead]] = [[] for _ in pairs]
        for s in samples:
            order = "ab" if s.first_shown_first else "ba"
            if s.shown is None:
                failed[s.pair].append(FailedRead(f"grm-sample-{s.k}", order, s.error or "no scores"))
            else:
                if s.meta_error:  # the sample still votes if kept; its missing meta score is on record
                    failed[s.pair].append(FailedRead(f"grm-meta-{s.k}", order, s.meta_error))
                first, second = s.scores
                soft = s.soft_scores
                evidence[s.pair].append(
                    GrmSample(
                        s.k,
                        s.first_shown_first,
                        s.text,
                        first,
                        second,
                        s.meta,
                        id(s) in kept,
                        soft[0] if soft else None,
                        soft[1] if soft else None,
                        self.o.grm_scores,
                    )
                )
        verdicts: list[Verdict | Failure] = []
        for i in range(len(pairs)):
            q, n_kept = vote(evidence[i])
            if not n_kept:
                reasons = "; ".join(sorted({f.reason[:80] for f in failed[i]})) or "no judgement"
                verdicts.append(Failure(f"judge: no parseable GRM judgement ({reasons})"))
            else:
                verdicts.append(Verdict(q, failed=tuple(failed[i]), evidence={"grm": tuple(evidence[i])}))
        return verdicts

    def _write_and_score(
        self,
        ctx: RunContext,
        samples: list[Judgement],
        result: ChunkResult,
        read: bool | None = None,
        tag: str = "grm",
        label: str | None = None,
    ) -> None:
        """The judgements (sampled, one call), then their scores: read from the score tokens' probabilities
        (two forward passes per judgement, sharing it as a cached prefix), or parsed from a few greedy tokens
        after a forced `Scores: [[`."""
        opening = ctx.templates.render("grm_reasoning.j2")
        outs = reasoning.write(
            ctx,
            [continued(s.question, opening) for s in samples],
            [(s.prompt_id, f"{tag}-{s.k}") for s in samples],
            result,
            label=label or f"grm judgements (k={self.o.grm_samples})",
            stop=("Scores:", "Score of Response"),
        )
        written = []
        for s, out in zip(samples, outs, strict=True):
            if not out.ok:
                s.error = f"judgement: {out.error}"
                continue
            # A judgement cut by the token budget still gets its scores: they are asked for now.
            s.text = out.text.strip()
            written.append(s)
        if read or self.o.grm_scores == "read":
            self._read_scores(ctx, written, result)
        else:
            self._parse_scores(ctx, written, result)

    def _read_scores(self, ctx: RunContext, written: list[Judgement], result: ChunkResult) -> None:
        """Each response's score from one forward pass after `Score of Response N: [`: a sample fails only
        when the engine fails, never because of what the model wrote."""
        chats, owners = [], []
        for s in written:
            for n in range(1, s.responses + 1):
                chats.append(continued(s.question, ctx.templates.render("grm_score.j2", reasoning=s.text, response=n)))
                owners.append(s)
        outs = ctx.engine.generate(chats, Sampling(options=SCALE, continue_final=True, label="grm scores"))
        reads: dict[int, list[tuple[float, int] | Failure]] = {}
        for s, (out,) in zip(owners, outs, strict=True):
            result.tally(out)
            reads.setdefault(id(s), []).append(
                read_score(out.option_logprobs) if out.ok else Failure(f"scores: {out.error}")
            )
        for s in written:
            got = reads.get(id(s), [])
            bad = next((r for r in got if isinstance(r, Failure)), None)
            if bad is not None:
                s.error = bad.reason
                continue
            scored = [r for r in got if not isinstance(r, Failure)]
            s.shown, s.soft = tuple(h for _, h in scored), tuple(x for x, _ in scored)

    def _parse_scores(self, ctx: RunContext, written: list[Judgement], result: ChunkResult) -> None:
        """The text path: a few greedy tokens after a forced `Scores: [[`, parsed; unparseable is recorded."""
        follow, where = [], []
        for s in written:
            closing = ctx.templates.render("grm_scores.j2", reasoning=s.text)
            follow.append(continued(s.question, closing))
            where.append(s)
        if not follow:
            return
        # Structured output keeps the scores' format on engines that can constrain decoding (vLLM's guided
        # decoding); the text is parsed and checked all the same, as other servers may ignore the constraint.
        scores = Sampling(max_tokens=8, temperature=0.0, continue_final=True, regex=SCORES_REGEX, label="grm scores")
        outs = ctx.engine.generate(follow, scores)
        for s, (out,) in zip(where, outs, strict=True):
            result.tally(out)
            parsed = parse_scores(out.text) if out.ok else Failure(f"scores: {out.error}")
            if isinstance(parsed, Failure):
                s.error = parsed.reason
            else:
                s.shown = parsed

    def _self_meta(self, ctx: RunContext, good: list[Judgement], result: ChunkResult) -> None:
        """Meta score = the judge model's own P(" Yes") that the judgement is correct, one forward pass each."""
        prefix = ctx.templates.render("grm_meta_prefix.j2")
        # The meta judge sees the question with both responses, then the judgement as it was written.
        chats = []
        for s in good:
            assert s.shown is not None
            judgement = f"{s.question}\n\nPrinciples: {s.text}\nScores: [[{s.shown[0]}, {s.shown[1]}]]"
            chats.append(continued(ctx.templates.render("grm_meta.j2", judgement=judgement), prefix))
        outs = ctx.engine.generate(chats, Sampling(options=META, continue_final=True, label="rl grm meta judge"))
        for s, (out,) in zip(good, outs, strict=True):
            result.tally(out)
            if not out.ok:
                s.meta_error = f"meta judge: {out.error}"
            elif not all(o in out.option_logprobs for o in META):
                s.meta_error = f"meta judge: no log-prob for {' or '.join(repr(o) for o in META)} in the top tokens"
            else:
                s.meta = option_probability(out.option_logprobs, *META)

    def _rm_meta(self, ctx: RunContext, good: list[Judgement]) -> None:
        """Meta score from a trained meta reward model: P(the judgement's verdict is correct), read from the
        judgement as one exchange (the question with the answers, the judgement and its scores), the same text
        it was trained on."""
        from cai.signals.rewardmodels import meta_scores

        assert self.o.grm_meta_rm is not None
        probs = meta_scores(self.o.grm_meta_rm, [s.conversation(ctx.templates) for s in good])
        for s, p in zip(good, probs, strict=True):
            s.meta = p


def better_half(samples: list[T], meta: Callable[[T], float | None], index: Callable[[T], int]) -> list[T]:
    """The half of one pair's samples (at least one) that votes under a meta judge: the highest meta scores, a
    sample without one below every scored one, ties by sample index. The judge and `cai eval judge`'s k-scaling
    table both keep these."""
    ranked = sorted(samples, key=lambda s: (-(m if (m := meta(s)) is not None else -1.0), index(s)))
    return ranked[: max(1, math.ceil(len(samples) / 2))]


def _top_half(good: list[Judgement]) -> set[int]:
    """Per pair, the better half of the parseable samples (ids)."""
    by_pair: dict[int, list[Judgement]] = {}
    for s in good:
        by_pair.setdefault(s.pair, []).append(s)
    return {id(s) for group in by_pair.values() for s in better_half(group, lambda s: s.meta, lambda s: s.k)}
