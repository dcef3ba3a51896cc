"""The generate pipeline on the scripted backend: structure, batching, chunks, resume, skips, refusals."""

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import RED_TEAM, ROOT, scripted_config, write

from cai import backends
from cai.core.store import RunStore
from cai.errors import CaiError
from cai.generate import generate


def config(tmp_path, **kw):
    return scripted_config(tmp_path, **{**dict(rounds=2, limit=7, chunk_size=3, principles_per_pair=2), **kw})


def scripted(**kw):
    return backends.get("scripted")(**kw)


def quiet(*_):
    pass


def test_backends_are_registered_as_entry_points():
    assert {"vllm", "scripted"} <= set(backends.names())
    with pytest.raises(CaiError, match="--backend 'nope': unknown backend"):
        backends.get("nope")


@pytest.mark.parametrize("executor", ["stream", "steps"])
def test_sl_rows_have_trl_shape_and_full_trace(tmp_path, executor):
    engine = scripted()
    summary = generate(config(tmp_path, stage="sl", executor=executor), backend=engine, log=quiet)
    rows = RunStore(tmp_path / "run").read("sft")
    assert summary.rows["sft"] == len(rows) == 7
    for row in rows:
        assert row["prompt"][-1]["role"] == "user"
        assert row["completion"] == [{"role": "assistant", "content": row["revisions"][-1]["revision"]}]
        assert row["messages"] == row["prompt"] + row["completion"]
        assert [r["round"] for r in row["revisions"]] == [1, 2]
        assert all(r["critique"].startswith("Critique") for r in row["revisions"])
        assert row["initial"].startswith("Answer")
    if executor == "steps":  # one engine call per step over the whole chunk: 3 chunks x (initial + 2 x 2 steps)
        assert [n for n, _ in engine.calls] == [3] * 5 + [3] * 5 + [1] * 5
    else:  # each prompt's own chain: initial + 2 rounds x (critique, revision), one request at a time
        assert [n for n, _ in engine.calls] == [1] * 7 * 5
    # at most --chunk-size prompts per shard either way
    shards = RunStore(tmp_path / "run").shards("sft")
    assert sorted(pq.read_metadata(p).num_rows for p in shards) == [1, 3, 3] or executor == "stream"
    assert all(pq.read_metadata(p).num_rows <= 3 for p in shards)


def test_stream_and_steps_make_the_same_rows(tmp_path):
    """Replies depend on the chat and the request's seed only (as vLLM's with per-request seeds): the executor,
    the timing and the number in flight change nothing in the rows."""
    runs = {}
    for name, kw in {"steps": dict(executor="steps"), "stream": {}, "stream1": dict(in_flight=1)}.items():
        generate(config(tmp_path / name, stage="all", **kw), backend=scripted(delay=0.002), log=quiet)
        runs[name] = {
            split: sorted(RunStore(tmp_path / name / "run").read(split), key=lambda r: r["id"])
            for split in ("sft", "prefs")
        }
        assert len(runs[name]["sft"]) == 7 and runs[name]["prefs"], kw
    assert runs["steps"] == runs["stream"] == runs["stream1"]


def test_critique_chat_puts_system_and_few_shot_first(tmp_path):
    seen = []

    def reply(chat, sampling, seed, index):
        seen.append(chat)
        return "text"

    generate(config(tmp_path, stage="sl", rounds=1, limit=2), backend=scripted(reply=reply), log=quiet)
    critique_chats = [c for c in seen if c[-1]["content"].startswith("Critique request")]
    assert len(critique_chats) == 2
    heads = {json.dumps(c[:7]) for c in critique_chats}
    assert len(heads) == 1  # identical prefix: system + one demonstration (6 turns), cacheable
    assert critique_chats[0][0]["role"] == "system"


def test_resume_skips_done_ids_and_adds_new_ones(tmp_path):
    generate(config(tmp_path, stage="sl", limit=4), backend=scripted(), log=quiet)
    engine = scripted()
    summary = generate(config(tmp_path, stage="sl", limit=4), backend=engine, log=quiet)
    assert engine.calls == [] and summary.new_rows == {}
    summary = generate(config(tmp_path, stage="sl", limit=7), backend=scripted(), log=quiet)
    ids = [r["id"] for r in RunStore(tmp_path / "run").read("sft")]
    assert summary.new_rows["sft"] == 3 and len(ids) == len(set(ids)) == 7


def test_too_long_prompt_is_skipped_and_the_run_goes_on(tmp_path):
    prompts = write(
        tmp_path / "p.jsonl",
        '{"prompt": "short one"}\n' + json.dumps({"prompt": "word " * 5000}) + '\n{"prompt": "short two"}\n',
    )
    summary = generate(config(tmp_path, prompts=str(prompts), stage="sl", limit=None), backend=scripted(), log=quiet)
    store = RunStore(tmp_path / "run")
    assert summary.rows["sft"] == 2
    (skip,) = store.skipped()
    assert skip["stage"] == "sl" and skip["reason"].startswith("initial: context:")
    assert store.manifest()["counts"]["skipped"] == {"sl": 1, "rl": 0}


def test_engine_failure_is_recorded_then_retried(tmp_path):
    c = config(tmp_path, stage="sl", limit=5)
    generate(c, backend=scripted(fail_on="fight at a bar"), log=quiet)
    store = RunStore(tmp_path / "run")
    (skip,) = store.skipped()
    assert "scripted failure" in skip["reason"] and store.count("sft") == 4
    generate(c, backend=scripted(), log=quiet)  # the failure is gone: the rerun retries exactly that id
    assert store.skipped() == [] and store.count("sft") == 5


