"""`cai stats` and `cai publish`: summaries, plot, the Hub folder, the card, and bounded upload retries."""

import http.server
import json
import threading

import pytest
from conftest import HARMLESS, RED_TEAM

from cai import backends
from cai.commands import stats
from cai.config import RunConfig
from cai.generate import generate


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    config = RunConfig(
        constitution=str(HARMLESS),
        prompts=str(RED_TEAM),
        out=str(out),
        backend="scripted",
        rounds=2,
        limit=40,
        principles_per_pair=3,
    )
    generate(config, backend=backends.get("scripted")(), log=lambda *_: None)
    return out


def test_stats_numbers_match_the_data(run):
    from cai.core.store import RunStore

    s = stats.compute(run)
    prefs = RunStore(run).read("prefs")
    assert s["rows"] == {"sft": 40, "prefs": 40}
    assert s["p_chosen"]["mean"] == pytest.approx(sum(r["p_chosen"] for r in prefs) / 40)
    assert sum(r["len"] for r in s["p_chosen_histogram"]) == 40
    assert sum(r["len"] for r in s["principles_per_round"]) == 80  # 40 prompts x 2 rounds
    votes = [v for r in prefs for v in r["votes"]]
    from cai.commands.evaluation.metrics import consistent as is_consistent

    consistent = sum(map(is_consistent, votes)) / len(votes)
    assert s["position_consistent"] == pytest.approx(consistent)
    assert 0 <= s["revision_unchanged_share"] <= 1


def test_stats_cli_table_json_and_plot(run, tmp_path, cli):
    r = cli("stats", run, "--plot", tmp_path / "p.png")
    assert r.returncode == 0 and "position-consistent votes" in r.stdout and "principle usage per round" in r.stdout
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    j = cli("stats", run, "--json")
    assert json.loads(j.stdout)["rows"]["prefs"] == 40
    bad = cli("stats", tmp_path)
    assert bad.returncode == 2 and "not a cai run" in bad.stderr


def test_publish_dry_run_folder_loads_and_card_parses(run, tmp_path, cli):
    folder = tmp_path / "hub"
    r = cli("publish", run, "--repo", "me/harmless-cai", "--dry-run", folder, "--test-fraction", "0.25")
    assert r.returncode == 0, r.stderr
    import datasets
    from huggingface_hub import DatasetCard

    sft, prefs = datasets.load_dataset(str(folder), "sft"), datasets.load_dataset(str(folder), "prefs")
    assert sft["train"].num_rows + sft["test"].num_rows == 40 and sft["test"].num_rows > 0
    assert set(sft["test"]["id"]) == set(prefs["test"]["id"])  # the split is by prompt, same in both configs
    assert not set(sft["train"]["id"]) & set(sft["test"]["id"])
    card = DatasetCard.load(folder / "README.md")
    assert {c["config_name"] for c in card.data.configs} == {"sft", "prefs"}
    assert card.data.license == "cc-by-4.0" and "constitutional-ai" in card.data.tags
    assert "no-dangerous-help" in card.text and 'load_dataset("me/harmless-cai", "prefs")' in card.text
    assert (folder / "constitution-harmless.yaml").is_file()


def test_publish_without_token_is_one_line(run, tmp_path, cli):
    r = cli("publish", run, "--repo", "me/x", env={"HF_TOKEN": "", "HF_HOME": str(tmp_path)})
    assert r.returncode == 2 and r.stderr.startswith("cai: error: no Hugging Face token")


class _Failing(http.server.BaseHTTPRequestHandler):
    hits = 0

    def _fail(self):
        type(self).hits += 1
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "overloaded"}')

    do_GET = do_POST = do_PUT = do_HEAD = _fail

    def log_message(self, *args):
        pass


def test_upload_retries_are_bounded(run, tmp_path, cli):
    """A Hub that answers 503 forever: the upload gives up after its bound, with one clear line."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {
            "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
            "HF_TOKEN": "hf_test_token",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HOME": str(tmp_path),
        }
        r = cli("publish", run, "--repo", "me/x", "--attempts", "3", env=env, timeout=300)
    finally:
        server.shutdown()
    assert r.returncode == 2 and "failed after 3 attempt(s)" in r.stderr and "Traceback" not in r.stderr
    assert 3 <= _Failing.hits <= 3 * 10  # our 3 attempts (the client may retry a little inside each)


def test_transient_classification():
    import requests

    from cai.backends.retries import transient

    response = requests.Response()
    response.status_code = 404
    assert not transient(requests.HTTPError(response=response))
    response.status_code = 429
    assert transient(requests.HTTPError(response=response))
    assert transient(requests.ConnectionError())
    assert not transient(ValueError())
