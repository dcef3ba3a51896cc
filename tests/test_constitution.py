"""Constitution loading: the shipped files, and every malformed file gets one line naming file:line and key."""

import time

import pytest
from conftest import HARMLESS, ROOT, write

from cai.core.constitution import load
from cai.errors import CaiError

GOOD = """name: t
principles:
  - id: a
    critique: Find problems.
    revision: Fix them.
    compare: Which is better?
"""

# (file text, line expected in the message, words expected in the message)
MALFORMED = [
    ("name: t\nprinciples: [\n", 3, "invalid YAML"),
    ("- just\n- a list\n", 1, "must be a mapping"),
    ("principles:\n  - id: a\n    critique: c\n    revision: r\n", 1, "missing required key 'name'"),
    ("name: t\n", 1, "missing required key 'principles'"),
    ("name: t\nprinciples: []\n", 2, "'principles' is empty"),
    ("name: t\nprinciples: {}\n", 2, "'principles' must be a list"),
    (GOOD + "extra: 1\n", 7, "unknown key 'extra'"),
    (GOOD.replace("    compare", "    colour: red\n    compare"), 6, "unknown key 'colour'"),
    ("name: t\nprinciples:\n  - id: a\n    critique: c\n", 3, "missing required key 'revision'"),
    (GOOD.replace("critique: Find problems.", "critique: 42"), 4, "'critique' must be text"),
    (GOOD.replace("critique: Find problems.", "critique: '   '"), 4, "'critique' is blank"),
    (GOOD.replace("name: t", "name: [x]"), 1, "'name' must be text"),
    (GOOD + "  - id: a\n    critique: c\n    revision: r\n", 7, "duplicate principle id 'a' (first defined on line 3)"),
    (GOOD.replace("    compare", "    weight: -1\n    compare"), 6, "'weight' must be a positive number"),
    (GOOD.replace("    compare", "    weight: heavy\n    compare"), 6, "'weight' must be a number"),
    (GOOD.replace("    compare", "    tags: safety\n    compare"), 6, "'tags' must be a list"),
    (GOOD.replace("id: a", "id: 'a b'"), 3, "use letters, digits"),
    (
        GOOD + "few_shot:\n  - {prompt: p, answer: a, principle: zz, critique: c, revision: r}\n",
        8,
        "unknown principle id 'zz'",
    ),
    (GOOD + "few_shot:\n  - {prompt: p, answer: a}\n", 8, "missing required key 'principle'"),
    (GOOD + "examples: {prompt: p}\n", 7, "'examples' must be a list"),
    (GOOD + "examples:\n  - {prompt: p}\n", 8, "missing required key 'answer'"),
    (GOOD + "examples:\n  - {prompt: p, answer: 7}\n", 8, "examples[0].answer must be text"),
    ("name: &n t\nprinciples: []\n", 1, "anchors"),
    ("name: t\nprinciples:\n  - id: a\n    critique: c\n    revision: r\n    compare: *x\n", 6, "aliases"),
    ("", None, "empty file"),
]


@pytest.mark.parametrize("text,line,words", MALFORMED, ids=[m[2][:30] for m in MALFORMED])
def test_malformed_constitution_names_file_line_and_key(tmp_path, text, line, words):
    path = write(tmp_path / "c.yaml", text)
    with pytest.raises(CaiError) as e:
        load(path)
    message = str(e.value)
    assert message.startswith(f"{path}:{line}:" if line else f"{path}:"), message
    assert words in message
    assert "\n" not in message


def test_non_utf8_is_refused_with_its_line(tmp_path):
    path = write(tmp_path / "c.yaml", GOOD.encode() + b"description: caf\xe9\n")
    with pytest.raises(CaiError, match=r"c\.yaml:7: not UTF-8 text"):
        load(path)


def test_alias_bomb_is_refused_fast(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
    )
    path = write(tmp_path / "bomb.yaml", bomb)
    t0 = time.monotonic()
    with pytest.raises(CaiError, match="bomb.yaml:1: YAML anchors"):
        load(path)
    assert time.monotonic() - t0 < 1.0


