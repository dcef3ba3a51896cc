"""Rules checked by code: each kind on real texts, bounds on time, validation with file:line, the label
arithmetic of rule votes, and rules in both stages."""

import json
import time

import pytest
from conftest import ROOT, write

from cai.config import RunConfig
from cai.core import rules
from cai.core.constitution import load
from cai.core.rules import RuleResult
from cai.core.store import RunStore
from cai.errors import CaiError
from cai.generate import generate
from cai.judges import Verdict, Vote
from cai.judges.labels import blend, hard_winner, rule_votes

MATH = ROOT / "data" / "prompts" / "math.jsonl"
R1_STYLE = "<think>48 rolls in bags of 6 is 48 / 6 = 8 bags.</think>\nShe fills \\boxed{8} bags."


def rule(**spec):
    return rules.build("p", 0, spec)


@pytest.mark.parametrize(
    "spec,text,passed",
    [
        ({"format": "think-answer"}, R1_STYLE, True),
        ({"format": "think-answer"}, "She fills 8 bags.", False),
        ({"format": "think-answer"}, "<think>no answer after the reasoning</think>   ", False),
        ({"format": "think-answer"}, "<think>a</think><think>b</think> answer", False),
        ({"format": "boxed-answer"}, "so the result is \\boxed{\\frac{1}{2}}.", True),
        ({"format": r"Steps:\n(?P<steps>.+)\nResult: (?P<result>\d+)"}, "Steps:\nadd them\nResult: 12", True),
        ({"must_match": "SOURCE:", "flags": ["ignorecase"]}, "see source: the manual", True),
        ({"must_match": "SOURCE:"}, "see source: the manual", False),
        ({"must_not_match": r"\bas an ai\b", "flags": ["ignorecase"]}, "As an AI, I cannot do that.", False),
        ({"must_not_match": r"\bas an ai\b", "flags": ["ignorecase"]}, "I will not help with that.", True),
        ({"max_words": 5}, "Höflichkeit kostet nichts, wirklich.", True),
        ({"max_words": 3}, "Höflichkeit kostet nichts, wirklich.", False),
        ({"max_chars": 6}, "héllo👋", True),  # counted in characters, not bytes
        ({"max_chars": 5}, "héllo👋", False),
        # DeepSeek-R1's SFT filters: the longest blank-line separated paragraph, and no fenced code block
        ({"max_paragraph_words": 4}, "One two three four.\n\nFive six.\n  \nSeven.", True),
        ({"max_paragraph_words": 4}, "One two.\n\nThree four\nfive six seven.", False),  # a line break is no paragraph
        ({"max_paragraph_words": 1}, "", False),  # an empty answer earns nothing from any rule
        ({"no_code_block": True}, "Use `x = 1` inline; that is not a block.", True),
        ({"no_code_block": True}, "Run this:\n```python\nprint(1)\n```\nDone.", False),
        ({"no_code_block": True}, "Run this:\n   ~~~\nls\n", False),  # unclosed, indented 3: still a block
        ({"no_code_block": True, "scope": "answer"}, "<think>```\nx\n```</think>\nJust 4.", True),
    ],
)
def test_each_rule_kind_on_real_texts(spec, text, passed):
    result = rules.check(rule(**spec), text)
    assert result.passed is passed and result.score == float(passed) and result.error is None


def test_language_share_on_single_and_mixed_language_answers():
    english = "The train leaves at nine. It arrives in the city two hours later, just before noon."
    german = "Der Zug fährt um neun Uhr ab. Er kommt zwei Stunden später in der Stadt an."
    assert rules.language_share(english, "en") == 1.0
    assert rules.language_share(german, "de") == 1.0 and rules.language_share(german, "en") == 0.0
    mixed = rules.language_share(f"{english} {german}", "en")
    # the share of words (DeepSeek-R1's language consistency), not of characters
    words = len(english.split()), len(german.split())
    assert mixed == pytest.approx(words[0] / sum(words), abs=0.02)
    assert rules.language_share("这是一个关于火车的句子。火车九点出发。", "zh") == 1.0
    assert rules.language_share("42 + 17 = 59", "en") == 1.0  # nothing in any language: nothing against it
    check = rules.check(rule(language="en", threshold=0.9, scope="all"), f"{english} {german}")
    assert not check.passed and 0.4 < check.score < 0.6


