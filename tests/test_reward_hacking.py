"""Rule rewards under the inputs a policy would find. Each case's reward is written down, and checked the three
ways a reward reaches training: the rules (`check_all`), the RL label of a pair against an honest answer, and the
GRPO reward function of the `correct-answer` principle (accuracy weight 2, `format: boxed` weight 1)."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cai.core import answer, bounded, rules
from cai.core.constitution import load
from cai.judges.labels import blend, hard_winner, rule_votes
from cai.rewards import reward_funcs

REASONING = load("reasoning")
RULES = {r.id: r for r in REASONING.rules}
HONEST = "<think>Six plus two is eight.</think>The answer is \\boxed{8}."

# text, reference, accuracy score, boxed-format score, GRPO reward of correct-answer ((2 * acc + boxed) / 3)
CASES = {
    "honest": (HONEST, "8", 1.0, 1.0, 1.0),
    # the answer only in the reasoning: there is no answer after it
    "answer only in the reasoning": ("<think>Six plus two is \\boxed{8}.</think>", "8", 0.0, 0.0, 0.0),
    # the right answer hidden in the reasoning, a wrong one after it: the one after counts
    "right in the reasoning, wrong after": ("<think>So \\boxed{8}.</think>The answer is \\boxed{9}.", "8", 0, 1, 1 / 3),
    # the reasoning never closed: no answer
    "unclosed reasoning": ("<think>It is \\boxed{8}", "8", 0.0, 0.0, 0.0),
    # two different boxes hedge; two equal ones are one answer
    "two different boxes": ("<think>Either.</think>\\boxed{8} or \\boxed{9}", "8", 0.0, 0.0, 0.0),
    "two equal boxes": ("<think>Sure.</think>\\boxed{8}, so \\boxed{ 8 }", "8", 1.0, 1.0, 1.0),
    "answer: 8 or 9": ("<think>Unsure.</think>Answer: 8 or 9", "8", 0.0, 0.0, 0.0),
    # a box quoted in a code block or a quotation is not an answer
    "box in a code block": ("<think>Hm.</think>```\n\\boxed{8}\n```", "8", 0.0, 0.0, 0.0),
    "box in a quotation": ("<think>Hm.</think>> \\boxed{8}\nI quoted it.", "8", 0.0, 0.0, 0.0),
    # boxes as LaTeX writes them
    "nested braces": ("<think>A third.</think>\\boxed{\\frac{1}{3}}", "\\frac{1}{3}", 1.0, 1.0, 1.0),
    "box without braces": ("<think>Plain.</think>The answer is \\boxed 8.", "8", 1.0, 1.0, 1.0),
    "box never closed": ("<think>Oops.</think>\\boxed{8", "8", 0.0, 0.0, 0.0),
    # equivalent forms: math-verify finds them equal
    "0.5 for 1/2": ("<think>Half.</think>\\boxed{0.5}", "\\frac{1}{2}", 1.0, 1.0, 1.0),
    "1/2 for 1/2": ("<think>Half.</think>\\boxed{1/2}", "\\frac{1}{2}", 1.0, 1.0, 1.0),
    "\\frac12 for 1/2": ("<think>Half.</think>\\boxed{\\frac12}", "\\frac{1}{2}", 1.0, 1.0, 1.0),
    "50% for 1/2": ("<think>Half.</think>\\boxed{50\\%}", "\\frac{1}{2}", 1.0, 1.0, 1.0),
    # pathological answers: bounded, and wrong
    "a 5,000-digit number": ("<think>Big.</think>\\boxed{" + "9" * 5000 + "}", "8", 0.0, 1.0, 1 / 3),
    "300 nested fractions": (
        "<think>Deep.</think>\\boxed{" + "\\frac{1}{" * 300 + "2" + "}" * 300 + "}",
        "8",
        0.0,
        1.0,
        1 / 3,
    ),
    "a power tower": ("<think>Up.</think>\\boxed{" + "9^{" * 40 + "9" + "}" * 40 + "}", "8", 0.0, 1.0, 1 / 3),
    # a digit of another script is not the number (math-verify does not fold fullwidth digits)
    "a fullwidth digit": ("<think>Wide.</think>\\boxed{８}", "8", 0.0, 1.0, 1 / 3),
    # 100,000 characters: read whole, still the answer after the reasoning
    "100k characters": ("<think>" + "Let me think. " * 3000 + "</think>" + "so " * 30000 + "\\boxed{8}", "8", 1, 1, 1),
}
GRPO = {f.__name__: f for f in reward_funcs(REASONING)}


@pytest.mark.parametrize("name", list(CASES))
def test_the_documented_reward_through_rules_labels_and_grpo(name):
    text, reference, accuracy, boxed, reward = CASES[name]
    t0 = time.monotonic()
    got = {r.rule: r for r in rules.check_all(REASONING.rules, text, reference)}
    assert time.monotonic() - t0 < 2 * rules.MATH_SECONDS  # bounded, whatever the input
    assert got["correct-answer.accuracy"].score == accuracy and got["correct-answer.accuracy"].known
    assert got["correct-answer.format"].score == boxed
    assert GRPO["correct_answer"](["q"], [text], reference=[reference])[0] == pytest.approx(reward)
    # the RL label of (the honest answer, this one): the rules' votes and hard rules, no judge
    honest = rules.check_all(REASONING.rules, HONEST.replace("8", reference) if reference != "8" else HONEST, reference)
    mine = list(got.values())
    votes = rule_votes(honest, mine, RULES)
    accuracy_vote = {v.principle: v.p_ab for v in votes}.get("correct-answer.accuracy")
    if accuracy == 1.0:
        assert accuracy_vote is None  # equally right: accuracy does not tell them apart
    else:  # the honest answer wins on accuracy, and the pair's label prefers it
        label = blend(None, votes, hard_winner(honest, mine, RULES))
        assert accuracy_vote == 1.0 and label.p_first > 0.5


def test_a_pathological_answer_on_a_worker_thread_is_bounded():
    """The streaming executor checks rules in worker threads, where math-verify's own SIGALRM limit cannot work:
    the comparison runs in a worker process with a deadline, so the thread gets an answer in time."""
    rule = rules.build("p", 0, {"accuracy": "math"})
    tower = CASES["a power tower"][0]
    with ThreadPoolExecutor(2) as pool:
        t0 = time.monotonic()
        results = list(pool.map(lambda t: rules.check(rule, t, "8"), [tower, CASES["300 nested fractions"][0]]))
        assert time.monotonic() - t0 < rules.MATH_SECONDS + 10
    assert all(r is not None and not r.passed for r in results)


def test_a_check_past_its_deadline_is_killed_and_the_next_one_runs():
    """A worker that does not answer in time is killed, not waited for; the next call gets a fresh one."""
    pool = bounded.Pool(1)
    assert pool.call("math_equal", "1/2", "0.5", seconds=60) is True  # started and warm
    with pytest.raises(TimeoutError):
        pool.call("math_equal", "\\frac{" * 200 + "1" + "}" * 200, "2", seconds=0.001)
    assert pool.call("math_equal", "3", "3", seconds=60) is True
    pool.close()


def test_an_unknown_check_is_left_out_never_a_win_for_the_other_side():
    """A hard rule that timed out on one answer does not decide the pair, does not vote, is not a regression, and
    does not lower a reward."""
    from cai.stages.sl import regressed

    hard = rules.build("h", 0, {"format": "think-answer", "hard": True})
    known = {hard.id: hard}
    kept = [rules.RuleResult(hard.id, True, 1.0)]
    unknown = [rules.RuleResult(hard.id, False, 0.0, "timed out after 0.5s")]
    assert hard_winner(kept, unknown, known) == 0 and rule_votes(kept, unknown, known) == []
    assert not regressed(tuple(kept), tuple(unknown), known)
    assert rules.mean_score(unknown, known) is None and rules.mean_score(kept + unknown, known) == 1.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hidden=st.integers(0, 10**6), shown=st.integers(0, 10**6), filler=st.text(max_size=200))
def test_only_the_answer_after_the_reasoning_counts(hidden, shown, filler):
    """Whatever the reasoning holds (boxes, filler, another number), the accuracy reward follows the box after it."""
    filler = filler.replace("<think>", "").replace("</think>", "").replace("\\boxed", "")
    text = f"<think>{filler} \\boxed{{{hidden}}}</think>Therefore \\boxed{{{shown}}}"
    rule = rules.build("p", 0, {"accuracy": "exact"})
    assert answer.final(answer.scoped(text, "answer")) == str(shown)
    assert rules.check(rule, text, str(hidden)).passed == (hidden == shown)


def test_every_shipped_reference_boxed_passes_every_rule_and_a_wrong_one_fails_accuracy():
    """The shipped `reasoning` constitution on its own problems: the right answer, boxed after English reasoning,
    passes every rule (fractions too); a wrong answer fails accuracy."""
    from conftest import ROOT

    from cai.core.inputs import load as load_prompts

    prompts, _ = load_prompts(str(ROOT / "data" / "prompts" / "math.jsonl"))
    assert len(prompts) == 24 and any("frac" in (p.reference or "") or "/" in (p.reference or "") for p in prompts)
    for p in prompts:
        right = (
            f"<think>I work through the problem step by step and check the result.</think>So \\boxed{{{p.reference}}}."
        )
        results = rules.check_all(REASONING.rules, right, p.reference)
        assert all(r.passed for r in results), (p.reference, [r for r in results if not r.passed])
        wrong = right.replace(f"\\boxed{{{p.reference}}}", "\\boxed{123456789}")
        accuracy = {r.rule: r for r in rules.check_all(REASONING.rules, wrong, p.reference)}["correct-answer.accuracy"]
        assert not accuracy.passed and accuracy.known


def test_scope_answer_makes_the_judge_read_the_answer_only(tmp_path):
    """`scope: answer` at the top of a constitution: the judge's questions hold the answers after their reasoning,
    never the reasoning (R1 grades helpfulness on the final summary)."""
    import json
    import math

    from conftest import write

    from cai.backends.scripted import ScriptedBackend
    from cai.config import RunConfig
    from cai.generate import generate

    seen = []

    def judge(chat, options):
        seen.append(chat[0]["content"])
        return {options[0]: math.log(0.6), options[1]: math.log(0.4)}

    principle = "  - id: p\n    critique: c\n    revision: r\n    compare: Which is better?\n"
    const = write(tmp_path / "c.yaml", f"name: c\nscope: answer\nprinciples:\n{principle}")
    a, b = "<think>SECRET-REASONING-A</think>Paris.", "<think>SECRET-REASONING-B</think>Lyon."
    pairs = write(tmp_path / "pairs.jsonl", json.dumps({"prompt": "Capital of France?", "responses": [a, b]}) + "\n")
    config = RunConfig(
        constitution=str(const), prompts=str(pairs), out=str(tmp_path / "run"), stage="rl", pairs="file",
        principles_per_pair=1, backend="scripted",
    )  # fmt: skip
    generate(config, backend=ScriptedBackend(judge=judge), log=lambda *_: None)
    assert seen and all("Paris." in q and "Lyon." in q and "SECRET" not in q for q in seen)
    assert load(const).principles[0].scope == "answer"


def test_a_bad_scope_is_one_line(tmp_path):
    from conftest import write

    from cai.errors import CaiError

    bad = write(
        tmp_path / "c.yaml",
        "name: c\nprinciples:\n  - id: p\n    rules:\n      - accuracy: math\n        scope: think\n",
    )
    with pytest.raises(CaiError, match=r"c.yaml:5: principle 'p': rule 'accuracy': 'scope' must be one of answer"):
        load(bad)


def test_a_catastrophic_pattern_on_a_worker_thread_is_bounded():
    """The regex module's timeout works off the main thread too: unknown after 0.5 s, not a hung worker."""
    rule = rules.build("p", 0, {"must_match": "(a|aa)+$"})
    with ThreadPoolExecutor(1) as pool:
        t0 = time.monotonic()
        result = pool.submit(rules.check, rule, "a" * 5000 + "b").result()
    assert time.monotonic() - t0 < 5 * rules.SECONDS
    assert result is not None and not result.known and result.error == f"timed out after {rules.SECONDS:g}s"
