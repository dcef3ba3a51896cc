"""`cai judge-data`: training data for the judge from its own judgements (DeepSeek-GRM's rejective fine-tuning).

For each labelled pair the GRM judge writes k judgements (principles, a critique of each answer, a score each),
with the answers' order drawn afresh for each, exactly as `--judge grm` labels a run's pairs. A judgement is
*correct* when it scores the answer people (or a reference) preferred strictly higher. Two splits come out:

- `judgements/`: every sampled judgement, right or wrong, with its correctness: the meta reward model's data
  (`cai train-pm --kind meta`) and the record of what the judge did;
- `judge_sft/`: the correct ones as chat exchanges (TRL's conversational format, `messages`), the data the paper
  fine-tunes the judge on. Pairs whose k judgements were all correct are "too easy" and left out (the paper's
  choice; `--keep-easy` keeps them).

With `--pointwise` each answer is also judged alone, k times (the GRM rates any number of answers, one
included); the k-th judgement of the chosen answer and the k-th of the rejected one are correct together when the
chosen one scores higher. Both are kept as SFT data, as the paper keeps single-response judgements.

Labelled pairs come from a preference file (`cai eval judge`'s format, RewardBench's and RewardBench 2's), or a run
folder: its preference pairs a person kept or flipped in `cai review` and those a rule decided, and its sampled
answers a reference graded (one right answer against one wrong one per pair).

The run goes through the lifecycle every run does (cai.commands.evaluation.run): checked before the engine
starts, written by shard, resumed where it stopped; `judge_sft/` is rebuilt from `judgements/` at the end of every run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cai import backends
from cai.commands.evaluation.data import LabelledPair, fingerprint, read_pairs
from cai.commands.evaluation.run import chunked
from cai.commands.evaluation.run import evaluate as run_evaluation
from cai.config import RunConfig
from cai.core import columns
from cai.core.columns import Messages, text_of
from cai.core.context import RunContext
from cai.core.inputs import Prompt
from cai.core.prompts import TemplateSpec
from cai.core.records import ChunkResult
from cai.core.store import RunStore
from cai.errors import CaiError
from cai.judges.base import Pair
from cai.judges.grm import GROUP_TEMPLATES, GrmJudge, Judgement
from cai.judges.labels import LabelOptions
from cai.stages.base import Stage

SPLIT = "judgements"
SFT = "judge_sft"
STAGE = "judge-data"


@dataclass(frozen=True)
class JudgementRow:
    """One sampled judgement of a labelled pair, seen from the preferred answer's side."""

    id: str  # <pair id>/<k> (pairwise) or <pair id>/<k>/<chosen|rejected> (pointwise)
    pair_id: str
    subset: str | None
    label_source: str  # file, human (a review decision), rule (a rule or a reference decided it)
    kind: str  # pairwise: both answers in one judgement; pointwise: one answer alone
    sample: int  # k
    response: str | None  # pointwise: which answer this judgement saw (chosen or rejected)
    prompt: Messages
    chosen: str  # the preferred answer
    rejected: str
    chosen_first: bool | None  # pairwise: the preferred answer was shown as Response 1
    messages: Messages  # the judgement as a chat exchange (question, reply with the scores); empty if it failed
    score_chosen: int | None  # the written / most likely scores (pointwise: the k-th judgement of each answer alone)
    score_rejected: int | None
    soft_chosen: float | None  # the expected scores, where read from token probabilities (they decide `correct`)
    soft_rejected: float | None
    correct: bool | None  # its verdict (the scores the vote sums) puts the preferred answer strictly first; null if
    # a judgement failed
    agreed: int  # how many of the pair's judgements of this kind were correct
    scored: int  # how many of them could be scored
    too_easy: bool  # every one of the pair's k judgements of this kind was correct
    error: str | None  # why the judgement (or its counterpart, pointwise) could not be scored
    model: str


@dataclass(frozen=True)
class SftRow:
    """A correct judgement in TRL's conversational format (SFTTrainer reads `messages`)."""

    id: str
    pair_id: str
    subset: str | None
    kind: str
    messages: Messages


