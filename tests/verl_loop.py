"""verl 0.9's own reward loop on real DataProto batches, run with the verl venv's Python (`make verl`).

    python tests/verl_loop.py SPEC.json   ->  one JSON line on stdout

SPEC: {"tokenizer": folder, "workers": 2, "runs": [{"reward_file": path, "name": "compute_score", "url"?: the
server (else CAI_SERVE_URL), "repeat": 1, "ray": true, "samples": [[prompt, response, reference], ...]}, ...]}:
several runs share one import of verl and one Ray session (each costs seconds). The config is verl's
ppo_trainer.yaml composed through Hydra with the overrides docs/serve.md gives; prompts are chat-templated and
left-padded, responses tokenized with an EOS and right-padded (an empty response is the EOS alone: a rollout
that stopped at once). Scored by verl's RewardLoopWorker in this process (its naive reward manager, per-sample
tasks on one loop) and, with "ray", by RewardLoopManager.compute_rm_score over Ray workers, as the PPO trainer
scores a step. Prints per run and path the per-sample scores (the rm_scores row sums), the extra-info columns
and the seconds of each repeat, and whether verl reads the legacy top-level reward key. Used by
tests/test_verl.py and bench/verl_rewards.py; the token is CAI_SERVE_TOKEN.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path


def legacy_key_read(spec: dict, run: dict) -> bool:
    """Whether verl's PPO path reads the top-level `custom_reward_function` key of verl before 0.9 (docs/serve.md
    warns that it does not: only the fully-async entry point copies it under `reward.`)."""
    import verl
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.reward import get_custom_reward_fn

    folder = Path(verl.__file__).parent / "trainer" / "config"
    legacy = [
        f"custom_reward_function.path={run['reward_file']}",
        "custom_reward_function.name=compute_score",
        f"actor_rollout_ref.model.path={spec['tokenizer']}",
    ]
    with initialize_config_dir(config_dir=str(folder), version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=legacy)
    return get_custom_reward_fn(cfg) is not None


def config(spec: dict, run: dict):
    import verl
    from hydra import compose, initialize_config_dir

    folder = Path(verl.__file__).parent / "trainer" / "config"
    overrides = [
        f"reward.custom_reward_function.path={run['reward_file']}",
        f"reward.custom_reward_function.name={run.get('name', 'compute_score')}",
        f"reward.num_workers={spec.get('workers', 2)}",
        f"actor_rollout_ref.model.path={spec['tokenizer']}",
    ]
    if run.get("url"):  # verl passes reward_kwargs to every call: the server of this run
        overrides.append(f"+reward.custom_reward_function.reward_kwargs.url='{run['url']}'")
    with initialize_config_dir(config_dir=str(folder), version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


def batch(tok, samples: list):
    import numpy as np
    import torch
    from tensordict import TensorDict
    from verl import DataProto

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    chats = [[{"role": "user", "content": p}] for p, _, _ in samples]
    prompts = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False) for c in chats]
    responses = [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for _, r, _ in samples]
    plen, rlen = max(map(len, prompts)), max(map(len, responses))
    p_ids = torch.tensor([[pad] * (plen - len(p)) + list(p) for p in prompts])  # left-padded, as verl's rollout
    r_ids = torch.tensor([list(r) + [pad] * (rlen - len(r)) for r in responses])  # right-padded
    p_mask = torch.tensor([[0] * (plen - len(p)) + [1] * len(p) for p in prompts])
    r_mask = torch.tensor([[1] * len(r) + [0] * (rlen - len(r)) for r in responses])
    mask = torch.cat([p_mask, r_mask], dim=1)
    tensors = {
        "prompts": p_ids,
        "responses": r_ids,
        "input_ids": torch.cat([p_ids, r_ids], dim=1),
        "attention_mask": mask,
        "position_ids": (mask.cumsum(dim=1) - 1).clamp(min=0),
    }

    def objects(values: list) -> np.ndarray:
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out

    non_tensor = {
        "data_source": objects(["cai/math"] * len(samples)),
        "reward_model": objects([{"style": "rule", "ground_truth": ref} for _, _, ref in samples]),
        "extra_info": objects([{"question": p, "index": k} for k, (p, _, _) in enumerate(samples)]),
        "raw_prompt": objects(chats),
    }
    return DataProto(batch=TensorDict(tensors, batch_size=len(samples)), non_tensor_batch=non_tensor)


def plain(value):
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def scored(runner, data, repeat: int) -> dict:
    """verl's scores of `data` through `runner` (a worker's or the manager's own call), `repeat` times."""
    seconds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        got = runner(data)
        seconds.append(time.perf_counter() - t0)
    return {**got, "seconds": seconds}


def by_worker(worker):
    def run(data) -> dict:
        got = worker.loop.run_until_complete(worker.compute_score_batch(data))
        keys = [sorted(g["reward_extra_info"]) for g in got]
        return {
            "scores": [plain(g["reward_score"]) for g in got],
            "keys": keys,
            "extra": {k: [plain(g["reward_extra_info"][k]) for g in got] for k in keys[0]},
        }

    return run


def by_manager(manager):
    def run(data) -> dict:
        out = manager.compute_rm_score(data)
        keys = out.meta_info["reward_extra_keys"]
        return {
            "scores": [plain(v) for v in out.batch["rm_scores"].sum(dim=1)],
            "keys": sorted(keys),
            "extra": {k: [plain(v) for v in out.non_tensor_batch[k]] for k in keys},
        }

    return run


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec["tokenizer"])
    runs = [(run, config(spec, run), batch(tok, run["samples"])) for run in spec["runs"]]
    from verl.experimental.reward_loop import RewardLoopManager, RewardLoopWorker

    out: list[dict] = [{} for _ in runs]
    for got, (run, cfg, data) in zip(out, runs, strict=True):
        got["worker"] = scored(by_worker(RewardLoopWorker(cfg)), data, run.get("repeat", 1))
    if any(run.get("ray", True) for run, _, _ in runs):
        import ray

        env = {k: os.environ[k] for k in ("CAI_SERVE_URL", "CAI_SERVE_TOKEN", "PYTHONPATH") if k in os.environ}
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
        try:
            for got, (run, cfg, data) in zip(out, runs, strict=True):
                if run.get("ray", True):
                    manager = RewardLoopManager(cfg)
                    got["manager"] = scored(by_manager(manager), data, run.get("repeat", 1))
                    for actor in manager.reward_loop_workers:  # the next run's workers get the cores
                        ray.kill(actor)
        finally:
            ray.shutdown()
    print(json.dumps({"runs": out, "legacy_key_read": legacy_key_read(spec, spec["runs"][0])}))


if __name__ == "__main__":
    main()
