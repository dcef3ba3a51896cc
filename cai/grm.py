"""A pointwise generative judge with inference-time scaling (Liu et al. 2025, DeepSeek-GRM style).

For each pair the model writes k judgements: principles for this query, a critique of each answer, and
an integer score from 1 to 10 per answer. The candidates' order is drawn afresh for every sample, all
k samples of all pairs go to the engine in one call, and the scores are read after a forced
`Scores: [[` prefix so their format is fixed. Unparseable samples are recorded and excluded, never
guessed. An optional meta judge (the model's own P(Yes) that a judgement is correct, or a trained
preference model's agreement with its verdict) keeps the better half of the samples before the vote,
which sums each answer's scores over the kept samples.
"""

from __future__ import annotations

import math
import random
import re

from cai.backends import Sampling
from cai.backends.base import option_probability
from cai.sampling import request_seed, stable_int

_SCORES = re.compile(r"^\s*(\d{1,2})\s*,\s*(\d{1,2})\s*\]")  # after the forced "Scores: [["
META = (" Yes", " No")


def parse_scores(text: str) -> tuple[int, int] | str:
    """The two scores after the forced `Scores: [[`, or the reason they cannot be read."""
    m = _SCORES.match(text)
    if not m:
        return f"scores: not two integers 'x, y]]': {text[:40]!r}"
    a, b = int(m.group(1)), int(m.group(2))
    if not (1 <= a <= 10 and 1 <= b <= 10):
        return f"scores: out of range 1-10: {a}, {b}"
    return a, b


def vote(samples: list[dict]) -> tuple[float, int]:
    """The first candidate's share of the kept samples' summed scores, and how many samples were kept.

    DeepSeek-GRM votes by summing each answer's pointwise scores over the samples: the higher sum wins,
    equal sums are a tie (exactly 0.5), and a sample that scores 9 vs 2 weighs more than one that scores
    6 vs 5. The share of the summed score points is that vote as a probability in (0, 1)."""
    kept = [s for s in samples if s["kept"]]
    if not kept:
        return 0.5, 0
    x, y = sum(s["score_x"] for s in kept), sum(s["score_y"] for s in kept)
    return x / (x + y), len(kept)


def label(backend, pairs, const, templates, config, result) -> dict[str, dict]:
    """Judge every pair; returns, per prompt id, {"q": the first candidate's share of the vote,
    "n_kept": samples in the vote, "samples": the parseable ones, "failed": the others with reasons}."""
    principles = [p.compare or p.critique for p in const.principles] if config.grm_seed_principles else []
    requests = []
    for p, (x, y) in pairs:
        for k in range(config.grm_samples):
            x_first = random.Random(stable_int("grm-order", config.seed, p.id, k)).random() < 0.5
            r1, r2 = (x, y) if x_first else (y, x)
            question = templates.render("grm.j2", conversation=list(p.messages), principles=principles,
                                        response_1=r1, response_2=r2)
            requests.append({"pair": p.id, "sample": k, "x_first": x_first, "question": question})

    opening = templates.render("grm_reasoning.j2")
    chats = [[{"role": "user", "content": r["question"]}, {"role": "assistant", "content": opening}] for r in requests]
    seeds = [request_seed(config.seed, r["pair"], f"grm-{r['sample']}") for r in requests]
    sampling = Sampling(max_tokens=config.cot_max_tokens, temperature=config.temperature, top_p=config.top_p,
                        continue_final=True, stop=("Scores:",), label=f"rl grm judgements (k={config.grm_samples})")
    reasonings = backend.generate(chats, sampling, seeds)

    follow, where = [], []
    for i, (r, (c,)) in enumerate(zip(requests, reasonings)):
        result.tally(c)
        if not c.ok:
            r["error"] = f"judgement: {c.error}"
        else:
            # A judgement cut by the token budget still gets its scores: the forced prefix asks the
            # model to write them now, and a reply that is not two scores is recorded as unparseable.
            r["text"] = c.text.strip()
            closing = templates.render("grm_scores.j2", reasoning=r["text"])
            follow.append([{"role": "user", "content": r["question"]}, {"role": "assistant", "content": closing}])
            where.append(i)
    # The scores: a few greedy tokens after the forced prefix.
    outs = backend.generate(follow, Sampling(max_tokens=8, temperature=0.0, continue_final=True,
                                             label="rl grm scores")) if follow else []
    for i, (c,) in zip(where, outs):
        result.tally(c)
        parsed = parse_scores(c.text) if c.ok else f"scores: {c.error}"
        if isinstance(parsed, str):
            requests[i]["error"] = parsed
        else:
            s1, s2 = parsed
            x_first = requests[i]["x_first"]
            requests[i]["shown"] = (s1, s2)
            requests[i]["score_x"], requests[i]["score_y"] = (s1, s2) if x_first else (s2, s1)
    good = [r for r in requests if "score_x" in r]
    for r in good:
        r["kept"], r["meta"] = True, None
    if good and config.grm_meta_pm:
        _pm_meta(good, pairs, config)
        _keep_top_half(good)
    elif good and config.grm_meta:
        _self_meta(backend, good, templates, config, result)
        _keep_top_half(good)

    by_pair: dict[str, dict] = {p.id: {"samples": [], "failed": []} for p, _ in pairs}
    for r in requests:
        slot = by_pair[r["pair"]]
        order = "ab" if r["x_first"] else "ba"
        if "score_x" in r:
            slot["samples"].append(r)
        else:
            slot["failed"].append({"principle": f"grm-sample-{r['sample']}", "order": order, "reason": r["error"]})
    for slot in by_pair.values():
        slot["q"], slot["n_kept"] = vote(slot["samples"])
    return by_pair


