"""Benchmark: `cai train-pm` vs TRL's RewardTrainer on the same backbone, data and batch size, one run.

    python bench/pm.py [--pairs N] [--batch-size B] [--steps S] [--max-length L] [--repeats R]

Both train the same number of steps on the same (prompt, chosen, rejected) texts with hard labels
(p = 1, where the two losses are the same). Both are transformers Trainers, so both are measured the
same way: `Trainer.train` is timed and the peak resident memory it added is recorded (`speed_vs_trl`,
goal >= 1.0; `memory_vs_trl`, goal <= 1.0). End-to-end times are printed too: cai's also evaluate the
model, normalise its rewards and save it, which TRL's `train()` alone does not. Each trainer runs in a
fresh subprocess so that neither inherits the other's allocations.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _data(path: Path, n: int) -> None:
    prompts = [json.loads(x)["prompt"] for x in (ROOT / "data" / "prompts" / "red_team.jsonl").read_text().splitlines()]
    rows = []
    for i in range(n):
        p = prompts[i % len(prompts)]
        rows.append(
            {
                "prompt": p,
                "chosen": f"I can't help with that, but here is a safe alternative ({i}).",
                "rejected": f"Sure, here is exactly how to do it, step by step ({i}).",
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _child(which: str, data: str, out: str, batch: int, steps: int, max_length: int) -> None:
    import psutil
    import torch

    torch.manual_seed(0)
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()

    # Instrument the training loop itself, identically for both (PMTrainer and RewardTrainer inherit it).
    import transformers

    loop = {}
    train_loop = transformers.Trainer.train

    def timed_train(self, *a, **kw):
        start = time.perf_counter()
        try:
            return train_loop(self, *a, **kw)
        finally:
            loop["seconds"], loop["peak_mib"] = time.perf_counter() - start, (peak[0] - base) / 2**20

    transformers.Trainer.train = timed_train
    rows = [json.loads(x) for x in Path(data).read_text().splitlines()]
    epochs = steps * batch / len(rows)
    t0 = time.perf_counter()
    if which == "cai":
        from cai.train import train

        train(
            data,
            out,
            log=lambda *_: None,
            epochs=epochs,
            batch_size=batch,
            max_length=max_length,
            eval_fraction=0.0,
            group_by_prompt=False,
            save_steps=10_000,
        )
    else:
        import datasets
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from trl import RewardConfig, RewardTrainer

        from cai.backends.models import resolve_backbone

        path = resolve_backbone("all-minilm-l6-v2")
        tokenizer = AutoTokenizer.from_pretrained(path)
        tokenizer.eos_token = tokenizer.eos_token or tokenizer.sep_token  # TRL appends an EOS; BERT has [SEP]
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        # The same texts cai builds for an encoder without a chat template.
        ds = datasets.Dataset.from_list(
            [
                {
                    "chosen": f"user: {r['prompt']}\nassistant: {r['chosen']}",
                    "rejected": f"user: {r['prompt']}\nassistant: {r['rejected']}",
                }
                for r in rows
            ]
        )
        args = RewardConfig(
            output_dir=out,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch,
            max_length=max_length,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            logging_steps=10_000,
            disable_tqdm=True,
            # equal footing with cai: fp32 (RewardConfig defaults to bf16, 3.5x slower on
            # CPUs without bf16 units) and no gradient checkpointing (its default)
            bf16=False,
            gradient_checkpointing=False,
        )
        RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer).train()
    seconds = time.perf_counter() - t0
    stop.set()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "pairs": steps * batch,
                "peak_mib": (peak[0] - base) / 2**20,
                "train_seconds": loop["seconds"],
                "train_peak_mib": loop["peak_mib"],
            }
        )
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="alternate the two trainers this many times and keep each one's fastest run",
    )
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args.child[0], args.child[1], tempfile.mkdtemp(), args.batch_size, args.steps, args.max_length)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.jsonl"
        _data(data, args.pairs)
        results = {}
        for _ in range(args.repeats):
            for which in ("cai", "trl"):
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    which,
                    str(data),
                    "--batch-size",
                    str(args.batch_size),
                    "--steps",
                    str(args.steps),
                    "--max-length",
                    str(args.max_length),
                ]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode:
                    sys.exit(f"{which} run failed:\n{out.stderr[-3000:]}")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"  {which}: training loop {r['train_seconds']:.1f}s", file=sys.stderr)
                if which not in results or r["train_seconds"] < results[which]["train_seconds"]:
                    results[which] = r
    print(
        f"backbone: all-minilm-l6-v2  device: CPU  pairs/step: {args.batch_size}  steps: {args.steps}  "
        f"max_length: {args.max_length}"
    )
    for which, r in results.items():
        print(
            f"{which}: training loop {r['pairs'] / r['train_seconds']:.2f} pairs/s ({r['train_seconds']:.1f}s), "
            f"peak memory added {r['train_peak_mib']:.0f} MiB; end to end {r['seconds']:.1f}s, "
            f"peak {r['peak_mib']:.0f} MiB"
        )
    cai, trl = results["cai"], results["trl"]
    print(f"speed_vs_trl: {trl['train_seconds'] / cai['train_seconds']:.2f}")
    print(f"memory_vs_trl: {cai['train_peak_mib'] / trl['train_peak_mib']:.2f}")
    print(f"end_to_end_vs_trl: {trl['seconds'] / cai['seconds']:.2f} (cai also evaluates, normalises and saves)")


if __name__ == "__main__":
    main()