@pytest.mark.parametrize(
    "text,reference,right",
    [
        (R1_STYLE, "8", True),
        ("Half of it: \\boxed{0.5}", "\\frac{1}{2}", True),
        ("\\boxed{\\frac{2}{4}}", "0.5", True),
        ("Expanding, \\boxed{x^2 + 2x}", "x(x+2)", True),
        ("\\boxed{{1, 2}}", "{1, 2}", True),  # nested braces: the whole box is the answer
        # two different boxes are a hedge, not an answer (cai.core.answer): a correction belongs in the reasoning
        ("First \\boxed{7}, then corrected: \\boxed{8}", "8", False),
        ("<think>First 7, then corrected.</think> \\boxed{8}", "8", True),
        ("We add them.\nAnswer: 19", "19", True),
        ("Final answer: Canberra.", "Canberra", True),  # not mathematics: exact, case and spacing aside
        ("Answer: Sydney", "Canberra", False),
        ("\\boxed{9}", "8", False),
        ("It is eight.", "8", False),  # no final answer to read
    ],
)
def test_accuracy_against_the_reference(text, reference, right):
    assert rules.check(rule(accuracy="math"), text, reference).passed is right


def test_accuracy_does_not_apply_without_a_reference():
    assert rules.check(rule(accuracy="math"), R1_STYLE, None) is None
    assert rules.check_all((rule(accuracy="exact"), rule(max_words=100)), R1_STYLE, None)[0].rule == "p.max_words"


@pytest.mark.parametrize("empty", ["", "  \n\t"])
def test_an_empty_answer_earns_nothing_from_any_rule(empty):
    """An empty rollout (EOS at once) has no other language, no long words, no loops: it must still earn 0."""
    const = load("reasoning")
    results = rules.check_all(const.rules, empty, "42")
    assert results and all(not r.passed and r.score == 0.0 and r.known for r in results)
    assert rules.mean_score(results, {r.id: r for r in const.rules}) == 0.0
    lang = rule(language="en", threshold=0.9)
    assert rules.check(lang, empty) == RuleResult(lang.id, False, 0.0)


def test_a_catastrophic_pattern_is_a_recorded_failure_not_a_hang():
    t0 = time.monotonic()
    result = rules.check(rule(must_match="(a|aa)+$"), "a" * 5000 + "b")
    # tried twice, each with a fresh budget (a deadline missed under load gets a second chance), then unknown
    assert 2 * rules.SECONDS <= time.monotonic() - t0 < 10 * rules.SECONDS
    assert not result.passed and result.error == f"timed out after {rules.SECONDS:g}s"


GOOD = "name: t\nprinciples:\n  - id: p\n    rules:\n"


@pytest.mark.parametrize(
    "rule_yaml,line,words",
    [
        ("      - must_match: '(unclosed'\n", 5, "bad regular expression '(unclosed'"),
        ("      - shout: yes\n", 5, "a rule names exactly one of"),
        ("      - language: en\n", 5, "missing 'threshold'"),
        ("      - language: xx\n        threshold: 0.5\n", 5, "unknown language code 'xx'"),
        ("      - max_words: many\n", 5, "expected a whole number"),
        ("      - must_match: a\n        flags: [global]\n", 5, "unknown flag 'global'"),
        ("      - accuracy: fuzzy\n", 5, "expected one of math, exact"),
        ("      - max_chars: 10\n        weight: -1\n", 5, "'weight' must be a positive number"),
        ("      - max_chars: 10\n        hard: maybe\n", 5, "'hard' must be true or false"),
        ("      - max_chars: 10\n        threshold: 0.5\n", 5, "unknown key 'threshold'"),
        ("      - max_paragraph_words: 0\n", 5, "expected a whole number of at least 1"),
        ("      - no_code_block: false\n", 5, "rule 'no_code_block': expected true"),
        ("      - just text\n", 5, "each rule must be a mapping"),
    ],
)
def test_bad_rules_name_file_line_and_value(tmp_path, rule_yaml, line, words):
    path = write(tmp_path / "c.yaml", GOOD + rule_yaml)
    with pytest.raises(CaiError) as e:
        load(path)
    assert str(e.value).startswith(f"{path}:{line}: principle 'p': ") and words in str(e.value), str(e.value)


def test_a_principle_needs_critique_or_rules(tmp_path):
    with pytest.raises(CaiError, match=r"c.yaml:3: principle 'p': missing required key 'critique' \(with 'revision'\)"):
        load(write(tmp_path / "c.yaml", "name: t\nprinciples:\n  - id: p\n    compare: Which?\n"))