class JudgeData(Stage):
    """Samples k GRM judgements per labelled pair (and, pointwise, per answer) and checks each against the label."""

    name = STAGE
    split = SPLIT
    row_type = JudgementRow
    key = "pair_id"
    in_all = False
    settings = (LabelOptions,)

    def __init__(self, config: RunConfig, pairs: list[LabelledPair], sources: dict[str, str], pointwise: bool):
        super().__init__(config)
        self.judge = GrmJudge(config)
        self.pairs = {p.id: p for p in pairs}
        self.sources = sources
        self.pointwise = pointwise

    def template_specs(self) -> tuple[TemplateSpec, ...]:
        return self.judge.templates + (GROUP_TEMPLATES[:1] if self.pointwise else ())

    def check(self, ctx: RunContext) -> None:
        self.judge.check(ctx)

    def run(self, ctx: RunContext, chunk: list[Prompt]) -> ChunkResult:
        result = ChunkResult()
        labelled = [self.pairs[p.id] for p in chunk]
        pairwise = self.judge.sampled(ctx, [Pair(lp.prompt, lp.chosen, lp.rejected) for lp in labelled], result)
        by_pair: dict[int, list[Judgement]] = {}
        for s in pairwise:
            by_pair.setdefault(s.pair, []).append(s)
        single: dict[int, list[Judgement]] = {}
        if self.pointwise:
            items = [(lp.prompt, [text]) for lp in labelled for text in (lp.chosen, lp.rejected)]
            for s in self.judge.sampled_group(ctx, items, result, self.judge.o.grm_samples):
                single.setdefault(s.pair, []).append(s)
        k = self.judge.o.grm_samples
        for i, lp in enumerate(labelled):
            rows = self._pairwise(ctx, lp, by_pair.get(i, []), k)
            if self.pointwise:
                rows += self._pointwise(ctx, lp, single.get(2 * i, []), single.get(2 * i + 1, []), k)
            if not any(r.correct is not None for r in rows):
                reasons = "; ".join(sorted({r.error[:80] for r in rows if r.error})) or "no judgement"
                result.skip(lp.id, f"judge-data: no judgement could be scored ({reasons})")  # retried on resume
                continue
            result.rows += [columns.record(r) for r in rows]
        return result

    def _row(self, ctx: RunContext, lp: LabelledPair, **values) -> JudgementRow:
        return JudgementRow(
            pair_id=lp.id,
            subset=lp.subset,
            label_source=self.sources.get(lp.id, "file"),
            prompt=list(lp.prompt.messages),
            chosen=lp.chosen,
            rejected=lp.rejected,
            model=ctx.config.run.model,
            **values,
        )

    def _pairwise(self, ctx: RunContext, lp: LabelledPair, samples: list[Judgement], k: int) -> list[JudgementRow]:
        checked: list[tuple[Judgement, tuple[int, int] | None, tuple[float, float] | None, bool | None]] = []
        for s in samples:  # the pair's first candidate is the chosen answer
            if s.shown is None:
                checked.append((s, None, None, None))
                continue
            hard, soft = s.scores, s.soft_scores
            first, second = soft or hard  # the verdict the vote counts (cai.judges.grm.vote)
            checked.append((s, hard, soft, first > second))
        agreed = sum(bool(c) for *_, c in checked)
        scored = sum(c is not None for *_, c in checked)
        return [
            self._row(
                ctx,
                lp,
                id=f"{lp.id}/{s.k}",
                kind="pairwise",
                sample=s.k,
                response=None,
                chosen_first=s.first_shown_first,
                messages=s.conversation(ctx.templates) if hard else [],
                score_chosen=hard[0] if hard else None,
                score_rejected=hard[1] if hard else None,
                soft_chosen=soft[0] if soft else None,
                soft_rejected=soft[1] if soft else None,
                correct=ok,
                agreed=agreed,
                scored=scored,
                too_easy=agreed == k,
                error=s.error,
            )
            for s, hard, soft, ok in checked
        ]

    def _pointwise(
        self, ctx: RunContext, lp: LabelledPair, good: list[Judgement], bad: list[Judgement], k: int
    ) -> list[JudgementRow]:
        """The k-th judgement of the chosen answer alone against the k-th of the rejected one."""
        matched = []
        for a, b in zip(good, bad, strict=True):
            ok = None if a.shown is None or b.shown is None else a.verdict_scores[0] > b.verdict_scores[0]
            matched.append((a, b, ok))
        agreed = sum(bool(ok) for *_, ok in matched)
        scored = sum(ok is not None for *_, ok in matched)
        rows = []
        for a, b, ok in matched:
            for s, side in ((a, "chosen"), (b, "rejected")):
                rows.append(
                    self._row(
                        ctx,
                        lp,
                        id=f"{lp.id}/{s.k}/{side}",
                        kind="pointwise",
                        sample=s.k,
                        response=side,
                        chosen_first=None,
                        messages=s.conversation(ctx.templates) if s.shown is not None else [],
                        score_chosen=a.shown[0] if a.shown else None,
                        score_rejected=b.shown[0] if b.shown else None,
                        soft_chosen=a.soft[0] if a.soft else None,
                        soft_rejected=b.soft[0] if b.soft else None,
                        correct=ok,
                        agreed=agreed,
                        scored=scored,
                        too_easy=agreed == k,
                        error=a.error or b.error,
                    )
                )
        return rows


