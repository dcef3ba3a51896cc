"""The `cai` command line: each command parses flags, calls one library function, prints a summary."""

from __future__ import annotations

import sys
import typing
from dataclasses import fields
from pathlib import Path

import click

from cai.errors import CaiError

HELP = {
    "constitution": "Constitution YAML file (principles).",
    "prompts": "Prompts: .jsonl ({'prompt'} or {'messages'}), .txt (one per line), .parquet, or a datasets path/name.",
    "out": "Run folder; rerunning the same command resumes it.",
    "stage": "sl (critique-revision), rl (AI preference labels) or all (both, one engine).",
    "prompt_column": "Column holding the prompt (text or messages) in parquet/datasets input.",
    "limit": "Use only the first N prompts.",
    "model": "smollm2-135m (embedded), a local Hugging Face folder, or a Hub id.",
    "backend": "Engine backend (registered under the 'cai.backends' entry points).",
    "templates": "Folder of Jinja templates that override the shipped ones.",
    "seed": "Seed for principle sampling and generation.",
    "force": "Allow writing into a non-empty folder that is not a cai run.",
    "rounds": "Critique-revision rounds (a principle is sampled per round).",
    "max_tokens": "Max tokens per generated turn.",
    "temperature": "Sampling temperature for answers, critiques and revisions.",
    "top_p": "Nucleus sampling.",
    "chunk_size": "Prompts per chunk; each finished chunk is one shard (the unit of resume).",
    "pairs": "Candidates for RL: sampled (2 answers), revision (initial vs final revision), file.",
    "pairs_from": "With --pairs revision: an SL run folder; with --pairs file: the pairs file.",
    "pair_temperature": "Temperature for the two sampled candidates.",
    "judge": "logprob (read P(A)/P(B) in one pass), cot (reason first, labels clamped) or grm (sampled 1-10 scores).",
    "grm_samples": "--judge grm: judgements sampled per pair, votes summed.",
    "grm_meta": "--judge grm: keep the half of the samples the model rates most likely correct.",
    "grm_meta_pm": "--judge grm: a preference model folder (cai train-pm) that ranks the samples for the meta "
                   "filter: each sample's P(its preferred answer is better); implies the filter.",
    "grm_seed_principles": "--judge grm: show the constitution's principles as a starting point.",
    "principles_per_pair": "Principles sampled to judge each pair (an ensemble).",
    "cot_clamp": "CoT labels are clamped into [c, 1-c].",
    "cot_max_tokens": "Max tokens of chain-of-thought reasoning.",
    "dtype": "Engine dtype (auto: float32 on CPU).",
    "max_model_len": "Context length; longer requests are skipped, with the reason recorded.",
    "gpu_memory_utilization": "GPU memory fraction for vLLM.",
    "kv_cache_gb": "CPU only: KV cache size in GiB.",
    "tensor_parallel_size": "vLLM tensor parallelism (GPUs per model replica).",
    "data_parallel_size": "vLLM data parallelism (model replicas).",
    "enforce_eager": "Skip torch.compile/CUDA graphs (default: on for CPU).",
    "prefix_caching": "Reuse the KV cache of shared prefixes (system, few-shot turns).",
    "max_num_seqs": "Max sequences the engine runs at once.",
    "base_url": "--backend openai: server URL(s), comma-separated (e.g. http://127.0.0.1:8000).",
    "api_key": "--backend openai: API key, if the server wants one.",
    "concurrency": "--backend openai: requests in flight across all servers.",
    "max_attempts": "--backend openai: tries per request on transient errors.",
    "retry_seconds": "--backend openai: stop retrying a request after this many seconds.",
}
_TYPES = {int: int, float: float, str: str}
ALIASES = {"pairs_from": ("--from",)}  # extra flag names for a setting


