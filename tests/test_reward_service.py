"""`cai serve`: a real uvicorn server on 127.0.0.1, called over HTTP as trainers call it (loopback only, bounded in
count and time)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from cai.core.rules import check_all, mean_score
from tests.conftest import ROOT, trl_grpo_steps, write

TOKEN = "test-token-0123456789"
SLOW = """name: slow
description: a rule whose pattern backtracks badly on some answers (each check times out at 0.5 s)
principles:
  - id: no-loop
    rules:
      - must_match: '(a|aa)+$'
  - id: short
    rules:
      - max_words: 50
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`cai serve` in a process of its own; stopped with SIGTERM, as a supervisor stops it."""

    def __init__(self, *args: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cai = Path(sys.executable).parent / "cai"
        self.proc = subprocess.Popen(
            [str(cai), "serve", "--port", str(self.port), *args],
            env={**os.environ, "CAI_SERVE_TOKEN": TOKEN, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300  # a server that judges with the model starts its engine first
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"cai serve exited: {self.proc.stderr.read()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError("cai serve did not answer /health within 300 s")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server():
    s = Server("--constitution", "reasoning", "--max-body", "20000", "--max-items", "8")
    yield s
    assert s.stop() == 0


def test_security_defaults(server):
    url = server.url + "/v1/rewards"
    body = {"items": [{"prompt": "q", "response": "a"}]}
    assert httpx.post(url, json=body).status_code == 401
    wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    host = httpx.post(url, json=body, headers={**AUTH, "Host": "evil.example:80"})
    assert host.status_code == 403 and "is not this loopback server's" in host.json()["error"]
    origin = httpx.post(url, json=body, headers={**AUTH, "Origin": "http://evil.example"})
    assert origin.status_code == 403
    big = httpx.post(
        url, content=b'{"items": [' + b" " * 30000 + b"]}", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert big.status_code == 413

    def chunks():  # no Content-Length: counted as it streams in
        yield b'{"items": ['
        for _ in range(30):
            yield b" " * 1000
        yield b"]}"

    streamed = httpx.post(url, content=chunks(), headers=AUTH)
    assert streamed.status_code == 413
    many = httpx.post(url, json={"items": [{"prompt": "q", "response": "a"}] * 9}, headers=AUTH)
    assert many.status_code == 413 and "at most 8" in many.json()["error"]
    bad = httpx.post(url, content=b"{not json", headers=AUTH)
    assert bad.status_code == 400 and bad.json()["error"].startswith("bad JSON") and "\n" not in bad.json()["error"]
    missing = httpx.post(url, json={"items": [{"prompt": "q"}]}, headers=AUTH)
    assert missing.status_code == 400 and missing.json()["error"] == "items[0]: needs 'prompt' and 'response'"
    weights = httpx.post(url, json={**body, "weights": {"pm": 1}}, headers=AUTH)
    assert weights.status_code == 400 and "'pm' is not a signal of this server" in weights.json()["error"]
    assert httpx.get(server.url + "/health").status_code == 200  # liveness needs no token
    assert httpx.get(server.url + "/metrics").status_code == 401


ANSWERS = [
    ("What is 6 times 7?", "<think>6 * 7 = 42.</think> The answer is \\boxed{42}.", "42"),
    ("What is 9 + 10?", "<think>9 + 10 = 19</think> \\boxed{21}", "19"),
    ("Name a colour.", "Blue.", None),
]


def local(response: str, reference: str | None) -> tuple[float | None, list]:
    from cai.core.constitution import load

    const = load("reasoning")
    results = check_all(const.rules, response, reference)
    return mean_score(results, {r.id: r for r in const.rules}), results


def rules_share() -> float:
    """The default weight of the rules other than accuracy: their share of the reasoning constitution's rule weights."""
    from cai.core.constitution import load

    rules = load("reasoning").rules
    return sum(r.weight for r in rules if r.kind != "accuracy") / sum(r.weight for r in rules)


