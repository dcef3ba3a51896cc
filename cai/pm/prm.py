"""A process reward model (Lightman et al. 2023): a token-classification head that predicts, at the last token of
each step, the probability that the step is correct; trained on soft step labels with binary cross-entropy.

The text is laid out as TRL's PRMTrainer lays it out (the prompt, then each step followed by the separator, the
label on the separator's last token), so a model trained here reads the same data the same way; what differs is
the target: the step's soft label `step_p` where the data has it, not `int(label)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cai import steps as steps_mod
from cai.errors import CaiError
from cai.sampling import stable_unit

if TYPE_CHECKING:
    pass

KIND = "prm"


@dataclass
class StepRow:
    """One solution: its prompt (a plain string), its steps and their targets (P(step is good)), None when the
    data has no labels (scoring)."""

    key: str  # the prompt: train/eval split by prompt, so no prompt sits on both sides
    prompt: str
    steps: list[str]
    targets: list[float] | None
    id: str | None = None  # the row's id and solution index, where the data has them (for `cai score`)
    solution: int | None = None
    reference: str | None = None


def load_rows(source: str, need_labels: bool = True) -> list[StepRow]:
    """Solutions in TRL's stepwise format (prompt, completions, and labels and/or step_p) from a cai run folder
    (its steps/ split), a parquet or JSONL file, a folder of parquet files, or a `datasets` name. `step_p` is
    the target where present, else the boolean `labels`. Every bad row is one line naming it."""
    from cai.pm.data import read_rows

    found = read_rows(source, "steps", "step")
    out = [_row(where, r, need_labels) for where, r in found]
    if not out:
        raise CaiError(f"{source}: no step rows")
    return out


def _row(where: str, r: dict, need_labels: bool) -> StepRow:
    from cai.stages.steps import prompt_text

    prompt = r.get("prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
        prompt = prompt_text(prompt)
    if not isinstance(prompt, str) or not prompt.strip():
        raise CaiError(f"{where}: 'prompt' must be text (or chat messages)")
    steps = r.get("completions")
    text = next((r[k] for k in ("solution", "completion", "response") if isinstance(r.get(k), str)), None)
    if steps is None and text is not None and not need_labels:  # a whole solution to score: one step per line
        steps = steps_mod.split(text, "line")
        if not steps:
            raise CaiError(f"{where}: the solution has no steps after splitting by line")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
        raise CaiError(f"{where}: 'completions' must be a non-empty list of non-empty step texts")
    targets: list[float] | None = None
    if r.get("step_p") is not None:
        targets = r["step_p"]
        what = "step_p"
    elif r.get("labels") is not None:
        if not all(isinstance(x, bool) or x in (0, 1) for x in r["labels"]):
            raise CaiError(f"{where}: 'labels' must be true/false per step")
        targets = [float(x) for x in r["labels"]]
        what = "labels"
    elif need_labels:
        raise CaiError(f"{where}: no 'labels' or 'step_p': a process reward model learns from step labels")
    if targets is not None:
        if len(targets) != len(steps):
            raise CaiError(f"{where}: {len(steps)} steps but {len(targets)} {what}")
        for x in targets:
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 <= x <= 1.0:
                raise CaiError(f"{where}: {what} value {x!r} is not a probability")
        targets = [float(x) for x in targets]
    reference = r.get("reference")
    return StepRow(
        prompt,
        prompt,
        [s.strip() for s in steps],
        targets,
        None if r.get("id") is None else str(r["id"]),
        r.get("solution"),
        None if reference is None else str(reference),
    )


def split(rows: list[StepRow], eval_fraction: float, seed: int) -> tuple[list[StepRow], list[StepRow]]:
    """Held out by prompt (a seeded hash), as the pairwise trainer splits."""
    if eval_fraction <= 0:
        return rows, []
    keys = sorted({r.key for r in rows}, key=lambda k: stable_unit("split", seed, k))
    held = {k for k in keys if stable_unit("split", seed, k) < eval_fraction}
    if not held or len(held) == len(keys):  # tiny sets: still hold something out, deterministically
        held = set(keys[: max(1, round(len(keys) * eval_fraction))])
    return [r for r in rows if r.key not in held], [r for r in rows if r.key in held]


class StepEncoder:
    """(prompt, steps) -> token ids and the position of each step's label, laid out as TRL's PRMTrainer does:
    [BOS] prompt, then each step followed by the separator, the label on the separator's last token. Long
    texts are cut on the right; steps cut off lose their label and are counted."""

    def __init__(self, tokenizer, separator: str, max_length: int):
        self.tokenizer = tokenizer
        self.separator = separator
        self.max_length = max_length
        self.sep = tokenizer.encode(separator, add_special_tokens=False)
        if not self.sep:  # an encoder's tokenizer may drop a bare newline; its [SEP] marks the step's end instead
            if tokenizer.sep_token_id is None:
                raise CaiError(f"the tokenizer has no token for the step separator {separator!r}")
            self.sep = [tokenizer.sep_token_id]
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
        self.start = [start] if start is not None else []
        self.cut_steps = 0

    def __call__(self, prompt: str, steps: list[str]) -> tuple[list[int], list[int]]:
        ids = self.start + self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ends = []
        for step in steps:
            ids += self.tokenizer(step, add_special_tokens=False)["input_ids"] + self.sep
            ends.append(len(ids) - 1)
        kept = [e for e in ends if e < self.max_length]
        self.cut_steps += len(ends) - len(kept)
        return ids[: self.max_length], kept


def features(rows: list[StepRow], encode: StepEncoder) -> list[dict]:
    out = []
    for r in rows:
        ids, ends = encode(r.prompt, r.steps)
        out.append({"input_ids": ids, "ends": ends, "targets": (r.targets or [0.0] * len(r.steps))[: len(ends)]})
    return out


class StepCollator:
    """Pads a batch; `targets` holds each step's label at its end token and -1 elsewhere (`mask` marks them)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        width = max(len(item["input_ids"]) for item in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        targets = torch.full((len(batch), width), -1.0)
        for i, item in enumerate(batch):
            n = len(item["input_ids"])
            ids[i, :n] = torch.tensor(item["input_ids"])
            attention[i, :n] = 1
            for end, t in zip(item["ends"], item["targets"], strict=True):
                targets[i, end] = t
        return {"input_ids": ids, "attention_mask": attention, "targets": targets, "mask": targets >= 0}


