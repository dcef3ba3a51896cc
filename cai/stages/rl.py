"""RL-CAI: candidate pairs for every prompt, labelled by a judge into TRL's preference format with soft labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cai import inputs, judges
from cai.backends import Sampling
from cai.errors import CaiError
from cai.inputs import Prompt
from cai.judges import FailedRead, Judge, Pair, Verdict
from cai.labels import Label, blend, hard_winner, rule_votes
from cai.prompts import TemplateSpec
from cai.records import ChunkResult, Failure, assistant, messages_type, with_system
from cai.rules import RuleResult, check_all, result_type
from cai.run import RunContext
from cai.sampling import request_seed
from cai.settings import setting
from cai.stages.rl_report import RLReport
from cai.stages.sl import SLOptions
from cai.store import RunStore

if TYPE_CHECKING:
    import pyarrow as pa

PAIRS = ("sampled", "revision", "file")


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
    )
    hard_rule_p: float = setting(
        1.0,
        "P(chosen is better) for a pair that a hard rule decides (one answer keeps it, the other breaks it).",
        identity=True,
        minimum=0.5,
        maximum=1.0,
    )
    judge: str = setting(
        "logprob",
        "The judge that labels the pairs (registered under 'cai.judges'): logprob, cot, grm.",
        identity=True,
        choices=judges.names,
    )


def candidates_from_file(source: str) -> dict[str, tuple[str, str]]:
    """Pairs supplied by the user: each record has a prompt and either `responses` (two texts) or
    `chosen`/`rejected` (texts or assistant message lists), which the judge labels afresh."""
    path = Path(source)
    if not path.is_file():
        raise CaiError(f"--pairs file: {source}: file not found")
    records = inputs.read_parquet(path) if path.suffix == ".parquet" else inputs.read_jsonl(path)
    out = {}
    for where, record in records:
        messages = inputs.to_messages(record, where, None)
        if "responses" in record:
            pair = record["responses"]
            if not isinstance(pair, list) or len(pair) != 2:
                raise CaiError(f"{where}: 'responses' must be a list of two answers")
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
            texts.append(answer.strip())
        out[inputs.prompt_id(messages)] = (texts[0], texts[1])
    return out


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


@dataclass(frozen=True)
class Judged:
    """A labelled pair: the label, the judge's verdict behind it (None when no judge was asked), the reads that
    failed, and the rules' results on (first, second)."""

    pair: Pair
    label: Label
    verdict: Verdict | None
    failed: tuple[FailedRead, ...]
    rules: tuple[list[RuleResult], list[RuleResult]]

    def evidence_row(self, first_wins: bool, fields: list[str]) -> dict:
        """The votes, failed reads, source and the judge's own evidence columns, seen from one side (the first
        candidate's when `first_wins`)."""
        evidence = self.verdict.evidence if self.verdict is not None else {}
        return {
            "votes": [x.row(first_wins) for x in self.label.votes],
            "failed_votes": [x.row(first_wins) for x in self.failed],
            "decided_by": self.label.decided_by,
            **{f: [e.row(first_wins) for e in evidence.get(f, ())] for f in fields},
        }


