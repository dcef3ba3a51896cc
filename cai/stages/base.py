"""The Stage interface: one step of the pipeline that turns chunks of prompts into rows of one split."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

    from cai.inputs import Prompt
    from cai.prompts import TemplateSpec
    from cai.records import ChunkResult
    from cai.run import RunContext


class Stage:
    """A stage (think datatrove's PipelineStep). Subclasses set the class attributes and implement `run`;
    everything else has a working default.

    name      the `--stage` value, and the `stage` field of its skips
    split     the folder its rows go to (one parquet shard per chunk)
    inputs    the splits it may read; `--stage all` runs their writers first
    in_all    whether `--stage all` runs it (a stage for another kind of prompt runs only when named)
    key       the column holding the prompt's id: what resume and the train/test split go by (`id` is the
              row's own id, which equals it where a prompt makes one row)
    settings  its settings groups (cai.settings); the CLI makes flags of them
    templates the templates it renders, with sample values to check them before the engine starts

    The generate loop calls `check` once before the engine starts, `begin` once it runs, then `run` for
    the prompts not yet done (cai.executor: one prompt per call from many threads, or chunks), and writes
    the results. `stats` adds the stage's section to `cai stats` and the run
    summary; `summary_lines`, `report_lines` and the `card_*` methods say it in words.
    """

    name: ClassVar[str]
    split: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = ()
    in_all: ClassVar[bool] = True
    key: ClassVar[str] = "id"
    settings: ClassVar[tuple[type, ...]] = ()
    templates: ClassVar[tuple[TemplateSpec, ...]] = ()
    task_categories: ClassVar[tuple[str, ...]] = ("text-generation",)  # the Hub's, for the dataset card
    readers: ClassVar[str] = ""  # who reads the split as it is, for the dataset card

    def __init__(self, config: Any):
        self.config = config

    def schema(self) -> pa.Schema:
        """The split's columns (built lazily: pyarrow is a heavy import for `cai --help`)."""
        raise NotImplementedError

    def template_specs(self) -> tuple[TemplateSpec, ...]:
        """Every template this stage (and whatever it delegates to) renders."""
        return self.templates

    def needs_engine(self, ctx: RunContext) -> bool:
        return True

    def check(self, ctx: RunContext) -> None:
        """Everything that can be wrong before the engine starts; raise CaiError naming it."""

    def begin(self, ctx: RunContext) -> None:
        """Called once before the first prompt is run (read here what earlier splits hold): `run` is then
        called from many threads at once, one prompt each, and must not change the stage's state."""

    def run(self, ctx: RunContext, chunk: list[Prompt]) -> ChunkResult:
        raise NotImplementedError

    def stats(self, rows: pl.LazyFrame) -> dict:
        """This split's section of `cai stats` (flat keys, merged into the report)."""
        return {}

    def summary_lines(self, stats: dict) -> list[str]:
        """Lines for the summary printed at the end of `cai generate`."""
        return []

    def report_lines(self, stats: dict) -> list[str]:
        """Lines for `cai stats`."""
        return []

    def card_lines(self, stats: dict) -> list[str]:
        """Markdown bullets for the dataset card: what this split holds and how it was made."""
        return []

    def select(self, table: pa.Table, min_p_true: float) -> tuple[pa.Table, str]:
        """The rows to publish under `cai publish --min-p-true`, and a sentence for the card ('' if the split has
        no P(True) to select by: then every row is kept)."""
        return table, ""

    def card_use(self) -> list[str]:
        """Markdown for the card's "Use" section beyond loading the split (how to train on it)."""
        return []

    def card_stats(self, stats: dict) -> list[str]:
        """Markdown bullets for the card's statistics section."""
        return []
