"""The `cai` command line: each command parses flags, calls one library function, prints a summary."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cai.errors import CaiError

_TYPES = {int: int, float: float, str: str}


def _options(settings, func):
    """One click option per declared setting, with its help, owner, choices and default from the declaration."""
    for s in reversed(settings):
        owner = "" if s.owner == "run" else f"[{s.owner}] "
        choices = f" [choices: {', '.join(s.meta['choices']())}]" if s.meta["choices"] else ""
        help_text = f"{owner}{s.help}{choices} [default: {s.default}]"
        if s.type is bool:
            func = click.option(f"{s.flag}/--no-{s.flag[2:]}", s.name, default=None, help=help_text)(func)
        else:
            func = click.option(
                s.flag, *s.meta.get("aliases", ()), s.name, type=_TYPES[s.type], default=None, help=help_text
            )(func)
    return func


def _run_options(func=None, *, exclude: tuple[str, ...] = ()):
    """Every run setting as a flag (`exclude`: names a command gives another meaning)."""
    from cai.config import catalogue

    def wrap(f):
        from cai.config import RETIRED

        for name in RETIRED:  # hidden: given, it is refused with the reason (cai.config.RETIRED)
            f = click.option(f"--{name.replace('_', '-')}", name, hidden=True, default=None)(f)
        return _options([s for s in catalogue().settings.values() if s.name not in exclude], f)

    return wrap(func) if func is not None else wrap


def _train_options(func):
    from cai.train import settings, trainers

    func = _options([s for s in settings() if s.name not in ("source", "out")], func)
    kinds = trainers()
    what = "; ".join(f"{k}: {t.help}" for k, t in kinds.items())
    return click.option("--kind", type=click.Choice(list(kinds)), help=f"{what} [default: pm]")(func)


_json = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
_config = click.option(
    "--config", "config_file", type=click.Path(), help="YAML file of run settings; flags override it."
)


def _plot(help: str):
    return click.option("--plot", type=click.Path(), help=help)


def _log(message: str) -> None:
    """Progress and notes go to stderr: stdout carries results (`--json` must parse)."""
    click.echo(message, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="cai")
def cli():
    """cai: Constitutional AI data generation (SL-CAI critique-revision and RLAIF preference labels)."""


@cli.command()
@_config
@_run_options
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
    summary = run(config, log=_log)
    _print_summary(summary)


@cli.group("eval")
def eval_():
    """How good are the labels? Measure them against labels people gave."""


_DATA_HELP = "JSONL/parquet file or `datasets` folder of {prompt or messages, chosen, rejected, subset?}."


def _eval_output(report: dict, lines: list[str], as_json: bool, plot: str | None, title: str) -> None:
    import json

    if plot:
        from cai.commands.evaluation.report import plot as draw

        draw(report, plot, title)
    click.echo(json.dumps(report, indent=2, default=str) if as_json else "\n".join(lines))
    if plot:
        click.echo(f"plot written to {plot}", err=True)


@eval_.command("judge")
@click.option("--data", required=True, help=_DATA_HELP)
@_json
@_plot("Write a PNG: reliability diagram and accuracy per subset.")
@_config
@_run_options
def eval_judge(data, as_json, plot, config_file, **flags):
    """Run the RL stage's judge (the same --judge, principles, templates and rules as `cai generate`) on
    pairs people labelled, and report how often it agrees: strict accuracy (ties are wrong), accuracy from
    one order and from one principle alone, position consistency, calibration, per subset and per principle
    (RewardBench's section scores when the subsets are RewardBench's). With --out DIR the judged rows are
    kept there and a rerun resumes.

    \b
    Example:
      cai eval judge --data data/eval/prefs.jsonl --principles-per-pair 2 --out data/runs/eval-judge
    """
    from cai import config as config_mod
    from cai.commands.evaluation.judge import evaluate
    from cai.commands.evaluation.report import judge_lines

    config = config_mod.load(config_file, **flags)
    r = evaluate(config, data, log=_log)
    _eval_output(r, judge_lines(r), as_json, plot, f"{r['judge']} judge")


@cli.command("judge-data")
@click.option(
    "--data",
    required=True,
    help="Labelled pairs: a preference file (as cai eval judge reads) or a run folder (pairs a person kept or "
    "flipped in cai review, pairs a rule decided, sampled answers a reference graded).",
)
@click.option("--pointwise", is_flag=True, help="Also judge each answer alone, k times (kept pointwise SFT data).")
@click.option("--keep-easy", "keep_easy", is_flag=True, help="Keep pairs whose k judgements were all correct.")
@_json
@_config
@_run_options
def judge_data(data, pointwise, keep_easy, as_json, config_file, **flags):
    """Training data for the GRM judge from its own judgements (DeepSeek-GRM's rejective fine-tuning): k
    judgements per labelled pair (--grm-samples), each checked against the label. Writes OUT/judgements/ (every
    judgement with `correct`: the meta reward model's data, cai train-pm OUT --kind meta) and OUT/judge_sft/ (the
    correct ones of pairs that were not too easy, TRL's conversational format), and prints the acceptance rate
    per subset. A killed run resumes.

    \b
    Example:
      cai judge-data --data data/eval/prefs.jsonl --grm-samples 8 --out data/runs/judge-data
    """
    import json

    from cai import config as config_mod
    from cai.commands.judge_data import build, lines

    flags["judge"] = flags.get("judge") or "grm"
    config = config_mod.load(config_file, **flags)
    r = build(config, data, pointwise, keep_easy, log=_log)
    click.echo(json.dumps(r, indent=2, default=str) if as_json else "\n".join(lines(r)))


@eval_.command("pm")
@click.option("--pm", required=True, help="A folder written by cai train-pm.")
@click.option("--data", required=True, help=_DATA_HELP)
@_json
@_plot("Write a PNG: reliability diagram and accuracy per subset.")
@click.option("--out", type=click.Path(), help="JSONL file of every scored pair (rewards, margin, probability).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of which answer counts as first.")
@click.option("--batch-size", type=int, default=16, show_default=True)
def eval_pm(pm, data, as_json, plot, out, seed, batch_size):
    """A trained preference model on pairs people labelled: accuracy (preferred answer's reward strictly
    higher), mean margin, calibration of the Bradley-Terry probability, per subset."""
    from cai.commands.evaluation.pm import evaluate
    from cai.commands.evaluation.report import pm_lines

    r = evaluate(pm, data, seed=seed, batch_size=batch_size, out=out)
    _eval_output(r, pm_lines(r), as_json, plot, "preference model")


@eval_.command("self")
@click.option("--data", required=True, help="JSONL/parquet of {prompt or messages, answer, acceptable: true|false}.")
@_json
@_plot("Write a PNG: the reliability diagram of P(True).")
@_config
@_run_options
def eval_self(data, as_json, plot, config_file, **flags):
    """Calibration of self-evaluation: P(True) of each labelled answer (read as `generate --self-eval` reads
    it), its accuracy against the labels, expected calibration error and Brier score."""
    from cai import config as config_mod
    from cai.commands.evaluation.answers import self_eval
    from cai.commands.evaluation.report import self_lines

    # --self-eval-samples is a setting of --self-eval: the evaluation is self-evaluation
    config = config_mod.load(config_file, **{**flags, "self_eval": True})
    r = self_eval(config, data, log=_log)
    _eval_output(r, self_lines(r), as_json, plot if r["n"] else None, "P(True)")


@eval_.command("bestofn")
@click.option(
    "--data", required=True, help="JSONL/parquet of problems with a 'reference' answer (data/prompts/math.jsonl)."
)
@_json
@_plot("Write a PNG: best-of-N accuracy of each selector against pass@1 and pass@N.")
@_config
@_run_options
def eval_bestofn(data, as_json, plot, config_file, **flags):
    """Best-of-N: N samples per problem (the sample stage: --samples, --self-eval, --pm, --prm), one chosen by each
    selector (rules without accuracy, P(True), PM, PRM, the combined score, majority vote by math-verify), graded
    against the reference; beside pass@1 and pass@N. With --out the samples are kept and a rerun resumes.

    \b
    Example:
      cai eval bestofn --data data/prompts/math.jsonl --constitution reasoning --samples 4 --self-eval
    """
    import json

    from cai import config as config_mod
    from cai.commands.evaluation import bestofn

    config = config_mod.load(config_file, **flags)
    r = bestofn.evaluate(config, data, log=_log)
    if plot:
        bestofn.plot(r, plot)
    click.echo(json.dumps(r, indent=2, default=str) if as_json else "\n".join(bestofn.lines(r)))
    if plot:
        click.echo(f"plot written to {plot}", err=True)


@eval_.command("pik")
@click.option("--pm", required=True, help="A P(IK) value head (cai train-pm --kind pik).")
@click.option(
    "--data",
    required=True,
    help="A run folder with samples/, or JSONL/parquet of {prompt, p_ik or correct and graded}.",
)
@_json
@_plot("Write a PNG: the reliability diagram of P(IK).")
@click.option("--batch-size", type=int, default=16, show_default=True)
def eval_pik(pm, data, as_json, plot, batch_size):
    """A P(IK) value head on questions whose sampled answers were graded: Brier score (beside a constant guess),
    ECE and AUROC of P(IK) against each sample being right (Kadavath et al. §5).

    \b
    Example:
      cai eval pik --pm data/models/pik --data data/runs/math-samples
    """
    from cai.commands.evaluation.pik import evaluate
    from cai.commands.evaluation.report import pik_lines

    r = evaluate(pm, data, batch_size)
    _eval_output(r, pik_lines(r), as_json, plot, "P(IK)")


@eval_.command("steps")
@click.option("--data", required=True, help="JSONL/parquet of {prompt, completions: [steps], labels: [true|false]}.")
@click.option("--pm", help="Evaluate this process reward model (train-pm --kind prm) instead of the step judge.")
@_json
@_plot("Write a PNG: reliability diagram and step accuracy per subset.")
@_config
@_run_options(exclude=("pm", "prm"))  # --pm here is the PRM evaluated; the sample stage's scorers do not apply
def eval_steps(data, pm, as_json, plot, config_file, **flags):
    """The steps stage's judge (same template, principles and option orders as `cai generate --stage steps`),
    or a process reward model with --pm, on steps people labelled: step accuracy, first-error accuracy,
    calibration, per subset.

    \b
    Example:
      cai eval steps --data data/eval/steps.jsonl --constitution reasoning
    """
    from cai import config as config_mod
    from cai.commands.evaluation.report import steps_lines
    from cai.commands.evaluation.steps import evaluate

    config = config_mod.load(config_file, **flags)
    r = evaluate(config, data, pm=pm, log=_log)
    _eval_output(r, steps_lines(r), as_json, plot if r["steps"] else None, "step labels")


def _serve_options(func):
    """The server's settings, the run settings a server reads (constitution, model, templates) and every signal's
    settings with --weights: the same declarations `cai generate` makes its flags of."""
    from cai import signals
    from cai.commands.serve.run import ServeOptions
    from cai.config import catalogue
    from cai.settings import declared

    known = catalogue().settings
    groups = [g for name in signals.names() for g in signals.get(name).settings] + [signals.WeightOptions]
    wanted = ["model", "backend", "templates"] + [s.name for g in dict.fromkeys(groups) for s in declared(g, "")]
    func = _options([known[n] for n in dict.fromkeys(wanted)] + declared(ServeOptions, "serve"), func)
    # the GRM signal's switch is --sample-grm everywhere; --grm is its name here since cai serve 0.x
    func = click.option("--grm", "grm", is_flag=True, hidden=True, default=None)(func)
    return click.option("--constitution", required=True, help="A constitution file or shipped name.")(func)


@cli.command()
@_serve_options
def serve(constitution, grm, **flags):
    """Serve the constitution as a reward to RL trainers (OpenRLHF, verl, TRL) over HTTP: every signal the flags
    turn on (the rules with the request's reference always; --pm, --prm, --self-eval, --sample-grm), combined by
    --weights. Bearer token from $CAI_SERVE_TOKEN (or made and printed once); binds 127.0.0.1; bounded body, items
    and queue (413, 429).

    \b
    Example:
      CAI_SERVE_TOKEN=secret cai serve --constitution reasoning --port 8000
    """
    from cai import config as config_mod
    from cai.commands.serve.run import ServeOptions
    from cai.commands.serve.run import serve as run
    from cai.settings import build, check_value, declared

    server = {s.name: flags.pop(s.name) for s in declared(ServeOptions, "serve")}
    for s in declared(ServeOptions, "serve"):
        if server[s.name] is None:
            server.pop(s.name)
        else:
            check_value(s, server[s.name])
    if grm:
        flags["sample_grm"] = True
    config = config_mod.load(None, constitution=constitution, **flags)
    run(config, build(ServeOptions, server), log=_log)


@cli.command()
def plugins():
    """List the installed plug-ins: stages (in the order --stage all runs them), judges, step judges and backends,
    found through the entry points cai.stages, cai.judges, cai.step_judges and cai.backends."""
    from cai import plugins as registry
    from cai import stages

    order = {"stage": stages.ordered}  # the other kinds: by name
    for kind, group in registry.GROUPS.items():
        click.echo(f"{kind.replace('_', ' ')}s ({group}):")
        found = registry.every(kind)
        for name in order.get(kind, sorted)(list(found)):
            cls = found[name]
            own = cls.__dict__.get("__doc__")  # a module with several plug-ins says what each is in its class
            doc = (own or __import__(cls.__module__, fromlist=["_"]).__doc__ or "").strip().splitlines()[0]
            split = getattr(cls, "split", None)
            extra = f" -> {split}/" if split else ""
            named = "  [runs only when named]" if not getattr(cls, "in_all", True) else ""
            click.echo(f"  {name:<10}{extra:<11} {doc}  ({cls.__module__}){named}")


def _print_summary(s) -> None:
    click.echo("")
    for line in s.describe():
        click.echo(line)


@cli.command("train-pm")
@click.argument("source")
@click.option("--out", required=True, help="Folder for the model, checkpoints and metrics.json.")
@_train_options
def train_pm(source, out, **settings):
    """Train a reward model on SOURCE (a run folder, a parquet/JSONL file or a dataset): with --kind pm (default)
    a pairwise preference model on preference rows with the soft-label Bradley-Terry loss; with --kind prm a
    process reward model on step rows with soft binary cross-entropy; with --kind pik a P(IK) value head on
    sampled questions; with --kind meta a meta reward model on cai judge-data's judgements (is this judgement's
    verdict correct?). A run folder is read with its review decisions applied. Rerun the same command to resume
    from the last checkpoint."""
    from cai.train import train, trainers

    kind = settings.pop("kind") or "pm"
    given = {k: v for k, v in settings.items() if v is not None}
    m = train(source, out, log=_log, kind=kind, **given)
    click.echo("")
    click.echo(f"model          {out}")
    for line in trainers()[kind].summary_lines(m):
        click.echo(line)
    click.echo(f"metrics        {out}/metrics.json   time {m['seconds']:.1f}s")


@cli.command()
@click.option("--pm", help="A folder written by cai train-pm.")
@click.option("--rules", help="A constitution (file or shipped name) whose rules score each response.")
@click.option(
    "--data",
    required=True,
    help="A run folder, a preference parquet/JSONL file, or a JSONL/parquet file "
    "of completions ({prompt or messages, completion, reference?}).",
)
@click.option("--out", required=True, help="JSONL file: one line per (prompt, response) with its scores.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option(
    "--aggregate",
    type=click.Choice(["product", "min"]),
    help="With a process reward model: a solution's score from its steps' [default: product].",
)
def score(pm, rules, data, out, batch_size, aggregate):
    """Score responses with a trained preference model and/or a constitution's rules (on preference data:
    both sides, and how often chosen scores higher). With a process reward model (train-pm --kind prm), score
    every step of each solution (a steps/ split, or records with prompt and completions or a solution text)."""
    from cai.commands.score import lines
    from cai.commands.score import score as run

    report = run(data, out, pm=pm, rules=rules, batch_size=batch_size, aggregate=aggregate)
    for line in lines(report):
        click.echo(line)


@cli.command()
@click.argument("run")
@_json
@_plot("Write a PNG: p_chosen histogram and per-principle consistency; for steps, where the first error falls.")
def stats(run, as_json, plot):
    """Summarise RUN: rows, skips, principle usage, lengths, label distribution, position consistency."""
    from cai.commands import stats as stats_mod

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
@click.option(
    "--min-p-true",
    type=float,
    help="Publish only SFT rows whose completion has P(True) >= X (runs made with --self-eval).",
)
def publish(run, repo, private, dry_run, test_fraction, seed, license_, attempts, min_p_true):
    """Publish RUN as a Hub dataset: sft/ and prefs/ configs (train/test split by prompt), the
    constitution and a dataset card. Token from HF_TOKEN or `hf auth login`."""
    import tempfile

    from cai.commands import publish as publish_mod

    if "/" not in repo or repo.count("/") != 1:
        raise CaiError(f"--repo {repo!r}: expected OWNER/NAME")
    if dry_run:
        built = publish_mod.build(run, dry_run, repo, test_fraction, seed, license_, min_p_true)
        click.echo(f"dataset folder written to {built['folder']} (nothing uploaded)")
    else:
        from huggingface_hub import get_token

        if not get_token():  # before any work: one clear line
            raise CaiError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry-run DIR)")
        with tempfile.TemporaryDirectory() as tmp:
            built = publish_mod.build(run, str(Path(tmp) / "dataset"), repo, test_fraction, seed, license_, min_p_true)
            url = publish_mod.upload(built["folder"], repo, private=private, attempts=attempts)
        click.echo(f"published {url}")
    width = max(14, *(len(k) + 2 for k in built["counts"]))
    for k, v in built["counts"].items():
        click.echo(f"  {k:<{width}}{v} rows")
    r = built["reviewed"]
    if any(r.values()):
        click.echo(
            f"  review        {r['dropped']} dropped, {r['flipped']} flipped, {r['relabelled']} relabelled, "
            f"{r['kept']} kept as they were (from {run}/review.jsonl)"
        )


@cli.command()
@click.argument("run")
@click.option("--port", type=int, default=8765, show_default=True, help="Port to serve on (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; keep loopback unless you must.")
@click.option("--no-open", "no_open", is_flag=True, help="Do not open the page in the default browser.")
@click.option(
    "--queue",
    help="Open on a review queue: convincing-wrong (steps: solutions with a wrong final answer, the labeller's "
    "most convincing first, to mark their first wrong step).",
)
def review(run, port, host, no_open, queue):
    """Read RUN in the browser and correct it: filter rows, read SFT traces as diffs and pairs with their
    votes, then keep / drop / flip rows (j/k to move, a keep, d drop, f flip) and relabel steps (or mark a
    solution's first wrong step). Decisions go to RUN/review.jsonl as you make them; `cai publish` and
    `cai train-pm` apply them. Ctrl-C stops the server.

    \b
    Example (Let's Verify's active learning: label the wrong answers the step labeller rates highest):
      cai review data/runs/steps --queue convincing-wrong
    """
    import time
    import webbrowser

    from cai.commands.review.server import queue_split, start
    from cai.core.decisions import counts

    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"warning: serving on {host}: anyone who can reach it and learns the page's token can edit", err=True
        )
    split = queue_split(run, queue) if queue else None  # refused before the server starts
    server = start(run, host, port)
    url = server.url + (f"?split={split}&queue={queue}" if queue else "")
    if queue:
        from cai.commands.review.query import Filters, page
        from cai.core.store import RunStore

        n = page(RunStore(run), Filters(split or "", queue=queue, limit=1))["total"]
        click.echo(f"queue {queue}: {n} {split} rows")
    click.echo(f"reviewing {run} at {url}  (Ctrl-C to stop)")
    if not no_open:
        webbrowser.open(url)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        from cai.core.store import RunStore

        c = counts(RunStore(run))
        click.echo(f"\nreviewed {c['reviewed']} rows, changed {c['changed']} (decisions in {run}/review.jsonl)")


@cli.group()
def constitution():
    """Inspect and check constitution files."""


@constitution.command("check")
@click.argument("file")
def constitution_check(file):
    """Validate FILE (a path, or a shipped name: code, harmless, helpful, reasoning) and print a one-screen
    summary (exit 2 with the error otherwise)."""
    from cai.commands.constitution_text import summary
    from cai.core.constitution import load

    click.echo("\n".join(summary(load(file))))


@constitution.command("show")
@click.argument("file")
def constitution_show(file):
    """Print FILE's principles as a table."""
    from cai.commands.constitution_text import table
    from cai.core.constitution import load

    click.echo("\n".join(table(load(file))))


@constitution.command("new")
@click.argument("name")
@click.option("--out", type=click.Path(), help="File to write [default: constitution/NAME.yaml].")
def constitution_new(name, out):
    """Write a commented starter constitution."""
    from cai.commands.constitution_text import STARTER

    path = Path(out or f"constitution/{name}.yaml")
    if path.exists():
        raise CaiError(f"{path}: already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STARTER.format(name=name, file=path))
    click.echo(f"wrote {path}")


@constitution.command("diff")
@click.argument("a")
@click.argument("b")
def constitution_diff(a, b):
    """Principles added, removed and changed from A to B, and a changed system prompt, demonstrations, answered
    examples or scope (exit 1 if they differ)."""
    from cai.commands.constitution_text import differences
    from cai.core.constitution import load

    changes = differences(load(a), load(b))
    click.echo("\n".join(changes) if changes else "no differences")
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
