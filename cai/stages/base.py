"""The Stage interface: one step of the pipeline that turns prompts into rows of one split."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from cai.core import columns
from cai.core.views import View
from cai.stages.report import Report

if TYPE_CHECKING:
    import pyarrow as pa

    from cai.config import RunConfig
    from cai.core.context import RunContext
    from cai.core.inputs import Prompt
    from cai.core.prompts import TemplateSpec
    from cai.core.records import ChunkResult


class Stage:
    """A stage (think datatrove's PipelineStep). Subclasses set the class attributes and implement `run`;
    everything else has a working default.

    name      the `--stage` value, and the `stage` field of its skips
    split     the folder its rows go to (one parquet shard per chunk)
    row_type  the dataclass of one row: it makes the split's parquet schema too (cai.core.columns)
    view      what readers of the split need to know of it (cai.core.views): its answer column, how a row is
              flipped, which trainer reads it
    inputs    the splits it may read; `--stage all` runs their writers first
    in_all    whether `--stage all` runs it (a stage for another kind of prompt runs only when named)
    runs_with a stage whose runs always include this one (a stage that derives its split from that one's)
    key       the column holding the prompt's id: what resume and the train/test split go by (`id` is the
              row's own id, which equals it where a prompt makes one row)
    settings  its settings groups (cai.settings); the CLI makes flags of them
    templates the templates it renders, with sample values to check them before the engine starts

    The run (cai.run.lifecycle) calls `check` once before the engine starts, `begin` once it runs, then `run` for
    the prompts not yet done (cai.run.executor: one prompt per call from many threads, or chunks), and writes the
    results. What it says of its split, in `cai stats`, the run summary and the dataset card, is its `report`.
    """

    name: ClassVar[str]
    split: ClassVar[str]
    row_type: ClassVar[type]
    view: ClassVar[View] = View()
    inputs: ClassVar[tuple[str, ...]] = ()
    in_all: ClassVar[bool] = True
    runs_with: ClassVar[str | None] = None
    key: ClassVar[str] = "id"
    settings: ClassVar[tuple[type, ...]] = ()
    templates: ClassVar[tuple[TemplateSpec, ...]] = ()

    def __init__(self, config: RunConfig):
        self.config = config

    def schema(self) -> pa.Schema:
        """The split's columns, from the row type (pyarrow is imported only now: a heavy import for `--help`)."""
        return columns.schema(self.row_type)

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

    def report(self) -> Report:
        """What the stage says about its split (statistics, summary, card), built with its settings."""
        return Report(self.split)