def test_stage_all_writes_both_splits(tmp_path):
    summary = generate(config(tmp_path, limit=4), backend=scripted(), log=quiet)
    store = RunStore(tmp_path / "run")
    prefs = store.read("prefs")
    assert summary.rows == {"sft": 4, "prefs": 4} and len(prefs) == 4
    for row in prefs:
        assert 0.5 <= row["p_chosen"] <= 1
        assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"
        assert len(row["votes"]) == 2 and row["judge"] == "logprob"
    assert summary.stats["rl"]["pairs"] == 4


def test_pairs_revision_compares_initial_and_final(tmp_path):
    generate(config(tmp_path, limit=3, pairs="revision"), backend=scripted(), log=quiet)
    store = RunStore(tmp_path / "run")
    sft = {r["id"]: r for r in store.read("sft")}
    for row in store.read("prefs"):
        pair = {row["chosen"][0]["content"], row["rejected"][0]["content"]}
        assert pair == {sft[row["id"]]["initial"], sft[row["id"]]["completion"][0]["content"]}


def test_cli_pairs_revision_from_another_run(tmp_path, cli):
    sl_run, rl_run = tmp_path / "sl", tmp_path / "rl"
    common = ("--backend", "scripted", "--prompts", RED_TEAM, "--limit", "3", "--rounds", "1")
    assert cli("generate", *common, "--stage", "sl", "--out", sl_run).returncode == 0
    r = cli("generate", *common, "--stage", "rl", "--pairs", "revision", "--from", sl_run, "--out", rl_run)
    assert r.returncode == 0, r.stderr
    sft = {row["id"]: row for row in RunStore(sl_run).read("sft")}
    prefs = RunStore(rl_run).read("prefs")
    assert len(prefs) == 3 and not RunStore(rl_run).count("sft")
    for row in prefs:
        pair = {row["chosen"][0]["content"], row["rejected"][0]["content"]}
        assert pair == {sft[row["id"]]["initial"], sft[row["id"]]["completion"][0]["content"]}


def test_run_of_another_identity_is_refused(tmp_path):
    generate(config(tmp_path, stage="sl", limit=2), backend=scripted(), log=quiet)
    with pytest.raises(CaiError, match=r"different seed \(0, now 5\)"):
        generate(config(tmp_path, stage="sl", limit=2, seed=5), backend=scripted(), log=quiet)


def test_foreign_folder_is_refused_unless_forced(tmp_path):
    write(tmp_path / "run" / "notes.txt", "mine")
    with pytest.raises(CaiError, match="not empty and is not a cai run"):
        generate(config(tmp_path, stage="sl", limit=1), backend=scripted(), log=quiet)
    generate(config(tmp_path, stage="sl", limit=1, force=True), backend=scripted(), log=quiet)
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_cli_bad_input_one_line_exit_2_nothing_written(tmp_path, cli):
    out = tmp_path / "run"
    bad = write(tmp_path / "p.jsonl", '{"prompt": "ok"}\n{"prompt": \n')
    r = cli("generate", "--backend", "scripted", "--prompts", bad, "--out", out)
    assert r.returncode == 2 and r.stderr.strip() == f"cai: error: {bad}:2: bad JSON: Expecting value (column 12)"
    assert not out.exists()
    r = cli("generate", "--backend", "scripted", "--prompts", RED_TEAM, "--out", out, "--rounds", "0")
    assert r.returncode == 2 and "--rounds" in r.stderr and "Traceback" not in r.stderr and not out.exists()
    r = cli("generate", "--prompts", RED_TEAM, "--out", out, "--constitution", tmp_path / "none.yaml")
    assert r.returncode == 2 and "constitution file not found" in r.stderr and not out.exists()


def test_cli_summary(tmp_path, cli):
    r = cli(
        "generate",
        "--backend",
        "scripted",
        "--prompts",
        RED_TEAM,
        "--out",
        tmp_path / "run",
        "--limit",
        "3",
        "--rounds",
        "1",
        "--principles-per-pair",
        "2",
    )
    assert r.returncode == 0, r.stderr
    assert "sft rows       3 (3 new)" in r.stdout and "prefs rows     3 (3 new)" in r.stdout
    assert "position-consistent votes" in r.stdout


def _check_exactly_once(out: Path, ids: set[str]):
    store = RunStore(out)
    skipped = {(s["stage"], s["id"]) for s in store.skipped()}
    for split, stage in (("sft", "sl"), ("prefs", "rl")):
        done = []
        for shard in store.shards(split):
            done += pq.read_table(shard).column("id").to_pylist()  # every shard is readable
        assert len(done) == len(set(done)), f"duplicates in {split}"
        assert set(done) | {i for st, i in skipped if st == stage} == ids
    counts = store.manifest()["counts"]
    assert counts["sft"] == store.count("sft") and counts["prefs"] == store.count("prefs")


def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    """Kill `cai generate` at 10 random moments across both stages; each rerun resumes, and at the end
    every prompt is in each split exactly once."""
    out = tmp_path / "run"
    args = [
        str(Path(sys.executable).parent / "cai"),
        "generate",
        "--backend",
        "scripted",
        "--prompts",
        str(RED_TEAM),
        "--out",
        str(out),
        "--limit",
        "24",
        "--chunk-size",
        "2",
        "--rounds",
        "1",
        "--principles-per-pair",
        "2",
    ]
    env = {**__import__("os").environ, "CAI_SCRIPTED_DELAY": "0.05"}
    rng = random.Random(7)
    for _ in range(10):
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    from cai.core.inputs import load

    _check_exactly_once(out, {p.id for p in load(str(RED_TEAM), limit=24)[0]})
    assert not list(out.glob("**/.*.tmp"))
