"""`cai review`: the page in a real browser (Playwright driving Debian's Chromium), its API's safety rules, the
decisions log, and `cai publish` applying the decisions."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest
from conftest import write

from cai.backends.scripted import ScriptedBackend
from cai.commands.review import query
from cai.commands.review.server import start
from cai.config import RunConfig
from cai.core import decisions
from cai.core.store import RunStore
from cai.core.views import PairView, StepsView
from cai.generate import generate

XSS = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>window.pwned=1</script>"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real run folder (sl and rl stages, scripted engine) whose prompts carry HTML: the scripted model
    repeats the prompt's first 40 characters, so answers carry it too."""
    folder = tmp_path_factory.mktemp("review")
    prompts = [XSS, SCRIPT, "**markdown** [link](http://x)", "How do I bake bread?", "Tell me about whales."]
    path = write(folder / "prompts.jsonl", "".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    config = RunConfig(prompts=str(path), out=str(folder / "run"), stage="all", rounds=2, principles_per_pair=2)
    generate(config, backend=ScriptedBackend(), log=lambda *_: None)
    return folder / "run"


@pytest.fixture
def fresh(run, tmp_path):
    """A copy of the run, so each test's decisions start from none."""
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def _get(url, token=None, host=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("X-Cai-Token", token)
    if host:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def test_api_asks_for_the_token_and_the_host_and_serves_no_files(fresh):
    server = start(str(fresh))
    try:
        assert server.url.startswith("http://127.0.0.1:")
        assert _get(server.url + "api/meta")[0] == 403  # no token
        assert _get(server.url + "api/meta", token="wrong")[0] == 403
        assert _get(server.url + "api/meta", token=server.token, host="evil.example:80")[0] == 403  # rebinding
        status, body, headers = _get(server.url + "api/meta", token=server.token)
        assert status == 200 and set(json.loads(body)["splits"]) == {"sft", "prefs"}
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        for path in ("../manifest.json", "manifest.json", "sft/part-00000.parquet", "%2e%2e/%2e%2e/etc/passwd"):
            assert _get(server.url + path, token=server.token)[0] == 404
        status, body, _ = _get(server.url + "api/row?split=../../etc&id=x", token=server.token)
        assert status == 400
    finally:
        server.stop()


def test_filters_page_and_row(fresh):
    store = RunStore(fresh)
    everything = query.page(store, query.parse({"split": "prefs"}, store.splits()))
    assert everything["total"] == store.count("prefs") == len(everything["rows"])
    hits = query.page(store, query.parse({"split": "sft", "q": "WHALES"}, store.splits()))
    assert hits["total"] == 1 and "whales" in hits["rows"][0]["prompt"]
    principle = everything["rows"][0]["principles"][0]
    by_principle = query.page(store, query.parse({"split": "prefs", "principle": principle}, store.splits()))
    assert 1 <= by_principle["total"] <= everything["total"]
    assert all(principle in r["principles"] for r in by_principle["rows"])
    high = query.page(store, query.parse({"split": "prefs", "p_min": "0.99"}, store.splits()))
    assert all(r["p_chosen"] >= 0.99 for r in high["rows"])
    rows = store.read("prefs")
    inconsistent = [
        r["id"]
        for r in rows
        if any((v["p_chosen_ab"] > 0.5) != (v["p_chosen_ba"] > 0.5) for v in r["votes"] if v["kind"] == "ai")
    ]
    got = query.page(store, query.parse({"split": "prefs", "flag": "inconsistent"}, store.splits()))
    assert sorted(r["id"] for r in got["rows"]) == sorted(inconsistent)
    paged = query.page(store, query.parse({"split": "sft", "offset": "2", "limit": "2"}, store.splits()))
    assert paged["total"] == 5 and len(paged["rows"]) == 2
    sft = store.read("sft")[0]
    full = query.row(store, "sft", sft["id"])
    assert len(full["revisions"]) == 2 and full["revisions"][0]["diff"]
    old = "".join(t for op, t in full["revisions"][0]["diff"] if op != "+")
    new = "".join(t for op, t in full["revisions"][0]["diff"] if op != "-")
    assert old == sft["initial"] and new == sft["revisions"][0]["revision"]


def test_diff_marks_words():
    assert query.diff("a b c", "a x c") == [["=", "a "], ["-", "b"], ["+", "x"], ["=", " c"]]


def test_flip_turns_votes_and_rules_to_the_new_chosen_side():
    row = {
        "id": "1",
        "chosen": "x",
        "rejected": "y",
        "p_chosen": 0.7,
        "tie": False,
        "votes": [{"principle": "p", "p_chosen_ab": 0.8, "p_chosen_ba": 0.6, "kind": "ai", "weight": 1.0}],
        "rules_chosen": [{"rule": "r", "passed": True}],
        "rules_rejected": [{"rule": "r", "passed": False}],
    }
    f = PairView().flip(row)
    assert (f["chosen"], f["rejected"], f["p_chosen"], f["ai_p_chosen"]) == ("y", "x", 1.0, pytest.approx(0.3))
    assert f["votes"][0]["p_chosen_ab"] == pytest.approx(0.4) and f["votes"][0]["p_chosen_ba"] == pytest.approx(0.2)
    assert f["rules_chosen"] == [{"rule": "r", "passed": False}]


def test_step_relabels_apply_to_step_rows():
    import pyarrow as pa

    table = pa.Table.from_pylist([{"id": "a", "completions": ["s1", "s2"], "labels": [True, True]}])
    out, done = decisions.apply(
        table, "steps", StepsView(), {("steps", "a"): {"action": "keep", "steps": {"1": False}}}
    )
    (got,) = out.to_pylist()
    assert got == {"id": "a", "completions": ["s1", "s2"], "labels": [True, False], "human_label": "relabel"}
    assert done["relabelled"] == 1


def test_bad_decisions_are_refused(fresh):
    server = start(str(fresh))
    try:
        for body in ({"split": "sft", "id": "nope", "action": "drop"}, {"split": "sft", "id": "x", "action": "flip"}):
            req = urllib.request.Request(
                server.url + "api/decide",
                data=json.dumps(body).encode(),
                headers={"X-Cai-Token": server.token, "Content-Type": "application/json"},
            )
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req)
            assert e.value.code == 400
        assert RunStore(fresh).reviews() == {}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (make browser)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield b
        b.close()


def test_review_in_a_real_browser(fresh, browser, tmp_path, cli):
    server = start(str(fresh))
    # The page's CSP would also block the test's own polling (it evaluates strings); bypassing it here makes
    # the check stronger: the text stays text with no CSP behind it.
    page = browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        page.goto(server.url)
        page.wait_for_selector("#rows li")
        assert page.input_value("#split") == "sft"  # the pipeline's order
        assert page.locator("#rows li").count() == 5
        # untrusted text is shown as text: the <img> and <script> are characters, not elements
        page.fill("#q", "onerror")
        page.wait_for_function("document.querySelectorAll('#rows li').length === 1")
        page.locator("#rows li").first.click()
        page.wait_for_selector("#detail .text")
        assert XSS in page.inner_text("#detail")
        assert page.locator("#detail img").count() == 0 and page.locator("img").count() == 0
        page.fill("#q", "script")
        page.wait_for_function(
            "document.querySelectorAll('#rows li').length === 1 && "
            "document.querySelector('#rows li').innerText.includes('pwned')"
        )
        page.locator("#rows li").first.click()
        page.wait_for_function("document.querySelector('#detail').innerText.includes('window.pwned')")
        assert page.evaluate("window.pwned") is None and page.locator("#detail script").count() == 0
        # drop an SFT row by keyboard
        page.fill("#q", "")
        page.wait_for_function("document.querySelectorAll('#rows li').length === 5")
        page.locator("body").click(position={"x": 5, "y": 5})
        page.keyboard.press("j")
        page.wait_for_selector("#rows li.selected")
        dropped_id = page.get_attribute("#rows li.selected", "data-id")
        page.keyboard.press("d")
        page.wait_for_function("document.querySelector('#rows li.selected .badge').textContent === 'drop'")
        # flip a preference pair by mouse, with a note
        page.select_option("#split", "prefs")
        page.wait_for_function("document.querySelector('#rows li .p') !== null")
        page.locator("#rows li").nth(1).click()
        page.wait_for_selector("#do-flip")
        flipped_id = page.get_attribute("#rows li.selected", "data-id")
        page.fill("#note", "the other answer is safer")
        page.click("#do-flip")
        page.wait_for_function("document.querySelector('#rows li.selected .badge').textContent === 'flip'")
        assert "reviewed 2 (2 changed)" in page.inner_text("#counts")
        page.screenshot(path=str(tmp_path / "review.png"))
        if os.environ.get("CAI_SCREENSHOT"):
            shutil.copy(tmp_path / "review.png", os.environ["CAI_SCREENSHOT"])
        # reload: the decisions are on disk and the page shows them
        page.reload()
        page.wait_for_selector("#rows li")
        assert page.input_value("#split") == "sft"  # the page starts afresh, not from the browser's form memory
        page.wait_for_function("document.querySelectorAll('#rows li .p').length === 0")  # sft rows have no p
        assert "reviewed 2 (2 changed)" in page.inner_text("#counts")
        page.select_option("#flag", "reviewed")
        page.wait_for_function("document.querySelectorAll('#rows li').length === 1")
        assert page.get_attribute("#rows li", "data-id") == dropped_id
        assert page.inner_text("#rows li .badge") == "drop"
        assert dialogs == []
    finally:
        page.close()
        server.stop()
    reviews = RunStore(fresh).reviews()
    assert reviews[("sft", dropped_id)]["action"] == "drop"
    assert reviews[("prefs", flipped_id)] | {"at": None} == {
        "split": "prefs",
        "id": flipped_id,
        "action": "flip",
        "note": "the other answer is safer",
        "steps": {},
        "at": None,
    }
    # publish applies them
    before = {r["id"]: r for r in RunStore(fresh).read("prefs")}
    r = cli("publish", fresh, "--repo", "me/data", "--dry-run", tmp_path / "hub", "--test-fraction", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "1 dropped, 1 flipped" in r.stdout
    import pyarrow.parquet as pq

    sft = pq.read_table(tmp_path / "hub" / "sft" / "train-00000-of-00001.parquet").to_pylist()
    assert len(sft) == 4 and dropped_id not in {x["id"] for x in sft}
    prefs = {x["id"]: x for x in pq.read_table(tmp_path / "hub" / "prefs" / "train-00000-of-00001.parquet").to_pylist()}
    got, old = prefs[flipped_id], before[flipped_id]
    assert got["chosen"] == old["rejected"] and got["human_label"] == "flip" and got["p_chosen"] == 1.0
    assert got["ai_p_chosen"] == pytest.approx(1 - old["p_chosen"])
    assert all(x["human_label"] is None for i, x in prefs.items() if i != flipped_id)
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "A person reviewed 2 rows" in card
    s = cli("stats", fresh)
    assert "reviewed by a person" in s.stdout and "1 dropped" in s.stdout


def test_steps_rows_in_a_real_browser_and_a_relabelled_step(browser, tmp_path):
    """A steps row: its prompt (a plain string) as a message, each step with its reads in both orders, and a
    relabel by mouse that publish applies to that one solution."""
    from conftest import ROOT

    out = tmp_path / "steps"
    config = RunConfig(
        constitution="reasoning",
        prompts=str(ROOT / "data" / "prompts" / "math.jsonl"),
        out=str(out),
        stage="steps",
        backend="scripted",
        limit=3,
        solutions_per_prompt=2,
    )
    generate(config, backend=ScriptedBackend(reply=lambda *a: "Halve it.\nAnswer: 4"), log=lambda *_: None)
    server = start(str(out))
    page = browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)  # lets the test poll
    try:
        page.goto(server.url)
        page.wait_for_selector("#rows li")
        assert page.input_value("#split") == "steps" and page.locator("#rows li").count() == 6
        assert "Halve it. / Answer: 4" in page.inner_text("#rows li >> nth=0")
        page.locator("#rows li").first.click()
        page.wait_for_selector("#detail .step")
        detail = page.inner_text("#detail")
        assert "solution 0 (sampled)" in detail and "step 2:" in detail and "shown (A)" in detail
        assert page.locator("#detail .role").count() == 1  # the prompt string is one message, not one per character
        first_id = page.get_attribute("#rows li >> nth=0", "data-id")
        before = RunStore(out).read("steps")
        mine = next(r for r in before if r["id"] == first_id)
        label = mine["step_class"][0] == "positive"  # the first step is always labelled
        page.locator("#detail .step >> nth=0").locator("button.relabel").click()
        page.wait_for_function("document.querySelector('#rows li.selected .badge').textContent !== 'new'")
    finally:
        page.close()
        server.stop()
    (decision,) = RunStore(out).reviews().values()
    assert decision["id"] == first_id and decision["steps"] == {"0": not label}
    table, done = decisions.apply(RunStore(out).table("steps"), "steps", StepsView(), RunStore(out).reviews())
    rows = {r["id"]: r for r in table.to_pylist()}
    assert rows[first_id]["labels"][0] is (not label) and done["relabelled"] == 1
    others = [r for r in before if r["id"] != first_id and r["prompt_id"] == rows[first_id]["prompt_id"]]
    assert others and all(rows[o["id"]]["labels"] == o["labels"] for o in others)  # the other solution untouched


def test_convincing_wrong_queue_and_first_wrong_step_reach_publish_and_the_prm(browser, tmp_path, cli):
    """Let's Verify's active learning: `cai review --queue convincing-wrong` lists the solutions graded wrong, the
    step labeller's most convincing (highest solution_p) first; a person marks a solution's first wrong step in the
    page, and `cai publish` and `cai train-pm --kind prm` learn the person's labels, not the labeller's."""
    from conftest import ROOT

    from cai.commands.publish import build
    from cai.train import prm

    out = tmp_path / "steps"
    config = RunConfig(
        constitution="reasoning",
        prompts=str(ROOT / "data" / "prompts" / "math.jsonl"),  # references 8, 19, 72
        out=str(out),
        stage="steps",
        backend="scripted",
        limit=3,
        solutions_per_prompt=2,
    )
    reply = lambda chat, sampling, seed, index: f"Work it out.\nAnswer: {8 if index % 2 else 7}"
    generate(config, backend=ScriptedBackend(reply=reply), log=lambda *_: None)
    store = RunStore(out)
    rows = store.read("steps")
    wrong = sorted((r for r in rows if r["correct"] is False), key=lambda r: (-r["solution_p"], r["id"]))
    assert 0 < len(wrong) < len(rows) and len({r["solution_p"] for r in wrong}) > 1
    got = query.page(store, query.Filters("steps", queue="convincing-wrong"))
    assert [r["id"] for r in got["rows"]] == [r["id"] for r in wrong] and got["total"] == len(wrong)
    r = cli("review", out, "--queue", "nope", "--no-open")
    assert r.returncode == 2 and "no split of" in r.stderr and "convincing-wrong" in r.stderr

    server = start(str(out))
    page = browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    try:
        page.goto(server.url + "?split=steps&queue=convincing-wrong")
        page.wait_for_selector("#rows li")
        assert page.input_value("#queue") == "convincing-wrong"
        listed = [
            page.get_attribute(f"#rows li >> nth={i}", "data-id") for i in range(page.locator("#rows li").count())
        ]
        assert listed == [r["id"] for r in wrong]
        assert "solution_p" in page.inner_text("#rows li >> nth=0")
        page.locator("#rows li").first.click()
        page.wait_for_selector("#detail .step")
        assert "final answer wrong" in page.inner_text("#detail")
        page.locator("#detail .step >> nth=0").locator("button.first-wrong").click()  # the first step is wrong
        page.wait_for_function("document.querySelector('#rows li.selected .badge').textContent !== 'new'")
        page.wait_for_selector("#detail .step.bad")
        # PRM800K: the steps after the first mistake are left unlabelled, not marked wrong
        assert page.locator("#detail .step.bad").count() == 1
        assert page.locator("#detail .step.unlabelled").count() == len(wrong[0]["steps"]) - 1
        assert "unlabelled (after the first mistake)" in page.inner_text("#detail .step >> nth=1")
        # the queue filter is the page's too: choosing none lists every steps row
        page.select_option("#queue", "")
        page.wait_for_function(f"document.querySelectorAll('#rows li').length === {len(rows)}")
    finally:
        page.close()
        server.stop()
    top = wrong[0]
    (decision,) = store.reviews().values()
    n = len(top["steps"])
    assert decision["id"] == top["id"] and decision["steps"] == {"0": False}  # that step, and nothing after it
    # publish: the person's labels, the labeller's soft labels kept beside them
    built = build(str(out), str(tmp_path / "hub"), test_fraction=0.0)
    assert built["reviewed"]["relabelled"] == 1
    import pyarrow.parquet as pq

    published = {
        x["id"]: x for f in (tmp_path / "hub").rglob("*.parquet") for x in pq.read_table(f).to_pylist() if "labels" in x
    }
    mine = published[top["id"]]
    assert mine["labels"] == [False] and mine["completions"] == top["steps"][:1] and mine["first_error"] == 0
    assert mine["step_class"] == ["negative"] + [None] * (n - 1) and mine["step_p"][0] == 0.0
    assert mine["ai_step_p"] == pytest.approx(top["step_p"]) and mine["human_label"] == "relabel"
    # the PRM trainer reads the run with the decision applied: the person's targets for that solution only, and
    # for every solution the labelled steps (up to the first mistake) only
    targets = {s.id: s.targets for s in prm.load_rows(str(out))}
    assert targets[top["id"]] == [0.0]
    assert all(targets[r["id"]] == pytest.approx(r["step_p"][: len(r["labels"])]) for r in rows if r["id"] != top["id"])
