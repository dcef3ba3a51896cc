"""A policy attacking `accuracy: code` through the reward function a GRPO trainer calls (cai.rewards.reward_funcs).

Each hostile program is written so that it would print the expected output (or return the expected value) only if
its attack worked: it must score 0, say why, end within its budget, leave no file and no process behind, and not
grow the caller's memory. An honest program scores 1.
"""

import json
import os
import resource
import socket
import time
import uuid

import pytest
from conftest import write

from cai.core import jail, sandbox
from cai.rewards import reward_funcs

NINE = [{"input": "", "output": "9"}]
MARK = f"cai-attack-{uuid.uuid4().hex[:8]}"  # names the files hostile programs try to leave behind


@pytest.fixture(scope="module")
def reward(tmp_path_factory):
    """The reward of a one-rule constitution, `accuracy: code`, as TRL's GRPOTrainer would call it."""
    path = write(
        tmp_path_factory.mktemp("const") / "code.yaml",
        "name: attack\nprinciples:\n  - id: passes-tests\n    rules:\n      - accuracy: code\n",
    )
    (func,) = reward_funcs(str(path))

    def score(program: str, tests: list) -> float:
        answer = f"<think>Here it is.</think>\n```python\n{program}\n```"
        (value,) = func(["q"], [answer], tests=[tests])
        return value

    return score


def _sandboxes_running() -> list[int]:
    """Processes of a sandbox still alive anywhere on the machine (each runs `/sandbox/main.py`), or a bubblewrap
    started by this process."""
    out = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ours = cmd.startswith(b"bwrap\0") and int(fields[1]) == os.getpid()
        if fields[0] != "Z" and (b"/sandbox/main.py" in cmd or ours):
            out.append(int(pid))
    return out


def _sandbox_uids() -> list[int]:
    """As root: processes running as a sandbox's own user id."""
    out = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/status") as f:
                uid = int(next(x for x in f if x.startswith("Uid:")).split()[1])
        except (OSError, StopIteration):
            continue
        if jail.SANDBOX_UIDS[0] <= uid <= jail.SANDBOX_UIDS[1]:
            out.append(int(pid))
    return out


def _left_behind() -> list[str]:
    return [os.path.join(d, n) for d in ("/tmp", "/dev/shm", "/var/tmp") for n in os.listdir(d) if MARK in n]


