"""Running a model's code against test cases, in a sandbox with limits (DeepSeek-R1's code reward).

Model output is untrusted: it runs only here, one fresh Python process per test case, each:

- in a new, empty temporary directory, with no inherited environment (no secrets, no PATH tricks) and Python in
  isolated mode (`-I`: no site-packages of the user, no PYTHON* variables, the script's folder not on the path);
- under resource limits (`resource` rlimits): CPU seconds, address space, the size of any file it writes, open
  files, and the number of processes. When cai runs as root (root is exempt from the process limit), the
  program runs as an unprivileged user id of its own, unused by anyone else: it cannot write outside the
  temporary directory it is given, its process limit is its own, and after the test every process of that user
  id is killed, so a child that left the process group (a daemonised fork) goes too;
- in a new network namespace with no interfaces up, where the OS allows it (Linux with the right to unshare;
  `network_isolated()` says whether it does, and the run summary reports it); elsewhere the network is not cut;
- in its own process group, killed whole at a wall-clock deadline (and when the test ends).

Tests come from the prompt record: stdin/stdout pairs (`{"input": "...", "output": "..."}`: the program's
stdout, trailing whitespace aside, must equal the output; compared here, outside the sandbox, so the program
cannot forge the result) or assert-style Python (`"assert f(2) == 4"`: run after the code; it passes when the
process prints a random token that follows the asserts). The score is the share of tests passed.
Assert-style results come from inside the process that ran the code, so code that reads the token out of its
own process could forge them; prefer stdin/stdout tests for an RL reward.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

CPU_SECONDS = 2
WALL_SECONDS = 5.0
MEMORY_BYTES = 512 * 1024 * 1024
FILE_BYTES = 1024 * 1024
PROCESSES = 16
OPEN_FILES = 64
SANDBOX_UIDS = (200_000, 299_999)  # user ids no account uses: each sandboxed run takes one of its own
CLONE_NEWNET = 0x40000000
_CODE = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.S | re.I)


@dataclass(frozen=True)
class Outcome:
    passed: int
    total: int
    reason: str | None = None  # why a test failed (the first one): timeout, an error, wrong output

    @property
    def score(self) -> float:
        return self.passed / self.total if self.total else 0.0


def code_of(answer: str) -> str | None:
    """The last fenced Python code block of the answer (the program the answer gives), else None."""
    blocks = _CODE.findall(answer)
    return blocks[-1] if blocks else None


def parse_tests(reference: str) -> list[dict | str]:
    """The tests a prompt record carries (as `cai.core.inputs` stores them in `reference`: JSON)."""
    tests = json.loads(reference)
    if not isinstance(tests, list) or not tests:
        raise ValueError("tests must be a non-empty list")
    return tests


@functools.cache
def network_isolated() -> bool:
    """Whether a sandboxed process can be put in a network namespace of its own here."""
    r = subprocess.run(
        [interpreter(), "-I", "-c", "import socket; print(len(socket.if_nameindex()))"],
        preexec_fn=functools.partial(_confine, _uid()),
        capture_output=True,
        text=True,
        env={},
        timeout=30,
    )
    return r.returncode == 0 and _net_unshared(r.stdout)


def _net_unshared(stdout: str) -> bool:
    return stdout.strip() == "1"  # only the loopback interface, down: a fresh namespace


def _uid() -> int | None:
    """A user id of its own for one sandboxed run, when cai may give one (as root, with an interpreter that user
    can run); else None."""
    if os.getuid() != 0 or not _for_anyone(interpreter()):
        return None
    return secrets.randbelow(SANDBOX_UIDS[1] - SANDBOX_UIDS[0]) + SANDBOX_UIDS[0]


def _for_anyone(path: str) -> bool:
    """Whether any user may run `path`: it and every folder above it are executable by others."""
    import stat

    p = os.path.realpath(path)
    while True:
        if not os.stat(p).st_mode & stat.S_IXOTH:
            return False
        if p == os.path.dirname(p):
            return True
        p = os.path.dirname(p)


@functools.cache
def interpreter() -> str:
    """The Python that runs sandboxed code: this one, or where it sits in a folder others cannot enter (a venv
    under /root), the system's; the code gets the standard library only (-I -S) either way."""
    for candidate in (sys.executable, shutil.which("python3") or "", "/usr/bin/python3"):
        if candidate and os.path.exists(candidate) and (os.getuid() != 0 or _for_anyone(candidate)):
            return candidate
    return sys.executable


