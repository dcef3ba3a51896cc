"""Judges that write before they decide (cot, grm): their shared setting and the one call that samples the text."""

from __future__ import annotations

from dataclasses import dataclass

from cai.backends import Completion, Sampling
from cai.core.context import RunContext
from cai.core.records import ChunkResult
from cai.core.sampling import request_seed
from cai.settings import setting


@dataclass(frozen=True)
class ReasoningOptions:
    cot_max_tokens: int = setting(
        256, "Max tokens of a judge's written reasoning (CoT) or judgement (GRM).", identity=True, minimum=1
    )


def write(
    ctx: RunContext,
    chats: list[list[dict]],
    keys: list[tuple[str, str]],
    result: ChunkResult,
    *,
    label: str,
    stop: tuple[str, ...] = (),
) -> list[Completion]:
    """The judge's written text continuing each chat's forced opening, sampled at the run's temperature and
    top_p, one seed per (prompt id, what) in `keys` (so a row does not depend on its batch), in one call; the
    tokens are tallied."""
    s, seed = ctx.config.sampling, ctx.config.run.seed
    sampling = Sampling(
        max_tokens=ctx.config.options(ReasoningOptions).cot_max_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        continue_final=True,
        stop=stop,
        label=label,
    )
    seeds = [request_seed(seed, prompt_id, what) for prompt_id, what in keys]
    outs = [out for (out,) in ctx.engine.generate(chats, sampling, seeds)]
    for out in outs:
        result.tally(out)
    return outs
