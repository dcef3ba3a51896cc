"""The preference-model trainer: loss arithmetic, grouping, learning, resume, and the CLI end to end."""

import json
import math

import pytest
import torch

from cai.train import data as pmdata
from cai.train import train
from cai.train.loss import grouped, soft_bt

CHOSEN = [
    "I can help with that safely: here are the steps.",
    "Here is a careful and useful answer.",
    "Sure, a safe way to do this is explained below.",
    "Happy to help, with safety notes included.",
]
REJECTED = ["zzz qqq xxx", "qqq zzz zzz xxx", "xxx xxx qqq", "zzz zzz zzz qqq"]


def test_soft_label_loss_matches_hand_computation():
    loss = soft_bt(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.8]))
    expected = -(0.8 * math.log(1 / (1 + math.exp(-1))) + 0.2 * math.log(1 / (1 + math.exp(1))))
    assert loss.item() == pytest.approx(expected)
    hard = soft_bt(torch.tensor([2.0]), torch.tensor([0.5]), torch.tensor([1.0]))
    assert hard.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.5))))  # TRL's loss


def test_grouping_is_the_mean_over_each_prompts_pairs():
    r = torch.tensor([1.0, 0.2, -0.5, 0.3, 0.9])  # prompt 0: responses 0-2 (C(3,2)=3 pairs); prompt 1: 3-4
    first, second = torch.tensor([0, 0, 1, 4]), torch.tensor([1, 2, 2, 3])
    p, group = torch.tensor([0.9, 0.7, 0.6, 1.0]), torch.tensor([0, 0, 0, 1])
    each = soft_bt(r[first], r[second], p)
    expected = (each[:3].mean() + each[3]) / 2
    assert grouped(r, first, second, p, group, 2).item() == pytest.approx(expected.item())


def test_group_by_prompt_collects_all_pairs_of_a_prompt():
    rows = [
        {"id": i, "prompt": [{"role": "user", "content": "q"}], "chosen": a, "rejected": b, "p": 0.7, "principles": []}
        for i, (a, b) in enumerate([("x", "y"), ("x", "z"), ("y", "z")])
    ]
    (g,) = pmdata.group(rows, by_prompt=True)
    assert g.responses == ["x", "y", "z"] and [c[:2] for c in g.comparisons] == [(0, 1), (0, 2), (1, 2)]
    assert len(pmdata.group(rows, by_prompt=False)) == 3


def _pairs(tmp_path, n=24):
    rows = [
        {
            "id": f"r{i}",
            "prompt": [{"role": "user", "content": f"question number {i}"}],
            "chosen": [{"role": "assistant", "content": CHOSEN[i % 4]}],
            "rejected": [{"role": "assistant", "content": REJECTED[i % 4]}],
            "p_chosen": 0.9,
            "votes": [{"principle": "safe", "p_chosen_ab": 0.9, "p_chosen_ba": 0.9}],
        }
        for i in range(n)
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_training_learns_a_separable_set_and_resumes(tmp_path, tiny_backbone):
    out = tmp_path / "pm"
    common = dict(backbone=tiny_backbone, lr=3e-3, batch_size=4, eval_fraction=0.25, save_steps=5, max_length=64)
    logs = []
    first = train(str(_pairs(tmp_path)), str(out), log=logs.append, epochs=1, **common)
    metrics = train(str(_pairs(tmp_path)), str(out), log=logs.append, epochs=6, **common)
    assert any("resuming from" in line for line in logs)
    assert metrics["train_steps"] > first["train_steps"]
    assert metrics["eval_accuracy"] == 1.0 and metrics["eval_mean_margin"] > first["eval_mean_margin"]
    assert set(metrics["eval_accuracy_per_principle"]) == {"safe"}
    from transformers import AutoModelForSequenceClassification

    before = AutoModelForSequenceClassification.from_pretrained(tiny_backbone)
    after = AutoModelForSequenceClassification.from_pretrained(out)
    assert not torch.equal(before.classifier.weight, after.classifier.weight)
    assert after.config.cai_reward_std > 0 and "cai_reward_mean" in after.config.to_dict()


def test_long_pairs_are_truncated_and_counted(tmp_path, tiny_backbone):
    path = _pairs(tmp_path, n=8)
    metrics = train(
        str(path),
        str(tmp_path / "pm"),
        log=lambda *_: None,
        backbone=tiny_backbone,
        max_length=8,
        epochs=1,
        eval_fraction=0.25,
    )
    assert metrics["truncated"] == 16  # every response of every pair


def test_cli_train_and_score_on_the_default_backbone(tmp_path, cli):
    out = tmp_path / "pm"
    r = cli("train-pm", _pairs(tmp_path), "--out", out, "--epochs", "1", "--batch-size", "8", "--max-length", "64")
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("eval_accuracy", "eval_ece", "eval_mean_margin", "eval_accuracy_per_principle", "reward_mean"):
        assert key in metrics
    assert "eval accuracy" in r.stdout
    s = cli("score", "--pm", out, "--data", tmp_path / "pairs.jsonl", "--out", tmp_path / "scores.jsonl")
    assert s.returncode == 0, s.stderr[-2000:]
    lines = [json.loads(x) for x in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert len(lines) == 48 and {x["side"] for x in lines} == {"chosen", "rejected"}
    assert "accuracy" in s.stdout


def test_bad_input_is_one_line(tmp_path, cli):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "chosen": "a"}\n')
    r = cli("train-pm", bad, "--out", tmp_path / "pm")
    assert r.returncode == 2 and "lacks prompt/chosen/rejected" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "pm").exists()


def test_scores_are_in_standard_units_of_the_eval_rewards(tmp_path, tiny_backbone):
    """`cai_reward_mean` and `cai_reward_std` (stored by the trainer) are both applied: (r - mean) / std."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from cai.signals.rewardmodels import Collator, Encoder, rewards, rewards_of

    model = AutoModelForSequenceClassification.from_pretrained(tiny_backbone)
    model.config.cai_reward_mean, model.config.cai_reward_std = 0.3, 2.0
    model.save_pretrained(tmp_path / "pm")
    AutoTokenizer.from_pretrained(tiny_backbone).save_pretrained(tmp_path / "pm")
    items = [([{"role": "user", "content": "q"}], text) for text in ("one answer", "another answer")]
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    encode = Encoder(tokenizer, 512)
    batch = Collator(tokenizer.pad_token_id)([{"input_ids": [encode(p, r) for p, r in items], "comparisons": []}])
    with torch.no_grad():
        raw = rewards_of(model.eval(), batch).tolist()
    scores = rewards(str(tmp_path / "pm"), items)["scores"]
    assert scores == pytest.approx([(r - 0.3) / 2.0 for r in raw], abs=1e-5)