def test_cli_check_and_show_list_the_rules(cli):
    r = cli("constitution", "check", "reasoning")
    assert r.returncode == 0 and "rules       6 (1 hard)" in r.stdout
    r = cli("constitution", "show", "reasoning")
    assert "correct-answer.accuracy  accuracy: math, weight 2" in r.stdout


# -- the label arithmetic ------------------------------------------------------------------------------------
def _results(**scores):
    return [RuleResult(name, score == 1.0, score) for name, score in scores.items()]


RULES = {"a": rule(max_words=1), "b": rule(max_chars=1), "h": rule(max_words=2, hard=True)}
RULES = {k: rules.Rule(k, r.kind, r.value, weight, r.hard) for (k, r), weight in zip(RULES.items(), (2.0, 1.0, 1.0))}


def test_rules_vote_where_they_differ():
    votes = rule_votes(_results(a=1.0, b=0.4, h=1.0), _results(a=0.0, b=0.4, h=1.0), RULES)
    assert [(v.principle, v.p_ab, v.kind, v.weight) for v in votes] == [("a", 1.0, "rule", 2.0)]
    (v,) = rule_votes(_results(b=0.2), _results(b=0.8), RULES)
    assert v.p_ab == v.p_ba == pytest.approx(0.2)  # 0.5 + (0.2 - 0.8) / 2


def test_judge_and_rules_blend_by_weight():
    judge = Verdict(0.7, votes=(Vote("x", 0.8, 0.6), Vote("y", 0.7, 0.7)))  # two principles: weight 2
    label = blend(judge, [Vote("a", 0.0, 0.0, kind="rule", weight=2.0)])
    assert label.p_first == pytest.approx((2 * 0.7 + 2 * 0.0) / 4) and label.decided_by == "judge+rules"
    assert len(label.votes) == 3
    assert blend(judge, []).p_first == pytest.approx(0.7) and blend(judge, []).decided_by == "judge"
    only = blend(None, [Vote("a", 1.0, 1.0, kind="rule", weight=2.0), Vote("b", 0.0, 0.0, kind="rule")])
    assert only.p_first == pytest.approx(2 / 3) and only.decided_by == "rules"
    assert blend(None, []).p_first == 0.5 and blend(None, []).decided_by == "none"


def test_a_hard_rule_decides_the_pair():
    assert hard_winner(_results(h=1.0), _results(h=0.0), RULES) == 1
    assert hard_winner(_results(h=0.0), _results(h=1.0), RULES) == -1
    assert hard_winner(_results(h=1.0), _results(), RULES) == 0  # checked on one answer only: no decision
    label = blend(Verdict(0.9), [], hard=-1, hard_p=0.95)
    assert label.p_first == pytest.approx(0.05) and label.decided_by == "hard rule"


# -- rules in the stages -------------------------------------------------------------------------------------
def _answers(texts):
    """A scripted model whose answers and revisions come from `texts` in turn, by prompt."""

    def reply(chat, sampling, seed, index):
        last = chat[-1]["content"]
        if last.startswith("Critique request"):
            return "The format is wrong."
        key = "revision" if last.startswith("Revision request") else "initial"
        turn = sum(1 for m in chat if m["role"] == "user" and m["content"].startswith("Revision request"))
        return texts[key if key == "initial" else f"revision {turn}"]

    return reply


def test_sl_trace_has_rule_results_flags_regressions_and_keeps_the_best(tmp_path):
    from cai.backends.scripted import ScriptedBackend

    texts = {"initial": R1_STYLE, "revision 1": "She fills 8 bags.", "revision 2": "<think>48/6</think> \\boxed{9}"}
    out = tmp_path / "run"
    config = RunConfig(
        constitution="reasoning",
        prompts=str(MATH),
        out=str(out),
        stage="sl",
        rounds=2,
        limit=1,
        keep="best-rules",
        backend="scripted",
    )
    generate(config, backend=ScriptedBackend(reply=_answers(texts)), log=lambda *_: None)
    (row,) = RunStore(out).read("sft")
    initial = {r["rule"]: r["passed"] for r in row["initial_rules"]}
    assert initial["think-then-answer.format"] and initial["correct-answer.accuracy"]
    first, second = row["revisions"]
    assert first["regressed"] and not {r["rule"]: r["passed"] for r in first["rules"]}["think-then-answer.format"]
    assert not second["regressed"]  # it keeps the format again, though its answer is wrong
    assert row["kept"] == 0 and row["completion"][0]["content"] == R1_STYLE  # the initial answer did best


