"""RunConfig: every setting of a `cai generate` run, from a YAML file and/or flags; unknown keys fail."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from cai.errors import CaiError

STAGES = ("sl", "rl", "all")
PAIRS = ("sampled", "revision", "file")
JUDGES = ("logprob", "cot", "grm")


@dataclass
class RunConfig:
    # what to run on
    constitution: str = "constitution/harmless.yaml"
    prompts: str = ""
    out: str = ""
    stage: str = "all"  # sl, rl, or both in one process with one engine
    prompt_column: str | None = None
    limit: int | None = None  # use only the first N prompts
    model: str = "smollm2-135m"  # the embedded default; a local HF folder or a Hub id also work
    backend: str = "vllm"
    templates: str | None = None  # a folder whose templates override the shipped ones
    seed: int = 0
    force: bool = False  # allow writing into a non-empty folder that is not a cai run

    # SL-CAI: critique and revision
    rounds: int = 4  # Bai et al. revised up to four times, a principle sampled per round
    max_tokens: int = 256  # per generated turn
    temperature: float = 0.7
    top_p: float = 0.95
    chunk_size: int = 256  # prompts per shard: wide enough to keep the engine's batch full

    # RL-CAI: pairwise AI feedback
    pairs: str = "sampled"  # sampled: two answers sampled per prompt; revision: initial vs final revision; file
    pairs_from: str | None = None  # with pairs=revision: another run's folder; with pairs=file: the pairs file
    pair_temperature: float = 1.0  # sampled candidates need diversity, or the two answers are often identical
    judge: str = "logprob"  # logprob: read P(A), P(B) in one forward pass; cot: reason first, then read
    principles_per_pair: int = 4  # an ensemble of principles judges each pair (Bai et al. ensembled over 16)
    cot_clamp: float = 0.4  # chain-of-thought labels are clamped into [cot_clamp, 1 - cot_clamp] (Bai et al.)
    cot_max_tokens: int = 256  # also the budget of a GRM judgement's principles and critiques
    grm_samples: int = 4  # GRM: judgements sampled per pair (inference-time scaling); votes are summed
    grm_meta: bool = False  # GRM: keep the half of the samples the model itself rates most likely correct
    grm_meta_pm: str | None = None  # GRM: rank the samples with this preference model (cai train-pm) instead
    grm_seed_principles: bool = True  # GRM: show the constitution's principles as a starting point

    # engine (vLLM)
    dtype: str = "auto"  # auto: float32 on CPU (no bf16 units on common CPUs), the model's dtype on GPU
    max_model_len: int = 4096
    gpu_memory_utilization: float = 0.90
    kv_cache_gb: int = 4  # CPU only: the KV cache size; vLLM's default share of RAM fails on busy hosts
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    enforce_eager: bool | None = None  # auto: on for CPU, where compile warm-up costs minutes per start
    prefix_caching: bool = True  # few-shot and system turns are shared by every request of a round
    max_num_seqs: int = 256

    # server backend (--backend openai)
    base_url: str | None = None  # one or more comma-separated URLs of OpenAI-compatible servers
    api_key: str | None = None
    concurrency: int = 64  # requests in flight across all servers
    max_attempts: int = 6  # tries per request on transient errors (connection, timeout, 429, 5xx)
    retry_seconds: float = 300.0  # and no retrying past this long per request

    def __post_init__(self):
        self.validate()

    def validate(self, where: dict[str, str] | None = None) -> None:
        where = where or {}

        def bad(key, message):
            raise CaiError(f"{where.get(key, '')}{_flag(key)}: {message}")

        hints = typing.get_type_hints(RunConfig)
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name], bad)
        for key, choices in (("stage", STAGES), ("pairs", PAIRS), ("judge", JUDGES)):
            if getattr(self, key) not in choices:
                bad(key, f"must be one of {', '.join(choices)}, got {getattr(self, key)!r}")
        for key in ("rounds", "max_tokens", "chunk_size", "principles_per_pair", "cot_max_tokens", "max_model_len",
                    "tensor_parallel_size", "data_parallel_size", "max_num_seqs", "concurrency", "max_attempts", "grm_samples"):
            if getattr(self, key) < 1:
                bad(key, f"must be at least 1, got {getattr(self, key)}")
        if self.limit is not None and self.limit < 1:
            bad("limit", f"must be at least 1, got {self.limit}")
        if not 0 <= self.temperature <= 5 or not 0 <= self.pair_temperature <= 5:
            bad("temperature", "must be between 0 and 5")
        if not 0 < self.top_p <= 1:
            bad("top_p", f"must be in (0, 1], got {self.top_p}")
        if not 0 <= self.cot_clamp <= 0.5:
            bad("cot_clamp", f"must be in [0, 0.5], got {self.cot_clamp}")
        if not 0 < self.gpu_memory_utilization <= 1:
            bad("gpu_memory_utilization", f"must be in (0, 1], got {self.gpu_memory_utilization}")
        if not self.kv_cache_gb > 0:
            bad("kv_cache_gb", f"must be positive, got {self.kv_cache_gb}")

    def identity(self, constitution_sha: str, templates_sha: str) -> dict:
        """The settings that decide what a row contains. A run folder holds rows of one identity only:
        resuming with a different one would mix incompatible data, so it is refused."""
        keep = ("model", "seed", "rounds", "max_tokens", "temperature", "top_p", "pairs", "pair_temperature",
                "judge", "principles_per_pair", "cot_clamp", "cot_max_tokens", "grm_samples", "grm_meta",
                "grm_meta_pm", "grm_seed_principles")
        return {"constitution_sha256": constitution_sha, "templates_sha256": templates_sha,
                **{k: getattr(self, k) for k in keep}}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _flag(key: str) -> str:
    return f"'{key}' (--{key.replace('_', '-')})"


def _check_type(key, value, hint, bad):
    allowed = typing.get_args(hint) or (hint,)
    if value is None:
        if type(None) not in allowed:
            bad(key, "is required")
        return
    for t in allowed:
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if t in (str, bool) and type(value) is t:
            return
    names = " or ".join("nothing" if t is type(None) else t.__name__ for t in allowed)
    bad(key, f"must be {names}, got {type(value).__name__} {value!r}")


def load(path: str | Path | None = None, **overrides) -> RunConfig:
    """A RunConfig from a YAML file (optional) with flag values on top. Flags given as None are unset."""
    values, where = {}, {}
    known = {f.name for f in fields(RunConfig)}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CaiError(f"{path}: config file not found") from None
        except UnicodeDecodeError:
            raise CaiError(f"{path}: not UTF-8 text") from None
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark
            raise CaiError(f"{path}:{mark.line + 1 if mark else '?'}: invalid YAML: {e.problem}") from None
        if node is not None:
            if not isinstance(node, yaml.MappingNode):
                raise CaiError(f"{path}:1: a run config must be a mapping of settings")
            for key_node, value_node in node.value:
                key = key_node.value.replace("-", "_")
                line = key_node.start_mark.line + 1
                if key not in known:
                    raise CaiError(f"{path}:{line}: unknown key {key_node.value!r}")
                values[key] = yaml.SafeLoader(text).construct_object(value_node, deep=True)
                where[key] = f"{path}:{line}: "
    for key, value in overrides.items():
        if key not in known:
            raise CaiError(f"unknown setting {key!r}")
        if value is not None:
            values[key] = value
            where.pop(key, None)
    config = RunConfig.__new__(RunConfig)
    for f in fields(RunConfig):
        default = f.default if f.default is not dataclasses.MISSING else None
        setattr(config, f.name, values.get(f.name, default))
    config.validate(where)
    return config