def _config_options(func):
    from cai.config import RunConfig

    hints = typing.get_type_hints(RunConfig)
    for f in reversed(fields(RunConfig)):
        flag = f.name.replace("_", "-")
        base = next(t for t in (typing.get_args(hints[f.name]) or (hints[f.name],)) if t is not type(None))
        help_text = f"{HELP[f.name]} [default: {f.default}]"
        if base is bool:
            func = click.option(f"--{flag}/--no-{flag}", f.name, default=None, help=help_text)(func)
        else:
            func = click.option(f"--{flag}", *ALIASES.get(f.name, ()), f.name, type=_TYPES[base], default=None,
                                help=help_text)(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="cai")
def cli():
    """cai: Constitutional AI data generation (SL-CAI critique-revision and RLAIF preference labels)."""


@cli.command()
@click.option("--config", "config_file", type=click.Path(), help="YAML file of run settings; flags override it.")
@_config_options
def generate(config_file, **flags):
    """Generate SFT data (critique and revision) and/or AI preference labels from a constitution.

    \b
    Example:
      cai generate --stage sl --constitution constitution/harmless.yaml \\
        --prompts data/prompts/red_team.jsonl --out data/runs/mine --rounds 2 --seed 1
    """
    from cai import config as config_mod
    from cai.generate import generate as run

    config = config_mod.load(config_file, **flags)
    summary = run(config, log=lambda m: click.echo(m, err=True))
    _print_summary(summary)


def _print_summary(s) -> None:
    click.echo("")
    click.echo(f"run folder     {s.out}")
    click.echo(f"prompts        {s.prompts}" + (f" ({s.duplicates} duplicates dropped)" if s.duplicates else ""))
    for split in ("sft", "prefs"):
        if s.rows.get(split) or split in s.new_rows:
            click.echo(f"{split + ' rows':<15}{s.rows.get(split, 0)} ({s.new_rows.get(split, 0)} new)")
    for stage, n in s.skipped.items():
        if n:
            click.echo(f"skipped ({stage})   {n}  (reasons in {s.out}/skipped.jsonl)")
    if s.output_tokens:
        click.echo(f"tokens         {s.prompt_tokens} in, {s.output_tokens} out, {s.truncated} turns hit max-tokens")
        click.echo(f"speed          {s.tokens_per_second:.1f} output tokens/s over {s.engine_seconds:.1f}s of generation")
    if s.prefs:
        p = s.prefs
        share = "n/a" if p["position_consistent"] is None else f"{100 * p['position_consistent']:.1f}%"
        click.echo(f"labels         mean p_chosen {p['mean_p_chosen']:.3f}, ties {p['ties']}, "
                   f"position-consistent votes {share}, failed votes {p['failed_votes']}")
        click.echo("p_chosen       " + "  ".join(f"{k}: {v}" for k, v in p["histogram"].items()))
    click.echo(f"time           {s.seconds:.1f}s")


@cli.command("train-pm")
@click.argument("source")
@click.option("--out", required=True, help="Folder for the preference model, checkpoints and metrics.json.")
@click.option("--backbone", default="all-minilm-l6-v2", show_default=True,
              help="all-minilm-l6-v2 (embedded encoder), smollm2-135m (embedded decoder), a folder or a Hub id.")
@click.option("--epochs", type=float, default=1.0, show_default=True)
@click.option("--lr", type=float, default=5e-5, show_default=True)
@click.option("--batch-size", type=int, default=4, show_default=True, help="Prompts per step.")
@click.option("--max-length", type=int, default=512, show_default=True,
              help="Longer (prompt, response) texts keep their end and are counted.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--eval-fraction", type=float, default=0.1, show_default=True, help="Held out, split by prompt.")
@click.option("--group-by-prompt/--no-group-by-prompt", default=True, show_default=True,
              help="InstructGPT: all comparisons of a prompt in one batch element.")
@click.option("--center-rewards", type=float, default=0.0, show_default=True, help="Coefficient of mean(r^2).")
@click.option("--dropout/--no-dropout", default=False, show_default=True,
              help="Keep the backbone's dropout (off by default: it adds noise to every reward comparison).")
