"""SL-CAI: an initial answer, then rounds of critique and revision under a sampled principle."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from cai.backends import Sampling
from cai.core import columns
from cai.core.columns import Messages
from cai.core.constitution import Constitution, Principle
from cai.core.context import RunContext
from cai.core.inputs import Prompt
from cai.core.prompts import SAMPLE_PRINCIPLE, Templates, TemplateSpec
from cai.core.records import ChunkResult, assistant, with_system
from cai.core.rules import Rule, RuleResult, check_all, total
from cai.core.sampling import request_seed, sample_principles
from cai.core.views import TraceView
from cai.errors import CaiError
from cai.settings import setting
from cai.signals import p_true as selfeval
from cai.signals.p_true import SelfEvalRow, TrueRead
from cai.stages.base import Stage
from cai.stages.sl_report import SLReport

if TYPE_CHECKING:
    from cai.config import RunConfig

KEEP = ("last", "best-rules", "best")


@dataclass(frozen=True)
class SLOptions:
    rounds: int = setting(
        4,
        "Critique-revision rounds, a principle sampled per round (Bai et al. revised up to four times).",
        identity=True,
        minimum=1,
    )
    keep: str = setting(
        "last",
        "Which text of the trace is the SFT completion: last (the final revision), best-rules (the one that "
        "passes the most hard rules, then scores highest on the constitution's rules) or best (the highest "
        "P(True) under --self-eval); ties go to the later.",
        identity=True,
        choices=lambda: KEEP,
    )


@dataclass(frozen=True)
class Revision:
    """One round of the trace (a record of the split's `revisions` column)."""

    round: int
    principle: str
    critique: str
    revision: str
    rules: tuple[RuleResult, ...] = ()  # the constitution's rules on this revision
    regressed: bool = False  # it breaks a hard rule that the text before it kept
    p_true: float | None = None  # the model's own P(True) of this revision (--self-eval)


@dataclass(frozen=True)
class SFTRow:
    """A row of the sft split: TRL's conversational prompt-completion format, plus the trace. `prompt` is a
    message list: a plain string column would make TRL's SFTTrainer treat the data as non-conversational."""

    id: str
    prompt: Messages
    completion: Messages
    messages: Messages
    initial: str
    reference: str | None  # the prompt record's known answer, if it had one
    initial_rules: tuple[RuleResult, ...]
    initial_p_true: float | None  # --self-eval: the model's own P(True) of the initial answer
    revisions: tuple[Revision, ...]
    kept: int  # the round whose text is the completion (0: the initial answer)
    self_eval: tuple[SelfEvalRow, ...]  # --self-eval: P(True) of every text (round 0: the initial answer)


@dataclass
class Trace:
    """One prompt on its way through the rounds."""

    prompt: Prompt
    base: list[dict]  # the prompt behind the constitution's system prompt
    initial: str = ""
    initial_rules: tuple[RuleResult, ...] = ()
    revisions: list[Revision] = field(default_factory=list)
    self_eval: list[TrueRead] = field(default_factory=list)  # P(True) of the initial answer, then each revision
    chat: list[dict] = field(default_factory=list)  # the request being made
    principle: Principle | None = None  # this round's
    critique: str = ""  # this round's

    @property
    def latest(self) -> str:
        return self.revisions[-1].revision if self.revisions else self.initial

    @property
    def latest_rules(self) -> tuple[RuleResult, ...]:
        return self.revisions[-1].rules if self.revisions else self.initial_rules

    @property
    def texts(self) -> list[str]:
        return [self.initial, *(r.revision for r in self.revisions)]

    def kept(self, keep: str, rules: dict[str, Rule]) -> int:
        """The round whose text becomes the completion (0: the initial answer); ties go to the later."""
        rounds = range(len(self.revisions) + 1)
        if keep == "best" and self.self_eval:
            return max(rounds, key=lambda i: (_or_lowest(self.self_eval[i].p_true), i))
        if keep == "best-rules" and rules:
            results = [self.initial_rules, *(r.rules for r in self.revisions)]
            return max(rounds, key=lambda i: (*total(list(results[i]), rules), i))
        return len(self.revisions)

    def row(self, keep: str, rules: dict[str, Rule]) -> SFTRow:
        prompt = list(self.prompt.messages)
        kept = self.kept(keep, rules)
        completion = assistant(self.revisions[kept - 1].revision if kept else self.initial)
        return SFTRow(
            id=self.prompt.id,
            prompt=prompt,
            completion=completion,
            messages=prompt + completion,
            initial=self.initial,
            reference=self.prompt.reference,
            initial_rules=self.initial_rules,
            initial_p_true=self.self_eval[0].p_true if self.self_eval else None,
            revisions=tuple(self.revisions),
            kept=kept,
            self_eval=tuple(read.row(i) for i, read in enumerate(self.self_eval)),
        )


def _or_lowest(p: float | None) -> float:
    return -1.0 if p is None else p


def regressed(before: tuple[RuleResult, ...], after: tuple[RuleResult, ...], rules: dict[str, Rule]) -> bool:
    """Whether `after` breaks a hard rule that `before` kept (a check that could not finish breaks nothing)."""
    kept = {r.rule for r in before if r.passed and rules[r.rule].hard}
    return any(r.rule in kept and r.known and not r.passed for r in after)


def demonstrations(constitution: Constitution, templates: Templates) -> list[dict]:
    """The few-shot turns, rendered through the same templates as the real requests. They sit right
    after the system prompt, so every request in a round starts with the same cacheable prefix."""
    turns = []
    for d in constitution.few_shot:
        principle = constitution.principle(d.principle)
        turns += [
            {"role": "user", "content": d.prompt},
            {"role": "assistant", "content": d.answer},
            {"role": "user", "content": templates.render("critique.j2", principle=principle, round=1)},
            {"role": "assistant", "content": d.critique},
            {"role": "user", "content": templates.render("revision.j2", principle=principle, round=1)},
            {"role": "assistant", "content": d.revision},
        ]
    return turns


class SLStage(Stage):
    name = "sl"
    split = "sft"
    row_type = SFTRow
    view = TraceView(answer="completion", principles="revisions", trains=None, scores="completion")
    settings = (SLOptions, selfeval.SelfEvalOptions)
    templates = (
        TemplateSpec("critique.j2", {"principle": SAMPLE_PRINCIPLE, "round": 1}),
        TemplateSpec("revision.j2", {"principle": SAMPLE_PRINCIPLE, "round": 1}),
    )

    def __init__(self, config: RunConfig):
        super().__init__(config)
        self.sl = config.options(SLOptions)
        self.selfeval = config.options(selfeval.SelfEvalOptions)
        if self.sl.keep == "best" and not self.selfeval.self_eval:
            raise CaiError("--keep best picks the answer with the highest P(True): it needs --self-eval")

    def report(self) -> SLReport:
        return SLReport(self.split, self.sl.rounds, self.sl.keep)

    def run(self, ctx: RunContext, chunk: list[Prompt]) -> ChunkResult:
        """Run the whole SL stage on a chunk: one engine call per step of a round, over every prompt still
        alive. The streaming executor calls it with one prompt (its own chain, its requests joining the
        engine's running batch); --executor steps with a whole chunk."""
        const, templates = ctx.constitution, ctx.templates
        o, sampled, seed = self.sl, ctx.config.sampling, ctx.config.run.seed
        rounds = o.rounds
        rules = {r.id: r for r in const.rules}
        result = ChunkResult()
        demos = demonstrations(const, templates)

        def step(traces: list[Trace], name: str, label: str) -> list[tuple[Trace, str]]:
            """Generate for every trace's `chat`; returns the survivors with their text. Failures and empty
            outputs go to skips with the step named, so no prompt silently vanishes."""
            sampling = Sampling(
                max_tokens=sampled.max_tokens, temperature=sampled.temperature, top_p=sampled.top_p, label=label
            )
            seeds = [request_seed(seed, t.prompt.id, name) for t in traces]
            alive = []
            for t, (out,) in zip(traces, ctx.engine.generate([t.chat for t in traces], sampling, seeds), strict=True):
                result.tally(out)
                if not out.ok:
                    result.skip(t.prompt.id, f"{name}: {out.error}")
                elif not out.text.strip():
                    result.skip(t.prompt.id, f"{name}: the model returned an empty text")
                else:
                    alive.append((t, out.text.strip()))
            return alive

        traces = []
        for p in chunk:
            base = with_system(const, p.messages)
            traces.append(Trace(p, base, chat=base))
        for t, text in step(traces, "initial", "sl initial"):
            t.initial = text
            t.initial_rules = tuple(check_all(const.rules, text, t.prompt.reference))
        traces = [t for t in traces if t.initial]

        for r in range(1, rounds + 1):
            for t in traces:
                (t.principle,) = sample_principles(const.critiquable, 1, seed, t.prompt.id, f"sl-round-{r}")
                # system, then demonstrations (shared prefix), then this prompt's conversation.
                head = t.base[:1] + demos + t.base[1:] if t.base[0]["role"] == "system" else demos + t.base
                t.chat = head + [
                    {"role": "assistant", "content": t.latest},
                    {"role": "user", "content": templates.render("critique.j2", principle=t.principle, round=r)},
                ]
            critiqued = step(traces, f"round {r} critique", f"sl round {r}/{rounds} critique")
            for t, critique in critiqued:
                t.critique = critique
                t.chat = t.chat + [
                    {"role": "assistant", "content": critique},
                    {"role": "user", "content": templates.render("revision.j2", principle=t.principle, round=r)},
                ]
            revised = step([t for t, _ in critiqued], f"round {r} revision", f"sl round {r}/{rounds} revision")
            for t, revision in revised:
                assert t.principle is not None
                checked = tuple(check_all(const.rules, revision, t.prompt.reference))
                t.revisions.append(
                    Revision(
                        r, t.principle.id, t.critique, revision, checked, regressed(t.latest_rules, checked, rules)
                    )
                )
            traces = [t for t, _ in revised]

        if self.selfeval.self_eval and traces:
            self._self_evaluate(ctx, traces, result)
        result.rows = [columns.record(t.row(o.keep, rules)) for t in traces]
        return result

    def _self_evaluate(self, ctx: RunContext, traces: list[Trace], result: ChunkResult) -> None:
        """P(True) of every text of every trace, in one engine call (after K brainstormed samples per prompt)."""
        samples = selfeval.brainstorm(ctx, [t.prompt for t in traces], self.selfeval.self_eval_samples, result)
        items = [(list(t.prompt.messages), text, samples.get(t.prompt.id, [])) for t in traces for text in t.texts]
        reads = iter(selfeval.evaluate(ctx, items, result))
        for t in traces:
            t.self_eval = [next(reads) for _ in t.texts]
            t.revisions = [replace(r, p_true=read.p_true) for r, read in zip(t.revisions, t.self_eval[1:], strict=True)]

    def template_specs(self) -> tuple[TemplateSpec, ...]:
        return self.templates + (selfeval.TEMPLATES if self.selfeval.self_eval else ())

    def check(self, ctx: RunContext) -> None:
        if not ctx.constitution.critiquable:
            raise CaiError(
                f"{ctx.constitution.path}: no principle has a critique and revision request, so the SL "
                "stage has nothing to sample (principles checked only by rules are for scoring)"
            )
