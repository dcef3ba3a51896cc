"""verl 0.9.1's own reward loop against a real `cai serve` on 127.0.0.1: the config key docs/serve.md gives, real
DataProto batches, RewardLoopWorker and RewardLoopManager.compute_rm_score (over Ray), in the venv `make verl`
builds (tests/verl_loop.py runs there)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, tiny_bert
from tests.test_reward_service import TOKEN, Server, free_port

# the venv `make verl` builds beside the main one; CAI_VERL_VENV names another (a checkout sharing a venv)
VERL = Path(os.environ.get("CAI_VERL_VENV") or Path(sys.prefix) / "verl")
REWARD_FILE = (
    "from cai.rewards import verl_compute_score as compute_score  # noqa: F401\n"  # the reward file docs/serve.md gives
)
RIGHT_WRONG = [
    ("What is 6 times 7?", "<think>6 * 7 = 42.</think> The answer is \\boxed{42}.", "42"),
    ("What is 6 times 7?", "<think>6 * 7 = 48.</think> The answer is \\boxed{48}.", "42"),
    ("What is 9 + 10?", "<think>9 + 10 = 19, as 10 + 9 = 19.</think>\nSo it is \\boxed{19}.", "19"),
    ("What is 9 + 10?", "<think>9 + 10 = 21</think> \\boxed{21}", "19"),
    ("How many legs have 3 cats?", "<think>Each cat has 4 legs: 3 * 4 = 12.</think> \\boxed{12}", "12"),
    ("How many legs have 3 cats?", "<think>Cats have 2 legs.</think> \\boxed{6}", "12"),
]
EMPTY = ("What is 2 + 2?", "", "4")  # a rollout that stopped at once: only the EOS


def verl_loop(runs: list[dict], tmp_path: Path) -> list[dict]:
    """verl's reward loop on each run's samples, in one process (one import of verl, one Ray session: each costs
    seconds). The first run finds its server as docs/serve.md says, in CAI_SERVE_URL; the others through verl's
    reward_kwargs (`url`)."""
    from cai.backends.models import resolve

    python = VERL / "bin" / "python"
    assert python.is_file(), f"{python}: verl 0.9.1's venv is missing: run `make verl`"
    reward = tmp_path / "cai_reward.py"
    reward.write_text(REWARD_FILE)
    first, *others = [{"reward_file": str(reward), **run} for run in runs]
    env = {**os.environ, "CAI_SERVE_URL": first.pop("url"), "CAI_SERVE_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"tokenizer": resolve("smollm2-135m"), "workers": 1, "runs": [first, *others]}))
    child = subprocess.run(
        [str(python), str(ROOT / "tests" / "verl_loop.py"), str(spec)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
    )
    assert child.returncode == 0, child.stderr[-4000:]
    out = json.loads(child.stdout.strip().splitlines()[-1])
    # the trap docs/serve.md warns of: verl's PPO path ignores the top-level key of verl before 0.9 (when a verl
    # reads it again, that note changes)
    assert out["legacy_key_read"] is False
    return out["runs"]


def batched(server: Server, samples: list) -> list[dict]:
    items = [{"prompt": p, "response": r, "reference": ref} for p, r, ref in samples]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    got = httpx.post(server.url + "/v1/rewards", json={"items": items}, headers=auth, timeout=300)
    assert got.status_code == 200, got.text
    return got.json()["items"]


@pytest.fixture(scope="module")
def tiny_prm(tmp_path_factory):
    """A tiny BERT token classifier (random weights), the kind `cai train-pm --kind prm` writes."""
    return tiny_bert(tmp_path_factory.mktemp("tiny-prm"), tokens=True)


RULES = [*RIGHT_WRONG, EMPTY]
HUGE = ("Write at length.", "<think>" + "and then " * 6000 + "</think> \\boxed{1}", "1")  # over --max-body
MODELS = [*RIGHT_WRONG[:4], EMPTY, HUGE]


@pytest.fixture(scope="module")
def verl_runs(tiny_backbone, tiny_prm, tmp_path_factory):
    """verl's scores of RULES from a rules-only server and of MODELS from a server with a PM and a PRM (and a
    small --max-body), beside one batched request of the same items to each."""
    rules = Server("--constitution", "reasoning")
    models = Server("--constitution", "reasoning", "--pm", tiny_backbone, "--prm", tiny_prm, "--max-body", "40000")
    try:
        runs = [{"url": rules.url, "samples": RULES}, {"url": models.url, "samples": MODELS}]
        out = verl_loop(runs, tmp_path_factory.mktemp("verl"))
        return out, batched(rules, RULES), batched(models, MODELS[:-1])
    finally:
        assert rules.stop() == 0
        assert models.stop() == 0


def same_keys(out: dict, keys: set[str]) -> None:
    assert all(set(k) == keys for k in out["worker"]["keys"]), out["worker"]["keys"]
    assert set(out["manager"]["keys"]) == keys


def test_verls_reward_loop_gets_the_constitutions_rewards(verl_runs):
    """R1-style rules: every sample the same keys, right beats wrong, an empty rollout earns 0, and verl's
    per-sample scores (its worker's and compute_rm_score's) equal one batched request's rewards."""
    (out, _), expected = verl_runs[0], [it["reward"] for it in verl_runs[1]]
    same_keys(out, {"score", "reward", "rules", "accuracy", "errors"})
    for path in ("worker", "manager"):
        scores = out[path]["scores"]
        assert scores == pytest.approx(expected, abs=1e-6), path  # rm_scores are float32
        assert all(scores[k] > scores[k + 1] for k in range(0, len(RIGHT_WRONG), 2)), scores
        assert scores[-1] == 0.0 and out[path]["extra"]["rules"][-1] == 0.0
        assert out[path]["extra"]["errors"] == [0.0] * len(RULES)