def local_parts(response: str, reference: str | None) -> dict[str, float | None]:
    """The two rule signals: the rules other than accuracy, and the accuracy rules (which read the reference)."""
    from cai.core.constitution import load

    const = load("reasoning")
    out = {}
    for name, graded in (("rules", False), ("accuracy", True)):
        mine = tuple(r for r in const.rules if (r.kind == "accuracy") == graded)
        out[name] = mean_score(check_all(mine, response, reference), {r.id: r for r in mine})
    return out


def test_native_and_openrlhf_rewards_equal_the_local_rules(server):
    items = [{"prompt": q, "response": a, "reference": ref} for q, a, ref in ANSWERS]
    got = httpx.post(server.url + "/v1/rewards", json={"items": items}, headers=AUTH)
    assert got.status_code == 200, got.text
    out = got.json()
    for (_q, a, ref), reward, item in zip(ANSWERS, out["rewards"], out["items"], strict=True):
        expected, results = local(a, ref)
        # the reward: every rule weighed as the constitution weighs it (the two rule signals by their share of it)
        parts = local_parts(a, ref)
        assert reward == pytest.approx(expected) and item["components"] == pytest.approx(parts)
        assert [(r["rule"], r["passed"]) for r in item["rules"]] == [(r.rule, r.passed) for r in results]
    assert out["rewards"][0] > out["rewards"][1]  # right and well-formed beats wrong
    # OpenRLHF's wire format: the query is prompt + response, the labels are the references
    query = {
        "query": [q + a for q, a, _ in ANSWERS],
        "prompts": [q for q, _, _ in ANSWERS],
        "labels": [ref for _, _, ref in ANSWERS],
    }
    r = httpx.post(server.url + "/get_reward", json=query, headers=AUTH)
    assert r.status_code == 200
    # as OpenRLHF's client posts it (requests.post(url, json=data, headers={"Content-Type": ...})): the token in the
    # --remote_rm_url; elsewhere a token in the URL is refused
    plain = httpx.post(
        server.url + f"/get_reward?token={TOKEN}", json=query, headers={"Content-Type": "application/json"}
    )
    assert plain.status_code == 200 and plain.json()["rewards"] == r.json()["rewards"]
    assert httpx.post(server.url + "/get_reward?token=wrong", json=query).status_code == 401
    assert httpx.post(server.url + f"/v1/rewards?token={TOKEN}", json={"items": []}).status_code == 401
    assert r.json()["rewards"] == pytest.approx(out["rewards"]) and r.json()["scores"] == r.json()["rewards"]
    assert r.json()["extra_logs"]["cai/rules"] == pytest.approx([local_parts(a, ref)["rules"] for _, a, ref in ANSWERS])
    # verl's custom reward function signature, calling the server
    from cai.commands.serve.client import verl_compute_score

    q, a, ref = ANSWERS[0]
    got = verl_compute_score("math", a, ref, {"question": q}, url=server.url, token=TOKEN)
    reward = pytest.approx(out["rewards"][0])
    parts = local_parts(a, ref)
    assert got == {
        "score": reward,
        "reward": reward,
        "rules": pytest.approx(parts["rules"]),
        "accuracy": pytest.approx(parts["accuracy"]),
        "errors": 0.0,
    }
    metrics = httpx.get(server.url + "/metrics", headers=AUTH).text
    assert 'cai_serve_requests_total{code="200",endpoint="rewards"}' in metrics
    assert "cai_serve_request_seconds_bucket" in metrics and "cai_serve_queue_items 0.0" in metrics


def test_overload_is_429_and_a_timed_out_check_is_an_error_not_a_hang(tmp_path):
    constitution = write(tmp_path / "slow.yaml", SLOW)
    s = Server("--constitution", str(constitution), "--queue", "4", "--max-items", "4")
    try:
        slow = {"items": [{"prompt": "q", "response": "a" * 3000 + "b"}] * 4}
        answers: dict = {}

        def busy():
            answers["slow"] = httpx.post(s.url + "/v1/rewards", json=slow, headers=AUTH, timeout=60)

        t = threading.Thread(target=busy)
        t.start()
        time.sleep(0.3)  # the four checks hold the queue for at least 0.5 s
        over = httpx.post(s.url + "/v1/rewards", json={"items": [{"prompt": "q", "response": "ok"}]}, headers=AUTH)
        t.join(60)
        assert over.status_code == 429 and over.headers["retry-after"] == "1"
        slow_out = answers["slow"]
        assert slow_out.status_code == 200
        for item in slow_out.json()["items"]:
            assert item["errors"] == ["no-loop.must_match: timed out after 0.5s"]
            assert item["components"]["rules"] == 1.0  # the unknown check is left out: max_words alone
        assert (
            httpx.post(
                s.url + "/v1/rewards", json={"items": [{"prompt": "q", "response": "ok"}]}, headers=AUTH
            ).status_code
            == 200
        )  # the queue drained
    finally:
        assert s.stop() == 0