def test_huge_file_is_refused_before_parsing(tmp_path):
    path = write(tmp_path / "huge.yaml", GOOD + "description: " + "x" * (2 << 20) + "\n")
    with pytest.raises(CaiError, match="too large"):
        load(path)


def test_missing_file(tmp_path):
    with pytest.raises(CaiError, match="constitution file not found"):
        load(tmp_path / "nope.yaml")


def test_shipped_constitutions_are_valid():
    harmless = load(HARMLESS)
    assert len(harmless.principles) >= 12
    assert len(harmless.comparable) == len(harmless.principles)
    assert harmless.few_shot and harmless.system
    helpful = load(ROOT / "constitution" / "helpful.yaml")
    assert len(helpful.comparable) >= 4
    assert len(harmless.sha256) == 64


def test_fields_are_parsed(tmp_path):
    text = GOOD.replace("    compare", "    tags: [x, y]\n    weight: 2.5\n    compare") + "system: Be kind.\n"
    c = load(write(tmp_path / "c.yaml", text))
    p = c.principle("a")
    assert (p.tags, p.weight, p.compare, c.system) == (("x", "y"), 2.5, "Which is better?", "Be kind.")


def test_answered_examples_go_between_the_system_prompt_and_every_answered_prompt(tmp_path):
    from cai.core.records import with_system

    text = GOOD + "system: Be brief.\nexamples:\n  - {prompt: 'What is 20 + 30?', answer: 'Answer: 50'}\n"
    c = load(write(tmp_path / "c.yaml", text))
    shown = [("user", "What is 20 + 30?"), ("assistant", "Answer: 50")]
    asked = with_system(c, [{"role": "user", "content": "What is 2 + 2?"}])
    assert [(m["role"], m["content"]) for m in asked] == [("system", "Be brief."), *shown, ("user", "What is 2 + 2?")]
    # a prompt's own system message replaces the constitution's and still comes first
    own = with_system(c, [{"role": "system", "content": "Mine."}, {"role": "user", "content": "Q"}])
    assert [(m["role"], m["content"]) for m in own] == [("system", "Mine."), *shown, ("user", "Q")]
    arith = load(ROOT / "constitution" / "arith.yaml")
    assert len(arith.examples) == 3 and any(r.kind == "accuracy" for r in arith.rules)


def test_diff_names_changed_principles_and_what_every_request_carries(tmp_path, cli):
    a = write(tmp_path / "a.yaml", GOOD + "examples:\n  - {prompt: q, answer: x}\n")
    b = write(tmp_path / "b.yaml", GOOD.replace("Fix them.", "Fix all of them.") + "system: Be brief.\n")
    r = cli("constitution", "diff", a, b)
    assert r.returncode == 1 and r.stdout.split("\n")[:3] == ["~ a (revision)", "~ system", "~ examples (1 -> 0)"]
    same = cli("constitution", "diff", a, a)
    assert same.returncode == 0 and same.stdout.strip() == "no differences"


def test_cli_check_prints_summary_or_one_line_error(tmp_path, cli):
    ok = cli("constitution", "check", HARMLESS)
    assert ok.returncode == 0 and "principles  14" in ok.stdout
    bad = cli("constitution", "check", write(tmp_path / "bad.yaml", GOOD + "extra: 1\n"))
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "bad.yaml:7: constitution: unknown key 'extra'" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("pid", ["höflichkeit", "вежливость", "礼貌", "rule_2.b-x"])
def test_principle_ids_in_any_script_are_accepted(tmp_path, pid):
    c = load(write(tmp_path / "c.yaml", GOOD.replace("id: a", f"id: {pid}")))
    assert c.principles[0].id == pid


def test_shipped_constitution_by_name_from_anywhere(tmp_path, cli):
    assert load("harmless").sha256 == load(HARMLESS).sha256
    r = cli("constitution", "check", "helpful", cwd=tmp_path)
    assert r.returncode == 0 and "helpful" in r.stdout
    with pytest.raises(CaiError, match="not a shipped one"):
        load("no-such-constitution")