def _self_meta(backend, good, templates, config, result) -> None:
    """Meta score = the judge model's own P(" Yes") that the judgement is correct, one forward pass each."""
    prefix = templates.render("grm_meta_prefix.j2")
    # The meta judge sees the question with both responses, then the judgement as it was written.
    chats = [[{"role": "user", "content": templates.render(
                  "grm_meta.j2", judgement=f"{r['question']}\n\nPrinciples: {r['text']}\n"
                                           f"Scores: [[{r['shown'][0]}, {r['shown'][1]}]]")},
              {"role": "assistant", "content": prefix}] for r in good]
    outs = backend.generate(chats, Sampling(options=META, continue_final=True, label="rl grm meta judge"))
    for r, (c,) in zip(good, outs):
        result.tally(c)
        ok = c.ok and all(o in c.option_logprobs for o in META)
        r["meta"] = option_probability(c.option_logprobs, *META) if ok else 0.0


def _pm_meta(good, pairs, config) -> None:
    """Meta score from a trained preference model: the probability, under its Bradley-Terry rewards, that
    the answer this sample scored higher is the better one (0.5 for a sample that scored them equal). A
    sample whose verdict the preference model disagrees with ranks below one it agrees with."""
    from cai.pm.score import rewards

    texts = {p.id: (list(p.messages), x, y) for p, (x, y) in pairs}
    ids = sorted({r["pair"] for r in good})
    items = [(texts[i][0], texts[i][side]) for i in ids for side in (1, 2)]
    scores = rewards(config.grm_meta_pm, items)["scores"]
    margin = {i: scores[2 * j] - scores[2 * j + 1] for j, i in enumerate(ids)}  # r(x) - r(y)
    for r in good:
        verdict = (r["score_x"] > r["score_y"]) - (r["score_x"] < r["score_y"])  # +1: x, -1: y, 0: tie
        r["meta"] = 1 / (1 + math.exp(-verdict * margin[r["pair"]]))


def _keep_top_half(good) -> None:
    """Per pair, keep the half of the parseable samples (at least one) with the highest meta score."""
    by_pair: dict[str, list[dict]] = {}
    for r in good:
        by_pair.setdefault(r["pair"], []).append(r)
    for samples in by_pair.values():
        keep = max(1, math.ceil(len(samples) / 2))
        ranked = sorted(samples, key=lambda s: (-s["meta"], s["sample"]))
        for s in ranked[keep:]:
            s["kept"] = False