def test_a_failed_signal_or_a_refused_sample_never_raises_inside_verl(verl_runs):
    """A PM and a PRM beside the rules. The empty rollout has no step for the PRM (its prm is NaN, one error); an
    answer too large for the server (413) is split off from its batch and earns nothing with one error; verl's
    compute_rm_score, which indexes every sample by the first one's keys, assembles the step."""
    (_, out), expected = verl_runs[0], verl_runs[2]
    same_keys(out, {"score", "reward", "rules", "accuracy", "pm", "prm", "errors"})
    for path in ("worker", "manager"):
        scores, extra = out[path]["scores"], out[path]["extra"]
        assert scores[:-1] == pytest.approx([it["reward"] for it in expected], abs=1e-6), path
        for name in ("pm", "prm"):
            got = [math.nan if v is None else v for v in extra[name][:-1]]
            want = [math.nan if it["components"][name] is None else it["components"][name] for it in expected]
            assert got == pytest.approx(want, abs=1e-6, nan_ok=True), (path, name)
        assert extra["prm"][4] is None and extra["pm"][4] is not None and extra["errors"][4] == 1.0  # empty: no step
        assert scores[-1] == 0.0 and extra["errors"][-1] == 1.0  # the refused one
        assert extra["rules"][-1] is None and extra["pm"][-1] is None and extra["prm"][-1] is None
        assert extra["errors"][:4] == [0.0] * 4


def test_calls_that_arrive_together_go_as_one_request():
    """verl's way of calling, without verl: concurrent per-sample calls of the async function on one loop become
    few requests (one per 5 ms window, at most 256 samples each); the sync one answers the same on a kept-open
    connection; both give the batched rewards."""
    from cai.commands.serve.client import Servers, verl_item
    from cai.commands.serve.verl import Coalescer, compute_score_sync

    server = Server("--constitution", "reasoning")
    try:
        samples = [*RIGHT_WRONG, EMPTY] * 40  # 280 samples: two batches at least (the cap is 256)
        items = batched(server, samples)
        expected = [it["reward"] for it in items]
        coalescer = Coalescer(Servers(server.url, TOKEN))

        async def verl_like() -> list[dict]:
            return await asyncio.gather(*(coalescer.score(verl_item(r, ref, {"question": p})) for p, r, ref in samples))

        got = asyncio.run(verl_like())
        assert [g["score"] for g in got] == pytest.approx(expected)
        assert coalescer.samples == len(samples) and 2 <= coalescer.requests <= 4, coalescer.requests
        p, r, ref = samples[0]
        one = compute_score_sync("cai/math", r, ref, {"question": p}, url=server.url, token=TOKEN)
        assert one == {"score": expected[0], "reward": expected[0], **items[0]["components"], "errors": 0.0}
    finally:
        assert server.stop() == 0


def test_servers_that_do_not_answer_fail_every_waiting_call_with_the_reason():
    """No made-up reward: when no server answers after the retries, each of verl's calls raises, none hangs."""
    from cai.commands.serve.client import Servers, verl_item
    from cai.commands.serve.verl import Coalescer
    from cai.errors import CaiError

    coalescer = Coalescer(Servers(f"http://127.0.0.1:{free_port()}", TOKEN, attempts=2))

    async def calls() -> list:
        calls = (coalescer.score(verl_item("1", "1", None)) for _ in range(3))
        return await asyncio.gather(*calls, return_exceptions=True)

    got = asyncio.run(asyncio.wait_for(calls(), 30))
    assert all(isinstance(g, CaiError) and "no reward server answered after 2 attempts" in str(g) for g in got), got
