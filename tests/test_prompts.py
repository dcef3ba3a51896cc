"""Template rendering: values are never parsed as templates, user templates run in a sandbox."""

import pytest
from conftest import write
from hypothesis import given, settings
from hypothesis import strategies as st

from cai.core.prompts import Templates
from cai.errors import CaiError

PRINCIPLE = {"id": "p", "critique": "Find harm.", "revision": "Remove it.", "compare": "Which is safer?"}


def test_shipped_templates_render_and_pass_the_check():
    t = Templates()
    t.check()
    assert t.render("critique.j2", principle=PRINCIPLE, round=1).startswith("Critique request: Find harm.")
    assert t.render("compare_answer.j2").endswith("(")


@pytest.mark.parametrize("name", ["compare.j2", "compare_cot.j2"])
def test_principles_judging_a_pair_share_everything_before_their_question(name):
    """The K principles that judge a pair differ only after both answers, so the engine prefills the
    long part once per order and serves the rest from its prefix cache."""
    import os

    t = Templates()
    other = {**PRINCIPLE, "compare": "Pick the more honest option."}
    kw = dict(conversation=[{"role": "user", "content": "q"}], response_a="first answer", response_b="second answer")
    one, two = t.render(name, principle=PRINCIPLE, **kw), t.render(name, principle=other, **kw)
    shared = os.path.commonprefix([one, two])
    assert "(A) first answer" in shared and "(B) second answer" in shared
    assert "Which is safer?" not in shared and "honest" not in shared


def test_jinja_in_values_stays_literal():
    t = Templates()
    text = t.render(
        "compare.j2",
        conversation=[{"role": "user", "content": "{{ 7*7 }} {% if 1 %}x{% endif %}"}],
        principle=PRINCIPLE,
        response_a="{{ config }}",
        response_b="{# c #}",
    )
    assert "{{ 7*7 }} {% if 1 %}x{% endif %}" in text
    assert "(A) {{ config }}" in text and "(B) {# c #}" in text
    assert "49" not in text


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1))
def test_any_value_is_rendered_verbatim(value):
    t = Templates()
    text = t.render(
        "compare.j2",
        conversation=[{"role": "user", "content": value}],
        principle=PRINCIPLE,
        response_a=value,
        response_b="b",
    )
    assert f"(A) {value}" in text


def test_user_templates_override_shipped_ones(tmp_path):
    write(tmp_path / "critique.j2", "My critique: {{ principle.critique }}")
    t = Templates(tmp_path)
    assert t.render("critique.j2", principle=PRINCIPLE, round=1) == "My critique: Find harm."
    assert t.render("revision.j2", principle=PRINCIPLE, round=1).startswith("Revision request")


def test_hostile_template_is_stopped_by_the_sandbox(tmp_path):
    write(tmp_path / "critique.j2", "{{ principle.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(CaiError, match="critique.j2"):
        Templates(tmp_path).check()


def test_misspelled_variable_fails_before_the_engine(tmp_path):
    write(tmp_path / "revision.j2", "{{ principal.revision }}")
    with pytest.raises(CaiError, match=r"revision.j2: 'principal' is undefined"):
        Templates(tmp_path).check()


def test_syntax_error_names_file_and_line(tmp_path):
    write(tmp_path / "compare.j2", "line one\n{% if %}\n")
    with pytest.raises(CaiError, match=r"compare.j2:2: template syntax error"):
        Templates(tmp_path).check()


def test_answer_prefix_must_end_with_the_parenthesis(tmp_path):
    write(tmp_path / "compare_answer.j2", "The answer is:")
    with pytest.raises(CaiError, match="must end with '\\('"):
        Templates(tmp_path).check()


def test_hash_changes_with_an_override(tmp_path):
    write(tmp_path / "critique.j2", "x {{ principle.critique }}")
    assert Templates(tmp_path).sha256() != Templates().sha256()
