"""`cai score`: rewards of (prompt, response) items from a preference model, the constitution's rules, or both."""

from __future__ import annotations

import json
from pathlib import Path

from cai.errors import CaiError


def items(source: str) -> tuple[list[dict], bool]:
    """(items, is_preference) from a run, a preference file or dataset, or a file of completions (records with
    a prompt or messages, a `completion` or `response`, and an optional `reference`).
    Items: {id, prompt, response, side, reference, p?}."""
    from cai import inputs, stages
    from cai.pm.data import load_rows
    from cai.store import RunStore

    sft, prefs = stages.get("sl").split, stages.get("rl").split
    path = Path(source)
    if RunStore.is_run(source) and RunStore(source).count(sft) and not RunStore(source).count(prefs):
        rows = RunStore(source).read(sft, columns=["id", "prompt", "completion", "reference"])
        return [
            {
                "id": r["id"],
                "prompt": r["prompt"],
                "response": r["completion"][-1]["content"],
                "side": "completion",
                "reference": r["reference"],
            }
            for r in rows
        ], False
    if path.is_file() and path.suffix in (".jsonl", ".json", ".parquet"):
        records = inputs.read_parquet(path) if path.suffix == ".parquet" else inputs.read_jsonl(path)
        if records and not {"chosen", "rejected"} <= set(records[0][1]):
            out = []
            for where, record in records:
                messages = inputs.to_messages(record, where, None)
                response = record.get("completion", record.get("response"))
                if isinstance(response, list) and response and isinstance(response[-1], dict):
                    response = response[-1].get("content")
                if not isinstance(response, str):
                    raise CaiError(f"{where}: expected 'completion' (or 'response'): text or assistant messages")
                out.append(
                    {
                        "id": inputs.prompt_id(messages),
                        "prompt": list(messages),
                        "response": response,
                        "side": "completion",
                        "reference": inputs.reference(record, where),
                    }
                )
            return out, False
    rows = load_rows(source)
    return [
        {
            "id": r["id"],
            "prompt": r["prompt"],
            "response": r[side],
            "side": side,
            "p": r["p"],
            "reference": r.get("reference"),
        }
        for r in rows
        for side in ("chosen", "rejected")
    ], True


def score(
    data: str, out: str, pm: str | None = None, rules: str | None = None, batch_size: int = 16, max_length: int = 512
) -> dict:
    """Write one JSONL line per (prompt, response): its `score` from the preference model `pm` (in standard
    units of its held-out rewards) and/or its `rules` results and `rules_score` (weighted mean) under the
    constitution `rules`. On preference data, also report how often chosen outscores rejected."""
    from cai.constitution import load
    from cai.pm.score import check_pm, rewards
    from cai.rules import check_all

    if pm is None and rules is None:
        raise CaiError("give --pm DIR, --rules CONSTITUTION, or both")
    if pm is not None:
        check_pm(pm)
    const = load(rules) if rules is not None else None
    if const is not None and not const.rules:
        raise CaiError(f"--rules {rules}: {const.path} has no rules")
    found, is_pref = items(data)
    lines = [{k: it[k] for k in ("id", "side", "prompt", "response")} for it in found]
    report: dict = {"scored": len(found), "out": out}
    if pm is not None:
        scored = rewards(pm, [(it["prompt"], it["response"]) for it in found], batch_size, max_length)
        for line, s in zip(lines, scored["scores"], strict=True):
            line["score"] = s
        report["truncated"] = scored["truncated"]
        if is_pref:
            report["accuracy"] = _agreement([line["score"] for line in lines], found)
    if const is not None:
        weights = {r.id: r.weight for r in const.rules}
        for line, it in zip(lines, found, strict=True):
            results = check_all(const.rules, it["response"], it.get("reference"))
            total = sum(weights[r.rule] for r in results)
            line["rules"] = [r.row() for r in results]
            line["rules_score"] = sum(weights[r.rule] * r.score for r in results) / total if total else None
        report["rules_passed"] = {r.id: _share([line for line in lines], r.id) for r in const.rules}
        if is_pref:
            report["rules_accuracy"] = _agreement([line["rules_score"] for line in lines], found)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        f.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    return report


def _agreement(scores: list, found: list[dict]) -> float | None:
    """How often chosen scores above rejected, over the pairs with a label (not a tie) and both scores."""
    pairs = [(scores[i], scores[i + 1]) for i in range(0, len(found), 2) if found[i]["p"] != 0.5]
    decided = [(c, r) for c, r in pairs if c is not None and r is not None]
    return sum(c > r for c, r in decided) / len(decided) if decided else None


def _share(lines: list[dict], rule: str) -> float | None:
    """The share of the texts a rule applied to that passed it."""
    got = [r["passed"] for line in lines for r in line["rules"] if r["rule"] == rule]
    return sum(got) / len(got) if got else None
