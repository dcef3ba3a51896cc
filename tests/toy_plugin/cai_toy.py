"""A stage from another package (for the test that a new stage is one module): an echo of each prompt's answer.

It declares its row type, view and report, registers through an entry point (cai_toy-0.1.dist-info), and cai's
summary, `cai stats`, `cai publish` and `cai review` show its split with no edit to cai.
"""

from __future__ import annotations

from dataclasses import dataclass

from cai.backends import Sampling
from cai.core import columns
from cai.core.columns import Messages
from cai.core.records import ChunkResult, with_system
from cai.core.views import View
from cai.settings import setting
from cai.stages import Report, Stage


@dataclass(frozen=True)
class EchoOptions:
    echo_max_words: int = setting(
        12, "Answers longer than this many words are cut (the toy stage's setting).", minimum=1
    )


@dataclass(frozen=True)
class EchoRow:
    id: str
    prompt: Messages
    answer: str
    words: int


class EchoReport(Report):
    readers = "anything that reads prompt/answer"
    plots = True

    def stats(self, rows):
        import polars as pl

        s = (
            rows.select(pl.len().alias("answers"), pl.col("words").mean().alias("mean_words"))
            .collect()
            .row(0, named=True)
        )
        return {"echo": s}

    def summary_lines(self, stats):
        s = stats["echo"]
        return [f"echo           {s['answers']} answers of {s['mean_words']:.1f} words"]

    def report_lines(self, stats):
        return ["", f"{'echo answers':<28}{stats['echo']['answers']} (mean {stats['echo']['mean_words']:.1f} words)"]

    def card_lines(self, stats):
        return [f"- **`{self.split}`**: the model's answer to each prompt, cut to a few words (a toy stage)."]

    def card_stats(self, stats):
        return [f"- echo answers: {stats['echo']['answers']}"]

    def plot(self, stats, left, right):
        left.bar(["answers"], [stats["echo"]["answers"]])
        right.axis("off")


class EchoStage(Stage):
    name = "echo"
    split = "echo"
    row_type = EchoRow
    view = View(answer="answer")
    in_all = False
    settings = (EchoOptions,)

    def report(self):
        return EchoReport(self.split)

    def run(self, ctx, chunk):
        result = ChunkResult()
        cut = ctx.config.options(EchoOptions).echo_max_words
        sampling = Sampling(max_tokens=64, temperature=0.0, label="echo")
        outs = ctx.engine.generate([with_system(ctx.constitution, p.messages) for p in chunk], sampling)
        for p, (out,) in zip(chunk, outs, strict=True):
            result.tally(out)
            if not out.ok:
                result.skip(p.id, f"echo: {out.error}")
                continue
            words = out.text.split()[:cut]
            row = EchoRow(p.id, list(p.messages), " ".join(words), len(words))
            result.rows.append(columns.record(row))
        return result
