"""`accuracy: code`: the answer's program against the prompt's tests, in a sandbox with limits. Each hostile program
ends within its limit, scores 0 with a reason, and leaves the machine as it was."""

import json
import os
import time

import pytest
from conftest import ROOT, write

from cai.core import rules, sandbox
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
    assert asserts.score == 0.5 and "AssertionError" in asserts.reason


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
        ("infinite loop", "while True:\n    pass", "killed by signal"),
        ("10 GB allocation", "x = bytearray(10 * 1024**3)\nprint(9)", "MemoryError"),
        ("environment secret", "import os\nprint(os.environ.get('CAI_TEST_SECRET', 'none'))", "wrong output"),
        ("a socket", "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=2)\nprint(9)", "Error"),
        ("exit before the test", "import os\nos._exit(0)", "the test did not run to its end"),
        (
            "a daemonised child",
            "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(600)\nprint(9)",
            "",
        ),
    ],
)
def test_hostile_programs_end_within_their_limits_and_score_zero(name, program, reason, monkeypatch):
    monkeypatch.setenv("CAI_TEST_SECRET", "9")  # the program must not see it
    tests = ["assert False"] if name == "exit before the test" else [{"input": "", "output": "9"}]
    t0 = time.monotonic()
    out = sandbox.run_tests(program, tests)
    assert time.monotonic() - t0 < sandbox.WALL_SECONDS + 5
    assert out.score == 0 and out.reason and reason in out.reason, out
    if name == "a socket" and sandbox.network_isolated():
        assert "unreachable" in out.reason.lower()  # its own network namespace: no route anywhere, loopback down
    if os.getuid() == 0:  # as root the program ran as a user id of its own: nothing of it is left running
        assert not [p for p in os.listdir("/proc") if p.isdigit() and _uid(p) >= sandbox.SANDBOX_UIDS[0]]


def _uid(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return int(next(x for x in f if x.startswith("Uid:")).split()[1])
    except (OSError, StopIteration):
        return -1


def test_writing_outside_its_folder_fails(tmp_path):
    target = _outside(tmp_path) / "pwned"
    out = sandbox.run_tests(f"open({str(target)!r}, 'w').write('x')\nprint(9)", [{"input": "", "output": "9"}])
    if os.getuid() == 0:  # as an unprivileged user id it cannot write a root-owned folder
        assert out.score == 0 and "PermissionError" in out.reason and not target.exists()


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