ATTACKS = {
    # what the issue found
    "reads the prompts file": ("print(open(PROMPTS).read().split('output')[1][4])", NINE, "FileNotFoundError"),
    "forges the assert from its own main.py": (
        "import os, sys\nsrc = open(sys.argv[0]).read()\nprint(src)\nos._exit(0)",
        ["assert f(2) == 4"],
        "no readable result",
    ),
    "writes /tmp and /dev/shm": (
        f"for d in ('/tmp', '/dev/shm', '.'):\n    open(d + '/{MARK}', 'w').write('x')\n"
        f"import os\nprint(9 if os.path.exists('HOST_FILE') else 0)",
        NINE,
        "wrong output",
    ),
    "floods stdout": ("import sys\nwhile True:\n    sys.stdout.write('9' * 65536)", NINE, "more than 1 MiB to stdout"),
    "floods stderr": ("import sys\nwhile True:\n    sys.stderr.write('9' * 65536)", NINE, "more than 1 MiB to stderr"),
    "reaches the host's network": (
        "import socket\nsocket.create_connection(('127.0.0.1', PORT), timeout=2)\nprint(9)",
        NINE,
        "ConnectionRefusedError",
    ),
    "the host's abstract unix socket": (
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0' + 'ABSTRACT')\nprint(9)",
        NINE,
        "ConnectionRefusedError",
    ),
    "reads the environment": ("import os\nprint(os.environ.get('CAI_ATTACK_SECRET', 'none'))", NINE, "wrong output"),
    # my own list
    "fork bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", NINE, ""),
    "the parent's /proc": ("import os\nprint(open(f'/proc/{os.getppid()}/environ').read())", NINE, "FileNotFoundError"),
    "a symlink to a host file": (
        f"import os\nos.symlink('HOST_FILE', '{MARK}')\nprint(open('{MARK}').read())",
        NINE,
        "FileNotFoundError",
    ),
    "writes outside its folder": ("open('HOST_DIR/pwned', 'w').write('9')\nprint(9)", NINE, "FileNotFoundError"),
    "binary output": ("import sys\nsys.stdout.buffer.write(bytes(range(256)) * 4)", NINE, "wrong output"),
    "os._exit before flushing": ("import os\nprint(9)\nos._exit(0)", [{"input": "", "output": "99"}], "wrong output"),
    "kills every process it can": (
        "import os, signal\nfor pid in (-1, 1, os.getppid()):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
        "    except OSError:\n        pass\nprint(9)",
        [{"input": "", "output": "the grader is gone"}],
        "wrong output",
    ),
    "ignores its signals": (
        "import signal\nfor s in (signal.SIGTERM, signal.SIGXCPU, signal.SIGINT):\n"
        "    signal.signal(s, signal.SIG_IGN)\n"
        "while True:\n    pass",
        NINE,
        "",
    ),
    "leaves a child holding the pipes": (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(2)\n    print(9, flush=True)\n"
        "    time.sleep(600)",
        NINE,
        "wrong output",
    ),
    "10 GB allocation": ("x = bytearray(10 * 1024**3)\nprint(9)", NINE, "MemoryError"),
    "fills its tmpfs": (
        "i = 0\nwhile True:\n    open(f'/tmp/f{i}', 'wb').write(b'9' * 65536)\n    i += 1",
        NINE,
        "No space left",
    ),
    "a result that lies about ==": (
        "class Any:\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return Any()",
        ["assert f(2) == 4"],
        "not a plain value",
    ),
    "a huge result": ("def f(x):\n    return '9' * (4 << 20)", ["assert f(2) == 4"], "more than 1 MiB to stdout"),
    "a result nested too deep": (
        "def f(x):\n    v = []\n    for _ in range(10000):\n        v = [v]\n    return v",
        ["assert f(2) == 4"],
        "exit status 1",
    ),
    "writes a guess on every descriptor": (
        "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'4')\n    except OSError:\n        pass\n"
        "os._exit(0)",
        ["assert f(2) == 5"],
        "wrong result",
    ),
    "a namespace of its own": (
        "import ctypes\nassert ctypes.CDLL(None).unshare(0x10000000) == 0\nprint(9)",  # CLONE_NEWUSER
        NINE,
        "AssertionError",
    ),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_a_hostile_program_scores_zero_says_why_and_leaves_nothing(name, reward, tmp_path, monkeypatch):
    program, tests, reason = ATTACKS[name]
    prompts = write(tmp_path / "prompts.jsonl", json.dumps({"prompt": "q", "tests": tests}) + "\n")
    host = write(tmp_path / "host.txt", "9")
    listener = socket.create_server(("127.0.0.1", 0))
    abstract = socket.socket(socket.AF_UNIX)  # a socket in the host's network namespace, no file on disk
    abstract.bind("\0" + MARK)
    abstract.listen()
    monkeypatch.setenv("CAI_ATTACK_SECRET", "9")
    program = (
        program.replace("PROMPTS", repr(str(prompts)))
        .replace("HOST_FILE", str(host))
        .replace("HOST_DIR", str(tmp_path))
        .replace("PORT", str(listener.getsockname()[1]))
        .replace("ABSTRACT", MARK)
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    try:
        assert reward(program, tests) == 0.0
        out = sandbox.run_tests(program, tests)  # the same run, for the reason the reward leaves out
    finally:
        listener.close()
        abstract.close()
    assert time.monotonic() - t0 < 2 * (sandbox.WALL_SECONDS + 2)
    assert out.score == 0 and out.reason and reason in out.reason, out
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB: output capped
    assert not _left_behind() and not (tmp_path / "pwned").exists()
    assert not _sandboxes_running()
    if os.getuid() == 0:
        assert not _sandbox_uids()


def test_sleeping_tests_cost_one_answer_budget_not_one_deadline_each(reward):
    """20 tests that each sleep just under the per-test deadline: one answer's budget in all, not 20 deadlines (97 s
    before). The tests that finish within it pass (at most two rounds of 4); the rest are not run: failed."""
    t0 = time.monotonic()
    assert reward("import time\ntime.sleep(4.9)\nprint(9)", NINE * 20) <= 2 * sandbox.PARALLEL / 20
    assert time.monotonic() - t0 < sandbox.ANSWER_SECONDS + 5  # 10.0 s measured; the rest is room for a loaded machine
    assert not _sandboxes_running()


def test_honest_programs_score_one(reward):
    stdio = "import os, tempfile\nn = int(input())\nopen(os.path.join(tempfile.gettempdir(), 'x'), 'w').write('ok')\n"
    assert reward(stdio + "print(n * n)", [{"input": "3\n", "output": "9"}, {"input": "-4", "output": "16"}]) == 1.0
    calls = ["assert f(2) == (4, [2])", "assert f(0) != 1", "assert g() is None", "assert math.isclose(h(), 0.1)"]
    program = "import math\ndef f(x):\n    return (2 * x, [x])\ndef g():\n    pass\ndef h():\n    return 0.3 - 0.2"
    assert reward(program, calls) == 1.0
