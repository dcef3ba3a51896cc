"""How `cai eval` shows its figures: a table for the terminal and a PNG (reliability diagram, per-subset bars)."""

from __future__ import annotations

from cai.errors import CaiError
from cai.stages.report import pct


def _pct(x: float | None) -> str:
    return pct(x, width=6)


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def judge_lines(r: dict) -> list[str]:
    lines = [
        f"pairs          {r['pairs']} ({r['failed']} could not be labelled), judge {r['judge']}, model {r['model']}, "
        f"constitution {r['constitution']}"
        + (f", {r['principles_per_pair']} principle(s) per pair" if r.get("principles_per_pair") else ""),
        f"accuracy       {_pct(r['accuracy'])}  (P(preferred is better) > 0.5; {r['ties']} ties count as wrong)",
    ]
    if "one_order_accuracy" in r:
        lines += [
            f"one order      {_pct(r['one_order_accuracy'])}  (only the read with the first candidate shown as (A))",
            f"  preferred (A){_pct(r['preferred_as_a_accuracy'])}  preferred shown first, both principles' reads",
            f"  preferred (B){_pct(r['preferred_as_b_accuracy'])}  preferred shown second (a gap is position bias)",
            f"one principle  {_pct(r['one_principle_accuracy'])}  (the first sampled principle alone, both orders)",
            f"consistent     {_pct(r['position_consistent'])}  of votes pick the same answer in both orders",
        ]
    lines.append(f"calibration    ECE {_num(r['ece'])}  Brier {_num(r['brier'])}  (of P(first candidate is better))")
    lines += _subsets(r, ("accuracy", "one_order_accuracy", "position_consistent"), ("acc", "1-order", "consistent"))
    if r["principles"]:
        lines.append(f"{'principle':<28}{'votes':>6} {'acc':>7} {'1-order':>7} {'consistent':>10}")
        for p, g in r["principles"].items():
            lines.append(
                f"  {p:<26}{g['votes']:>6} {_pct(g['accuracy'])} {_pct(g['one_order_accuracy'])} "
                f"{_pct(g['position_consistent']):>10}"
            )
    lines += _sections(r) + _rb2(r) + _scaling(r)
    if r.get("failure_reasons"):
        lines.append("why pairs failed: " + "; ".join(r["failure_reasons"]))
    if r.get("out"):
        lines.append(f"judged rows    {r['out']}/judged/ (report-eval-judge.json beside them)")
    return lines


def _scaling(r: dict) -> list[str]:
    """DeepSeek-GRM's inference-time scaling table in miniature: accuracy by k, with and without the meta RM."""
    rows = r.get("grm_scaling")
    if not rows:
        return []
    metas = sorted({x["meta"] for x in rows})
    head = "  ".join(f"{'meta-RM vote' if m else 'vote':>12}" for m in metas)
    out = [
        "GRM voting     accuracy of the vote over the first k judgements (the GRM alone, no rules)",
        f"  {'k':>4}  {head}",
    ]
    for k in sorted({x["k"] for x in rows}):
        cells = {x["meta"]: x for x in rows if x["k"] == k}
        out.append(f"  {k:>4}  " + "  ".join(f"{_pct(cells[m]['accuracy']):>12}" for m in metas))
    if r.get("grm_meta_rm"):
        out.append(f"  meta RM {r['grm_meta_rm']}: the half of the k judgements it rates most likely correct votes")
    return out


def pm_lines(r: dict) -> list[str]:
    lines = [
        f"pairs          {r['pairs']}, preference model {r['pm']}, {r['truncated']} texts truncated",
        f"accuracy       {_pct(r['accuracy'])}  (preferred answer's reward strictly higher; {r['ties']} ties)",
        f"mean margin    {_num(r['mean_margin'])}  (raw reward of preferred minus the other's)",
        f"calibration    ECE {_num(r['ece'])}  Brier {_num(r['brier'])}  (sigmoid of the margin)",
    ]
    if r.get("soft_label_mae") is not None:
        lines.append(f"soft labels    mean |P - p_chosen| {_num(r['soft_label_mae'])}")
    lines += _subsets(r, ("accuracy", "mean_margin"), ("acc", "margin"))
    lines += _sections(r) + _rb2(r)
    if r.get("out"):
        lines.append(f"scored pairs   {r['out']}")
    return lines


