"""The plug-in design: settings owned by their stage/judge/backend, a judge from another package registered
through entry points, the stage order, and the package installed from a wheel outside the checkout."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import HARMLESS, RED_TEAM, ROOT, write

from cai import stages
from cai.config import RunConfig
from cai.core.store import RunStore
from cai.errors import CaiError
from cai.generate import generate


@pytest.mark.parametrize(
    "settings,message",
    [
        (
            {"judge": "logprob", "grm_samples": 8},
            "--grm-samples is a setting of the grm judge, but this run uses --judge logprob",
        ),
        (
            {"judge": "grm", "cot_clamp": 0.3},
            "--cot-clamp is a setting of the cot judge, but this run uses --judge grm",
        ),
        ({"judge": "grm", "principles_per_pair": 2}, "--principles-per-pair is a setting of the cot / logprob judge"),
        ({"pairs_from": "x"}, "--pairs-from applies to --pairs revision or file, but this run uses --pairs sampled"),
        (
            {"backend": "openai", "kv_cache_gb": 2},
            "--kv-cache-gb is a setting of the vllm backend, but this run uses --backend openai",
        ),
        ({"backend": "scripted", "concurrency": 8}, "--concurrency is a setting of the openai backend"),
    ],
)
def test_a_setting_for_an_unused_judge_or_backend_is_refused(settings, message):
    with pytest.raises(CaiError, match=message.replace("(", r"\(")):
        RunConfig(**settings)


def test_shared_settings_are_accepted_by_each_user():
    from cai.backends.base import ContextOptions
    from cai.judges.reasoning import ReasoningOptions
    from cai.stages.sl import SLOptions

    # shared by cot and grm; by vllm and scripted; stage settings always count
    assert RunConfig(judge="grm", cot_max_tokens=64).options(ReasoningOptions).cot_max_tokens == 64
    assert RunConfig(backend="scripted", max_model_len=512).options(ContextOptions).max_model_len == 512
    assert RunConfig(stage="sl", rounds=2, pairs="revision").options(SLOptions).rounds == 2


def test_cli_refuses_a_misplaced_setting_before_anything_is_written(tmp_path, cli):
    out = tmp_path / "run"
    r = cli("generate", "--backend", "scripted", "--prompts", RED_TEAM, "--out", out, "--grm-samples", "8")
    assert r.returncode == 2 and "Traceback" not in r.stderr and not out.exists()
    assert r.stderr.strip() == (
        "cai: error: --grm-samples is a setting of the grm judge, but this run uses --judge logprob"
    )


def test_help_text_comes_from_the_declarations(cli):
    r = cli("generate", "--help")
    # the GRM judge and the GRM signal share its settings: the flag names both owners
    assert "[judge grm, signal grm] Judgements sampled per pair" in " ".join(r.stdout.split())
    assert "--pairs-from, --from" in r.stdout
    r = cli("train-pm", "--help")
    assert "--center-rewards" in r.stdout and "--group-by-prompt / --no-group-by-prompt" in r.stdout


def test_identity_is_derived_and_covers_the_pairs_source(tmp_path):
    a = RunConfig(pairs="revision", pairs_from=str(tmp_path / "one")).identity("c", "t")
    b = RunConfig(pairs="revision", pairs_from=str(tmp_path / "two")).identity("c", "t")
    assert a["pairs_from"] != b["pairs_from"]
    assert "grm_samples" not in a and "rounds" in a  # another judge's settings do not shape these rows
    assert "grm_samples" in RunConfig(judge="grm").identity("c", "t")


def test_resuming_with_another_sl_source_is_refused(tmp_path, cli):
    common = ("--backend", "scripted", "--prompts", RED_TEAM, "--limit", "2", "--rounds", "1")
    for name in ("sl1", "sl2"):
        assert cli("generate", *common, "--stage", "sl", "--out", tmp_path / name).returncode == 0
    rl = ("generate", *common, "--stage", "rl", "--pairs", "revision", "--out", tmp_path / "rl")
    assert cli(*rl, "--from", tmp_path / "sl1").returncode == 0
    r = cli(*rl, "--from", tmp_path / "sl2")
    assert r.returncode == 2 and "holds a run with a different pairs_from" in r.stderr and "sl2" in r.stderr


def test_stage_all_follows_the_declared_inputs():
    assert stages.ordered(["rl", "sl"]) == ["sl", "rl"]  # rl reads sft, which sl writes
    assert stages.for_split("prefs").name == "rl"


def test_skip_log_is_appended_while_the_run_writes(tmp_path):
    from cai.core.records import Skip

    store = RunStore(tmp_path / "run")
    store.open({"k": 1}, {}, splits={"sl": "sft"})
    schema = stages.get("sl")(RunConfig()).schema()
    store.write_chunk(
        "sl", "sft", [], schema, [Skip("a", "initial: boom"), Skip("b", "initial: boom")], {"a", "b"}, (0, 0), 0.0
    )
    log = (tmp_path / "run" / "skipped.jsonl").read_bytes()
    store.write_chunk("sl", "sft", [], schema, [Skip("b", "round 1 critique: again")], {"a", "b"}, (0, 0), 0.0)
    grown = (tmp_path / "run" / "skipped.jsonl").read_bytes()
    assert grown.startswith(log) and len(grown) > len(log)  # appended, never rewritten mid-run
    assert store.skipped() == [{"id": "b", "stage": "sl", "reason": "round 1 critique: again"}]
    assert store.manifest()["counts"]["skipped"] == {"sl": 1}
    store.close()  # compacted once, at the end
    lines = (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [{"id": "b", "stage": "sl", "reason": "round 1 critique: again"}]


PLUGIN = '''
"""A judge checked by code, from another package: the shorter answer is the better one."""

from cai.judges import Description, Judge, Verdict


class ShorterJudge(Judge):
    name = "shorter"

    def needs_engine(self, ctx):
        return False

    def judge(self, ctx, pairs, result):
        return [Verdict(len(p.second) / (len(p.first) + len(p.second))) for p in pairs]

    def describe(self):
        return Description("the shorter answer is chosen; `p_chosen` is the other answer's share of the "
                           "characters.", "failed length checks", pairwise_votes=False)
'''


def test_a_judge_from_another_package_plugs_in_through_its_entry_point(tmp_path, cli):
    """One module and one entry point: `cai plugins` lists it, `--judge shorter` runs it, and as it needs
    no engine, a file of pairs is labelled without starting one (the default backend is vllm)."""
    site = tmp_path / "site"
    write(site / "cai_shorter.py", textwrap.dedent(PLUGIN))
    write(site / "cai_shorter-0.1.dist-info" / "METADATA", "Metadata-Version: 2.1\nName: cai-shorter\nVersion: 0.1\n")
    write(site / "cai_shorter-0.1.dist-info" / "entry_points.txt", "[cai.judges]\nshorter = cai_shorter:ShorterJudge\n")
    env = {"PYTHONPATH": str(site)}
    listed = cli("plugins", env=env)
    assert listed.returncode == 0 and "shorter" in listed.stdout and "cai_shorter" in listed.stdout
    pairs = write(
        tmp_path / "pairs.jsonl",
        "".join(
            json.dumps({"prompt": f"q{i}", "responses": [a, b]}) + "\n"
            for i, (a, b) in enumerate([("short", "much longer answer"), ("a long-winded reply", "brief")])
        ),
    )
    out = tmp_path / "run"
    r = cli(
        "generate", "--stage", "rl", "--pairs", "file", "--prompts", pairs, "--judge", "shorter", "--out", out, env=env
    )
    assert r.returncode == 0, r.stderr
    assert "starting the" not in r.stderr  # no stage with work needed the engine
    rows = {row["chosen"][0]["content"]: row for row in RunStore(out).read("prefs")}
    assert set(rows) == {"short", "brief"} and all(row["judge"] == "shorter" for row in rows.values())
    assert rows["short"]["p_chosen"] == pytest.approx(18 / 23) and rows["brief"]["p_chosen"] == pytest.approx(19 / 24)
    assert "failed length checks" in r.stdout
    s = cli("stats", out, env=env)
    assert s.returncode == 0 and "failed length checks" in s.stdout and "failed CoT votes" not in s.stdout


def test_stats_and_card_let_the_judge_describe_itself(tmp_path, cli):
    from cai.backends.scripted import ScriptedBackend

    out = tmp_path / "run"
    config = RunConfig(
        constitution=str(HARMLESS),
        prompts=str(RED_TEAM),
        out=str(out),
        backend="scripted",
        stage="rl",
        judge="grm",
        grm_samples=2,
        limit=4,
    )
    generate(config, backend=ScriptedBackend(), log=lambda *_: None)
    s = cli("stats", out)
    assert s.returncode == 0 and "failed GRM judgements" in s.stdout and "failed CoT votes" not in s.stdout
    assert "n/a (no pairwise votes)" in s.stdout
    r = cli("publish", out, "--repo", "me/x", "--dry-run", tmp_path / "hub")
    assert r.returncode == 0, r.stderr
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "DeepSeek-GRM" in card and "log-probabilities of (A) and (B)" not in card
    assert "failed GRM judgements" in card


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    """`pip wheel .` then a fresh venv with only the wheel: the shipped constitution and templates come
    from the package, from any directory. (The wheel's dependencies are borrowed from this test's
    environment through a path entry, so no package index is needed.)"""
    import site
    import sysconfig

    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("cai-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", purelib, str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    here = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    (Path(purelib) / "borrowed-deps.pth").write_text("\n".join(dict.fromkeys(here)) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(py), "-c", "import cai, cai.core.prompts; print(cai.__file__); print(cai.core.prompts.SHIPPED)"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        check=True,
    ).stdout
    assert str(ROOT) not in where and where.count(purelib) == 2

    def cai(*args):
        return subprocess.run(
            [str(py), "-c", "from cai.cli import main; main()", *map(str, args)],
            capture_output=True,
            text=True,
            cwd=elsewhere,
            timeout=300,
        )

    r = cai("constitution", "check", "harmless")
    assert r.returncode == 0 and "principles  14" in r.stdout, r.stderr
    prompts = write(elsewhere / "p.jsonl", '{"prompt": "How do I pick a lock?"}\n{"prompt": "Hello"}\n')
    r = cai(
        "generate",
        "--backend",
        "scripted",
        "--constitution",
        "harmless",
        "--stage",
        "sl",
        "--prompts",
        prompts,
        "--out",
        "run",
        "--rounds",
        "1",
    )
    assert r.returncode == 0, r.stderr
    assert RunStore(elsewhere / "run").count("sft") == 2


def _readme_block(language: str, first_line: str) -> str:
    """The plug-in guide's (docs/plugins.md) fenced `language` block whose first line is `first_line`."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    for block in text.split(f"```{language}\n")[1:]:
        body = block.split("```", 1)[0]
        if body.startswith(first_line):
            return body
    raise AssertionError(f"docs/plugins.md has no {language} block starting {first_line!r}")


