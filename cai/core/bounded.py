"""Checks that might not finish, run in worker processes that are killed at a deadline, from any thread.

math-verify bounds its own time with SIGALRM, which only a process's main thread may use; the streaming
executor checks rules in worker threads, where a LaTeX bomb in a model answer would hang the thread. So the
comparison runs in a small pool of long-lived worker processes (`python -m cai.core.bounded`, one request at a
time each, JSON lines over pipes): in the worker it is on the main thread and math-verify's own limit works,
and the caller waits at most `seconds`. A worker that does not answer in time is killed (and replaced on the
next call), never waited for; the caller gets TimeoutError. Workers are fresh interpreters (no fork of a
process that holds an engine's threads) and end with their parent.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import select
import subprocess
import sys
import threading
from typing import Any

STARTUP_SECONDS = 60.0  # a worker's first import of math-verify and sympy takes a few seconds


class CheckError(Exception):
    """The check itself failed in the worker (the worker is fine and takes the next request)."""


class _Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cai.core.bounded"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.ready = False

    def ask(self, request: dict, seconds: float) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if not self.ready:  # the first answer is "ready", after the worker imported what it needs
            self._read(STARTUP_SECONDS)
            self.ready = True
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = self._read(seconds)
        if "error" in reply:
            raise CheckError(reply["error"])
        return reply["value"]

    def _read(self, seconds: float) -> dict:
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], seconds)
        if not readable:
            raise TimeoutError(f"no answer within {seconds:g}s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the checking process ended")
        reply: dict = json.loads(line)
        return reply

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Pool:
    """At most `size` worker processes; a call takes an idle one (starting one if fewer run), or waits."""

    def __init__(self, size: int):
        self.size = size
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._started = 0
        self._lock = threading.Lock()
        atexit.register(self.close)

    def call(self, function: str, *args: Any, seconds: float) -> Any:
        """`function(*args)` (a name in FUNCTIONS) in a worker; TimeoutError after `seconds`, the worker killed."""
        worker = self._take()
        try:
            value = worker.ask({"function": function, "args": list(args)}, seconds)
        except CheckError:
            self._idle.put(worker)
            raise
        except BaseException:  # timed out, ended, or its reply unreadable: killed, never waited for
            worker.kill()
            with self._lock:
                self._started -= 1
            raise
        self._idle.put(worker)
        return value

    def _take(self) -> _Worker:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._started < self.size:
                self._started += 1
                return _Worker()
        return self._idle.get()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().kill()
            except queue.Empty:
                return


_pool: Pool | None = None
_pool_lock = threading.Lock()


def pool() -> Pool:
    """The process's pool: one worker per core, at least two (checks come from many threads at once)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = Pool(max(2, min(8, os.cpu_count() or 2)))
        return _pool


# -- the worker's side ---------------------------------------------------------------------------------------------
MATH_SECONDS = 2  # math-verify's own bound on parsing and comparing, in the worker (it takes whole seconds)


def math_equal(answer: str, reference: str) -> bool:
    """Whether math-verify finds `answer` and `reference` equivalent (run in a worker, on its main thread)."""
    from math_verify import parse, verify

    gold = parse(f"${reference}$" if "$" not in reference else reference, parsing_timeout=MATH_SECONDS)
    pred = parse(f"${answer}$", parsing_timeout=MATH_SECONDS)
    return bool(gold and pred and verify(gold, pred, timeout_seconds=MATH_SECONDS))


FUNCTIONS = {"math_equal": math_equal}


def serve() -> None:
    import math_verify  # noqa: F401 - imported before "ready", so no request pays for it

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        reply: dict[str, Any]
        try:
            reply = {"value": FUNCTIONS[request["function"]](*request["args"])}
        except Exception as e:  # a checker that errs on odd text: the caller records the reason
            reply = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    serve()