class RLStage(RLReport):
    name = "rl"
    split = "prefs"
    readers = "TRL's RewardTrainer / DPOTrainer read prompt/chosen/rejected"
    inputs = ("sft",)  # with --pairs revision
    settings = (RLOptions,)
    task_categories = ("text-generation", "text-classification")

    def __init__(self, config):
        super().__init__(config)
        self.o = config.options(RLOptions)
        self.judge: Judge = judges.get(self.o.judge)(config)
        self._table: dict[str, tuple[str, str]] | None = None  # the candidates of --pairs revision/file

    def needs_engine(self, ctx: RunContext) -> bool:
        judged = bool(ctx.constitution.comparable) and self.judge.needs_engine()
        return self.o.pairs == "sampled" or judged

    def template_specs(self) -> tuple[TemplateSpec, ...]:
        return self.templates + self.judge.templates

    def schema(self) -> pa.Schema:
        import pyarrow as pa

        # TRL's explicit-prompt conversational preference format, plus the soft label and its evidence.
        messages = messages_type()
        return pa.schema(
            [
                ("id", pa.string()),
                ("prompt", messages),
                ("chosen", messages),
                ("rejected", messages),
                ("p_chosen", pa.float64()),
                (
                    "votes",
                    pa.list_(
                        pa.struct(
                            [
                                ("principle", pa.string()),  # the principle, or the rule's id for a rule's vote
                                ("p_chosen_ab", pa.float64()),
                                ("p_chosen_ba", pa.float64()),
                                ("kind", pa.string()),  # ai or rule
                                ("weight", pa.float64()),
                            ]
                        )
                    ),
                ),
                ("tie", pa.bool_()),
                (
                    "failed_votes",
                    pa.list_(pa.struct([("principle", pa.string()), ("order", pa.string()), ("reason", pa.string())])),
                ),
                ("decided_by", pa.string()),  # judge, rules, judge+rules, hard rule, none
                ("reference", pa.string()),  # the prompt record's known answer, if it had one
                ("rules_chosen", result_type()),  # the constitution's rules on each answer
                ("rules_rejected", result_type()),
                *self.judge.evidence_fields(),
                ("judge", pa.string()),
                ("model", pa.string()),
            ]
        )

    def check(self, ctx: RunContext) -> None:
        o, (sft,) = self.o, self.inputs
        if o.pairs == "revision" and not o.pairs_from and ctx.config.stage == self.name and not ctx.store.count(sft):
            raise CaiError(
                f"--pairs revision: {ctx.store.root / sft} has no SL rows; run --stage sl first, use "
                "--stage all, or point --pairs-from at an SL run"
            )
        if o.pairs == "revision" and o.pairs_from and not RunStore(o.pairs_from).count(sft):
            raise CaiError(f"--pairs-from {o.pairs_from}: not a cai run with an {sft}/ split")
        if o.pairs == "file":
            self._table = candidates_from_file(o.pairs_from or ctx.config.prompts)
        self.check_judging(ctx)

    def run(self, ctx: RunContext, chunk: list[Prompt]) -> ChunkResult:
        """Candidates, then one label per pair (`label`), as rows of TRL's preference format."""
        result = ChunkResult()
        fields = [f.name for f in self.judge.evidence_fields()]
        for j in self.label(ctx, self.candidates(ctx, chunk, result), result):
            result.rows.append(self._row(ctx, j, fields))
        return result

    def begin(self, ctx: RunContext) -> None:
        if self.o.pairs != "sampled":
            self._pairs_table(ctx)

    def check_judging(self, ctx: RunContext) -> None:
        """What labelling pairs needs, whatever their source (also `cai eval judge`'s check)."""
        if ctx.constitution.comparable:
            self.judge.check(ctx)
        elif not ctx.constitution.rules:
            raise CaiError(
                f"{ctx.constitution.path}: no principle has a 'compare' question or rules: nothing can judge the pairs"
            )

    def label(self, ctx: RunContext, pairs: list[Pair], result: ChunkResult) -> list[Judged]:
        """The rules on both answers of every pair (pure, fast), then the judge on the pairs that no hard rule
        decided (one batched call), then one label per pair from both. A pair that nothing could label is
        skipped in `result` with the judge's reason."""
        rules = {r.id: r for r in ctx.constitution.rules}
        checked = [
            (
                check_all(ctx.constitution.rules, p.first, p.prompt.reference),
                check_all(ctx.constitution.rules, p.second, p.prompt.reference),
            )
            for p in pairs
        ]
        hard = [hard_winner(a, b, rules) for a, b in checked]
        verdicts: list[Verdict | Failure | None] = [None] * len(pairs)
        if ctx.constitution.comparable:
            ask = [i for i, h in enumerate(hard) if not h]
            for i, answer in zip(ask, self.judge.judge(ctx, [pairs[i] for i in ask], result), strict=True):
                verdicts[i] = answer
        out = []
        for pair, (a, b), h, judged in zip(pairs, checked, hard, verdicts, strict=True):
            votes = rule_votes(a, b, rules)
            failed: tuple[FailedRead, ...] = ()
            verdict = judged if isinstance(judged, Verdict) else None
            if isinstance(judged, Failure):
                if not votes:  # nothing else can label the pair: on record with the judge's reason
                    result.skip(pair.prompt.id, judged.reason)
                    continue
                failed = (FailedRead("judge", "", judged.reason),)
            label = blend(verdict, votes, h, self.o.hard_rule_p)
            out.append(Judged(pair, label, verdict, (*(verdict.failed if verdict else ()), *failed), (a, b)))
        return out

    def _row(self, ctx: RunContext, j: Judged, fields: list[str]) -> dict:
        fw = j.label.p_first >= 0.5
        p_chosen = j.label.p_first if fw else 1 - j.label.p_first
        pair = j.pair
        chosen, rejected = (pair.first, pair.second) if fw else (pair.second, pair.first)
        rules_chosen, rules_rejected = j.rules if fw else j.rules[::-1]
        return {
            "id": pair.prompt.id,
            "prompt": list(pair.prompt.messages),
            "chosen": assistant(chosen),
            "rejected": assistant(rejected),
            "p_chosen": p_chosen,
            "tie": p_chosen == 0.5,
            **j.evidence_row(fw, fields),
            "reference": pair.prompt.reference,
            "rules_chosen": [r.row() for r in rules_chosen],
            "rules_rejected": [r.row() for r in rules_rejected],
            "judge": self.o.judge,
            "model": ctx.config.model,
        }

    def candidates(self, ctx: RunContext, chunk: list[Prompt], result: ChunkResult) -> list[Pair]:
        c, pairs = ctx.config, []
        if self.o.pairs == "sampled":
            sampling = Sampling(
                max_tokens=c.max_tokens, temperature=self.o.pair_temperature, top_p=c.top_p, n=2, label="rl candidates"
            )
            seeds = [request_seed(c.seed, p.id, "rl-candidates") for p in chunk]
            outs = ctx.engine.generate([with_system(ctx.constitution, p.messages) for p in chunk], sampling, seeds)
            for p, samples in zip(chunk, outs, strict=True):
                for out in samples:
                    result.tally(out)
                bad = next((out.error for out in samples if not out.ok), None)
                if bad:
                    result.skip(p.id, f"candidates: {bad}")
                elif len(samples) != 2 or not all(out.text.strip() for out in samples):
                    result.skip(p.id, "candidates: the model returned an empty answer")
                else:
                    pairs.append(Pair(p, samples[0].text.strip(), samples[1].text.strip()))
        else:
            table = self._pairs_table(ctx)
            missing = {
                "revision": "no SL row for this prompt to compare",
                "file": "the pairs file has no pair for this prompt",
            }[self.o.pairs]
            for p in chunk:
                if p.id not in table:
                    result.skip(p.id, f"candidates: {missing}")
                else:
                    pairs.append(Pair(p, *table[p.id]))
        kept = []
        for pair in pairs:
            if pair.first == pair.second:  # identical answers carry no preference; judging them adds only noise
                result.skip(pair.prompt.id, "candidates: the two answers are identical")
            else:
                kept.append(pair)
        return kept

    def _pairs_table(self, ctx: RunContext) -> dict[str, tuple[str, str]]:
        """The candidates of --pairs revision (initial vs final revision) or file, read once per run: by the
        time this stage runs, the SL split it reads is complete."""
        if self._table is None:
            if self.o.pairs == "file":
                self._table = candidates_from_file(self.o.pairs_from or ctx.config.prompts)
            else:
                store = RunStore(self.o.pairs_from) if self.o.pairs_from else ctx.store
                rows = store.read(self.inputs[0])
                by_p_true = self.config.options(SLOptions).keep == "best"
                self._table = {r["id"]: revision_pair(r, by_p_true) for r in rows}
        return self._table