def test_the_readme_judge_example_runs_as_written(tmp_path, cli):
    """The plug-in guide's judge, taken from docs/plugins.md verbatim, installed through its entry point."""
    site = tmp_path / "site"
    write(site / "my_judges" / "__init__.py", "")
    write(site / "my_judges" / "pointwise.py", _readme_block("python", "# my_judges/pointwise.py"))
    write(site / "my_judges" / "templates" / "pointwise.j2", _readme_block("jinja", "{# my_judges/templates/"))
    toml = _readme_block("toml", "# in my package's pyproject.toml")
    import tomllib

    ((name, target),) = tomllib.loads(toml)["project"]["entry-points"]["cai.judges"].items()
    entry = f"{name} = {target}"
    write(site / "my_judges-0.1.dist-info" / "METADATA", "Metadata-Version: 2.1\nName: my-judges\nVersion: 0.1\n")
    write(site / "my_judges-0.1.dist-info" / "entry_points.txt", f"[cai.judges]\n{entry}\n")
    env = {"PYTHONPATH": str(site)}
    out = tmp_path / "run"
    r = cli(
        "generate",
        "--backend",
        "scripted",
        "--stage",
        "rl",
        "--judge",
        "pointwise",
        "--pointwise-principles",
        "3",
        "--templates",
        site / "my_judges" / "templates",
        "--prompts",
        RED_TEAM,
        "--limit",
        "4",
        "--out",
        out,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    rows = RunStore(out).read("prefs")
    assert len(rows) == 4 and all(row["judge"] == "pointwise" and 0.5 <= row["p_chosen"] <= 1 for row in rows)
    assert "failed pointwise reads 0" in r.stdout
    wrong = cli(
        "generate",
        "--backend",
        "scripted",
        "--pointwise-principles",
        "3",
        "--prompts",
        RED_TEAM,
        "--out",
        tmp_path / "x",
        env=env,
    )
    assert wrong.returncode == 2 and "--pointwise-principles is a setting of the pointwise judge" in wrong.stderr


def test_a_setting_added_since_a_run_was_written_resumes_at_its_default(tmp_path):
    """A folder written before a setting existed holds rows made as with that setting's default."""
    from cai.backends.scripted import ScriptedBackend

    config = RunConfig(
        prompts=str(RED_TEAM), out=str(tmp_path / "run"), backend="scripted", stage="sl", limit=2, rounds=1
    )
    generate(config, backend=ScriptedBackend(), log=lambda *_: None)
    store = RunStore(tmp_path / "run")
    manifest = store.manifest()
    del manifest["identity"]["self_eval"], manifest["identity"]["keep"]  # as an older cai wrote it
    store.write_manifest(manifest)
    more = RunConfig(
        prompts=str(RED_TEAM), out=str(tmp_path / "run"), backend="scripted", stage="sl", limit=3, rounds=1
    )
    generate(more, backend=ScriptedBackend(), log=lambda *_: None)
    assert store.count("sft") == 3
    with pytest.raises(CaiError, match=r"different self_eval \(False, now True\)"):
        generate(
            RunConfig(
                prompts=str(RED_TEAM),
                out=str(tmp_path / "run"),
                backend="scripted",
                stage="sl",
                limit=3,
                rounds=1,
                self_eval=True,
            ),
            backend=ScriptedBackend(),
            log=lambda *_: None,
        )
