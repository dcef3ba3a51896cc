"""The streaming executor: prompts in flight, shards by count and by time, nothing lost when a chain fails,
and the load meter's arithmetic."""

import pyarrow.parquet as pq
import pytest
from conftest import RED_TEAM, scripted_config

from cai import backends
from cai.backends import load as load_mod
from cai.core.inputs import load
from cai.core.store import RunStore
from cai.errors import CaiError
from cai.generate import generate


def config(tmp_path, **kw):
    return scripted_config(tmp_path, **{**dict(stage="sl", rounds=1, limit=12), **kw})


def quiet(*_):
    pass


def scripted(**kw):
    return backends.get("scripted")(**kw)


def ids_of(tmp_path, split="sft"):
    return [r["id"] for r in RunStore(tmp_path / "run").read(split)]


def test_in_flight_prompts_fill_the_engine_and_never_exceed_the_limit(tmp_path):
    engine = scripted(delay=0.02)
    generate(config(tmp_path, in_flight=5), backend=engine, log=quiet)
    assert engine.peak == 5  # five chains at once, each with one request outstanding
    auto = scripted(delay=0.02)
    generate(config(tmp_path / "auto"), backend=auto, log=quiet)
    assert auto.peak == auto.slots + auto.slots // 4  # the engine's limit and a quarter more
    assert (
        sorted(ids_of(tmp_path))
        == sorted(ids_of(tmp_path / "auto"))
        == sorted(p.id for p in load(str(RED_TEAM), limit=12)[0])
    )


def test_shards_are_written_every_flush_seconds_as_well_as_every_chunk_size(tmp_path):
    """One prompt at a time, about 0.1 s each: with --chunk-size 100 only the clock can cut shards."""
    generate(config(tmp_path, chunk_size=100, in_flight=1, flush_seconds=0.25), backend=scripted(delay=0.05), log=quiet)
    shards = RunStore(tmp_path / "run").shards("sft")
    sizes = [pq.read_metadata(s).num_rows for s in shards]
    assert sum(sizes) == 12 and 3 <= len(shards) < 12, sizes
    ids = ids_of(tmp_path)
    assert len(ids) == len(set(ids)) == 12
    manifest = RunStore(tmp_path / "run").manifest()
    assert manifest["counts"]["sft"] == 12


def test_a_failing_chain_keeps_what_finished_and_the_rerun_does_the_rest(tmp_path):
    """A chain that raises (here: a reply function with a bug for one prompt) stops the run with its error;
    the prompts that finished before it are written, and the next run does exactly the rest."""
    bad = load(str(RED_TEAM), limit=12)[0][9]

    def reply(chat, sampling, seed, index):
        if bad.messages[-1]["content"] in chat[-1]["content"]:
            raise RuntimeError("a bug in one chain")
        return "fine"

    with pytest.raises(RuntimeError, match="a bug in one chain"):
        generate(config(tmp_path, in_flight=1, chunk_size=4), backend=scripted(reply=reply), log=quiet)
    done = ids_of(tmp_path)
    assert len(done) == 9 and bad.id not in done  # prompts 0-8 finished before the bad one started
    generate(config(tmp_path, in_flight=1, chunk_size=4), backend=scripted(), log=quiet)
    ids = ids_of(tmp_path)
    assert len(ids) == len(set(ids)) == 12


def test_executor_settings_apply_only_to_stream(tmp_path):
    with pytest.raises(CaiError, match="--in-flight applies to --executor stream"):
        config(tmp_path, executor="steps", in_flight=4)
    with pytest.raises(CaiError, match="--flush-seconds applies to --executor stream"):
        config(tmp_path, executor="steps", flush_seconds=5)


def test_load_meter_is_the_time_weighted_mean_of_running_requests(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(load_mod.time, "monotonic", lambda: now[0])
    meter = load_mod.Meter(8, "test")
    meter.sample(8)  # full for 3 s
    now[0] += 3
    meter.sample(2)  # 2 running for 1 s
    now[0] += 1
    meter.sample(0)  # idle for 1 s
    now[0] += 1
    meter.speculated(10, 4)
    got = meter.read()
    assert got.seconds == 5 and got.mean_running == pytest.approx((8 * 3 + 2 * 1) / 5)
    assert got.occupancy == pytest.approx(26 / 40) and got.acceptance == pytest.approx(0.4)
    meter.start()  # a new span keeps the current count
    meter.sample(4)
    now[0] += 2
    assert meter.read().mean_running == pytest.approx(4)