def labelled_pairs(source: str) -> tuple[list[LabelledPair], dict[str, str]]:
    """The labelled pairs of `source` and, by pair id, where each label came from (file, human, rule)."""
    if not RunStore.is_run(source):
        found = read_pairs(source)
        return found, {p.id: "file" for p in found}
    store = RunStore(source)
    pairs: list[LabelledPair] = []
    sources: dict[str, str] = {}
    if store.count("prefs"):
        for lp, how in _reviewed_pairs(store):
            pairs.append(lp)
            sources[lp.id] = how
    if store.count("samples"):
        for lp in _graded_pairs(store):
            pairs.append(lp)
            sources[lp.id] = "rule"
    if not pairs:
        raise CaiError(
            f"{source}: no labelled pair in the run: judge data needs preference pairs a person reviewed "
            "(cai review: keep or flip) or a rule decided, or sampled answers a reference graded"
        )
    return pairs, sources


def _text(value) -> str:
    return text_of(value) or ""


def _reviewed_pairs(store: RunStore) -> list[tuple[LabelledPair, str]]:
    """Preference pairs with a label not the judge's: a person kept or flipped them, or a rule decided them."""
    from cai.core import decisions
    from cai.stages import for_split

    table = store.table("prefs")
    assert table is not None
    table, _ = decisions.apply(table, "prefs", for_split("prefs").view, store.reviews())
    out = []
    for r in table.to_pylist():
        how = "human" if r["human_label"] in ("keep", "flip") else "rule" if r["decided_by"] in RULED else None
        chosen, rejected = _text(r["chosen"]), _text(r["rejected"])
        if how is None or r.get("tie") or chosen == rejected:
            continue
        prompt = Prompt(r["id"], tuple(r["prompt"]), r.get("reference"))
        out.append((LabelledPair(prompt, chosen, rejected, how), how))
    return out


RULED = ("rules", "hard rule")  # decided_by values where code, not the judge, decided the pair


def _graded_pairs(store: RunStore) -> list[LabelledPair]:
    """From the samples split: the i-th right answer against the i-th wrong one of each prompt (a reference
    graded them), so no answer is in two pairs."""
    out = []
    for r in store.read("samples"):
        right = [s["text"] for s in r["samples"] if s.get("correct") is True and s.get("text")]
        wrong = [s["text"] for s in r["samples"] if s.get("correct") is False and s.get("text")]
        for i, (good, bad) in enumerate(zip(right, wrong, strict=False)):
            if good != bad:
                prompt = Prompt(f"{r['id']}/graded-{i}", tuple(r["prompt"]), r.get("reference"))
                out.append(LabelledPair(prompt, good, bad, "rule"))
    return out


def sft_rows(rows: list[dict], keep_easy: bool) -> list[dict]:
    """The correct judgements as SFT rows, less the too-easy pairs' unless `keep_easy`."""
    return [
        columns.record(SftRow(r["id"], r["pair_id"], r["subset"], r["kind"], r["messages"]))
        for r in rows
        if r["correct"] and (keep_easy or not r["too_easy"])
    ]


