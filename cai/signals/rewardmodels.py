"""Trained reward models at inference: what `cai train-pm` wrote, loaded once per process, and its scores.

A pairwise preference model gives one reward per (prompt, response) text; a process reward model gives P(step is
good) at the end of every step. The encoders here lay the texts out exactly as the trainers (cai.train) do, so a
model reads at scoring time what it read in training. Used by `cai score`, `cai eval pm|steps`, the GRM judge's
meta filter and the GRPO reward functions.
"""

from __future__ import annotations

import functools
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cai.core import steps as steps_mod
from cai.errors import CaiError
from cai.signals.calibration import calibration

if TYPE_CHECKING:
    import torch

# One trained model's forward pass at a time in this process: the streaming executor and the reward service call
# from many threads, and torch gains nothing from several passes competing for the same cores.
TORCH = threading.Lock()
PM, PRM, PIK, META = "pm", "prm", "pik", "meta"  # the kinds `cai train-pm --kind` writes (cai_kind in config)


@dataclass(frozen=True)
class Kind:
    suffix: str  # of the architecture's name
    what: str
    auto: str  # the transformers class that loads it


KINDS = {
    PM: Kind("ForSequenceClassification", "a pairwise preference model", "AutoModelForSequenceClassification"),
    PRM: Kind("ForTokenClassification", "a process reward model", "AutoModelForTokenClassification"),
    # the same head as a PM's, told apart by the cai_kind its trainer writes
    PIK: Kind("ForSequenceClassification", "a P(IK) value head", "AutoModelForSequenceClassification"),
    META: Kind("ForSequenceClassification", "a meta reward model", "AutoModelForSequenceClassification"),
}


def kind_of(pm: str, flag: str = "--pm", want: str | None = None) -> str:
    """The kind ("pm" or "prm") of a folder written by `cai train-pm`; one line when it is neither (naming the
    kind `want`ed, where the caller needs one)."""
    config = Path(pm) / "config.json"
    if not config.is_file():
        raise CaiError(f"{flag} {pm}: not a trained preference model folder (no config.json)")
    try:
        saved = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CaiError(f"{config}: unreadable model config") from None
    architectures = saved.get("architectures") or []
    if saved.get("cai_kind") in (PIK, META):  # a PM's head, told apart by what its trainer wrote
        return saved["cai_kind"]
    for kind, k in KINDS.items():
        if any(a.endswith(k.suffix) for a in architectures):
            return kind
    found = ", ".join(architectures) or "model of unknown kind"
    if want is not None:
        raise CaiError(f"{flag} {pm}: a {found}, not {KINDS[want].what} (cai train-pm --kind {want} writes one)")
    raise CaiError(
        f"{flag} {pm}: a {found}, not a model cai train-pm writes "
        "(...ForSequenceClassification for pairs, ...ForTokenClassification for steps)"
    )


def check_pm(pm: str, flag: str = "--pm", want: str = PM) -> None:
    """One line when `pm` is not the kind of model the caller needs (a PRM where a pairwise PM is expected, or
    the reverse)."""
    got = kind_of(pm, flag, want)
    if got != want:
        raise CaiError(
            f"{flag} {pm}: {KINDS[got].what} (train-pm --kind {got}), but this needs {KINDS[want].what} "
            f"(train-pm --kind {want})"
        )