def self_lines(r: dict) -> list[str]:
    lines = [
        f"answers        {r['records']} ({r['failed']} reads failed), model {r['model']}, "
        f"constitution {r['constitution']}, brainstorm samples {r['brainstorm_samples']}"
    ]
    if r["n"]:
        lines += [
            f"accuracy       {r['accuracy']:.3f}  (P(True) > 0.5 agrees with the label)",
            f"ECE            {r['ece']:.3f}   Brier {r['brier']:.3f}   AUROC {_num(r['auroc'])}   option orders "
            f"disagree {100 * r['orders_disagree']:.1f}%",
            "reliability    P(True) bin: mean P(True) vs share acceptable (answers)",
        ]
        lines += [
            f"  [{b['bin']:.1f}, {b['bin'] + 0.1:.1f})  {b['mean_p']:.2f} vs {b['share_true']:.2f}  ({b['n']})"
            for b in r["reliability"]
        ]
    return lines


def pik_lines(r: dict) -> list[str]:
    lines = [
        f"questions      {r['questions']} with a P(IK) target ({r['ungraded']} without graded samples), "
        f"value head {r['pm']}",
        f"Brier          {_num(r['brier'])}  (always guessing the mean share correct: {_num(r['brier_constant'])})",
        f"ECE            {_num(r['ece'])}   AUROC {_num(r['auroc'])}  (P(IK) against each sample being right)",
        f"mean           P(IK) {_num(r['mean_p_ik'])} vs share correct {_num(r['mean_target'])}",
    ]
    return lines + pik_distribution_lines(r)


def pik_distribution_lines(r: dict) -> list[str]:
    """Kadavath's generalisation figure: questions the head trained on left out; their subsets (in distribution)
    against subsets it never saw (out of distribution)."""
    lines = []
    if "trained_subsets" in r:
        lines.append(
            f"trained on     subsets {', '.join(r['trained_subsets'])}; {r['seen_in_training']} of these questions "
            "(left out below)"
        )
    for label, key in (("in distr.", "in_distribution"), ("out of distr.", "out_of_distribution")):
        if f := r.get(key):
            lines.append(
                f"{label:<14} Brier {_num(f['brier'])} (constant {_num(f['brier_constant'])})   AUROC "
                f"{_num(f['auroc'])}   {f['questions']} questions"
            )
    for s, f in r.get("per_subset", {}).items():
        seen = "trained on" if f["trained_on"] else "never seen"
        figures = f"Brier {_num(f.get('brier'))}   AUROC {_num(f.get('auroc'))}   {f.get('questions', 0)} questions"
        lines.append(f"  {s:<20} {seen:<11} {figures}")
    if r.get("ood_reason"):
        lines.append(f"out of distr.  n/a: {r['ood_reason']}")
    return lines


def steps_lines(r: dict) -> list[str]:
    who = f"process reward model {r['pm']}" if r.get("pm") else f"the {r['judge']} step judge, model {r['model']}"
    lines = [
        f"solutions      {r['solutions']} ({r['failed']} could not be read), {r['steps']} steps, {who}",
        f"step accuracy  {_pct(r['accuracy'])}  (P(good) >= 0.5 agrees with the label)",
        f"first error    {_pct(r['first_error_accuracy'])}  of solutions with the first bad step found exactly as the "
        "first one read negative (or none when none is bad)",
        f"separation     mean P(good) {_num(r['mean_p_good'])} on good steps vs {_num(r['mean_p_bad'])} on bad ones",
        f"calibration    ECE {_num(r['ece'])}  Brier {_num(r['brier'])}",
    ]
    if r.get("classes"):
        low, high = r["neutral_band"]
        lines.append(f"per class      read below {low:g} negative, above {high:g} positive, else neutral:")
        lines += [
            f"  {c:<12}{g['steps']:>5} steps {_pct(g['share'])} of them, {_pct(g['good'])} labelled good by people"
            for c, g in r["classes"].items()
        ]
    lines += _subsets(r, ("accuracy", "first_error_accuracy"), ("step acc", "1st error"), "solutions")
    if r.get("failure_reasons"):
        lines.append("why solutions failed: " + "; ".join(r["failure_reasons"]))
    return lines