def _confine(uid: int | None) -> None:
    """In the child, before exec: its own process group, the network cut where allowed, rlimits, and no root."""
    import resource

    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.unshare(CLONE_NEWNET)  # fails without the right to: then the network stays, as documented
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_BYTES, FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if uid is not None:  # root ignores the process limit: run as a user of its own
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    resource.setrlimit(resource.RLIMIT_NPROC, (PROCESSES, PROCESSES))


def _run(program: str, stdin: str, folder: str) -> tuple[int | None, str, str]:
    """(exit status or None on timeout, stdout, stderr) of `program` in the sandbox."""
    path = os.path.join(folder, "main.py")
    with open(path, "w") as f:
        f.write(program)
    uid = _uid()
    _adopt_orphans()
    proc = subprocess.Popen(
        [interpreter(), "-I", "-S", path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=folder,
        env={},
        preexec_fn=functools.partial(_confine, uid),
        text=True,
        errors="replace",
    )
    try:
        out, err = proc.communicate(stdin, timeout=WALL_SECONDS)
        status: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        status, out, err = None, "", ""
    finally:
        _end(proc, uid)
    return status, out[-100_000:], err[-2_000:]


@functools.cache
def _adopt_orphans() -> None:
    """Make this process the subreaper of its descendants (Linux): a sandboxed program's daemonised child, orphaned
    when the program exits, becomes ours, so `_end` can reap it after killing it instead of leaving a zombie."""
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _end(proc: subprocess.Popen, uid: int | None) -> None:
    """Kill the program's process group and, where it ran as a user of its own, every process of that user."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for _ in range(50):  # a fork racing the sweep is caught by the next pass (the process limit bounds them)
        left = [pid for pid in _pids_of(uid) if pid != proc.pid] if uid is not None else []
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)  # ours through _adopt_orphans: reaped, not left as a zombie
            except (ProcessLookupError, ChildProcessError):
                pass
        if not left:
            break
    try:
        proc.communicate(timeout=5)  # the pipes close once every writer is gone
    except subprocess.TimeoutExpired:
        pass
    proc.wait()


def _pids_of(uid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    line = next(x for x in f if x.startswith("Uid:"))
            except (OSError, StopIteration):
                continue
            if int(line.split()[1]) == uid:
                out.append(int(entry))
    return out


def run_tests(code: str, tests: list[dict | str]) -> Outcome:
    """Run `code` against `tests` (stdin/stdout pairs or assert lines), one sandboxed process per test."""
    passed, reason = 0, None
    for test in tests:
        folder = tempfile.mkdtemp(prefix="cai-sandbox-")
        os.chmod(folder, 0o777)  # writable by the unprivileged user the program runs as
        try:
            ok, why = _one(code, test, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        passed += ok
        reason = reason or why
    return Outcome(passed, len(tests), reason)


def _one(code: str, test: dict | str, folder: str) -> tuple[bool, str | None]:
    if isinstance(test, dict):
        status, out, err = _run(code, str(test.get("input", "")), folder)
        if status is None:
            return False, f"timed out after {WALL_SECONDS:g}s"
        if status != 0:
            return False, _failed(status, err)
        if out.rstrip() != str(test.get("output", "")).rstrip():
            return False, "wrong output"
        return True, None
    token = secrets.token_hex(16)
    program = f"{code}\n\n{test}\nprint({token!r})\n"
    status, out, err = _run(program, "", folder)
    if status is None:
        return False, f"timed out after {WALL_SECONDS:g}s"
    if status != 0 or out.rstrip().rsplit("\n", 1)[-1] != token:
        return False, _failed(status, err) if status else "the test did not run to its end"
    return True, None


def _failed(status: int, stderr: str) -> str:
    if status < 0:  # killed by a signal: the CPU limit's SIGKILL / SIGXCPU, or the memory limit
        return f"killed by signal {-status} (over the {CPU_SECONDS}s CPU or {MEMORY_BYTES >> 20} MiB memory limit)"
    return f"exit status {status}: {_last(stderr)}"


def _last(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no error message"