def load(pm: str, kind: str = PM):
    """The tokenizer and model of a trained PM or PRM, loaded once per process while its files are unchanged
    (the GRM meta filter asks for the same one on every chunk)."""
    check_pm(pm, want=kind)
    return _load_saved(pm, kind, (Path(pm) / "config.json").stat().st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _load_saved(pm: str, kind: str, _saved_at: int):
    import transformers

    auto = getattr(transformers, KINDS[kind].auto)
    return transformers.AutoTokenizer.from_pretrained(pm), auto.from_pretrained(pm).eval()


def rewards_of(model, batch) -> torch.Tensor:
    """One output per text, or per token for a PRM."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)


class Encoder:
    """Turns (prompt, response) into token ids; counts truncations. Keeps the end of long texts
    (the answer's conclusion), dropping from the left."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncated = 0
        tokenizer.truncation_side = "left"

    def text(self, prompt, response) -> str:
        messages = list(prompt) + [{"role": "assistant", "content": response}]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages)

    def __call__(self, prompt, response) -> list[int]:
        text = self.text(prompt, response)
        ids = self.tokenizer(text)["input_ids"]
        if len(ids) <= self.max_length:
            return ids
        self.truncated += 1  # rare: only these pay a second, truncating pass
        return self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"]


def padded(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token sequences as one tensor padded on the right, and its attention mask (what every collator here needs)."""
    import torch

    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
    return ids, mask


class Collator:
    """Flattens a batch of groups into one padded tensor of responses plus index tensors."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict]) -> dict:
        import torch

        seqs: list[list[int]] = []
        first: list[int] = []
        second: list[int] = []
        p: list[float] = []
        grp: list[int] = []
        for gi, item in enumerate(batch):
            base = len(seqs)
            seqs += item["input_ids"]
            for a, b, prob in item["comparisons"]:
                first.append(base + a)
                second.append(base + b)
                p.append(prob)
                grp.append(gi)
        ids, mask = padded(seqs, self.pad_id)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "first": torch.tensor(first),
            "second": torch.tensor(second),
            "p": torch.tensor(p, dtype=torch.float32),
            "group": torch.tensor(grp),
            "n_groups": len(batch),
        }


def rewards(pm: str, items: list[tuple[list[dict], str]], batch_size: int = 16, max_length: int = 512) -> dict:
    """Normalised rewards of (prompt messages, response) items, batched: {"scores": [...], "raw": [...],
    "truncated": n}.
    A score is (r - mean) / std with the mean and std of the rewards on the trainer's held-out split, so
    scores of one model are in standard units: 0 is an average answer, 1 is one standard deviation above."""
    tokenizer, model = load(pm)
    mean = getattr(model.config, "cai_reward_mean", 0.0)
    std = getattr(model.config, "cai_reward_std", 1.0) or 1.0
    encode = Encoder(tokenizer, max_length)
    raw = raw_rewards(model, encode, items, batch_size)
    # Raw rewards give Bradley-Terry probabilities (sigmoid of a margin); normalised ones compare across models.
    return {"scores": [(r - mean) / std for r in raw], "raw": raw, "truncated": encode.truncated}


def raw_rewards(model, encode: Encoder, items: list[tuple[list[dict], str]], batch_size: int = 16) -> list[float]:
    """A pairwise model's raw reward of each (prompt messages, response), batched (the trainer's model in memory
    too: InstructGPT's normalisation reads the demonstrations' rewards before the model is saved)."""
    import torch

    collate = Collator(encode.tokenizer.pad_token_id)
    raw: list[float] = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            batch = collate(
                [{"input_ids": [encode(prompt, response)], "comparisons": []} for prompt, response in chunk]
            )
            raw += rewards_of(model, batch).reshape(-1).tolist()
    return raw


def judgement_ids(tokenizer, messages: list[dict], max_length: int) -> list[int]:
    """What a meta reward model reads of a sampled judgement (chat messages: the question with the answers, then
    the judge's reply with its scores), the same in training and in `--grm-meta-rm`: their texts in order, cut
    from the left when too long, as a judgement's end holds its verdict."""
    tokenizer.truncation_side = "left"
    text = "\n\n".join(str(m["content"]) for m in messages)
    return tokenizer(text, truncation=True, max_length=max_length)["input_ids"]


def meta_scores(
    model_dir: str, judgements: list[list[dict]], batch_size: int = 16, max_length: int = 512
) -> list[float]:
    """P(the verdict is correct) of each judgement (as chat messages) from a trained meta reward model (cai train-pm
    --kind meta)."""
    tokenizer, model = load(model_dir, META)
    seqs = [judgement_ids(tokenizer, m, max_length) for m in judgements]
    return probabilities(model, seqs, tokenizer.pad_token_id, batch_size)


def probabilities(model, seqs: list[list[int]], pad_id: int, batch_size: int = 16) -> list[float]:
    """σ(head) of a one-output model on each token sequence, batched (a P(IK) head, a meta RM)."""
    import torch

    model.eval()
    out: list[float] = []
    with torch.no_grad():
        for start in range(0, len(seqs), batch_size):
            ids, mask = padded(seqs[start : start + batch_size], pad_id)
            out += torch.sigmoid(model(input_ids=ids, attention_mask=mask).logits.squeeze(-1)).reshape(-1).tolist()
    return out


def question_text(tokenizer, prompt: list[dict]) -> str:
    """The question as the model sees it before answering (its chat template, up to the assistant's turn)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


def question_ids(tokenizer, prompts: list[list[dict]], max_length: int) -> list[list[int]]:
    """What a P(IK) head reads of each question, in training and inference alike: the question as the model sees
    it, cut from the left when too long (the end of a long conversation is the question asked)."""
    tokenizer.truncation_side = "left"
    return [
        tokenizer(question_text(tokenizer, p), truncation=True, max_length=max_length)["input_ids"] for p in prompts
    ]


def pik_scores(model_dir: str, prompts: list[list[dict]], batch_size: int = 16, max_length: int = 512) -> list[float]:
    """P(IK) of each question from a value head trained by `cai train-pm --kind pik`."""
    tokenizer, model = load(model_dir, PIK)
    return probabilities(model, question_ids(tokenizer, prompts, max_length), tokenizer.pad_token_id, batch_size)


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


class StepEncoder:
    """(prompt, steps) -> token ids and the position of each step's label, laid out as TRL's PRMTrainer does:
    [BOS] prompt, then each step followed by the separator, the label on the separator's last token. Long
    texts are cut on the right; steps cut off lose their label and are counted (training), or are read each in a
    window of their own (`window`, scoring)."""

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

    def window(self, prompt: str, steps: list[str], k: int) -> list[int]:
        """Step k read in at most max_length tokens that end at its label: [BOS] prompt and as many of the steps
        just before it as fit; a step too long to sit beside the prompt gets the last max_length tokens up to
        its end. (A solution's score is the product over all of its steps, so a step past max_length is read,
        with less context, rather than left out: a product missing its last factors only grows.)"""
        head = self.start + self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        body: list[int] = []
        for step in steps[: k + 1]:
            body += self.tokenizer(step, add_special_tokens=False)["input_ids"] + self.sep
        last = len(self.tokenizer(steps[k], add_special_tokens=False)["input_ids"]) + len(self.sep)
        room = self.max_length - len(head)
        if room >= last:
            return head + body[-room:]
        return self.start + (head[len(self.start) :] + body)[-(self.max_length - len(self.start)) :]


def step_features(rows: list[StepRow], encode: StepEncoder) -> list[dict]:
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

        ids, attention = padded([item["input_ids"] for item in batch], self.pad_id)
        targets = torch.full(ids.shape, -1.0)
        for i, item in enumerate(batch):
            for end, t in zip(item["ends"], item["targets"], strict=True):
                targets[i, end] = t
        return {"input_ids": ids, "attention_mask": attention, "targets": targets, "mask": targets >= 0}


def predict(model, feats: list[dict], collate: StepCollator, batch_size: int = 16) -> list[list[float]]:
    """P(step is good) of every labelled step of every item, in order."""
    import torch

    model.eval()
    out: list[list[float]] = []
    with torch.no_grad():
        for start in range(0, len(feats), batch_size):
            chunk = feats[start : start + batch_size]
            probs = torch.sigmoid(rewards_of(model, collate(chunk)))
            out += [[probs[i, e].item() for e in item["ends"]] for i, item in enumerate(chunk)]
    return out


def step_metrics(predicted: list[list[float]], targets: list[list[float]]) -> dict:
    """Step accuracy (P >= 0.5 on the same side as the label), ECE of the step probabilities against the soft
    labels (10 bins), Brier score, and first-error accuracy: the share of solutions whose first predicted bad
    step is the labelled one (both None when no step is bad)."""
    pairs = [(p, t) for ps, ts in zip(predicted, targets, strict=True) for p, t in zip(ps, ts, strict=True)]
    if not pairs:
        return {"step_accuracy": None, "step_ece": None, "step_brier": None, "first_error_accuracy": None, "steps": 0}
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
    """P(step is good) of every step of every row from a trained PRM: {"steps": [[p, ...], ...],
    "windowed_steps": n}. Every step is scored: one past max_length in a window of its own (StepEncoder.window),
    counted in `windowed_steps`."""
    tokenizer, model = load(pm, PRM)
    encode = StepEncoder(tokenizer, getattr(model.config, "cai_step_separator", "\n"), max_length)
    collate = StepCollator(tokenizer.pad_token_id)
    feats = step_features(rows, encode)
    predicted = predict(model, feats, collate, batch_size)
    windows, owners = [], []
    for i, (r, f) in enumerate(zip(rows, feats, strict=True)):
        for k in range(len(f["ends"]), len(r.steps)):  # in step order: appended after the steps read in full
            ids = encode.window(r.prompt, r.steps, k)
            windows.append({"input_ids": ids, "ends": [len(ids) - 1], "targets": [0.0]})
            owners.append(i)
    for i, (p,) in zip(owners, predict(model, windows, collate, batch_size), strict=True):
        predicted[i].append(p)
    return {"steps": predicted, "windowed_steps": len(windows)}


def solution_score(step_p: list[float], how: str) -> float | None:
    """The solution's score from its scored steps (None when none was scored)."""
    return steps_mod.aggregate(step_p, how) if step_p else None