def trainer_class():
    from transformers import Trainer

    from cai.pm.loss import soft_bce
    from cai.pm.trainer import rewards_of

    class PRMTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            logits = rewards_of(model, inputs)
            loss = soft_bce(logits, inputs["targets"], inputs["mask"])
            return (loss, {"logits": logits}) if return_outputs else loss

    return PRMTrainer


def predict(model, feats: list[dict], collate: StepCollator, batch_size: int = 16) -> list[list[float]]:
    """P(step is good) of every labelled step of every item, in order."""
    import torch

    from cai.pm.trainer import rewards_of

    model.eval()
    out: list[list[float]] = []
    with torch.no_grad():
        for start in range(0, len(feats), batch_size):
            chunk = feats[start : start + batch_size]
            probs = torch.sigmoid(rewards_of(model, collate(chunk)))
            out += [[probs[i, e].item() for e in item["ends"]] for i, item in enumerate(chunk)]
    return out


def metrics(predicted: list[list[float]], targets: list[list[float]]) -> dict:
    """Step accuracy (P >= 0.5 on the same side as the label), ECE of the step probabilities against the soft
    labels (10 bins), Brier score, and first-error accuracy: the share of solutions whose first predicted bad
    step is the labelled one (both None when no step is bad)."""
    pairs = [(p, t) for ps, ts in zip(predicted, targets, strict=True) for p, t in zip(ps, ts, strict=True)]
    if not pairs:
        return {"step_accuracy": None, "step_ece": None, "step_brier": None, "first_error_accuracy": None, "steps": 0}
    from cai.evaluation.metrics import calibration

    cal = calibration([p for p, _ in pairs], [t for _, t in pairs])
    first = [
        steps_mod.first_error(steps_mod.labels(ps)) == steps_mod.first_error(steps_mod.labels(ts))
        for ps, ts in zip(predicted, targets, strict=True)
        if ts
    ]
    return {
        "step_accuracy": sum((p >= 0.5) == (t >= 0.5) for p, t in pairs) / len(pairs),
        "step_ece": cal["ece"],
        "step_brier": cal["brier"],
        "first_error_accuracy": sum(first) / len(first) if first else None,
        "steps": len(pairs),
    }


def step_scores(pm: str, rows: list[StepRow], batch_size: int = 16, max_length: int = 512) -> dict:
    """P(step is good) of every step of every row from a trained PRM: {"steps": [[p, ...], ...], "cut_steps": n}
    (steps past max_length get no score and are counted)."""
    from cai.pm.score import load

    tokenizer, model = load(pm, KIND)
    encode = StepEncoder(tokenizer, getattr(model.config, "cai_step_separator", "\n"), max_length)
    predicted = predict(model, features(rows, encode), StepCollator(tokenizer.pad_token_id), batch_size)
    return {"steps": predicted, "cut_steps": encode.cut_steps}


def solution_score(step_p: list[float], how: str) -> float | None:
    """The solution's score from its scored steps (None when none was scored)."""
    return steps_mod.aggregate(step_p, how) if step_p else None
