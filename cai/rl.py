"""RL-CAI: AI pairwise comparisons under sampled principles, both orders, soft labels from log-probs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from cai import inputs
from cai.backends import Backend, Sampling
from cai.backends.base import option_probability
from cai.constitution import Constitution
from cai.errors import CaiError
from cai.prompts import Templates
from cai.sampling import request_seed, sample_principles
from cai.sl import MESSAGES, ChunkResult, with_system

# TRL's explicit-prompt conversational preference format, plus the soft label and its evidence.
PREFS_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("prompt", MESSAGES),
    ("chosen", MESSAGES),
    ("rejected", MESSAGES),
    ("p_chosen", pa.float64()),
    ("votes", pa.list_(pa.struct([("principle", pa.string()), ("p_chosen_ab", pa.float64()),
                                  ("p_chosen_ba", pa.float64())]))),
    ("tie", pa.bool_()),
    ("failed_votes", pa.list_(pa.struct([("principle", pa.string()), ("order", pa.string()),
                                         ("reason", pa.string())]))),
    ("reasoning", pa.list_(pa.struct([("principle", pa.string()), ("order", pa.string()),
                                      ("text", pa.string())]))),
    # --judge grm: every sampled judgement, its scores seen from chosen/rejected, the meta judge's
    # P(correct) (null when the meta filter is off) and whether it counted in the vote.
    ("grm", pa.list_(pa.struct([("sample", pa.int32()), ("chosen_first", pa.bool_()), ("text", pa.string()),
                                ("score_chosen", pa.int32()), ("score_rejected", pa.int32()),
                                ("meta", pa.float64()), ("kept", pa.bool_())]))),
    ("judge", pa.string()),
    ("model", pa.string()),
])
OPTIONS = ("A", "B")


# -- the label arithmetic (pure, tested against hand-computed values) -------------------------------
@dataclass(frozen=True)
class Label:
    first_wins: bool  # True: the first candidate is `chosen`
    p_chosen: float  # in [0.5, 1]
    votes: list[dict]  # {principle, p_chosen_ab, p_chosen_ba}
    tie: bool


def combine(judgements: list[tuple[str, float, float]], clamp: float | None = None) -> Label:
    """Turn per-principle judgements into one soft label.

    Each judgement is (principle, p_ab, p_ba) where p_ab = P(first is better) read with the first
    candidate shown as (A), and p_ba = P(first is better) read with it shown as (B). Averaging the two
    orders cancels the judge's position bias (Lee et al. 2023); the mean over principles is the
    ensemble (Bai et al. 2022). `clamp` (chain-of-thought mode) bounds each read into
    [clamp, 1 - clamp], because CoT answers are over-confident.
    """
    if not judgements:
        raise ValueError("no judgements to combine")
    if clamp is not None:
        judgements = [(p, min(max(ab, clamp), 1 - clamp), min(max(ba, clamp), 1 - clamp)) for p, ab, ba in judgements]
    q = sum((ab + ba) / 2 for _, ab, ba in judgements) / len(judgements)
    first_wins = q >= 0.5
    if first_wins:
        votes = [{"principle": p, "p_chosen_ab": ab, "p_chosen_ba": ba} for p, ab, ba in judgements]
    else:
        # The second candidate is chosen: it was shown first in the BA order, second in the AB order.
        votes = [{"principle": p, "p_chosen_ab": 1 - ba, "p_chosen_ba": 1 - ab} for p, ab, ba in judgements]
    return Label(first_wins, q if first_wins else 1 - q, votes, q == 0.5)


def consistent(vote: dict) -> bool:
    """Both orders picked the same answer."""
    return (vote["p_chosen_ab"] > 0.5 and vote["p_chosen_ba"] > 0.5) or (
        vote["p_chosen_ab"] < 0.5 and vote["p_chosen_ba"] < 0.5)


def label_stats(rows: list[dict]) -> dict:
    votes = [v for r in rows for v in r["votes"]]
    bins = [0] * 5  # p_chosen in [0.5, 0.6), ..., [0.9, 1.0]
    for r in rows:
        bins[min(int((r["p_chosen"] - 0.5) * 10), 4)] += 1
    return {
        "pairs": len(rows),
        "ties": sum(r["tie"] for r in rows),
        "mean_p_chosen": sum(r["p_chosen"] for r in rows) / len(rows) if rows else 0.0,
        "position_consistent": sum(map(consistent, votes)) / len(votes) if votes else None,  # GRM rows have none
        "failed_votes": sum(len(r["failed_votes"]) for r in rows),
        "histogram": {f"{0.5 + i / 10:.1f}-{0.6 + i / 10:.1f}": n for i, n in enumerate(bins)},
    }


# -- checks before the engine starts ----------------------------------------------------------------
def check(config, const: Constitution) -> None:
    eligible = const.comparable
    if config.principles_per_pair > len(eligible):
        raise CaiError(f"{const.path}: --principles-per-pair {config.principles_per_pair} but only {len(eligible)} "
                       "principles have a 'compare' question")
    if config.pairs == "revision" and config.stage == "rl" and not config.pairs_from:
        sft = Path(config.out) / "sft"
        if not sft.is_dir():
            raise CaiError(f"--pairs revision: {sft} has no SL rows; run --stage sl first, use --stage all, "
                           "or point --pairs-from at an SL run")
    if config.pairs == "revision" and config.pairs_from and not (Path(config.pairs_from) / "sft").is_dir():
        raise CaiError(f"--pairs-from {config.pairs_from}: not a cai run with an sft/ split")
    if config.pairs == "file":
        candidates_from_file(config.pairs_from or config.prompts)
    if config.grm_meta_pm is not None:
        if config.judge != "grm":
            raise CaiError(f"--grm-meta-pm is for --judge grm, not --judge {config.judge}")
        from cai.pm.score import check_pm

        check_pm(config.grm_meta_pm, "--grm-meta-pm")


def candidates_from_file(source: str) -> dict[str, tuple[str, str]]:
    """Pairs supplied by the user: each record has a prompt and either `responses` (two texts) or
    `chosen`/`rejected` (texts or assistant message lists), which the judge labels afresh."""
    path = Path(source)
    if not path.is_file():
        raise CaiError(f"--pairs file: {source}: file not found")
    records = inputs.read_parquet(path) if path.suffix == ".parquet" else inputs.read_jsonl(path)
    out = {}
    for where, record in records:
        messages = inputs.to_messages(record, where, None)
        if "responses" in record:
            pair = record["responses"]
            if not isinstance(pair, list) or len(pair) != 2:
                raise CaiError(f"{where}: 'responses' must be a list of two answers")
        elif "chosen" in record and "rejected" in record:
            pair = [record["chosen"], record["rejected"]]
        else:
            raise CaiError(f"{where}: a pair needs 'responses' [a, b] or 'chosen' and 'rejected'")
        texts = []
        for answer in pair:
            if isinstance(answer, list) and answer and isinstance(answer[-1], dict):
                answer = answer[-1].get("content")
            if not isinstance(answer, str) or not answer.strip():
                raise CaiError(f"{where}: each answer must be non-empty text")
            texts.append(answer.strip())
        out[inputs.prompt_id(messages)] = (texts[0], texts[1])
    return out


# -- the stage ----------------------------------------------------------------------------------------
def run(backend: Backend, prompts, const: Constitution, templates: Templates, config, store=None) -> ChunkResult:
    result = ChunkResult()
    pairs = _candidates(backend, prompts, const, config, store, result)
    if config.judge == "grm":
        return _grm_rows(backend, pairs, const, templates, config, result)

    # Every (pair, principle, order) is one request; the whole chunk goes to the engine in one call.
    requests = []
    for p, (x, y) in pairs:
        conversation = list(p.messages)
        for principle in sample_principles(const.comparable, config.principles_per_pair, config.seed, p.id, "rl-judge"):
            for order, (a, b) in (("ab", (x, y)), ("ba", (y, x))):
                question = templates.render("compare_cot.j2" if config.judge == "cot" else "compare.j2",
                                            conversation=conversation, principle=principle,
                                            response_a=a, response_b=b)
                requests.append({"pair": p.id, "principle": principle.id, "order": order, "question": question})
    reads = _judge_cot(backend, requests, templates, config, result) if config.judge == "cot" else \
        _judge_logprob(backend, requests, templates, result)

    by_pair: dict[str, dict] = {}
    for req, read in zip(requests, reads):
        slot = by_pair.setdefault(req["pair"], {"reads": {}, "failed": [], "reasoning": []})
        if isinstance(read, str):
            slot["failed"].append({"principle": req["principle"], "order": req["order"], "reason": read})
        else:
            slot["reads"][(req["principle"], req["order"])] = read
        if req.get("reasoning") is not None:
            slot["reasoning"].append({"principle": req["principle"], "order": req["order"], "text": req["reasoning"]})

    clamp = config.cot_clamp if config.judge == "cot" else None
    for p, (x, y) in pairs:
        slot = by_pair.get(p.id, {"reads": {}, "failed": [], "reasoning": []})
        principles = dict.fromkeys(pr for pr, _ in slot["reads"])
        # A principle counts only when both orders were read: one order alone is position-biased.
        judgements = [(pr, slot["reads"][(pr, "ab")], 1 - slot["reads"][(pr, "ba")])
                      for pr in principles if (pr, "ab") in slot["reads"] and (pr, "ba") in slot["reads"]]
        if not judgements:
            reasons = "; ".join(sorted({f["reason"] for f in slot["failed"]})) or "no judgement"
            result.skips.append({"id": p.id, "reason": f"judge: no principle was read in both orders ({reasons})"})
            continue
        label = combine(judgements, clamp)
        result.rows.append(_row(p, (x, y) if label.first_wins else (y, x), label.p_chosen, config,
                                votes=label.votes, failed_votes=slot["failed"], reasoning=slot["reasoning"]))
    return result


def _row(p, chosen_rejected: tuple[str, str], p_chosen: float, config, **evidence) -> dict:
    """One prefs row; `evidence` fills the judge-specific columns, the others stay empty."""
    chosen, rejected = chosen_rejected
    return {"id": p.id, "prompt": list(p.messages),
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "p_chosen": p_chosen, "tie": p_chosen == 0.5,
            "votes": [], "failed_votes": [], "reasoning": [], "grm": [], **evidence,
            "judge": config.judge, "model": config.model}


def _grm_rows(backend, pairs, const, templates, config, result) -> ChunkResult:
    from cai import grm

    judged = grm.label(backend, pairs, const, templates, config, result)
    for p, (x, y) in pairs:
        slot = judged[p.id]
        if not slot["n_kept"]:
            reasons = "; ".join(sorted({f["reason"][:80] for f in slot["failed"]})) or "no judgement"
            result.skips.append({"id": p.id, "reason": f"judge: no parseable GRM judgement ({reasons})"})
            continue
        q = slot["q"]
        first_wins = q >= 0.5
        samples = [{"sample": s["sample"], "chosen_first": s["x_first"] == first_wins, "text": s["text"],
                    "score_chosen": s["score_x"] if first_wins else s["score_y"],
                    "score_rejected": s["score_y"] if first_wins else s["score_x"],
                    "meta": s["meta"], "kept": s["kept"]} for s in slot["samples"]]
        result.rows.append(_row(p, (x, y) if first_wins else (y, x), q if first_wins else 1 - q, config,
                                failed_votes=slot["failed"], grm=samples))
    return result


def _candidates(backend, prompts, const, config, store, result) -> list[tuple[inputs.Prompt, tuple[str, str]]]:
    pairs = []
    if config.pairs == "sampled":
        sampling = Sampling(max_tokens=config.max_tokens, temperature=config.pair_temperature, top_p=config.top_p,
                            n=2, label="rl candidates")
        seeds = [request_seed(config.seed, p.id, "rl-candidates") for p in prompts]
        outs = backend.generate([with_system(const, p.messages) for p in prompts], sampling, seeds)
        for p, samples in zip(prompts, outs):
            for c in samples:
                result.tally(c)
            bad = next((c.error for c in samples if not c.ok), None)
            if bad:
                result.skips.append({"id": p.id, "reason": f"candidates: {bad}"})
            elif len(samples) != 2 or not all(c.text.strip() for c in samples):
                result.skips.append({"id": p.id, "reason": "candidates: the model returned an empty answer"})
            else:
                pairs.append((p, (samples[0].text.strip(), samples[1].text.strip())))
    elif config.pairs == "revision":
        source = store.read("sft") if not config.pairs_from else _read_sft(config.pairs_from)
        sft = {r["id"]: (r["initial"], r["completion"][-1]["content"]) for r in source}
        for p in prompts:
            if p.id not in sft:
                result.skips.append({"id": p.id, "reason": "candidates: no SL row for this prompt to compare"})
            else:
                pairs.append((p, sft[p.id]))
    else:
        table = candidates_from_file(config.pairs_from or config.prompts)
        for p in prompts:
            if p.id not in table:
                result.skips.append({"id": p.id, "reason": "candidates: the pairs file has no pair for this prompt"})
            else:
                pairs.append((p, table[p.id]))
    kept = []
    for p, (x, y) in pairs:
        if x == y:  # identical answers carry no preference; judging them would only add noise
            result.skips.append({"id": p.id, "reason": "candidates: the two answers are identical"})
        else:
            kept.append((p, (x, y)))
    return kept


def _read_sft(run: str) -> list[dict]:
    from cai.store import RunStore

    return RunStore(run).read("sft")


def _judge_logprob(backend, requests, templates, result) -> list[float | str]:
    """One forward pass per request: P(A) / (P(A) + P(B)) from the next token's log-probs."""
    answer = templates.render("compare_answer.j2")
    chats = [[{"role": "user", "content": r["question"]}, {"role": "assistant", "content": answer}] for r in requests]
    outs = backend.generate(chats, Sampling(options=OPTIONS, continue_final=True, label="rl judge"))
    return [_read(c, result) for (c,) in outs]


