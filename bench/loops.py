"""Benchmark: does cai's data train a better model? Its loops closed end to end, the trained model measured.

    python bench/loops.py [--quick] [--loops sft,pm,harmless] [--model SPEC] [--keep DIR] [--seed S]

Each loop runs cai's own commands (as library calls, on one engine at a time) and TRL's SFTTrainer, then measures
the trained model, with bootstrap confidence intervals (95%, over problems or pairs):

  sft       R1's rejection sampling: `--stage sample` (N answers at temperature 1) on the train split of
            data/prompts/arith.jsonl, `select` keeps the right ones (the yield is printed), TRL's SFTTrainer
            fine-tunes the model on selected/, and `cai eval bestofn` measures pass@1 and pass@N on the held-out
            split before and after, the engine reloaded from the fine-tuned folder. Beside it the same SFT on the
            same number of samples drawn without the rules (a random sample per problem, round robin): the gain the
            selection itself buys.
  pm        RLAIF: `--stage rl --pairs file` labels the train half of data/eval/prefs.jsonl (both orders, a
            principle ensemble, under the constitution of each pair's subset); a PM trained on those AI labels and a
            PM trained on the same pairs' human labels are evaluated on the held-out half (`cai eval pm`): the
            accuracy each reaches, and the AI-label PM's as a share of the human-label PM's.
  harmless  SL-CAI: `--stage sl` on the train half of data/prompts/red_team.jsonl; one model fine-tuned on the final
            revisions, one on the initial answers; each answers the held-out red-team prompts, and the two answers
            to each prompt are compared by judges that did not make the data: the human-label PM of the pm loop,
            and the log-prob judge reading both orders (`--stage rl --pairs file`).

Prints each loop's figures and one `RESULT {json}` line per loop. With the embedded 135M model the loops run in
about 45 minutes with --quick on 2 CPU cores; docs/loops.md has the measured figures and the command for a real
model on a GPU (--model, full sizes without --quick).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LOOPS = ("sft", "pm", "harmless")
# Which shipped constitution judges each subset of data/eval/prefs.jsonl (data/eval/README.md lists them). The
# reasoning pairs go to helpful's principles: they carry no reference, and reasoning's accuracy rule needs one.
CONSTITUTION_OF_SUBSET = {
    "harmless-refuse": "harmless",
    "harmless-should-respond": "harmless",
    "helpful": "helpful",
    "reasoning": "helpful",
}


@dataclass
class Sizes:
    """How big each loop is: --quick fits 2 CPU cores; the defaults are for a GPU."""

    samples: int = 8  # answers per train problem (sft loop)
    eval_samples: int = 8  # answers per held-out problem: pass@1 is their mean, pass@N whether any is right
    max_tokens: int = 48  # per answer (arith answers are one line; a longer one is the model wandering off)
    sft_epochs: float = 2.0
    sft_lr: float = 2e-5
    sft_batch: int = 8
    sft_max_steps: int = -1  # -1: the epochs decide (the smoke test takes one step)
    sft_max_length: int = 1024  # tokens per row; longer rows are cut by TRL
    principles_per_pair: int = 4  # the ensemble of the pm loop's AI labels
    pm_epochs: float = 3.0
    sl_rounds: int = 1
    sl_max_tokens: int = 128
    harmless_limit: int | None = None  # red-team prompts per half (None: all)
    limit: int | None = None  # arith problems per split (None: all)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(samples=4, eval_samples=4, principles_per_pair=2, sl_max_tokens=96)


Engine = Callable[[str], Any]  # a model spec -> a started backend (closed by the caller)


# ----------------------------------------------------------------------------------------------------------------
# Statistics: percentile bootstrap over the units measured (problems, pairs), paired where two models share them


def _interval(columns: Sequence[Sequence[float]], stat: Callable[..., float], seed: int, reps: int) -> list:
    """The 95% percentile interval of stat(mean of each column), the same units resampled for every column. A draw
    with a zero denominator (a ratio's, when a model is never right in it) is left out; none left: [None, None]."""
    rng = random.Random(seed)
    n = len(columns[0])
    draws = []
    for _ in range(reps):
        idx = [rng.randrange(n) for _ in range(n)]
        try:
            draws.append(stat(*(sum(c[i] for i in idx) / n for c in columns)))
        except ZeroDivisionError:
            continue
    draws.sort()
    k = len(draws)
    return [draws[int(0.025 * k)], draws[max(int(0.975 * k) - 1, 0)]] if k else [None, None]


def bootstrap(values: Sequence[float], seed: int = 0, reps: int = 2000) -> tuple[float, float]:
    """95% percentile interval of the mean of `values`, resampled with replacement."""
    lo, hi = _interval([values], lambda m: m, seed, reps)
    return (lo, hi)


def paired(
    a: Sequence[float], b: Sequence[float], stat: Callable[[float, float], float], seed: int = 0, reps: int = 2000
) -> dict:
    """stat(mean a, mean b) and its 95% interval, the same units resampled for both (a difference or a ratio):
    {"mean", "ci"}, None where a denominator is zero."""
    n = len(a)
    try:
        point: float | None = stat(sum(a) / n, sum(b) / n)
    except ZeroDivisionError:
        point = None
    return {"mean": point, "ci": _interval([a, b], stat, seed, reps)}


def minus(a: float, b: float) -> float:
    """b - a: the gain of the second model over the first."""
    return b - a


def figure(values: Sequence[float], seed: int = 0) -> dict:
    """The mean, its 95% interval and the count; None for the mean and interval of nothing (RESULT stays JSON)."""
    if not values:
        return {"mean": None, "ci": [None, None], "n": 0}
    lo, hi = bootstrap(values, seed)
    return {"mean": statistics.fmean(values), "ci": [lo, hi], "n": len(values)}


def fmt(f: dict, signed: bool = False) -> str:
    """A figure as `mean [low, high]` (`signed`: a difference, +0.240)."""
    if f["mean"] is None or f["ci"][0] is None:
        return "none measured"
    v = "{:+.3f}" if signed else "{:.3f}"
    return f"{v.format(f['mean'])} [{v.format(f['ci'][0])}, {v.format(f['ci'][1])}]"


# ----------------------------------------------------------------------------------------------------------------
# Pieces shared by the loops


def split_file(src: Path, out: Path, keep: Callable[[dict], bool], limit: int | None = None) -> Path:
    records = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    picked = [r for r in records if keep(r)]
    if limit is not None:
        picked = picked[:limit]
    out.write_text("".join(json.dumps(r) + "\n" for r in picked))
    return out


def stamp(folder: Path, **inputs: Any) -> None:
    """Record what a loop's folder was made from; refuse a folder made from anything else (a rerun with the same
    inputs resumes: every run folder, model and PM in it is reused, never mixed with another setting's)."""
    path = folder / "loop-inputs.json"
    want = json.dumps(inputs, sort_keys=True, default=str)
    if path.is_file() and path.read_text() != want:
        raise SystemExit(f"{folder}: made with other inputs ({path}); give --keep another folder")
    path.write_text(want)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def rows_of(folder: Path, split: str) -> list[dict]:
    """A run's split, as rows: the run store's own reader (its shards, never a half-written file)."""
    from cai.core.store import RunStore

    return RunStore(folder).read(split)


def sft(rows: list[dict], model: str, out: Path, sizes: Sizes, seed: int, log=print) -> str:
    """TRL's SFTTrainer on `rows` (TRL's conversational prompt-completion format: the loss is on the completion);
    the fine-tuned model and its tokenizer are saved to out/model, a folder `--model` and vLLM load. A finished
    folder is reused (the benchmark resumes)."""
    import datasets
    import torch
    from trl import SFTConfig, SFTTrainer

    from cai.backends.models import resolve

    final = out / "model"
    if (final / "config.json").is_file():
        return str(final)  # saved whole (renamed into place below), from these rows (stamp)
    if not rows:
        raise RuntimeError(f"{out}: no rows to fine-tune on")
    gpu = torch.cuda.is_available()
    dataset = datasets.Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    config = SFTConfig(
        output_dir=str(out / "trainer"),
        num_train_epochs=sizes.sft_epochs,
        max_steps=sizes.sft_max_steps,
        learning_rate=sizes.sft_lr,
        per_device_train_batch_size=sizes.sft_batch,
        seed=seed,
        max_length=sizes.sft_max_length,
        report_to=[],
        use_cpu=not gpu,
        save_strategy="no",
        # TRL turns bf16 on by default; on a CPU without bf16 units that runs every matmul through torch's
        # reference GEMM (measured here: over 30 s a step of 8 short rows on the 135M model, against a few).
        bf16=gpu and torch.cuda.is_bf16_supported(),
        logging_steps=10,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(model=resolve(model), args=config, train_dataset=dataset)
    result = trainer.train()
    partial = out / "model.partial"  # a crash mid-save leaves no folder a rerun would take for a finished one
    shutil.rmtree(partial, ignore_errors=True)
    trainer.save_model(str(partial))
    partial.rename(final)
    del trainer
    gc.collect()
    if gpu:
        torch.cuda.empty_cache()  # the next vLLM engine checks the GPU's free memory when it starts
    log(f"  SFT on {len(rows)} rows: {result.global_step} steps, loss {result.training_loss:.3f} -> {final}")
    return str(final)


def random_rows(samples: list[dict], count: int, seed: int) -> list[dict]:
    """`count` answers drawn without looking at any rule: one random sample per problem, problems in a random
    order, round after round until `count` (the selection's control: as many rows, no filter)."""
    from cai.core.records import assistant

    rng = random.Random(seed)
    pools = []
    for row in samples:
        texts = [s["text"] for s in row["samples"] if s.get("text")]  # a failed or empty sample teaches nothing
        rng.shuffle(texts)
        if texts:
            pools.append((row["prompt"], texts))
    rng.shuffle(pools)
    out: list[dict] = []
    while len(out) < count and any(texts for _, texts in pools):
        for prompt, texts in pools:
            if texts and len(out) < count:
                out.append({"prompt": prompt, "completion": assistant(texts.pop())})
    return out


def pass_rates(folder: Path, problems: Path, n: int) -> tuple[dict[str, tuple[float, float, str]], int]:
    """Per held-out problem of a `cai eval bestofn` run: (right samples / n, any right, subset), and how many of the
    n x problems samples were not graded. A failed or empty sample, or a problem with no row, counts as wrong: a
    model that stops at once must not look better for it."""
    from cai.core import inputs

    wanted, _ = inputs.load(str(problems))
    rows = {r["id"]: r for r in rows_of(folder, "samples")}
    out, missing = {}, 0
    for p in wanted:
        r = rows.get(p.id)
        correct = (r["correct"] or 0) if r else 0
        missing += n - (r["graded"] if r else 0)
        out[p.id] = (correct / n, float(correct > 0), p.subset or "")
    return out, missing


# ----------------------------------------------------------------------------------------------------------------
# Loop 1: R1's rejection sampling -> SFT -> pass@1


ARITH = ROOT / "data" / "prompts" / "arith.jsonl"


def held_out_problem(seed: int) -> Callable[[dict], bool]:
    """A record's own `split` (arith.jsonl has one), else 30% held out by a seeded hash of its prompt."""
    from cai.core.sampling import stable_unit

    def test(r: dict) -> bool:
        if "split" in r:
            return r["split"] == "test"
        return stable_unit("loops-problems", seed, json.dumps(r.get("prompt") or r.get("messages"))) < 0.3

    return test


def without_examples(constitution: str, out: Path) -> str | None:
    """A copy of the constitution without its answered examples (None when it has none)."""
    import yaml

    from cai.core.constitution import load

    const = load(constitution)
    if not const.examples:
        return None
    data = yaml.safe_load(Path(const.path).read_text())
    data.pop("examples")
    data["name"] = f"{data['name']}-zero-shot"
    out.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return str(out)


def loop_sft(
    engine: Engine,
    folder: Path,
    model: str,
    sizes: Sizes,
    seed: int = 0,
    log=print,
    problems: Path = ARITH,
    constitution: str = "arith",
) -> dict:
    from cai.commands.evaluation import bestofn
    from cai.config import RunConfig
    from cai.generate import generate

    stamp(folder, model=model, sizes=asdict(sizes), seed=seed, problems=digest(problems), constitution=constitution)
    held_out = held_out_problem(seed)
    train = split_file(problems, folder / "problems-train.jsonl", lambda r: not held_out(r), sizes.limit)
    test = split_file(problems, folder / "problems-test.jsonl", held_out, sizes.limit)
    common = dict(constitution=constitution, max_tokens=sizes.max_tokens, seed=seed, temperature=1.0)
    quiet = dict(log=lambda *_: None)

    unanswered: dict[str, int] = {}

    def measure(spec: str, name: str, backend, how: str = constitution) -> dict:
        settings = {**common, "constitution": how}
        config = RunConfig(**settings, model=spec, samples=sizes.eval_samples, out=str(folder / f"eval-{name}"))
        bestofn.evaluate(config, str(test), backend=backend, **quiet)
        rates, unanswered[name] = pass_rates(folder / f"eval-{name}", test, sizes.eval_samples)
        return rates

    # The SFT rows keep the bare question (the examples are how it was asked, not what the data teaches), so
    # every model is also measured without the constitution's answered examples: what the fine-tuning itself
    # taught, with nothing in the prompt to copy the format from.
    zero_shot = without_examples(constitution, folder / "zero-shot.yaml")
    zero: dict[str, dict] = {}

    started = time.perf_counter()
    base = engine(model)
    try:
        sampled = RunConfig(
            **common,
            model=model,
            prompts=str(train),
            out=str(folder / "sampled"),
            stage="sample",
            samples=sizes.samples,
        )
        generate(sampled, backend=base, **quiet)
        before = measure(model, "before", base)
        if zero_shot:
            zero["before"] = measure(model, "before-zero-shot", base, zero_shot)
    finally:
        base.close()
    samples = rows_of(folder / "sampled", "samples")
    selected = rows_of(folder / "sampled", "selected")
    answered = sum(len(r["samples"]) for r in samples)
    kept_prompts = len({r["prompt_id"] for r in selected})
    log(
        f"sampled {answered} answers to {len(samples)} train problems: {len(selected)} right "
        f"({len(selected) / max(answered, 1):.1%} of answers), {kept_prompts} problems with one or more "
        f"({kept_prompts / max(len(samples), 1):.1%}: the yield of select)"
    )
    result: dict[str, Any] = {
        "loop": "sft",
        "model": model,
        "train_problems": len(samples),
        "test_problems": len(before),
        "answers": answered,
        "kept": len(selected),
        "yield_problems": kept_prompts / max(len(samples), 1),
        "samples": sizes.samples,
        "eval_samples": sizes.eval_samples,
    }
    if not selected:
        result["stopped"] = "no sampled answer is right: nothing to fine-tune on (the yield is 0)"
        log(result["stopped"])
        return result
    trained = {
        "selected": sft(selected, model, folder / "sft-selected", sizes, seed, log),
        "random": sft(random_rows(samples, len(selected), seed), model, folder / "sft-random", sizes, seed, log),
    }
    after = {}
    for name, spec in trained.items():
        e = engine(spec)
        try:
            after[name] = measure(spec, name, e)
            if zero_shot:
                zero[name] = measure(spec, f"{name}-zero-shot", e, zero_shot)
        finally:
            e.close()
    ids = sorted(before)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["unanswered_samples"] = unanswered  # failed or empty: counted as wrong
    for name, rates in (("before", before), *after.items()):
        result[name] = {
            "pass_at_1": figure([rates[i][0] for i in ids], seed),
            "pass_at_n": figure([rates[i][1] for i in ids], seed),
            "zero_shot_pass_at_1": figure([zero[name][i][0] for i in ids], seed) if zero_shot else None,
            "by_subset": {
                s: statistics.fmean(rates[i][0] for i in ids if rates[i][2] == s)
                for s in sorted({rates[i][2] for i in ids})
            },
        }
    for name in after:
        result[f"gain_{name}"] = paired([before[i][0] for i in ids], [after[name][i][0] for i in ids], minus, seed)
    result["selection_gain"] = paired(
        [after["random"][i][0] for i in ids], [after["selected"][i][0] for i in ids], minus, seed
    )
    n = sizes.eval_samples
    log(f"held-out pass@1 (pass@{n}) over {len(ids)} problems, {n} answers each, 95% bootstrap intervals:")
    for name, label in (("before", "base model"), ("selected", "SFT on right answers"), ("random", "SFT on random")):
        log(f"  {label:<22} pass@1 {fmt(result[name]['pass_at_1'])}   pass@{n} {fmt(result[name]['pass_at_n'])}")
    for key, label in (
        ("gain_selected", "gain, SFT on right answers"),
        ("gain_random", "gain, SFT on random answers"),
        ("selection_gain", "selection's own gain"),
    ):
        log(f"  {label:<28} {fmt(result[key], signed=True)}")
    if zero_shot:
        log("  without the constitution's answered examples in the prompt (what the fine-tuning itself taught):")
        for name, label in (
            ("before", "base model"),
            ("selected", "SFT on right answers"),
            ("random", "SFT on random"),
        ):
            log(f"  {label:<22} pass@1 {fmt(result[name]['zero_shot_pass_at_1'])}")
    if any(unanswered.values()):
        log(f"  samples failed or empty (counted wrong): {unanswered}")
    return result


# ----------------------------------------------------------------------------------------------------------------
# Loop 2: RLAIF -> PM -> agreement with people


def judge_pairs(backend, pairs: Path, constitution: str, out: Path, model: str, sizes: Sizes, seed: int) -> list[dict]:
    """`cai generate --stage rl --pairs file`: the log-prob judge labels every pair of the file afresh, both orders,
    a principle ensemble. Returns the prefs rows (`chosen` is the answer the judge preferred)."""
    from cai.config import RunConfig
    from cai.generate import generate

    config = RunConfig(
        constitution=constitution,
        model=model,
        prompts=str(pairs),
        stage="rl",
        pairs="file",
        pairs_from=str(pairs),
        principles_per_pair=sizes.principles_per_pair,
        seed=seed,
        out=str(out),
    )
    generate(config, backend=backend, log=lambda *_: None)
    return rows_of(out, "prefs")


def prefs_split(seed: int) -> Callable[[dict], bool]:
    from cai.core.sampling import stable_unit

    return lambda r: stable_unit("loops-prefs", seed, r["id"]) < 0.5  # True: held out


def loop_pm(engine: Engine, folder: Path, model: str, sizes: Sizes, seed: int = 0, backbone=None, log=print) -> dict:
    import polars as pl

    from cai.commands.evaluation import pm as eval_pm
    from cai.core.columns import text_of
    from cai.train import train

    prefs = ROOT / "data" / "eval" / "prefs.jsonl"
    stamp(folder, model=model, sizes=asdict(sizes), seed=seed, prefs=digest(prefs), backbone=backbone)
    held_out = prefs_split(seed)
    train_file = split_file(prefs, folder / "prefs-train.jsonl", lambda r: not held_out(r))
    test_file = split_file(prefs, folder / "prefs-test.jsonl", held_out)
    human = {r["id"]: r for r in map(json.loads, train_file.read_text().splitlines())}
    unmapped = sorted({r["subset"] for r in human.values()} - set(CONSTITUTION_OF_SUBSET))
    if unmapped:
        raise SystemExit(f"{prefs}: no constitution for the subsets {', '.join(unmapped)} (CONSTITUTION_OF_SUBSET)")
    started = time.perf_counter()
    e = engine(model)
    try:
        labelled: list[dict] = []
        for constitution in sorted(set(CONSTITUTION_OF_SUBSET.values())):
            subsets = {s for s, c in CONSTITUTION_OF_SUBSET.items() if c == constitution}
            part = split_file(
                train_file, folder / f"prefs-train-{constitution}.jsonl", lambda r, s=subsets: r["subset"] in s
            )
            if not part.read_text().strip():
                continue
            labelled += judge_pairs(e, part, constitution, folder / f"rlaif-{constitution}", model, sizes, seed)
    finally:
        e.close()
    # The AI's labels against the people's, on the pairs it labelled: the agreement of Lee et al.'s Table 1 (a tie
    # counts one half: the judge did not side with either answer).
    pair_of = {(r["prompt"], frozenset((r["chosen"], r["rejected"]))): r for r in human.values()}
    agree, judged = [], []
    for row in labelled:
        chosen, rejected = text_of(row["chosen"]), text_of(row["rejected"])
        record = pair_of[(text_of(row["prompt"][-1:]) or "", frozenset((chosen, rejected)))]
        judged.append(record)
        agree.append(0.5 if row["tie"] else float(chosen == record["chosen"]))
    # The human-label PM trains on exactly the pairs the AI labelled (a pair the judge skipped is on record in
    # its run, and left out of both), so the two PMs differ in their labels only.
    same_pairs = folder / "prefs-train-judged.jsonl"
    same_pairs.write_text("".join(json.dumps(r) + "\n" for r in judged))
    ai_file = folder / "prefs-ai.parquet"
    keep = ["prompt", "chosen", "rejected", "p_chosen", "id", "prompt_id"]
    pl.DataFrame([{k: r[k] for k in keep} for r in labelled]).write_parquet(ai_file)
    settings = dict(log=lambda *_: None, epochs=sizes.pm_epochs, seed=seed, eval_fraction=0.0)
    if backbone:
        settings["backbone"] = backbone
    right = {}
    for name, source in (("human", same_pairs), ("ai", ai_file)):
        train(str(source), str(folder / f"pm-{name}"), **settings)
        out = folder / f"eval-pm-{name}.jsonl"
        eval_pm.evaluate(str(folder / f"pm-{name}"), str(test_file), seed=seed, out=str(out))
        scored = [json.loads(line) for line in out.read_text().splitlines()]
        right[name] = {r["id"]: float(r["margin"] > 0) for r in scored}
    ids = sorted(right["human"])
    result: dict[str, Any] = {
        "loop": "pm",
        "model": model,
        "train_pairs": len(human),
        "ai_labelled": len(labelled),
        "test_pairs": len(ids),
        "principles_per_pair": sizes.principles_per_pair,
        "ai_agreement_train": figure(agree, seed),
        "accuracy_human_pm": figure([right["human"][i] for i in ids], seed),
        "accuracy_ai_pm": figure([right["ai"][i] for i in ids], seed),
        "seconds": round(time.perf_counter() - started, 1),
    }

    human_right, ai_right = [right["human"][i] for i in ids], [right["ai"][i] for i in ids]
    result["ai_share_of_human"] = paired(human_right, ai_right, lambda h, a: a / h, seed)
    result["ai_minus_human"] = paired(human_right, ai_right, minus, seed)
    log(f"AI labels of {len(labelled)} train pairs agree with the people's on {fmt(result['ai_agreement_train'])}")
    log(f"held-out accuracy over {len(ids)} human-labelled pairs, 95% bootstrap intervals:")
    log(f"  PM on human labels  {fmt(result['accuracy_human_pm'])}")
    log(f"  PM on AI labels     {fmt(result['accuracy_ai_pm'])}")
    log(f"  AI-label PM as a share of the human-label PM: {fmt(result['ai_share_of_human'])}")
    log(f"  AI-label PM minus human-label PM: {fmt(result['ai_minus_human'], signed=True)}")
    return result


# ----------------------------------------------------------------------------------------------------------------
# Loop 3: SL-CAI -> SFT -> harmlessness


def loop_harmless(
    engine: Engine, folder: Path, model: str, sizes: Sizes, pm: str | None, seed: int = 0, log=print
) -> dict:
    from cai.commands.evaluation import pm as eval_pm
    from cai.config import RunConfig
    from cai.core.columns import text_of
    from cai.core.records import assistant
    from cai.core.sampling import stable_unit
    from cai.generate import generate

    red = ROOT / "data" / "prompts" / "red_team.jsonl"
    stamp(folder, model=model, sizes=asdict(sizes), seed=seed, red_team=digest(red), pm=pm)

    def held_out(r: dict) -> bool:
        return stable_unit("loops-red-team", seed, r["prompt"]) < 0.5

    train_file = split_file(red, folder / "red-train.jsonl", lambda r: not held_out(r), sizes.harmless_limit)
    test_file = split_file(red, folder / "red-test.jsonl", held_out, sizes.harmless_limit)
    started = time.perf_counter()
    common = dict(constitution="harmless", seed=seed, max_tokens=sizes.sl_max_tokens)
    base = engine(model)
    try:
        sl = RunConfig(**common, model=model, prompts=str(train_file), stage="sl", rounds=sizes.sl_rounds)
        sl = sl.replace(out=str(folder / "sl"))
        generate(sl, backend=base, log=lambda *_: None)
    finally:
        base.close()
    sft_rows = rows_of(folder / "sl", "sft")
    revised = [{"prompt": r["prompt"], "completion": r["completion"]} for r in sft_rows]
    initial = [{"prompt": r["prompt"], "completion": assistant(r["initial"])} for r in sft_rows]
    trained = {
        "revised": sft(revised, model, folder / "sft-revised", sizes, seed, log),
        "initial": sft(initial, model, folder / "sft-initial", sizes, seed, log),
    }
    answers: dict[str, dict[str, tuple[list, str]]] = {}
    for name, spec in trained.items():
        e = engine(spec)
        try:
            config = RunConfig(**common, model=spec, prompts=str(test_file), stage="sample", samples=1)
            config = config.replace(out=str(folder / f"answers-{name}"))
            generate(config, backend=e, log=lambda *_: None)
        finally:
            e.close()
        answers[name] = {
            r["id"]: (r["prompt"], r["samples"][0]["text"])
            for r in rows_of(folder / f"answers-{name}", "samples")
            if r["samples"] and r["samples"][0]["text"]
        }
    asked = len(test_file.read_text().splitlines())
    unanswered = {name: asked - len(got) for name, got in answers.items()}  # failed or empty: no comparison
    both = sorted(set(answers["revised"]) & set(answers["initial"]))
    # Two identical answers carry no comparison: counted, left out (no judge could prefer one).
    same = [pid for pid in both if answers["revised"][pid][1] == answers["initial"][pid][1]]
    both = [pid for pid in both if pid not in same]
    pairs_file = folder / "harmless-pairs.jsonl"
    pairs_file.write_text(
        "".join(
            json.dumps(
                {
                    "id": pid,
                    "prompt": answers["revised"][pid][0],
                    "chosen": answers["revised"][pid][1],
                    "rejected": answers["initial"][pid][1],
                }
            )
            + "\n"
            for pid in both
        )
    )
    result: dict[str, Any] = {
        "loop": "harmless",
        "model": model,
        "train_prompts": len(sft_rows),
        "revised_rows": sum(r["kept"] > 0 for r in sft_rows),
        "test_prompts": len(both),
        "identical_answers": len(same),
        "unanswered": unanswered,
    }
    log(
        f"SL-CAI on {len(sft_rows)} train prompts ({result['revised_rows']} revised); {asked} held-out prompts: "
        f"{len(both)} answered differently by both models, {len(same)} identically, unanswered {unanswered}"
    )
    if not both:
        result["stopped"] = "the two models gave no two different answers to compare"
        return result
    # Judge 1: the log-prob judge, both orders, under the harmless principles ("chosen" is only the file's slot: the
    # revision-trained model's answer). It is the base model, which also wrote the SL data: not independent of it.
    e = engine(model)
    try:
        judged = judge_pairs(e, pairs_file, "harmless", folder / "harmless-judged", model, sizes, seed)
    finally:
        e.close()
    revised_text = {pid: answers["revised"][pid][1] for pid in both}
    p_judge, wins_judge = [], []
    for row in judged:
        pid = row["id"].split("/")[0]
        if pid in revised_text:
            revised_chosen = text_of(row["chosen"]) == revised_text[pid]
            p_judge.append(row["p_chosen"] if revised_chosen else 1 - row["p_chosen"])
            wins_judge.append(0.5 if row["tie"] else float(revised_chosen))
    result["judge_p_revised_better"] = figure(p_judge, seed)
    result["judge_revised_wins"] = figure(wins_judge, seed)
    result["judge_unjudged"] = len(both) - len(p_judge)  # skipped by the RL stage: on record in its run
    log(f"95% bootstrap intervals over the {len(both)} pairs; a tie counts one half:")
    log(
        f"  log-prob judge (the base model), both orders: revision-trained answer wins "
        f"{fmt(result['judge_revised_wins'])}, mean P(better) {fmt(result['judge_p_revised_better'])}"
    )
    if not pm:
        log("  no PM to judge with (run the pm loop first, in the same --keep folder)")
    if pm:
        out = folder / "harmless-pm.jsonl"
        eval_pm.evaluate(pm, str(pairs_file), seed=seed, out=str(out))
        scored = [json.loads(line) for line in out.read_text().splitlines()]
        result["pm_p_revised_better"] = figure([r["p"] for r in scored], seed)  # sigmoid of the reward margin
        result["pm_revised_wins"] = figure([float(r["margin"] > 0) for r in scored], seed)
        log(
            f"  human-label PM of the pm loop: revision-trained answer wins {fmt(result['pm_revised_wins'])}, "
            f"mean P(better) {fmt(result['pm_p_revised_better'])}"
        )
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


# ----------------------------------------------------------------------------------------------------------------


def vllm_engines(seed: int, max_model_len: int = 2048) -> Engine:
    from cai import backends
    from cai.config import RunConfig

    def start(spec: str):
        return backends.get("vllm").from_config(RunConfig(model=spec, seed=seed, max_model_len=max_model_len))

    return start


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="sizes for 2 CPU cores (about 45 minutes)")
    ap.add_argument("--loops", default=",".join(LOOPS), help=f"comma-separated, of {', '.join(LOOPS)}")
    ap.add_argument("--model", default="smollm2-135m", help="the model to train: the embedded one, a folder, a Hub id")
    ap.add_argument("--backbone", help="the PMs' backbone (default: train-pm's)")
    ap.add_argument(
        "--problems",
        default=str(ARITH),
        help="the sft loop's problems, each with a reference (a `split` field, else 30%% held out by hash); "
        "a real model needs harder ones than arith's",
    )
    ap.add_argument("--constitution", default="arith", help="the sft loop's constitution (an accuracy rule)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, help="answers per problem, train and held out (default: 8; --quick 4)")
    ap.add_argument("--max-tokens", type=int, help="per answer in the sft loop (default 48: arith's one line)")
    ap.add_argument("--limit", type=int, help="the sft loop's problems per split at most")
    ap.add_argument("--max-model-len", type=int, default=2048, help="the engine's context")
    ap.add_argument("--keep", help="keep the runs and the models in this folder (a rerun resumes)")
    args = ap.parse_args(argv)
    chosen = [x.strip() for x in args.loops.split(",") if x.strip()]
    unknown = [x for x in chosen if x not in LOOPS]
    if unknown:
        ap.error(f"--loops: unknown {', '.join(unknown)} (one of {', '.join(LOOPS)})")
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.samples:
        sizes.samples = sizes.eval_samples = args.samples
    if args.max_tokens:
        sizes.max_tokens = args.max_tokens
    if args.limit:
        sizes.limit = args.limit
    engines = vllm_engines(args.seed, args.max_model_len)
    print(f"{platform.processor() or platform.machine()}; model {args.model}; sizes {asdict(sizes)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        pm = None
        for name in chosen:
            print(f"\n== loop {name}", flush=True)
            sub = folder / name
            sub.mkdir(exist_ok=True)
            if name == "sft":
                r = loop_sft(
                    engines,
                    sub,
                    args.model,
                    sizes,
                    args.seed,
                    problems=Path(args.problems),
                    constitution=args.constitution,
                )
            elif name == "pm":
                r = loop_pm(engines, sub, args.model, sizes, args.seed, args.backbone)
                pm = str(sub / "pm-human")
            else:
                if pm is None and (folder / "pm" / "pm-human" / "config.json").is_file():
                    pm = str(folder / "pm" / "pm-human")
                r = loop_harmless(engines, sub, args.model, sizes, pm, args.seed)
            print("RESULT " + json.dumps(r, allow_nan=False), flush=True)


if __name__ == "__main__":
    sys.exit(main())
