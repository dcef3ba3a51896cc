"""--executor ray on a local Ray cluster (loopback, 2 CPUs, a small object store): the in-process rows id for id,
a killed actor and a killed driver with nothing lost or repeated, failures on record, and the message without Ray."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from conftest import RED_TEAM, ROOT, run_cli, scripted_config

from cai.core.store import RunStore
from cai.generate import generate

WORKER = "MapWorker(MapBatches(Chains))"  # the process title Ray gives an actor of the pool


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def cluster():
    """One local cluster for the module, started and stopped here; its address for a driver in a subprocess."""
    import ray

    ray.init(
        address="local",  # a cluster of its own, never one another process started on this machine
        num_cpus=2,
        object_store_memory=96 * 2**20,  # the tests move kilobytes; Ray's default would reserve 30% of RAM
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def rows(folder, split):
    return sorted(RunStore(folder).read(split), key=lambda r: r["id"])


def workers() -> dict[int, float]:
    """The pool's actor processes under this test process (its cluster), pid -> start time."""
    out = {}
    for p in psutil.Process().children(recursive=True):
        try:
            if WORKER in " ".join(p.cmdline()):
                out[p.pid] = p.create_time()
        except psutil.Error:
            pass
    return out


def wait_for(condition, seconds: float = 120.0):
    deadline = time.monotonic() + seconds
    while not (got := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(condition)
        time.sleep(0.05)
    return got


def test_ray_rows_equal_the_in_process_rows_and_failures_are_on_record(tmp_path, cluster, monkeypatch):
    """Two actors, batches of 3 and shards of 5 against one process: the same rows id for id and text for text
    in both splits, and the prompt whose requests fail is skipped with the same reason."""
    bad = json.loads(RED_TEAM.read_text().splitlines()[4])["prompt"]
    monkeypatch.setenv("CAI_SCRIPTED_FAIL_ON", bad[:40])  # forwarded to the actors with the driver's CAI_*
    kw = dict(stage="all", rounds=1, limit=12)
    generate(scripted_config(tmp_path / "one", **kw), log=quiet)
    summary = generate(
        scripted_config(tmp_path / "ray", executor="ray", ray_actors=2, ray_batch_size=3, chunk_size=5, **kw),
        log=quiet,
    )
    one, pool = tmp_path / "one" / "run", tmp_path / "ray" / "run"
    for split in ("sft", "prefs"):
        assert rows(pool, split) == rows(one, split) and len(rows(pool, split)) == 11
    skipped = RunStore(pool).skipped()
    assert skipped == RunStore(one).skipped() and [s["stage"] for s in skipped] == ["sl", "rl"]
    assert all("scripted failure" in s["reason"] for s in skipped)
    text = "\n".join(summary.describe())
    assert "actors (sl)" in text and "actors (rl)" in text and " prompts" in text
    assert summary.new_rows == {"sft": 11, "prefs": 11}


def test_an_actor_killed_mid_run_is_restarted_and_its_prompts_redone_once(tmp_path, cluster, monkeypatch):
    """SIGKILL the pool's one actor once the first shard is on disk: Ray restarts it, its batches run again,
    and the split holds every prompt exactly once, with the rows of a run that was never interrupted."""
    kw = dict(stage="sl", rounds=1, limit=16)
    generate(scripted_config(tmp_path / "one", **kw), log=quiet)
    monkeypatch.setenv("CAI_SCRIPTED_DELAY", "0.15")  # 0.45 s per prompt's chain: the kill lands mid-run
    pool = tmp_path / "ray" / "run"
    killed: dict[str, int] = {}
    before = set(workers())  # an earlier pool's actor, still exiting, is not this run's

    def kill() -> None:
        wait_for(lambda: RunStore(pool).shards("sft"))
        pid = next(iter(wait_for(lambda: set(workers()) - before)))
        killed["done"] = sum(1 for _ in RunStore(pool).read("sft"))
        os.kill(pid, signal.SIGKILL)
        killed["pid"] = pid

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    generate(scripted_config(tmp_path / "ray", executor="ray", ray_batch_size=4, chunk_size=2, **kw), log=quiet)
    killer.join(timeout=5)
    assert killed["pid"] and killed["done"] < 16  # it died with prompts still to do
    ids = [r["id"] for r in RunStore(pool).read("sft")]
    assert len(ids) == len(set(ids)) == 16
    assert rows(pool, "sft") == rows(tmp_path / "one" / "run", "sft")


def test_a_killed_driver_resumes_with_every_prompt_once(tmp_path, cluster):
    """`cai generate --executor ray` in a subprocess, a driver of the test's cluster, SIGKILLed after its first
    shard; the same command again finishes the run: every prompt once, the rows of an uninterrupted run."""
    out = tmp_path / "run"
    flags = ["--stage", "sl", "--rounds", "1", "--limit", "16", "--backend", "scripted"]
    flags += ["--constitution", str(ROOT / "constitution" / "harmless.yaml"), "--prompts", str(RED_TEAM)]
    ray_flags = ["--executor", "ray", "--ray-address", cluster, "--ray-batch-size", "4", "--chunk-size", "2"]
    cai = os.path.join(os.path.dirname(sys.executable), "cai")
    env = {**os.environ, "CAI_SCRIPTED_DELAY": "0.15"}
    driver = subprocess.Popen([cai, "generate", *flags, *ray_flags, "--out", str(out)], env=env, cwd=ROOT)
    try:
        wait_for(lambda: RunStore(out).shards("sft") or driver.poll() is not None)
        assert driver.poll() is None, "the run finished before it could be killed"
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait(timeout=30)
    first = len(RunStore(out).read("sft"))
    assert 0 < first < 16
    again = run_cli("generate", *flags, *ray_flags, "--out", out, env={"CAI_SCRIPTED_DELAY": "0"}, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"sft rows       16 ({16 - first} new)" in again.stdout
    ids = [r["id"] for r in RunStore(out).read("sft")]
    assert len(ids) == len(set(ids)) == 16
    one = run_cli("generate", *flags, "--out", tmp_path / "one", timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    assert rows(out, "sft") == rows(tmp_path / "one", "sft")


def test_without_ray_the_executor_says_how_to_get_it_before_anything_starts(tmp_path):
    """Ray hidden from the import system: one line naming the extra, exit 2, no folder; `cai --help` never
    imports Ray at all."""
    out = tmp_path / "run"
    args = ["generate", "--backend", "scripted", "--prompts", str(RED_TEAM), "--limit", "2", "--out", str(out)]
    code = f"import sys; sys.modules['ray'] = None; from cai.cli import main; main({[*args, '--executor', 'ray']!r})"
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert got.returncode == 2
    assert got.stderr.strip().splitlines() == [
        "cai: error: --executor ray needs Ray Data: pip install 'cai[ray]' (or pip install 'ray[data]')"
    ]
    assert not out.exists()
    check = "import sys; from cai.cli import main; main(['generate', '--help']); assert 'ray' not in sys.modules"
    got = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert got.returncode == 0 and "--ray-actors" in got.stdout, got.stderr[-2000:]


@pytest.mark.engine
def test_the_real_engine_in_one_actor_gives_the_in_process_rows(tmp_path, cluster, engine):
    """The vLLM backend built inside one actor from the settings, against the session's engine in this process:
    the same SL rows, id for id and text for text (every request seeded). Kept tiny: 3 prompts, 16 tokens."""
    from cai.config import RunConfig

    def config(out, **kw):
        base = dict(constitution=str(ROOT / "constitution" / "harmless.yaml"), prompts=str(RED_TEAM), limit=3)
        return RunConfig(
            **base, out=str(out), stage="sl", rounds=1, max_tokens=16, max_model_len=2048, kv_cache_gb=2, **kw
        )

    generate(config(tmp_path / "one"), backend=engine, log=quiet)
    summary = generate(config(tmp_path / "ray", executor="ray", max_num_seqs=64), log=quiet)
    assert rows(tmp_path / "ray", "sft") == rows(tmp_path / "one", "sft") and len(rows(tmp_path / "one", "sft")) == 3
    assert "vLLM scheduler stats" in "\n".join(summary.describe())  # the actor's engine load reached the summary


def test_ray_settings_are_checked_before_anything_starts(tmp_path):
    """Their bounds, their executor, and an engine passed in (each actor builds its own): all refused by name."""
    from cai import backends
    from cai.errors import CaiError

    with pytest.raises(CaiError, match="--ray-actors applies to --executor ray"):
        scripted_config(tmp_path, ray_actors=2)
    with pytest.raises(CaiError, match="'ray_actors' \\(--ray-actors\\): must be at least 1, got 0"):
        scripted_config(tmp_path, executor="ray", ray_actors=0)
    with pytest.raises(CaiError, match="builds an engine in each actor"):
        generate(scripted_config(tmp_path, executor="ray", limit=2), backend=backends.get("scripted")(), log=quiet)
    assert not (tmp_path / "run").exists()


def test_a_chain_that_fails_in_an_actor_stops_the_run_with_its_error_and_keeps_what_finished(tmp_path, cluster):
    """A user template that breaks for one principle only (so it passes the check before the run): the run stops
    with the template's one-line error, as in one process, and the prompts that finished before the first one
    critiqued under that principle are written, each once."""
    from cai.core.inputs import load
    from cai.core.prompts import SHIPPED
    from cai.errors import CaiError

    generate(scripted_config(tmp_path / "clean", stage="sl", rounds=1, limit=24), log=quiet)
    principle = {r["id"]: r["revisions"][0]["principle"] for r in RunStore(tmp_path / "clean" / "run").read("sft")}
    order = [principle[p.id] for p in load(str(RED_TEAM), limit=24)[0]]
    # the first principle met after the third prompt that none before it had (the demonstrations' is never one)
    first = next(k for k in range(3, 24) if order[k] not in order[:k] and order[k] != "legal-caution")
    folder = tmp_path / "templates"
    folder.mkdir()
    shipped = (SHIPPED / "critique.j2").read_text()
    (folder / "critique.j2").write_text(
        f"{{% if principle.id == {order[first]!r} %}}{{{{ no_such_value }}}}{{% endif %}}{shipped}"
    )
    # one batch, one chain at a time: exactly the prompts before the broken one finish, whatever the timing
    config = scripted_config(
        tmp_path, stage="sl", rounds=1, limit=24, templates=str(folder), executor="ray", ray_batch_size=24, in_flight=1
    )
    with pytest.raises(CaiError, match="critique.j2: 'no_such_value' is undefined"):
        generate(config, log=quiet)
    done = [r["id"] for r in RunStore(tmp_path / "run").read("sft")]
    assert sorted(done) == sorted(p.id for p in load(str(RED_TEAM), limit=24)[0][:first])
