"""Shared fixtures: the repo paths, a CLI runner, and one real vLLM engine for the whole session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARMLESS = ROOT / "constitution" / "harmless.yaml"
RED_TEAM = ROOT / "data" / "prompts" / "red_team.jsonl"


def run_cli(*args, env=None, timeout=900, cwd=None):
    """Run the installed `cai` console script, as a user would."""
    cai = Path(sys.executable).parent / "cai"
    return subprocess.run([str(cai), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=cwd or ROOT)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def engine():
    """The real engine on the embedded model, started once per test session (about a minute on CPU)."""
    from cai.backends.vllm import VLLMBackend

    backend = VLLMBackend("smollm2-135m", max_model_len=2048, kv_cache_gb=2, max_num_seqs=64, progress=False)
    yield backend
    backend.close()


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path