@click.option("--save-steps", type=int, default=50, show_default=True, help="Checkpoint every N steps (resumable).")
def train_pm(source, out, **settings):
    """Train a preference model on SOURCE (a run folder, a preference parquet/JSONL file or a dataset)
    with the soft-label Bradley-Terry loss; rerun the same command to resume from the last checkpoint."""
    from cai.pm import train

    m = train(source, out, log=lambda msg: click.echo(msg, err=True), **settings)
    click.echo("")
    click.echo(f"model          {out}")
    click.echo(f"pairs          {m['pairs']} ({m['train_groups']} train / {m['eval_groups']} eval batch elements)")
    acc = m["eval_accuracy"]
    click.echo(f"eval accuracy  {'n/a' if acc is None else f'{acc:.3f}'}   ece {m['eval_ece']:.3f}   "
               f"mean margin {m['eval_mean_margin']:.3f}")
    click.echo(f"train loss     {m['train_loss']:.4f} over {m['train_steps']} steps, {m['truncated']} truncated")
    click.echo(f"metrics        {out}/metrics.json   time {m['seconds']:.1f}s")


@cli.command()
@click.option("--pm", required=True, help="A folder written by cai train-pm.")
@click.option("--data", required=True, help="A run folder, or a preference parquet/JSONL file.")
@click.option("--out", required=True, help="JSONL file: one line per (prompt, response) with its score.")
@click.option("--batch-size", type=int, default=16, show_default=True)
def score(pm, data, out, batch_size):
    """Score responses with a trained preference model (on preference data: both sides, and accuracy)."""
    from cai.pm import score as run

    report = run(pm, data, out, batch_size=batch_size)
    click.echo(f"scored {report['scored']} responses -> {report['out']}")
    if report.get("accuracy") is not None:
        click.echo(f"accuracy (chosen scores above rejected): {report['accuracy']:.3f}")


@cli.command()
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--plot", type=click.Path(), help="Write a PNG: p_chosen histogram and per-principle consistency.")
def stats(run, as_json, plot):
    """Summarise RUN: rows, skips, principle usage, lengths, label distribution, position consistency."""
    from cai import stats as stats_mod

    s = stats_mod.compute(run)
    click.echo(stats_mod.to_json(s) if as_json else stats_mod.render(s))
    if plot:
        stats_mod.plot(s, plot)
        click.echo(f"plot written to {plot}", err=True)


@cli.command()
@click.argument("run")
@click.option("--repo", required=True, help="The Hub dataset repo, OWNER/NAME.")
@click.option("--private", is_flag=True, help="Create the repo private.")
@click.option("--dry-run", "dry_run", type=click.Path(), help="Only build the folder here; upload nothing.")
@click.option("--test-fraction", type=float, default=0.05, show_default=True, help="Share of prompts in test.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/test split.")
@click.option("--license", "license_", help="Dataset license [default: the constitution's, else cc-by-4.0].")
@click.option("--attempts", type=int, default=5, show_default=True, help="Upload attempts on transient errors.")
def publish(run, repo, private, dry_run, test_fraction, seed, license_, attempts):
    """Publish RUN as a Hub dataset: sft/ and prefs/ configs (train/test split by prompt), the
    constitution and a dataset card. Token from HF_TOKEN or `hf auth login`."""
    import tempfile

    from cai import publish as publish_mod

    if "/" not in repo or repo.count("/") != 1:
        raise CaiError(f"--repo {repo!r}: expected OWNER/NAME")
    if dry_run:
        built = publish_mod.build(run, dry_run, repo, test_fraction, seed, license_)
        click.echo(f"dataset folder written to {built['folder']} (nothing uploaded)")
    else:
        from huggingface_hub import get_token

        if not get_token():  # before any work: one clear line
            raise CaiError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry-run DIR)")
        with tempfile.TemporaryDirectory() as tmp:
            built = publish_mod.build(run, str(Path(tmp) / "dataset"), repo, test_fraction, seed, license_)
            url = publish_mod.upload(built["folder"], repo, private=private, attempts=attempts)
        click.echo(f"published {url}")
    for k, v in built["counts"].items():
        click.echo(f"  {k:<14}{v} rows")


