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
    return subprocess.run(
        [str(cai), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd or ROOT,
    )


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


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory):
    """A tiny BERT built from a config (random weights) with the embedded MiniLM tokenizer."""
    return tiny_bert(tmp_path_factory.mktemp("tiny"))


def tiny_bert(folder: Path, tokens: bool = False) -> str:
    """A tiny BERT (random weights) with the embedded MiniLM tokenizer in `folder`: a scalar head on the sequence,
    or with `tokens` on every token (the kind `cai train-pm --kind prm` writes)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertForTokenClassification

    from cai.backends.models import resolve_backbone

    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone("all-minilm-l6-v2"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
    )
    (BertForTokenClassification if tokens else BertForSequenceClassification)(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def trl_sft_step(shards: list[Path], out: Path, max_length: int):
    """One step of TRL's SFTTrainer on the embedded model over parquet shards, read as they are: the check that
    an SFT split is in a format TRL trains on. Returns the training output."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    from cai.backends.models import resolve

    dataset = datasets.load_dataset("parquet", data_files=[str(p) for p in shards], split="train")
    # bf16 off: TRL turns it on by default, and on a CPU without bf16 units every matmul takes the slow path
    args = dict(max_steps=1, per_device_train_batch_size=2, report_to=[], use_cpu=True, save_strategy="no", bf16=False)
    return SFTTrainer(
        model=resolve("smollm2-135m"),
        args=SFTConfig(output_dir=str(out), max_length=max_length, **args),
        train_dataset=dataset,
    ).train()


def trl_grpo_steps(reward_funcs, questions: list[tuple[str, str]], out: Path):
    """Two GRPO steps of TRL's GRPOTrainer on the embedded model, on CPU, with `reward_funcs` and a dataset of
    (question, reference) twice over. Returns the trainer and the names it logged."""
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    from cai.backends.models import resolve

    dataset = datasets.Dataset.from_list(
        [{"prompt": [{"role": "user", "content": q}], "reference": ref} for q, ref in questions] * 2
    )
    args = GRPOConfig(
        output_dir=str(out),
        max_steps=2,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=12,
        learning_rate=1e-6,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        seed=0,
    )
    trainer = GRPOTrainer(model=resolve("smollm2-135m"), reward_funcs=reward_funcs, args=args, train_dataset=dataset)
    trainer.train()
    return trainer, {k for entry in trainer.state.log_history for k in entry}


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def scripted_config(tmp_path, **kw):
    """A run of the harmless constitution over the red-team prompts on the scripted engine, into tmp_path/run."""
    from cai.config import RunConfig

    base = dict(constitution=str(HARMLESS), prompts=str(RED_TEAM), out=str(tmp_path / "run"), backend="scripted")
    return RunConfig(**{**base, **kw})


def run_stage(name: str, config, backend, prompts, constitution=HARMLESS):
    """One stage's `run` on one chunk, the way the generate loop calls it (after its checks)."""
    from cai import stages
    from cai.core.constitution import load
    from cai.core.context import RunContext
    from cai.core.prompts import Templates
    from cai.core.store import RunStore

    stage = stages.get(name)(config)
    ctx = RunContext(
        config, load(constitution), Templates(config.run.templates), RunStore(config.run.out), backend=backend
    )
    stage.check(ctx)
    return stage.run(ctx, list(prompts))