def test_sigterm_finishes_the_requests_in_flight(tmp_path):
    constitution = write(tmp_path / "slow.yaml", SLOW)
    s = Server("--constitution", str(constitution))
    answers: dict = {}

    def slow():
        body = {"items": [{"prompt": "q", "response": "a" * 3000 + "b"}] * 2}
        answers["r"] = httpx.post(s.url + "/v1/rewards", json=body, headers=AUTH, timeout=60)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    assert s.stop() == 0
    t.join(60)
    assert answers["r"].status_code == 200 and len(answers["r"].json()["rewards"]) == 2


def test_two_replicas_lose_no_request_when_one_dies():
    from cai.rewards import remote_reward_funcs

    a = Server("--constitution", "reasoning")
    b = Server("--constitution", "reasoning")
    try:
        (reward,) = remote_reward_funcs([a.url, b.url], TOKEN)
        prompts = [q for q, _, _ in ANSWERS]
        completions = [[{"role": "assistant", "content": ans}] for _, ans, _ in ANSWERS]
        refs = [ref for _, _, ref in ANSWERS]
        expected = [local(ans, ref)[0] for _, ans, ref in ANSWERS]

        async def calls(n: int) -> list:
            return await asyncio.gather(*(reward(prompts, completions, reference=refs) for _ in range(n)))

        assert all(got == pytest.approx(expected) for got in asyncio.run(calls(10)))
        os.killpg(a.proc.pid, signal.SIGKILL)  # one replica dies without a word
        a.proc.wait()
        after = asyncio.run(calls(20))
        assert len(after) == 20 and all(got == pytest.approx(expected) for got in after)
        assert reward.servers.failovers >= 1  # the dead one was tried and skipped
    finally:
        a.stop()
        assert b.stop() == 0


def test_grpo_trainer_trains_on_rewards_from_the_server(server, tmp_path):
    """Two GRPO steps with the embedded model, the reward from `cai serve` over HTTP (TRL awaits it)."""
    from cai.rewards import remote_reward_funcs

    funcs = remote_reward_funcs(server.url, TOKEN)
    trainer, logged = trl_grpo_steps(funcs, [(q, ref) for q, _, ref in ANSWERS[:2]], tmp_path / "grpo")
    assert trainer.state.global_step == 2 and "rewards/cai_remote/mean" in logged, sorted(logged)
    served = httpx.get(server.url + "/metrics", headers=AUTH).text
    assert 'cai_serve_requests_total{code="200",endpoint="rewards"}' in served


def test_bad_serve_input_is_one_line(cli, tmp_path):
    prm = write(tmp_path / "prm" / "config.json", json.dumps({"architectures": ["BertForTokenClassification"]}))
    r = cli("serve", "--constitution", "reasoning", "--pm", prm.parent, "--port", str(free_port()))
    assert r.returncode == 2 and "but this needs a pairwise" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    w = cli("serve", "--constitution", "reasoning", "--weights", "judge=1", "--port", str(free_port()))
    assert w.returncode == 2 and "--weights 'judge=1'" in w.stderr


OPENRLHF = """
import asyncio, json, sys
from openrlhf.utils.agent import SingleTurnAgentExecutor

url, queries, prompts, labels = sys.argv[1], *json.loads(sys.argv[2])
executor = SingleTurnAgentExecutor(remote_rm_url=[url])
print(json.dumps(asyncio.run(executor._fetch_rewards_via_http(queries, prompts, labels))))
"""


