"""A new stage is one module: a stage from another package (tests/toy_plugin, registered through its entry point)
appears in the run summary, `cai stats`, `cai publish` and `cai review` with no edit to cai."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import RED_TEAM, ROOT

from cai.core.store import RunStore

TOY = ROOT / "tests" / "toy_plugin"
ENV = {"PYTHONPATH": str(TOY)}
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from conftest import run_cli

    out = tmp_path_factory.mktemp("toy") / "run"
    args = ("--backend", "scripted", "--prompts", RED_TEAM, "--limit", "5", "--out", out, "--echo-max-words", "6")
    r = run_cli("generate", "--stage", "echo", *args, env=ENV)
    assert r.returncode == 0, r.stderr
    return out, r


def test_the_plugin_stage_runs_and_the_summary_shows_its_split(run):
    out, r = run
    assert "echo rows      5 (5 new)" in r.stdout
    assert re.search(r"^echo +5 answers of [\d.]+ words$", r.stdout, re.M)  # the stage's own summary line
    rows = RunStore(out).read("echo")
    assert len(rows) == 5 and all(1 <= row["words"] <= 6 for row in rows)  # --echo-max-words reached the stage
    assert all(len(row["answer"].split()) == row["words"] for row in rows)


def test_cai_plugins_and_stats_show_the_plugin_stage(run, cli, tmp_path):
    out, _ = run
    listed = cli("plugins", env=ENV)
    assert "echo       -> echo/" in listed.stdout and "(cai_toy)  [runs only when named]" in listed.stdout
    s = cli("stats", out, "--plot", tmp_path / "p.png", env=ENV)
    assert s.returncode == 0, s.stderr
    assert "echo rows                   5" in s.stdout and "echo answers                5 (mean" in s.stdout
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    j = json.loads(cli("stats", out, "--json", env=ENV).stdout)
    assert j["rows"] == {"echo": 5} and j["echo"]["answers"] == 5 and j["sections"] == ["echo"]


def test_publish_builds_the_plugin_split_and_its_card(run, cli, tmp_path):
    out, _ = run
    r = cli("publish", out, "--repo", "me/toy", "--dry-run", tmp_path / "hub", "--test-fraction", "0.2", env=ENV)
    assert r.returncode == 0, r.stderr
    files = sorted((tmp_path / "hub" / "echo").glob("*.parquet"))
    assert files and sum(pq.read_metadata(f).num_rows for f in files) == 5
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "config_name: echo" in card and "a toy stage" in card and "- echo answers: 5" in card
    assert 'echo = load_dataset("me/toy", "echo")  # anything that reads prompt/answer' in card


def test_review_shows_the_plugin_split_in_a_real_browser(run, tmp_path):
    """`cai review` in a process that has the plug-in: the page lists the split and shows a row's answer."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (make browser)")
    from playwright.sync_api import sync_playwright

    out, _ = run
    answer = RunStore(out).read("echo")[0]["answer"]
    cai = Path(sys.executable).parent / "cai"
    server = subprocess.Popen(
        [str(cai), "review", str(out), "--port", "0", "--no-open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **ENV},
        start_new_session=True,
    )
    try:
        line = server.stdout.readline()  # "reviewing RUN at URL  (Ctrl-C to stop)"
        url = re.search(r"at (http://\S+)", line).group(1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(bypass_csp=True)  # lets the test poll with evaluated strings
            page.goto(url)
            page.wait_for_selector("#rows li")
            assert page.input_value("#split") == "echo" and page.locator("#rows li").count() == 5
            page.locator("#rows li").first.click()
            page.wait_for_function("document.querySelector('#detail').innerText.includes('answer')")
            assert answer in page.inner_text("#detail")
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=30)
