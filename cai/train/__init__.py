"""The bundled trainers: a pairwise preference model (soft-label Bradley-Terry on RLAIF data), a process reward
model (soft BCE on step labels), a P(IK) value head (soft BCE on the share of samples correct) and a meta reward
model (BCE on whether a sampled judgement's verdict was correct), each with its own config, found by `--kind`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cai.errors import CaiError
from cai.settings import Setting, declared
from cai.train.training import TrainOptions


@dataclass(frozen=True)
class Trainer:
    """One bundled trainer: its config (the flags it takes), what trains, and what `cai train-pm` prints."""

    config: type[TrainOptions]
    train: Callable[..., dict]
    summary_lines: Callable[[dict], list[str]]
    help: str


def trainers() -> dict[str, Trainer]:
    """The trainers by kind (their modules import torch and transformers only when they train)."""
    from cai.train import meta, pik, prm, trainer

    return {
        "pm": Trainer(trainer.PMConfig, trainer.train, trainer.summary_lines, "a pairwise model on prefs/ or ranked/"),
        "prm": Trainer(prm.PRMConfig, prm.train, prm.summary_lines, "a process reward model on steps/"),
        "pik": Trainer(pik.PIKConfig, pik.train, pik.summary_lines, "a P(IK) value head on samples/"),
        "meta": Trainer(
            meta.MetaRMConfig, meta.train, meta.summary_lines, "a meta reward model on judge-data's judgements/"
        ),
    }


def settings() -> list[Setting]:
    """Every trainer's settings, once each, with the kinds that take it (for the CLI's flags)."""
    out: dict[str, Setting] = {}
    for kind, t in trainers().items():
        for s in declared(t.config, f"kind {kind}"):
            if s.name in out:
                out[s.name] = dataclasses.replace(out[s.name], owner=f"{out[s.name].owner}, {kind}")
            else:
                out[s.name] = s
    return list(out.values())


def train(source: str, out: str, log=print, kind: str = "pm", **values: Any) -> dict:
    """Train the `kind` model on `source` into `out`; returns its metrics (metrics.json). A setting of another
    kind's trainer is refused by name."""
    found = trainers()
    if kind not in found:
        raise CaiError(f"--kind {kind!r}: unknown (one of {', '.join(found)})")
    t = found[kind]
    mine = {f.name for f in dataclasses.fields(t.config)}
    for name in values:
        if name not in mine:
            others = [k for k, o in found.items() if name in {f.name for f in dataclasses.fields(o.config)}]
            if not others:
                raise CaiError(f"unknown setting {name!r}")
            raise CaiError(f"--{name.replace('_', '-')} applies only with --kind {' or '.join(others)}")
    config = t.config(source=source, out=out, **values)
    config.validate()
    return t.train(config, log)


__all__ = ["Trainer", "settings", "train", "trainers"]
