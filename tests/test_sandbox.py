"""`accuracy: code`: the answer's program against the prompt's tests, in a sandbox with limits. Each hostile program
ends within its limit, scores 0 with a reason, and leaves the machine as it was."""

import json
import os
import time

import pytest
from conftest import ROOT, write

from cai.core import jail, rules, sandbox
from cai.core.constitution import load
from cai.errors import CaiError

STDIO = [{"input": "3\n", "output": "9"}]


def test_a_right_program_passes_and_a_wrong_one_scores_its_share():
    assert sandbox.run_tests("n = int(input())\nprint(n * n)", STDIO + [{"input": "-4\n", "output": "16"}]).score == 1
    half = sandbox.run_tests(
        "n = int(input())\nprint(n * n if n > 0 else 0)", STDIO + [{"input": "-4", "output": "16"}]
    )
    assert (half.passed, half.total, half.reason) == (1, 2, "wrong output")
    asserts = sandbox.run_tests("def f(x):\n    return 2 * x", ["assert f(2) == 4", "assert f(3) == 7"])
    assert asserts.score == 0.5 and asserts.reason == "wrong result for f(3)"  # 7 was compared here, not inside


def _outside(tmp_path):
    """A folder outside the sandbox's own that only root may write."""
    folder = tmp_path / "outside"
    folder.mkdir()
    os.chmod(folder, 0o755)
    return folder


@pytest.mark.parametrize(
    "name,program,reason",
    [
        (
            "fork bomb",
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
            "timed out",
        ),
        # 2 s of CPU; on a loaded machine the 5 s wall deadline may come first
        ("infinite loop", "while True:\n    pass", "killed by signal|timed out"),
        ("10 GB allocation", "x = bytearray(10 * 1024**3)\nprint(9)", "MemoryError"),
        ("environment secret", "import os\nprint(os.environ.get('CAI_TEST_SECRET', 'none'))", "wrong output"),
        ("a socket", "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=2)\nprint(9)", "Error"),
        ("exit before the test", "import os\nos._exit(0)", "no readable result"),
        (
            "a daemonised child",
            "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(1)\n    print(9, flush=True)\n"
            "    time.sleep(600)",
            "wrong output",  # what it prints after the program ended does not count
        ),
    ],
)
def test_hostile_programs_end_within_their_limits_and_score_zero(name, program, reason, monkeypatch):
    monkeypatch.setenv("CAI_TEST_SECRET", "9")  # the program must not see it
    tests = ["assert f(1) == 1"] if name == "exit before the test" else [{"input": "", "output": "9"}]
    t0 = time.monotonic()
    out = sandbox.run_tests(program, tests)
    assert time.monotonic() - t0 < sandbox.WALL_SECONDS + 5
    assert out.score == 0 and out.reason and any(r in out.reason for r in reason.split("|")), out
    if name == "a socket":
        assert "ConnectionRefused" in out.reason  # its own network namespace: only a loopback of its own
    if os.getuid() == 0:  # as root the program ran as a user id of its own: nothing of it is left running
        assert not [p for p in os.listdir("/proc") if p.isdigit() and _uid(p) >= jail.SANDBOX_UIDS[0]]


