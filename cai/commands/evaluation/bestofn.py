"""`cai eval bestofn`: on problems with a reference answer, how much each way of choosing among N samples gains over
taking one (Let's Verify's comparison of selectors; RewardBench 2's best-of-4 from the other side).

The N samples and their scores come from the sample stage (one request of n = N per problem; the rules, P(True)
with --self-eval, a PM with --pm, a PRM with --prm), run through the lifecycle every evaluation uses (resumable
with --out). Each selector picks one sample per problem, and the accuracy rule grades it against the reference:

  rules      the highest score of the rules other than accuracy (format, language, length: what a policy could be
             rewarded for without the answer key)
  p_true     the highest P(True)
  pm         the highest PM reward
  prm        the highest PRM solution score
  grm        the highest score of a DeepSeek-GRM judgement of the problem's samples (--sample-grm)
  score      the highest combined score (--weights)
  majority   the most common final answer, answers grouped by math-verify equivalence (so 1/2 and 0.5 vote together)

against pass@1 (the expected accuracy of one sample) and pass@N (some sample is right: the ceiling). A problem a
selector cannot choose for (no sample has its score) counts as wrong, and is counted.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

from cai import backends
from cai.commands.evaluation.run import evaluate as run_evaluation
from cai.config import RunConfig
from cai.core import inputs, rules
from cai.errors import CaiError
from cai.signals import ranking
from cai.stages.sample import SampleStage

SELECTORS = ("rules", "p_true", "pm", "prm", "grm", "score", "majority")
LABELS = {
    "rules": "rules without accuracy",
    "p_true": "P(True)",
    "pm": "preference model",
    "prm": "process reward model",
    "grm": "GRM judgement",
    "score": "combined score",
    "majority": "majority vote (math-verify)",
}


def evaluate(
    config: RunConfig, data: str, backend: backends.Backend | None = None, log: Callable[[str], None] = print
) -> dict:
    started = time.monotonic()
    problems, _ = inputs.load(data, config.run.prompt_column, config.run.limit)
    graded = [p for p in problems if p.reference is not None]
    if not graded:
        raise CaiError(f"--data {data}: no problem has a 'reference': best-of-N grades each choice against it")
    config = config.replace(stage="sample")
    stage = SampleStage(config)
    from cai.core import constitution as constitution_mod

    const = constitution_mod.load(config.run.constitution)
    if not any(r.kind == "accuracy" for r in const.rules):
        raise CaiError(
            f"{const.path}: no accuracy rule grades the answers against their reference (try --constitution reasoning)"
        )
    fingerprint = hashlib.sha256(
        json.dumps([[p.id, p.reference] for p in graded], ensure_ascii=False).encode()
    ).hexdigest()[:16]
    done = run_evaluation(config, stage, graded, fingerprint, backend, log)
    weights = {r.id: r.weight for r in done.constitution.rules if r.kind != "accuracy"}
    report = selectors(done.rows, weights, stage.signals())
    report.update(
        data=data,
        samples=stage.o.samples,
        model=config.run.model,
        constitution=done.constitution.name,
        failed=len(done.failures),
        failure_reasons=sorted({why for _, why in done.failures})[:5],
        out=str(done.store.root) if done.store else None,
        seconds=round(time.monotonic() - started, 1),
    )
    if done.store is not None:
        done.store.save_report("eval-bestofn", report)
    return report


def _style_score(sample: dict, weights: dict[str, float]) -> float | None:
    """The weighted mean score of the rules other than accuracy that applied and finished."""
    known = [(weights[r["rule"]], r["score"]) for r in sample["rules"] if r["rule"] in weights and r["error"] is None]
    total = sum(w for w, _ in known)
    return sum(w * s for w, s in known) / total if total else None


def _same(a: str, b: str) -> bool:
    try:
        return rules.equivalent(a, b)
    except Exception:  # a comparison that timed out or failed groups nothing: the two answers vote apart
        return False


def selectors(rows: list[dict], rule_weights: dict[str, float], signals: list[str]) -> dict:
    """Best-of-N accuracy of each selector over the problems whose samples the accuracy rule graded."""
    problems = [r for r in rows if r["graded"]]
    chosen: dict[str, list[bool]] = {s: [] for s in SELECTORS}
    unchosen = dict.fromkeys(SELECTORS, 0)
    for row in problems:
        samples = [s for s in row["samples"] if s["text"] and s["correct"] is not None]
        values = {
            "rules": [_style_score(s, rule_weights) for s in samples],
            **{k: [s[k] for s in samples] for k in ("p_true", "pm", "prm", "grm", "score")},
        }
        for name, scores in values.items():
            order = ranking.ranked(scores)
            chosen[name].append(bool(order) and bool(samples[order[0]]["correct"]))
            unchosen[name] += not order
        finals = [rules.final_answer(s["text"]) for s in samples]
        top = ranking.majority(finals, _same)
        chosen["majority"].append(top is not None and bool(samples[top]["correct"]))
        unchosen["majority"] += top is None
    n = len(problems)
    shown = [s for s in SELECTORS if s in ("score", "majority") or s == "rules" or s in signals]
    return {
        "problems": n,
        "pass_at_1": sum(r["correct"] / r["graded"] for r in problems) / n if n else None,
        "pass_at_n": sum(r["correct"] > 0 for r in problems) / n if n else None,
        "best_of_n": {s: sum(chosen[s]) / n if n else None for s in shown},
        "unchosen": {s: unchosen[s] for s in shown},
    }


def lines(r: dict) -> list[str]:
    def pct(x: float | None) -> str:
        return "   n/a" if x is None else f"{100 * x:5.1f}%"

    n = r["samples"]
    out = [
        f"problems       {r['problems']} graded against their reference, {n} samples each "
        f"({r['failed']} failed), model {r['model']}, constitution {r['constitution']}",
        f"pass@1         {pct(r['pass_at_1'])}  (one sample: the share of samples right)",
        f"best-of-{n:<6} chosen by:",
    ]
    for s, v in r["best_of_n"].items():
        what = "no sample has a final answer" if s == "majority" else "no sample has this score"
        missing = f"  ({r['unchosen'][s]} problems where {what})" if r["unchosen"][s] else ""
        out.append(f"  {LABELS[s]:<28}{pct(v)}{missing}")
    out.append(f"pass@{n:<9} {pct(r['pass_at_n'])}  (some sample is right: the ceiling of any selector)")
    if r.get("failure_reasons"):
        out.append("why problems failed: " + "; ".join(r["failure_reasons"]))
    if r.get("out"):
        out.append(f"samples        {r['out']}/samples/ (report-eval-bestofn.json beside them)")
    return out


def plot(r: dict, path: str) -> None:
    """A bar per selector, with pass@1 and pass@N as lines."""
    try:
        import matplotlib
    except ImportError:
        raise CaiError("--plot needs matplotlib: pip install 'cai[train]' (or matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r["best_of_n"])
    values = [100 * (r["best_of_n"][s] or 0) for s in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.barh([LABELS[s] for s in names], values, color="#4c72b0")
    for y, v in enumerate(values):
        ax.text(v + 0.5, y, f"{v:.1f}%", va="center", fontsize=8)
    if r["pass_at_1"] is not None:
        ax.axvline(100 * r["pass_at_1"], color="#c44e52", linestyle="--", label="pass@1")
        ax.axvline(100 * r["pass_at_n"], color="#55a868", linestyle="--", label=f"pass@{r['samples']}")
    ax.set(xlim=(0, 100), xlabel="% of problems whose chosen sample is right", title=f"best-of-{r['samples']}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
