"""A watchdog that kills the engine's processes when the process that started them dies.

vLLM's EngineCore and its workers survive a SIGKILLed parent and keep their memory (vllm#55510, open
when this was written): after `kill -9` of a `cai generate`, the resumed run would find the GPU taken
by an orphan with no hint why. The backend starts this watchdog once its engine is up, in a session of
its own (so a Ctrl-C or a process-group kill aimed at cai does not stop it first), with a pipe from
the parent on stdin. End of file on that pipe means the parent is gone, or closed the engine itself;
either way the listed processes still alive are killed. Each is named by pid and start time, so a pid
the system has since reused is never hit.

    python -m cai.backends.reaper PID:START_TIME [PID:START_TIME ...]
"""

from __future__ import annotations

import signal
import subprocess
import sys


def watch(procs) -> subprocess.Popen | None:
    """Start the watchdog for `procs` (psutil.Process objects); None if there are none to watch."""
    if not procs:
        return None
    targets = [f"{p.pid}:{p.create_time()!r}" for p in procs]
    return subprocess.Popen(
        [sys.executable, "-m", "cai.backends.reaper", *targets],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def release(watchdog: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """Normal shutdown: close the pipe (the watchdog then kills any leftover) and wait for it."""
    if watchdog is None:
        return
    if watchdog.stdin is not None:
        watchdog.stdin.close()
    try:
        watchdog.wait(timeout)
    except subprocess.TimeoutExpired:
        watchdog.kill()


def main(argv: list[str]) -> None:
    import psutil

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    targets = [(int(pid), float(start)) for pid, start in (a.split(":", 1) for a in argv)]
    sys.stdin.buffer.read()  # blocks until the parent closes the pipe or dies
    for pid, start in targets:
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - start) < 1e-3:
                proc.kill()
        except psutil.Error:  # already gone
            pass


if __name__ == "__main__":
    main(sys.argv[1:])
