"""P(IK) as Kadavath et al. train it: a value head on the model that answered (the policy) by default, and the
out-of-distribution figure, trained on some subsets of the questions and tested on the others."""

from __future__ import annotations

import json

import pytest

from cai.commands.evaluation import pik as eval_pik
from cai.commands.evaluation.report import pik_lines
from cai.errors import CaiError
from cai.train import pik, train
from tests.conftest import ROOT, write

MATH = ROOT / "data" / "prompts" / "math.jsonl"
SUBSETS = ("arithmetic", "rates", "geometry")


def _prompts(tmp_path):
    """The shipped math problems, each given a subset (12 problems, 4 per subset)."""
    records = [json.loads(x) for x in MATH.read_text().splitlines()[:12]]
    lines = [json.dumps({**r, "subset": SUBSETS[i % 3]}) for i, r in enumerate(records)]
    return write(tmp_path / "prompts.jsonl", "\n".join(lines) + "\n"), {r["prompt"]: r["reference"] for r in records}


def _samples_run(tmp_path):
    """The sample stage on the scripted engine: right answers on every other problem, so P(IK) varies."""
    from cai.backends.scripted import ScriptedBackend
    from cai.config import RunConfig
    from cai.generate import generate

    prompts, references = _prompts(tmp_path)

    def reply(chat, sampling, seed, index):
        ref = references.get(chat[-1]["content"])
        value = ref if ref is not None and index < 2 and sum(map(ord, chat[-1]["content"])) % 2 else "1234"
        return f"<think>Working {index}.</think> The answer is \\boxed{{{value}}}."

    config = RunConfig(
        constitution="reasoning", prompts=str(prompts), out=str(tmp_path / "run"), stage="sample", samples=4
    )
    generate(config, backend=ScriptedBackend(reply=reply), log=lambda *_: None)
    return tmp_path / "run"


def test_the_samples_split_carries_the_prompts_subset_and_the_head_is_tested_out_of_distribution(
    tmp_path, tiny_backbone, cli
):
    from cai.core.store import RunStore

    run = _samples_run(tmp_path)
    rows = RunStore(run).read("samples")
    assert sorted(r["subset"] for r in rows) == sorted(SUBSETS * 4)
    common = dict(log=lambda *_: None, kind="pik", backbone=tiny_backbone, epochs=1, max_length=64)
    m = train(str(run), str(tmp_path / "pik"), train_subsets="arithmetic,rates", eval_fraction=0.25, **common)
    assert m["train_subsets"] == ["arithmetic", "rates"] and m["ood_subsets"] == ["geometry"]
    assert m["train_questions"] + m["eval_questions"] == 8 and m["ood_questions"] == 4
    assert 0 <= m["ood_brier"] <= 1 and "out of distr." in "\n".join(pik.summary_lines(m))

    r = cli("eval", "pik", "--pm", tmp_path / "pik", "--data", run, "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert report["trained_subsets"] == ["arithmetic", "rates"] and report["ood_subsets"] == ["geometry"]
    assert report["seen_in_training"] == m["train_questions"]  # left out of both figures below
    assert report["in_distribution"]["questions"] == m["eval_questions"]
    assert report["out_of_distribution"]["questions"] == 4
    assert report["out_of_distribution"]["brier"] == pytest.approx(m["ood_brier"], abs=1e-5)
    assert report["per_subset"]["geometry"]["trained_on"] is False
    assert "never seen" in "\n".join(pik_lines(report))

    # trained on every subset: nothing is out of distribution, and the report says why instead of a figure
    train(str(run), str(tmp_path / "all"), eval_fraction=0.25, **common)
    everything = eval_pik.evaluate(str(tmp_path / "all"), str(run))
    assert (
        everything["out_of_distribution"] is None
        and "every subset of the data was trained on" in (everything["ood_reason"])
    )


def test_bad_subsets_are_one_line_before_any_model_loads(tmp_path, cli):
    run = _samples_run(tmp_path)
    for value, says in (
        ("algebra", "no question of subset 'algebra' (the data has: arithmetic, geometry, rates)"),
        ("arithmetic,rates,geometry", "names every subset of the data, so none is left out of distribution"),
        (" , ", "name at least one subset"),
    ):
        r = cli("train-pm", run, "--kind", "pik", "--out", tmp_path / "pik", "--train-subsets", value)
        assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    plain = write(tmp_path / "plain.jsonl", '{"prompt": "q", "p_ik": 0.5}\n')
    r = cli("train-pm", plain, "--kind", "pik", "--out", tmp_path / "pik", "--train-subsets", "a")
    assert r.returncode == 2 and "the questions name no subset" in r.stderr
    assert not (tmp_path / "pik").exists()


def test_the_value_head_sits_on_the_policy_model_by_default(tmp_path):
    """No --backbone: the model that answered (the samples' `model`), else the embedded one; one step on SmolLM2."""
    from transformers import AutoConfig

    assert pik.policy([pik.Question("a", [], 0.5, model="my/model")]) == "my/model"
    assert pik.policy([pik.Question("a", [], 0.5)]) == "smollm2-135m"
    with pytest.raises(CaiError, match="answered by several models \\(a, b\\); name one"):
        pik.policy([pik.Question("a", [], 0.5, model="a"), pik.Question("b", [], 0.5, model="b")])

    data = write(
        tmp_path / "q.jsonl",
        "".join(json.dumps({"prompt": f"What is {i} + {i}?", "p_ik": i % 2}) + "\n" for i in range(4)),
    )
    m = train(str(data), str(tmp_path / "pik"), log=lambda *_: None, kind="pik", epochs=1, max_length=32)
    assert m["config"]["backbone"] == "smollm2-135m" and m["train_steps"] == 1
    assert AutoConfig.from_pretrained(tmp_path / "pik").architectures == ["LlamaForSequenceClassification"]
    assert "value head     on smollm2-135m" in pik.summary_lines(m)
