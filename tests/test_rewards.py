"""The constitution as reward functions: TRL's signature, None where a rule does not apply, `cai score
--rules`, and TRL's GRPOTrainer training on them (with a preference model from `cai train-pm`)."""

import json

import pytest
from conftest import trl_grpo_steps, write

from cai.errors import CaiError
from cai.rewards import reward_funcs

GOOD = "<think>48 / 6 = 8.</think> She fills \\boxed{8} bags."
WRONG = "<think>48 / 6 = 9.</think> She fills \\boxed{9} bags."
BARE = "She fills 8 bags."


def test_one_reward_function_per_principle_with_rules():
    funcs = reward_funcs("reasoning")
    assert [f.__name__ for f in funcs] == ["think_then_answer", "correct_answer", "stay_in_english", "concise"]
    by = {f.__name__: f for f in funcs}
    prompts = ["How many bags?"] * 3
    conversational = [[{"role": "assistant", "content": t}] for t in (GOOD, WRONG, BARE)]
    assert by["think_then_answer"](prompts=prompts, completions=conversational) == [1.0, 1.0, 0.0]
    # accuracy (weight 2) and the boxed pattern (weight 1); no reference: only the pattern applies
    assert by["correct_answer"](prompts=prompts, completions=[GOOD, WRONG, BARE], reference=["8", "8", "8"]) == [
        1.0,
        pytest.approx(1 / 3),
        0.0,
    ]
    assert by["correct_answer"](prompts=prompts, completions=[GOOD, WRONG, BARE]) == [1.0, 1.0, 0.0]
    scaled = reward_funcs("reasoning", weights={"concise": 0.5})[-1]
    assert scaled(prompts=prompts[:1], completions=[GOOD]) == [0.5]
    with pytest.raises(CaiError, match="'nope' is neither a principle with rules"):
        reward_funcs("reasoning", weights={"nope": 1.0})
    with pytest.raises(CaiError, match="no principle carries rules"):
        reward_funcs("harmless")


def test_cli_score_with_rules(tmp_path, cli):
    data = write(
        tmp_path / "c.jsonl",
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"prompt": "48 rolls, bags of 6?", "completion": GOOD, "reference": "8"},
                {
                    "prompt": "48 rolls, bags of 6?",
                    "completion": [{"role": "assistant", "content": BARE}],
                    "reference": 8,
                },
            ]
        ),
    )
    r = cli("score", "--rules", "reasoning", "--data", data, "--out", tmp_path / "s.jsonl")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [line["rules_score"] == 1.0 for line in lines] == [True, False]
    # a numeric reference counts too: accuracy applies, and BARE has no boxed or "Answer:" final answer
    assert {x["rule"]: x["passed"] for x in lines[1]["rules"]}["correct-answer.accuracy"] is False
    assert "think-then-answer.format           passed by 50.0%" in r.stdout
    bad = cli("score", "--data", data, "--out", tmp_path / "x.jsonl")
    assert bad.returncode == 2 and "give --pm DIR, --rules CONSTITUTION, or both" in bad.stderr


def test_grpo_trainer_runs_on_the_constitution_and_a_preference_model(tmp_path, tiny_backbone):
    """Two GRPO steps on CPU with the embedded model: TRL calls our reward functions with its own
    arguments (and the dataset's `reference` column) and logs each by name."""
    from cai.train import train

    pairs = write(
        tmp_path / "pairs.jsonl",
        "".join(
            json.dumps({"prompt": f"question {i}", "chosen": GOOD, "rejected": BARE, "p_chosen": 0.9}) + "\n"
            for i in range(8)
        ),
    )
    train(str(pairs), str(tmp_path / "pm"), log=lambda *_: None, backbone=tiny_backbone, epochs=1, max_length=64)
    questions = [("What is 6 times 7? Put the answer in \\boxed{}.", "42"), ("What is 9 + 10?", "19")]
    funcs = reward_funcs("reasoning", pm=str(tmp_path / "pm"))
    trainer, logged = trl_grpo_steps(funcs, questions, tmp_path / "grpo")
    assert trainer.state.global_step == 2
    assert {"rewards/think_then_answer/mean", "rewards/preference_model/mean"} <= logged, sorted(logged)
