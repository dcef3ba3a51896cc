"""Running a model's code against test cases (DeepSeek-R1's code reward): what is run, for how long, how it is judged.

Model output is untrusted, and a reward is what a policy is optimised against: it will try to read the expected
output, forge the pass, stall the grader or take it down. So (the process isolation itself is cai.core.jail):

- every test runs the program in a fresh sandbox: by default bubblewrap (nothing of the host visible, its own
  namespaces); a weaker one only when the rule names it (`sandbox: rlimits`), and where bubblewrap does not work
  here, `accuracy: code` is refused before anything starts (`require`), never silently weakened;
- an answer's tests share one wall-clock budget (ANSWER_SECONDS), run PARALLEL at a time, each also bounded by
  WALL_SECONDS; with `all_tests` the first failure stops the rest (the score could only be 0);
- stdin/stdout tests: the program's stdout, trailing whitespace aside, must equal the output, compared here;
- assert-style tests are calls (cai.core.calls): `assert f(2) == 4` runs `f(2)` after the program and compares the
  value it printed with 4 here. The expected value never enters the sandbox, so the program cannot forge a pass.

The score is the share of tests passed (or all or nothing).
"""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cai.core import calls, capped, jail

WALL_SECONDS = 5.0  # one test
ANSWER_SECONDS = 10.0  # all of one answer's tests: a sleeping program costs at most this
PARALLEL = 4  # one answer's tests at once
DEFAULT = "bubblewrap"
SANDBOXES = jail.SANDBOXES
_CODE = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.S | re.I)


@dataclass(frozen=True)
class Outcome:
    passed: int
    total: int
    reason: str | None = None  # why a test failed (the first one in order): timeout, an error, wrong output

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


def check_tests(tests: list) -> None:
    """ValueError naming the first assert-style test that cannot be turned into a call (cai.core.calls)."""
    for i, test in enumerate(tests, 1):
        if isinstance(test, str):
            try:
                calls.parse(test)
            except ValueError as e:
                raise ValueError(f"test {i} ({test.strip()[:80]!r}): {e}") from None


def unavailable(sandbox: str = DEFAULT) -> str | None:
    """Why `sandbox` cannot run here (one line), or None when it can."""
    return jail.available(sandbox)


def describe(sandbox: str = DEFAULT) -> str:
    """One line saying what `sandbox` isolates (the run summary, the dataset card and `cai serve`'s /health)."""
    limits = (
        f"CPU {jail.CPU_SECONDS}s, memory {jail.MEMORY_BYTES >> 20} MiB, output {capped.OUTPUT_BYTES >> 20} MiB "
        f"per stream, {WALL_SECONDS:g}s per test, {ANSWER_SECONDS:g}s per answer"
    )
    if sandbox == "bubblewrap":
        return (
            "bubblewrap: no host files (read-only standard library only), own user/PID/network/IPC/mount "
            f"namespaces, no environment; {limits}"
        )
    return f"rlimits only (named by the rule): the host's files are visible, the network may be open; {limits}"


def run_tests(code: str, tests: list[dict | str], sandbox: str = DEFAULT, all_tests: bool = False) -> Outcome:
    """Run `code` against `tests` (stdin/stdout pairs or assert lines), one sandbox per test, within one budget."""
    deadline = time.monotonic() + ANSWER_SECONDS
    stop = threading.Event()

    def one(test: dict | str) -> str | None:
        left = min(WALL_SECONDS, deadline - time.monotonic())
        if stop.is_set():
            return "not run: another test of this answer failed"
        if left <= 0:
            return f"not run: the answer's {ANSWER_SECONDS:g}s budget was spent"
        why = _one(code, test, sandbox, left, stop)
        if why is not None and all_tests:
            stop.set()
        return why

    with ThreadPoolExecutor(min(PARALLEL, len(tests)) or 1, thread_name_prefix="cai-sandbox") as pool:
        reasons = list(pool.map(one, tests))
    failed = [r for r in reasons if r is not None]
    first = next((r for r in failed if not r.startswith(("not run", "stopped"))), failed[0] if failed else None)
    passed = len(tests) - len(failed)
    if all_tests and failed:
        passed = 0
    return Outcome(passed, len(tests), first)


def _one(code: str, test: dict | str, sandbox: str, seconds: float, stop: threading.Event) -> str | None:
    """None when `code` passes `test`, else why not."""
    if isinstance(test, dict):
        r = jail.run(sandbox, code, None, str(test.get("input", "")).encode(), seconds, stop)
        if r.killed or r.status != 0:
            return _failed(r, sandbox)
        given = r.stdout.decode("utf-8", errors="replace")
        return None if given.rstrip() == str(test.get("output", "")).rstrip() else "wrong output"
    try:
        call = calls.parse(test)
    except ValueError as e:  # refused when the prompts are read; a reference built by hand can still carry one
        return f"the test cannot be run as a call: {e}"
    r = jail.run(sandbox, code, call.expression, b"", seconds, stop, encoder=calls.ENCODER)
    if r.killed or r.status != 0:
        return _failed(r, sandbox)
    try:
        value = calls.decode(r.stdout.decode("utf-8", errors="replace"))
    except ValueError as e:
        return f"no readable result for {call.expression}: {e}"
    return None if call.passes(value) else f"wrong result for {call.expression}"


def _failed(r: jail.Run, sandbox: str) -> str:
    if r.killed:
        return r.killed
    status = r.status or 0
    # bubblewrap reports a program ended by a signal as 128 + the signal; the rlimits mode as a negative status
    signal = -status if status < 0 else status - 128 if sandbox == "bubblewrap" and status > 128 else 0
    if signal:  # the CPU limit's SIGXCPU / SIGKILL, or the memory limit
        limits = f"{jail.CPU_SECONDS}s CPU or {jail.MEMORY_BYTES >> 20} MiB memory"
        return f"killed by signal {signal} (over the {limits} limit)"
    lines = [x for x in r.stderr.decode("utf-8", errors="replace").strip().splitlines() if x.strip()]
    return f"exit status {status}: {lines[-1][:200] if lines else 'no error message'}"
