"""A new signal is one module: a signal from another package (tests/toy_plugin's answer length, registered through its
entry point) appears in `cai plugins`, is a column of every sample, takes a weight in --weights and --require, is a
component of `cai serve`'s reward, a TRL reward function and a selector of `cai eval bestofn`, with no edit to cai."""

import json
import os
import subprocess
import sys

import httpx
import pytest

from cai.core.store import RunStore
from tests.conftest import ROOT
from tests.test_reward_service import AUTH, Server

TOY = ROOT / "tests" / "toy_plugin"
ENV = {"PYTHONPATH": str(TOY)}
MATH = ROOT / "data" / "prompts" / "math.jsonl"
SAMPLE = ("--backend", "scripted", "--constitution", "reasoning", "--prompts", MATH, "--limit", "3", "--samples", "2")


def _length(text: str, limit: int) -> float:
    return max(0.0, min(1.0, 2 - len(text.split()) / limit))


def test_cai_plugins_lists_the_plugin_signal(cli):
    listed = cli("plugins", env=ENV)
    assert listed.returncode == 0, listed.stderr
    assert "signals (cai.signals):" in listed.stdout and "  length " in listed.stdout
    assert "(cai_toy)" in listed.stdout.split("signals (cai.signals):")[1]


def test_the_plugin_signal_is_a_column_of_every_sample_with_its_weight(cli, tmp_path):
    out = tmp_path / "run"
    r = cli(
        "generate",
        "--stage",
        "sample",
        *SAMPLE,
        "--length-limit",
        "4",
        "--weights",
        "rules=1,length=3",
        "--out",
        out,
        "--require",
        "length>=0",
        env=ENV,
    )
    assert r.returncode == 0, r.stderr
    assert "signals rules, accuracy, length (rules=1,length=3)" in r.stdout
    rows = RunStore(out).read("samples")
    samples = [s for row in rows for s in row["samples"] if s["text"]]
    assert samples and all(s["length"] == pytest.approx(_length(s["text"], 4)) for s in samples)
    for s in samples:  # the reference-free score weighs the toy signal 3 to the rules' 1 (accuracy reads the key)
        assert s["score"] == pytest.approx((s["rules_score"] + 3 * s["length"]) / 4)
    # a weight for the toy signal in a run that does not compute it names its switch
    bad = cli("generate", "--stage", "sample", *SAMPLE, "--weights", "length=1", "--out", tmp_path / "r2", env=ENV)
    assert (
        bad.returncode == 2
        and "--weights gives length a weight, but the run does not compute it (--length-limit)" in (bad.stderr)
    )
    assert not (tmp_path / "r2").exists()


def test_the_plugin_signal_is_a_selector_of_eval_bestofn(cli):
    r = cli(
        "eval",
        "bestofn",
        "--data",
        MATH,
        *SAMPLE[:4],
        "--limit",
        "3",
        "--samples",
        "2",
        "--length-limit",
        "4",
        "--json",
        env=ENV,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert "length" in report["best_of_n"] and "length" in report["unchosen"]


def test_the_plugin_signal_is_a_component_of_cai_serve():
    s = Server("--constitution", "reasoning", "--length-limit", "3", env=ENV)
    try:
        health = httpx.get(s.url + "/health").json()
        assert health["signals"] == ["rules", "accuracy", "length"]
        text = "<think>two plus two</think> four is \\boxed{4} here"
        got = httpx.post(
            s.url + "/v1/rewards", json={"items": [{"prompt": "2+2?", "response": text}]}, headers=AUTH
        ).json()
        assert got["items"][0]["components"]["length"] == pytest.approx(_length(text, 3))
    finally:
        assert s.stop() == 0


def test_the_plugin_signal_is_a_trl_reward_function():
    code = (
        "from cai.rewards import reward_funcs\n"
        "funcs = reward_funcs('reasoning', length_limit=2)\n"
        "f = [f for f in funcs if f.__name__ == 'length'][0]\n"
        "print(f(['q', 'q'], ['one two', 'one two three']))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **ENV})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[1.0, 0.5]"