def _uid(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return int(next(x for x in f if x.startswith("Uid:")).split()[1])
    except (OSError, StopIteration):
        return -1


def test_writing_outside_its_folder_fails(tmp_path):
    target = _outside(tmp_path) / "pwned"
    out = sandbox.run_tests(f"open({str(target)!r}, 'w').write('x')\nprint(9)", [{"input": "", "output": "9"}])
    assert out.score == 0 and "FileNotFoundError" in out.reason and not target.exists()  # no host folder exists there


def test_the_code_rule_reads_the_program_after_the_reasoning(tmp_path):
    const = load("code")
    reference = json.dumps(STDIO)
    right = "<think>Square it.</think>\n```python\nn = int(input())\nprint(n * n)\n```"
    hidden = "<think>```python\nn = int(input())\nprint(n * n)\n```</think>Done:\n```python\nprint(0)\n```"
    none = "<think>Square it.</think>The answer is n squared."
    scores = [{r.rule: r.score for r in rules.check_all(const.rules, t, reference)} for t in (right, hidden, none)]
    assert [s["passes-tests.accuracy"] for s in scores] == [1.0, 0.0, 0.0]


def test_code_problems_read_their_tests_and_bad_tests_are_one_line(tmp_path):
    from cai.core.inputs import load as load_prompts

    prompts, _ = load_prompts(str(ROOT / "data" / "prompts" / "code.jsonl"))
    assert len(prompts) == 8 and all(sandbox.parse_tests(p.reference) for p in prompts)
    bad = write(tmp_path / "bad.jsonl", '{"prompt": "q", "tests": [{"stdin": "1"}]}\n')
    with pytest.raises(CaiError, match=r"bad.jsonl:1: 'tests' must be a non-empty list"):
        load_prompts(str(bad))


def test_the_code_reward_for_grpo_reads_a_tests_column():
    """GRPO: a dataset's `tests` column reaches `accuracy: code` as `reference` reaches the other accuracy modes."""
    from cai.rewards import reward_funcs

    funcs = {f.__name__: f for f in reward_funcs("code")}
    right = "<think>Square it.</think>\n```python\nn = int(input())\nprint(n * n)\n```"
    wrong = "<think>Guess.</think>\n```python\nprint(9)\n```"
    tests = [STDIO + [{"input": "2\n", "output": "4"}]] * 2
    assert funcs["passes_tests"](["q", "q"], [right, wrong], tests=tests) == [1.0, 0.5]


def test_all_tests_stops_at_the_first_failure_and_scores_nothing():
    t0 = time.monotonic()
    out = sandbox.run_tests(
        "import time, sys\nif input() == '0':\n    sys.exit(3)\ntime.sleep(4)",
        [{"input": "0", "output": ""}, *[{"input": "1", "output": ""}] * 3],
        all_tests=True,
    )
    assert (out.passed, out.total) == (0, 4) and out.reason and "exit status 3" in out.reason
    assert time.monotonic() - t0 < 3  # the sleeping tests were stopped, not waited for


def test_an_assert_that_is_not_a_call_is_refused_when_the_prompts_are_read(tmp_path):
    from cai.core.inputs import load as load_prompts

    ok = '{"prompt": "q", "tests": ["assert f(2) == 4", "assert set(g()) == set((1, 2))"]}\n'
    bad = '{"prompt": "q2", "tests": ["assert f(2) == 4", "assert f(2) < 5"]}\n'
    with pytest.raises(CaiError, match=r"p.jsonl:2: test 2 \('assert f\(2\) < 5'\): supported: assert EXPR =="):
        load_prompts(str(write(tmp_path / "p.jsonl", ok + bad)))


def test_a_missing_sandbox_is_refused_in_one_line_unless_a_weaker_one_is_named(tmp_path):
    """No bubblewrap on the PATH: `cai generate` with `accuracy: code` stops before any engine, exit 2; a rule that
    names `sandbox: rlimits` is accepted and says so."""
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "cai.cli",
        "generate",
        "--constitution",
        "code",
        "--prompts",
        str(ROOT / "data" / "prompts" / "code.jsonl"),
        "--out",
        str(tmp_path / "run"),
    ]
    r = subprocess.run(
        cmd, env={"PATH": str(tmp_path), "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and "bubblewrap is not installed" in r.stderr and "sandbox: rlimits" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    weak = load(
        write(
            tmp_path / "weak.yaml",
            "name: w\nprinciples:\n  - id: t\n    rules:\n      - accuracy: code\n        sandbox: rlimits\n",
        )
    )
    rules.require_sandbox(weak.rules)
    assert rules.notes(weak.rules) == [f"code sandbox   {sandbox.describe('rlimits')}"]
    assert sandbox.run_tests("print(int(input()) ** 2)", STDIO, "rlimits").score == 1


def test_the_sandbox_holds_for_an_ordinary_user(tmp_path):
    """As root the suite also drops to an unprivileged user (nobody) for a subprocess: bubblewrap then makes its
    namespaces without any privilege, and the same attacks fail."""
    import subprocess

    if os.getuid() != 0:
        pytest.skip("the suite already runs as an ordinary user")
    script = (
        "import json, os\nfrom cai.core import sandbox, jail\nnine = [{'input': '', 'output': '9'}]\n"
        "print(json.dumps([os.getuid(), jail.available(),\n"
        "  sandbox.run_tests('print(int(input()) ** 2)', [{'input': '3', 'output': '9'}]).score,\n"
        "  sandbox.run_tests(\"print(open('/etc/hostname').read())\", nine).reason,\n"
        "  sandbox.run_tests(\"import socket\\nsocket.create_connection(('1.1.1.1', 53), timeout=1)\", nine).reason,\n"
        "  sandbox.run_tests('import os\\nos.fork()\\nos.fork()\\nprint(9)', [\"assert f() == 1\"]).reason]))"
    )

    def nobody():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)

    r = subprocess.run(
        ["/usr/bin/python3", "-c", script],
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        cwd="/",
        preexec_fn=nobody,
        capture_output=True,
        text=True,
        timeout=120,
    )
    uid, missing, honest, host_file, network, call = json.loads(r.stdout)
    assert (uid, missing, honest) == (65534, None, 1.0), r.stderr
    assert "FileNotFoundError" in host_file and "Network is unreachable" in network and "exit status 1" in call


def test_the_run_summary_and_the_dataset_card_say_which_sandbox_ran(tmp_path, cli):
    from cai import backends
    from cai.config import RunConfig
    from cai.generate import generate

    out = tmp_path / "run"
    config = RunConfig(
        constitution="code",
        prompts=str(ROOT / "data" / "prompts" / "code.jsonl"),
        out=str(out),
        backend="scripted",
        stage="sl",
        rounds=1,
        limit=2,
    )
    summary = generate(config, backend=backends.get("scripted")(), log=lambda *_: None)
    line = f"code sandbox   {sandbox.describe('bubblewrap')}"
    assert line in summary.lines
    r = cli("publish", out, "--repo", "me/code-cai", "--dry-run", tmp_path / "hub")
    assert r.returncode == 0, r.stderr
    card = (tmp_path / "hub" / "README.md").read_text()
    assert f"Code answers were scored in a sandbox: {sandbox.describe('bubblewrap')}." in card


@pytest.mark.parametrize(
    "extra,message",
    [
        ("accuracy: code\n        sandbox: docker", "'sandbox' must be one of bubblewrap, rlimits, got 'docker'"),
        ("accuracy: math\n        sandbox: rlimits", "'sandbox' is for 'accuracy: code' only"),
        ("accuracy: code\n        all_tests: 1", "'all_tests' must be true or false"),
    ],
)
def test_a_code_rule_names_a_known_sandbox(tmp_path, extra, message):
    path = write(tmp_path / "c.yaml", f"name: c\nprinciples:\n  - id: p\n    rules:\n      - {extra}\n")
    with pytest.raises(CaiError, match=message):
        load(path)