def test_rules_only_constitution_labels_pairs_without_an_engine(tmp_path, cli):
    constitution = write(
        tmp_path / "rules.yaml", (ROOT / "constitution" / "reasoning.yaml").read_text().split("  - id: clear-steps")[0]
    )
    good, wrong, unformatted = R1_STYLE, "<think>48 / 6 = 9</think> \\boxed{9}", "She fills \\boxed{8} bags."
    pairs = write(
        tmp_path / "pairs.jsonl",
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {
                    "prompt": "A baker makes 48 rolls and puts them in bags of 6. How many bags does she fill?",
                    "reference": "8",
                    "responses": [wrong, good],
                },
                {"prompt": "How many bags of 6 hold 48 rolls?", "reference": "8", "responses": [unformatted, wrong]},
            ]
        ),
    )
    out = tmp_path / "run"
    r = cli(
        "generate", "--stage", "rl", "--pairs", "file", "--prompts", pairs, "--constitution", constitution, "--out", out
    )  # the default backend is vllm: it must not start
    assert r.returncode == 0, r.stderr
    assert "starting the" not in r.stderr
    rows = {row["chosen"][0]["content"]: row for row in RunStore(out).read("prefs")}
    soft = rows[good]  # same format, but only `good` is right: accuracy (weight 2) and must_match votes
    assert soft["decided_by"] == "rules" and {v["kind"] for v in soft["votes"]} == {"rule"}
    assert soft["p_chosen"] == 1.0 and {v["principle"] for v in soft["votes"]} == {"correct-answer.accuracy"}
    hard = rows[wrong]  # `wrong` keeps the hard format rule that `unformatted` breaks, though it is wrong
    assert hard["decided_by"] == "hard rule" and hard["p_chosen"] == 1.0
    assert {r["rule"] for r in hard["rules_rejected"] if not r["passed"]} >= {"think-then-answer.format"}
    s = cli("stats", out)
    assert "labels decided by           hard rule 1, rules 1" in s.stdout


def test_words_are_compared_as_text_not_as_products_of_symbols():
    assert not rules.check(rule(accuracy="math"), "Answer: ba", "ab").passed
    assert rules.check(rule(accuracy="math"), "Answer: AB", "ab").passed
    assert rules.looks_like_math("\\frac{x}{2} + 3") and not rules.looks_like_math("Canberra")


def test_accuracy_rules_with_no_reference_anywhere_fail_before_the_engine(tmp_path, cli):
    out = tmp_path / "run"
    r = cli(
        "generate",
        "--constitution",
        "reasoning",
        "--prompts",
        ROOT / "data" / "prompts" / "red_team.jsonl",
        "--out",
        out,
        "--limit",
        "2",
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and not out.exists()
    assert "accuracy rule correct-answer.accuracy needs a 'reference' in the prompt records" in r.stderr


def test_r1_sft_filters_are_rules_that_require_keeps(tmp_path):
    """Rejection sampling with --require naming the two filters keeps only the samples with no code block and no
    paragraph over the limit (DeepSeek-R1 filtered its SFT data so)."""
    from cai.backends.scripted import ScriptedBackend

    const = write(
        tmp_path / "c.yaml",
        "name: c\nprinciples:\n  - id: plain\n    rules:\n      - no_code_block: true\n"
        "  - id: short\n    rules:\n      - max_paragraph_words: 6\n",
    )
    texts = [
        "Two plus two.\n\nIt is 4.",
        "Compute it:\n```python\nprint(2 + 2)\n```\nIt is 4.",
        "Two plus two is four, as anyone who has counted on their fingers knows.",
        "Add.\n\nAnswer: 4",
    ]

    def reply(chat, sampling, seed, index):
        return texts[index]

    out = tmp_path / "run"
    config = RunConfig(
        constitution=str(const), prompts=str(MATH), out=str(out), stage="sample", samples=4, limit=2,
        require="plain.no_code_block,short.max_paragraph_words",
    )  # fmt: skip
    generate(config, backend=ScriptedBackend(reply=reply), log=lambda *_: None)
    kept = RunStore(out).read("selected")
    assert sorted(r["sample"] for r in kept) == [0, 0, 3, 3]
    assert {r["completion"][0]["content"] for r in kept} == {texts[0], texts[3]}
