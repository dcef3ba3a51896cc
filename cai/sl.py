"""SL-CAI: an initial answer, then rounds of critique and revision under a sampled principle."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from cai.backends import Backend, Sampling
from cai.constitution import Constitution
from cai.inputs import Prompt
from cai.prompts import Templates
from cai.sampling import request_seed, sample_principles

MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
# TRL's conversational prompt-completion format, plus the trace. `prompt` is a message list: a plain
# string column would make TRL's SFTTrainer treat the data as non-conversational.
SFT_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("prompt", MESSAGES),
    ("completion", MESSAGES),
    ("messages", MESSAGES),
    ("initial", pa.string()),
    ("revisions", pa.list_(pa.struct([("round", pa.int32()), ("principle", pa.string()),
                                      ("critique", pa.string()), ("revision", pa.string())]))),
])


@dataclass
class ChunkResult:
    rows: list[dict] = field(default_factory=list)
    skips: list[dict] = field(default_factory=list)  # {"id", "reason"}
    prompt_tokens: int = 0
    output_tokens: int = 0
    truncated: int = 0  # turns cut by max_tokens (kept, but worth knowing)

    def tally(self, completion) -> None:
        self.prompt_tokens += completion.prompt_tokens
        self.output_tokens += completion.tokens
        self.truncated += completion.finish_reason == "length"


def with_system(constitution: Constitution, messages) -> list[dict]:
    """The prompt's own messages, behind the constitution's system prompt unless the prompt brings one."""
    messages = [dict(m) for m in messages]
    if constitution.system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": constitution.system})
    return messages


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


def run(backend: Backend, prompts: list[Prompt], constitution: Constitution, templates: Templates, config) -> ChunkResult:
    """Run the whole SL stage on one chunk. One engine call per step of a round, over every prompt
    still alive, so the engine always sees the full width of the chunk."""
    result = ChunkResult()
    sampling = Sampling(max_tokens=config.max_tokens, temperature=config.temperature, top_p=config.top_p)
    demos = demonstrations(constitution, templates)

    def step(items, chats, name, label):
        """Generate for `items`; returns the survivors with their text. Failures and empty outputs
        go to skips with the step named, so no prompt silently vanishes."""
        seeds = [request_seed(config.seed, it["id"], name) for it in items]
        outs = backend.generate(chats, Sampling(**{**sampling.__dict__, "label": label}), seeds)
        alive = []
        for it, (c,) in zip(items, outs):
            result.tally(c)
            if not c.ok:
                result.skips.append({"id": it["id"], "reason": f"{name}: {c.error}"})
            elif not c.text.strip():
                result.skips.append({"id": it["id"], "reason": f"{name}: the model returned an empty text"})
            else:
                alive.append((it, c.text.strip()))
        return alive

    items = [{"id": p.id, "prompt": list(p.messages), "base": with_system(constitution, p.messages)} for p in prompts]
    alive = step(items, [it["base"] for it in items], "initial", "sl initial")
    for it, text in alive:
        it["initial"] = it["latest"] = text
        it["revisions"] = []
    items = [it for it, _ in alive]

    for r in range(1, config.rounds + 1):
        chats = []
        for it in items:
            (principle,) = sample_principles(constitution.principles, 1, config.seed, it["id"], f"sl-round-{r}")
            it["principle"] = principle
            base = it["base"]
            # system, then demonstrations (shared prefix), then this prompt's conversation.
            head = base[:1] + demos + base[1:] if base[0]["role"] == "system" else demos + base
            it["chat"] = head + [
                {"role": "assistant", "content": it["latest"]},
                {"role": "user", "content": templates.render("critique.j2", principle=principle, round=r)},
            ]
            chats.append(it["chat"])
        alive = step(items, chats, f"round {r} critique", f"sl round {r}/{config.rounds} critique")
        items, chats = [], []
        for it, critique in alive:
            it["critique"] = critique
            it["chat"] = it["chat"] + [
                {"role": "assistant", "content": critique},
                {"role": "user", "content": templates.render("revision.j2", principle=it["principle"], round=r)},
            ]
            items.append(it)
            chats.append(it["chat"])
        alive = step(items, chats, f"round {r} revision", f"sl round {r}/{config.rounds} revision")
        items = []
        for it, revision in alive:
            it["revisions"].append({"round": r, "principle": it["principle"].id,
                                    "critique": it["critique"], "revision": revision})
            it["latest"] = revision
            items.append(it)

    for it in items:
        completion = [{"role": "assistant", "content": it["latest"]}]
        result.rows.append({"id": it["id"], "prompt": it["prompt"], "completion": completion,
                            "messages": it["prompt"] + completion, "initial": it["initial"],
                            "revisions": it["revisions"]})
    return result