def test_openrlhfs_own_client_gets_the_local_rewards(server):
    """OpenRLHF 0.11.2's reward client (its agent executor's HTTP path, aiohttp), installed by `make setup` in a
    folder of its own, posts to /get_reward with the token in its --remote_rm_url."""
    folder = Path(sys.prefix) / "openrlhf"
    assert (folder / "openrlhf").is_dir(), f"{folder}: OpenRLHF 0.11.2 is missing: run `make setup`"
    queries = [q + a for q, a, _ in ANSWERS]
    data = json.dumps([queries, [q for q, _, _ in ANSWERS], [ref for _, _, ref in ANSWERS]])
    child = subprocess.run(
        [sys.executable, "-c", OPENRLHF, f"{server.url}/get_reward?token={TOKEN}", data],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(folder)},
    )
    assert child.returncode == 0, child.stderr[-3000:]
    (answer,) = json.loads(child.stdout.strip().splitlines()[-1])
    assert answer["rewards"] == pytest.approx([local(a, ref)[0] for _, a, ref in ANSWERS])


@pytest.mark.engine
def test_the_models_own_judgements_are_served_through_the_engine():
    """--self-eval and --grm: the real engine with the embedded model, P(True) and the GRM's read score of each
    response (a GRPO group of one prompt judged together), combined with the rules."""
    s = Server("--constitution", "reasoning", "--self-eval", "--grm", "--max-items", "8")
    try:
        q = ANSWERS[0][0]
        items = [{"prompt": q, "response": a, "reference": "42"} for a in ("\\boxed{42}", "\\boxed{41}")]
        r = httpx.post(s.url + "/v1/rewards", json={"items": items}, headers=AUTH, timeout=600)
        assert r.status_code == 200, r.text
        for item in r.json()["items"]:
            c = item["components"]
            assert set(c) == {"rules", "accuracy", "p_true", "grm"} and item["errors"] == []
            assert 0 < c["p_true"] < 1 and 1 <= c["grm"] <= 9
            # the two rule signals weigh their shares of the constitution's rule weights (together 1), the others 1
            w = rules_share()
            rules = w * c["rules"] + (1 - w) * c["accuracy"]
            assert item["reward"] == pytest.approx((rules + c["p_true"] + (c["grm"] - 1) / 8) / 3)
        assert httpx.get(s.url + "/health").json()["signals"] == ["rules", "accuracy", "p_true", "grm"]
    finally:
        assert s.stop() == 0


def test_a_bare_cai_serve_names_the_missing_constitution(cli):
    """No --constitution: one line naming it, exit 2, nothing served (no shipped constitution is a sensible default
    reward: the rules a run trains on are the user's choice)."""
    r = cli("serve", "--port", str(free_port()), timeout=60)
    assert r.returncode == 2
    assert "Missing option '--constitution'" in r.stderr and "Traceback" not in r.stderr
    bad = cli("serve", "--constitution", "no-such-constitution", "--port", str(free_port()), timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "no-such-constitution" in bad.stderr


def test_a_code_constitution_says_which_sandbox_runs_programs_and_a_flood_does_not_take_it_down():
    """/health names the sandbox of `accuracy: code`; answers that print as fast as they can are scored 0 (their
    output capped while it streams) and the server answers the next request."""
    from cai.core import sandbox

    s = Server("--constitution", "code")
    try:
        health = httpx.get(s.url + "/health").json()
        assert health["code_sandbox"] == [f"code sandbox   {sandbox.describe('bubblewrap')}"]
        tests = json.dumps([{"input": "3", "output": "9"}])
        flood = "<think>x</think>\n```python\nwhile True:\n    print('9' * 100000)\n```"
        right = "<think>x</think>\n```python\nprint(int(input()) ** 2)\n```"
        items = [{"prompt": "q", "response": r, "reference": tests} for r in (flood, flood, flood, right)]
        out = httpx.post(s.url + "/v1/rewards", json={"items": items}, headers=AUTH, timeout=120).json()["items"]
        scores = [i["components"]["accuracy"] for i in out]  # accuracy: code is the accuracy signal
        assert scores[:3] == [scores[0]] * 3 and scores[3] > scores[0]
        assert httpx.get(s.url + "/health").status_code == 200
    finally:
        assert s.stop() == 0