@cli.group()
def constitution():
    """Inspect and check constitution files."""


@constitution.command("check")
@click.argument("file", type=click.Path())
def constitution_check(file):
    """Validate FILE and print a one-screen summary (exit 2 with the error otherwise)."""
    from cai.constitution import load

    c = load(file)
    click.echo(f"{file}: ok")
    click.echo(f"name        {c.name}")
    if c.description:
        click.echo(f"description {c.description[:100]}")
    click.echo(f"principles  {len(c.principles)} ({len(c.comparable)} with a compare question for the RL stage)")
    click.echo(f"few-shot    {len(c.few_shot)} demonstration(s)")
    click.echo(f"system      {'yes' if c.system else 'no'}")
    click.echo(f"sha256      {c.sha256[:16]}")
    for p in c.principles:
        click.echo(f"  - {p.id:<24} w={p.weight:g} {'compare ' if p.compare else '        '}{', '.join(p.tags)}")


@constitution.command("show")
@click.argument("file", type=click.Path())
def constitution_show(file):
    """Print FILE's principles as a table."""
    from cai.constitution import load

    c = load(file)
    click.echo(f"{c.name}: {len(c.principles)} principles")
    for p in c.principles:
        click.echo(f"\n[{p.id}] weight {p.weight:g}" + (f"  tags: {', '.join(p.tags)}" if p.tags else ""))
        click.echo(f"  critique: {p.critique}")
        click.echo(f"  revision: {p.revision}")
        if p.compare:
            click.echo(f"  compare:  {p.compare}")


STARTER = """# A cai constitution. Check it with: cai constitution check {file}
name: {name}
description: What these principles are for.
# license: cc-by-4.0
# system: An optional system prompt placed first in every chat.

principles:
  - id: example-principle          # unique: letters, digits, _ - .
    critique: >                    # the critique request
      Point out anything in the answer that ...
    revision: >                    # the revision request
      Rewrite the answer so that ...
    compare: Which answer is ...?  # optional: the question for the RL stage
    tags: [example]                # optional
    weight: 1.0                    # optional: relative chance of being sampled

# few_shot:                        # optional demonstrations of one critique and revision
#   - prompt: ...
#     answer: ...
#     principle: example-principle
#     critique: ...
#     revision: ...
"""


@constitution.command("new")
@click.argument("name")
@click.option("--out", type=click.Path(), help="File to write [default: constitution/NAME.yaml].")
def constitution_new(name, out):
    """Write a commented starter constitution."""
    path = Path(out or f"constitution/{name}.yaml")
    if path.exists():
        raise CaiError(f"{path}: already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STARTER.format(name=name, file=path))
    click.echo(f"wrote {path}")


@constitution.command("diff")
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
def constitution_diff(a, b):
    """Principles added, removed and changed from A to B (exit 1 if they differ)."""
    from cai.constitution import load

    old, new = {p.id: p for p in load(a).principles}, {p.id: p for p in load(b).principles}
    changes = [f"+ {i}" for i in new if i not in old] + [f"- {i}" for i in old if i not in new]
    for i in (i for i in old if i in new and old[i] != new[i]):
        fields = [f for f in ("critique", "revision", "compare", "tags", "weight")
                  if getattr(old[i], f) != getattr(new[i], f)]
        changes.append(f"~ {i} ({', '.join(fields)})")
    click.echo("\n".join(changes) if changes else "no differences in principles")
    sys.exit(1 if changes else 0)


def main(argv=None):
    try:
        cli.main(args=argv, prog_name="cai", standalone_mode=False)
    except CaiError as e:
        click.echo(f"cai: error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("cai: interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("cai: interrupted; run the same command again to resume", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
