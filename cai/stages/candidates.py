"""Candidate answers for the stages that judge answers (RL pairs, steps solutions): sampled from the model, taken
from an SL run's trace, or read from a file.

Sampled: one request with n = N per prompt, so the prompt is prefilled once. From an SL run or a file: read
once when the stage begins (by then the SL split it reads is complete), checked before the engine starts. A
prompt with nothing to judge is reported with the reason, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from cai.backends import Sampling
from cai.core import inputs
from cai.core.context import RunContext
from cai.core.records import ChunkResult, Failure, with_system
from cai.core.sampling import request_seed
from cai.core.sources import open_rows
from cai.core.store import RunStore
from cai.errors import CaiError

T = TypeVar("T")
SAMPLED, TRACE, FILE = "sampled", "trace", "file"  # from the model, from an SL run's traces, from a file


@dataclass(frozen=True)
class Candidate(Generic[T]):
    """One candidate answer, or why there is none; `source` says where it came from (sampled, sl initial, sl
    revision 2, file)."""

    source: str
    value: T | Failure


@dataclass(frozen=True)
class Source:
    """Where a stage's candidates come from. `mode`: sampled, trace or file; `path`: the SL run folder (default:
    this run) or the file (default: the prompts file); `traces`: the split the SL traces are in (the stage's
    input); `n` and `temperature`: sampled answers per prompt and their temperature; `flag`: the settings that
    chose them, for messages (`--pairs revision`, `--pairs-from`)."""

    mode: str
    traces: str
    path: str | None
    n: int
    temperature: float
    flag: str
    from_flag: str
    step: str  # names the sampled requests' seeds and progress bar


# A file record -> its candidates (raise CaiError naming `where`); an SL row -> its candidates.
FromRecord = Callable[[str, dict], list[Candidate[T]]]
FromSL = Callable[[dict], list[Candidate[T]]]


class Candidates(Generic[T]):
    """The candidates of a stage's prompts, by prompt: one group per source record (a file may hold several
    records for one prompt; an SL row is one group; the sampled answers of a prompt are one group)."""

    def __init__(
        self,
        source: Source,
        from_record: FromRecord | None = None,
        from_sl: FromSL | None = None,
        sl_columns: list[str] | None = None,
    ):
        self.source = source
        self.from_record = from_record
        self.from_sl = from_sl
        self.sl_columns = sl_columns
        self._table: dict[str, list[list[Candidate[T]]]] | None = None

    @property
    def sampled(self) -> bool:
        return self.source.mode == SAMPLED

    def check(self, ctx: RunContext, alone: bool) -> None:
        """Before the engine starts: the SL run has rows (`alone`: no stage of this invocation writes them), the
        file reads record by record."""
        s = self.source
        if s.mode == TRACE and s.path and not RunStore(s.path).count(s.traces):
            raise CaiError(f"{s.from_flag} {s.path}: not a cai run with an {s.traces}/ split")
        if s.mode == TRACE and not s.path:
            if ctx.store is None:
                raise CaiError(f"{s.flag}: no run folder to read SL rows from; point {s.from_flag} at an SL run")
            if alone and not ctx.store.count(s.traces):
                raise CaiError(
                    f"{s.flag}: {ctx.store.root / s.traces} has no rows; run the stage that writes {s.traces}/ "
                    f"first, or point {s.from_flag} at an SL run"
                )
        if s.mode == FILE:
            self._table = self._read_file(ctx)

    def begin(self, ctx: RunContext) -> None:
        if not self.sampled:
            self._read(ctx)

    def get(
        self, ctx: RunContext, chunk: list[inputs.Prompt], result: ChunkResult
    ) -> list[list[list[Candidate[T]]] | Failure]:
        """Per prompt of `chunk`, in order: its groups of candidates, or why it has none."""
        if self.sampled:
            return [[group] for group in self._sample(ctx, chunk, result)]
        table = self._read(ctx)
        missing = Failure(
            "no SL row for this prompt" if self.source.mode == TRACE else "the file has none for this prompt"
        )
        return [table.get(p.id, missing) for p in chunk]

    def table(self, ctx: RunContext) -> dict[str, list[list[Candidate[T]]]]:
        """Every prompt's groups, from the SL run or the file (not for sampled candidates)."""
        return self._read(ctx)

    def _sample(self, ctx: RunContext, chunk: list[inputs.Prompt], result: ChunkResult) -> list[list[Candidate[T]]]:
        s, o, seed = self.source, ctx.config.sampling, ctx.config.run.seed
        sampling = Sampling(max_tokens=o.max_tokens, temperature=s.temperature, top_p=o.top_p, n=s.n, label=s.step)
        seeds = [request_seed(seed, p.id, s.step.replace(" ", "-")) for p in chunk]
        outs = ctx.engine.generate([with_system(ctx.constitution, p.messages) for p in chunk], sampling, seeds)
        groups = []
        for samples in outs:
            group: list[Candidate[T]] = []
            for out in samples:
                result.tally(out)
                value = out.text if out.ok else Failure(str(out.error))
                group.append(Candidate(SAMPLED, value))  # type: ignore[arg-type]  # T is str where sampled
            groups.append(group)
        return groups

    def _read(self, ctx: RunContext) -> dict[str, list[list[Candidate[T]]]]:
        if self._table is None:
            if self.source.mode == FILE:
                self._table = self._read_file(ctx)
            else:
                store = RunStore(self.source.path) if self.source.path else ctx.store
                assert store is not None  # checked before the engine started
                rows = store.read(self.source.traces, columns=self.sl_columns)
                assert self.from_sl is not None, "a stage that reads SL traces gives from_sl"
                self._table = {r["id"]: [self.from_sl(r)] for r in rows}
        return self._table

    def _read_file(self, ctx: RunContext) -> dict[str, list[list[Candidate[T]]]]:
        """Every record of the file, checked (one line naming the file and line for the first bad one)."""
        path = self.source.path or ctx.config.run.prompts
        if not Path(path).is_file():
            raise CaiError(f"{self.source.flag}: {path}: file not found")
        table: dict[str, list[list[Candidate[T]]]] = {}
        for where, record in open_rows(path):
            messages = inputs.to_messages(record, where, None)
            assert self.from_record is not None, "a stage that reads files gives from_record"
            table.setdefault(inputs.prompt_id(messages), []).append(self.from_record(where, record))
        return table