def acceptance(rows: list[dict], keep_easy: bool) -> dict:
    """Per subset and kind: pairs, judgements, how many were correct, how many pairs were too easy or had no
    correct judgement, and the acceptance rate (judgements kept as SFT data / judgements sampled)."""
    out: dict[str, dict] = {}
    for r in rows:
        key = f"{r['subset'] or 'all'} ({r['kind']})"
        s = out.setdefault(key, {"pairs": set(), "judgements": 0, "scored": 0, "correct": 0, "accepted": 0})
        s["pairs"].add(r["pair_id"])
        s["judgements"] += 1
        s["scored"] += r["correct"] is not None
        s["correct"] += bool(r["correct"])
        s["accepted"] += bool(r["correct"]) and (keep_easy or not r["too_easy"])
    per_pair: dict[tuple[str, str], dict] = {}
    for r in rows:
        per_pair.setdefault((f"{r['subset'] or 'all'} ({r['kind']})", r["pair_id"]), r)
    for (key, _), r in per_pair.items():
        s = out[key]
        s["too_easy"] = s.get("too_easy", 0) + bool(r["too_easy"])
        s["none_correct"] = s.get("none_correct", 0) + (r["agreed"] == 0)
    for s in out.values():
        s["pairs"] = len(s["pairs"])
        s["rate"] = s["accepted"] / s["judgements"] if s["judgements"] else 0.0
    return dict(sorted(out.items()))


def build(
    config: RunConfig,
    data: str,
    pointwise: bool = False,
    keep_easy: bool = False,
    backend: backends.Backend | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Sample and check the judgements of every labelled pair of `data` into --out (resuming it), write the SFT
    split, and report the acceptance per subset."""
    started = time.monotonic()
    if not config.run.out:
        raise CaiError("judge-data needs --out: the folder the judgements and the SFT split are written to")
    judge = config.options(LabelOptions).judge
    if judge != "grm":
        raise CaiError(f"judge-data samples DeepSeek-GRM judgements: --judge grm, not {judge}")
    pairs, sources = labelled_pairs(data)
    stage = JudgeData(chunked(config), pairs, sources, pointwise)
    identity = f"{fingerprint(p.identity() for p in pairs)}:pointwise={pointwise}"
    done = run_evaluation(stage.config, stage, [p.prompt for p in pairs], identity, backend, log)
    assert done.store is not None
    sft = sft_rows(done.rows, keep_easy)
    done.store.write_derived(SFT, sft, columns.schema(SftRow))
    per = acceptance(done.rows, keep_easy)
    report: dict = {
        "data": data,
        "out": str(done.store.root),
        "model": config.run.model,
        "grm_samples": stage.judge.o.grm_samples,
        "pointwise": pointwise,
        "keep_easy": keep_easy,
        "pairs": len(pairs),
        "failed_pairs": len(done.failures),
        "failure_reasons": sorted({why for _, why in done.failures})[:5],
        "label_sources": {s: sum(v == s for v in sources.values()) for s in sorted(set(sources.values()))},
        "judgements": len(done.rows),
        "correct": sum(bool(r["correct"]) for r in done.rows),
        "accepted": len(sft),
        "subsets": per,
        "seconds": round(time.monotonic() - started, 1),
    }
    report["rate"] = report["accepted"] / report["judgements"] if report["judgements"] else 0.0
    done.store.save_report("judge-data", report)
    return report


def lines(r: dict) -> list[str]:
    """The summary `cai judge-data` prints: acceptance per subset, then where the splits are."""
    out = [
        f"judge data  {r['pairs']} labelled pairs ({', '.join(f'{n} {s}' for s, n in r['label_sources'].items())}), "
        f"k = {r['grm_samples']}{', pointwise too' if r['pointwise'] else ''}; {r['failed_pairs']} pairs failed",
        "",
        f"{'subset (kind)':36} {'pairs':>6} {'judged':>7} {'correct':>8} {'too easy':>9} {'none ok':>8} {'kept':>6}"
        f" {'rate':>6}",
    ]
    for name, s in r["subsets"].items():
        out.append(
            f"{name[:36]:36} {s['pairs']:>6} {s['judgements']:>7} {s['correct']:>8} {s['too_easy']:>9} "
            f"{s['none_correct']:>8} {s['accepted']:>6} {s['rate']:>6.1%}"
        )
    easy = "kept" if r["keep_easy"] else "left out (--keep-easy keeps them)"
    out += [
        f"{'all':36} {r['pairs']:>6} {r['judgements']:>7} {r['correct']:>8} {'':>9} {'':>8} {r['accepted']:>6} "
        f"{r['rate']:>6.1%}",
        "",
        f"too easy: every one of a pair's k judgements was correct; those pairs' judgements are {easy}",
        f"sft data    {r['out']}/{SFT}/ ({r['accepted']} judgements; TRL's conversational format, `messages`)",
        f"meta RM     {r['out']}/{SPLIT}/ (every judgement with `correct`): cai train-pm {r['out']} --kind meta",
    ]
    return out