def _subsets(r: dict, keys: tuple[str, ...], heads: tuple[str, ...], unit: str = "pairs") -> list[str]:
    subsets = r["subsets"]
    if list(subsets) == ["all"]:
        return []
    lines = [f"{'subset':<28}{unit:>6} " + " ".join(f"{h:>10}" for h in heads)]
    for name, g in subsets.items():
        cells = [_pct(g.get(k)) if "margin" not in k else _num(g.get(k)) for k in keys]
        lines.append(f"  {name:<26}{g['n']:>6} " + " ".join(f"{c:>10}" for c in cells))
    return lines


def _rb2(r: dict) -> list[str]:
    rb = r.get("rewardbench2")
    if not rb:
        return []
    cells = ", ".join(f"{k} {100 * g['accuracy']:.1f} ({g['n']})" for k, g in rb["subsets"].items())
    lines = [
        f"best-of-N      {_pct(rb['accuracy'])} of {rb['records']} records: the chosen answer beats every rejected one"
    ]
    if rb["score"] is not None:
        lines.append(f"RewardBench 2  {100 * rb['score']:.1f} (mean of its six subsets: {cells})")
    else:  # RB2's overall is the mean of all six: a mean over fewer is named for what it is
        mean = _num(100 * rb["subsets_mean"] if rb["subsets_mean"] is not None else None, 1)
        lines.append(
            f"RB2 subsets    {mean} (mean of the {len(rb['subsets'])} subsets present: {cells}; not RewardBench 2's "
            f"overall, which needs all six: missing {', '.join(rb['missing'])})"
        )
    if rb.get("unrated"):
        lines.append(f"  not rated    {rb['unrated']}")
    return lines


def _sections(r: dict) -> list[str]:
    rb = r.get("rewardbench")
    if not rb:
        return []
    cells = ", ".join(f"{k} {100 * v:.1f}" for k, v in rb["sections"].items())
    return [f"RewardBench    {100 * rb['score']:.1f} (mean of sections: {cells}; subsets weighted as RewardBench)"]


def plot(r: dict, path: str, title: str) -> None:
    """A PNG: the reliability diagram of the probabilities and the accuracy of each subset."""
    try:
        import matplotlib
    except ImportError:
        raise CaiError("--plot needs matplotlib: pip install 'cai[train]' (or matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    points = r["reliability"]
    a.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=1, label="perfect calibration")
    a.plot([p["mean_p"] for p in points], [p["share_true"] for p in points], marker="o", color="#4c72b0", label=title)
    for p in points:
        a.annotate(str(p["n"]), (p["mean_p"], p["share_true"]), textcoords="offset points", xytext=(4, -10), fontsize=8)
    a.set(
        title=f"reliability (ECE {_num(r['ece'])})",
        xlabel=r.get("predicted", "predicted P(first candidate is better)"),
        ylabel="share labelled good" if "predicted" in r else "share where it was preferred",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    a.legend(loc="upper left", fontsize=8)
    if "subsets" in r:
        _subset_bars(b, r)
    else:
        b.axis("off")
        figures = [f"AUROC {_num(r['auroc'])}"] if r.get("auroc") is not None else []
        if r.get("accuracy") is not None:
            figures.insert(0, f"accuracy {_pct(r['accuracy']).strip()}")
        b.text(0.5, 0.5, f"{', '.join(figures) or 'no figures'} over {r['n']} labelled items", ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _subset_bars(b, r: dict) -> None:
    names = list(r["subsets"])
    acc = [100 * (r["subsets"][n]["accuracy"] or 0) for n in names]
    b.barh(names, acc, color="#55a868", label="accuracy")
    if "one_order_accuracy" in r:
        one = [100 * (r["subsets"][n]["one_order_accuracy"] or 0) for n in names]
        b.scatter(one, names, color="#c44e52", zorder=3, label="one order only")
    b.axvline(50, color="#999999", linestyle="--", linewidth=1)
    unit = r.get("unit", "pairs")
    b.set(title=f"accuracy per subset (overall {_pct(r['accuracy']).strip()})", xlabel=f"% of {unit}", xlim=(0, 100))
    b.legend(loc="lower right", fontsize=8)