def _judge_cot(backend, requests, templates, config, result) -> list[float | str]:
    """Reason first (one generation), then read the choice after the reasoning (one forward pass)."""
    opening = templates.render("compare_cot_reasoning.j2")
    chats = [[{"role": "user", "content": r["question"]}, {"role": "assistant", "content": opening}] for r in requests]
    seeds = [request_seed(config.seed, r["pair"], f"cot-{r['principle']}-{r['order']}") for r in requests]
    sampling = Sampling(max_tokens=config.cot_max_tokens, temperature=config.temperature, top_p=config.top_p,
                        continue_final=True, label="rl judge reasoning")
    reasonings = backend.generate(chats, sampling, seeds)
    reads: list[float | str | None] = [None] * len(requests)
    follow, where = [], []
    for i, (r, (c,)) in enumerate(zip(requests, reasonings)):
        result.tally(c)
        if not c.ok:
            reads[i] = f"reasoning: {c.error}"
        elif c.finish_reason == "length":
            reads[i] = f"reasoning: stopped at {config.cot_max_tokens} tokens without reaching a choice"
            r["reasoning"] = c.text.strip()
        elif not c.text.strip():
            reads[i] = "reasoning: the model wrote no reasoning"
        else:
            r["reasoning"] = c.text.strip()
            answer = templates.render("compare_cot_answer.j2", reasoning=r["reasoning"])
            follow.append([{"role": "user", "content": r["question"]}, {"role": "assistant", "content": answer}])
            where.append(i)
    outs = backend.generate(follow, Sampling(options=OPTIONS, continue_final=True, label="rl judge choice")) if follow else []
    for i, (c,) in zip(where, outs):
        reads[i] = _read(c, result)
    return reads


def _read(c, result) -> float | str:
    result.tally(c)
    if not c.ok:
        return f"read: {c.error}"
    missing = [o for o in OPTIONS if o not in c.option_logprobs]
    if missing:
        return f"read: no log-prob for option {missing[0]}"
    return option_probability(c.option_logprobs, *OPTIONS)


