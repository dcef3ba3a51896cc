"""A child's stdin fed and its stdout and stderr read while they stream, each with a cap, until a deadline.

The caller's memory stays bounded whatever the child prints: past OUTPUT_BYTES on either stream the child is
killed and the reason kept; only the last 2,000 bytes of stderr are kept (for the reason of a failure).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

OUTPUT_BYTES = 1024 * 1024  # per stream; past it the program is killed


@dataclass(frozen=True)
class Run:
    status: int | None  # exit status (negative: the signal that ended it); None when cai killed it
    stdout: bytes
    stderr: bytes  # its last 2,000 bytes
    killed: str | None = None  # why cai killed it: past the deadline, past the output cap, told to stop


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def collect(proc: subprocess.Popen, stdin: bytes, seconds: float, stop: threading.Event | None) -> Run:
    """Feed stdin and read both streams as they come, each up to OUTPUT_BYTES; kill at the deadline, past the cap
    or when `stop` is set. A stream still open after the program ended (a child holding it) gets a short grace."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + seconds
    out, err, sizes = bytearray(), bytearray(), {"stdout": 0, "stderr": 0}
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    pending = memoryview(stdin)
    if pending:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stdin, selectors.EVENT_WRITE, "stdin")
    else:
        proc.stdin.close()
    ended_at: float | None = None
    killed = None
    reading = {"stdout", "stderr"}
    try:
        while reading or pending:
            now = time.monotonic()
            if stop is not None and stop.is_set():
                killed = "stopped: another test of this answer failed"
                break
            if now >= deadline:
                killed = f"timed out after {seconds:.3g}s"
                break
            if ended_at is None and proc.poll() is not None:
                ended_at = now
            if ended_at is not None and now - ended_at > 0.5:
                break  # the program ended; what still holds its pipes is killed below
            for key, _ in sel.select(min(0.1, deadline - now)):
                name = key.data
                if name == "stdin":
                    try:
                        n = os.write(proc.stdin.fileno(), pending[:65536])
                    except (BrokenPipeError, OSError):
                        n = len(pending)
                    pending = pending[n:]
                    if not pending:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    reading.discard(name)
                    continue
                sizes[name] += len(chunk)
                if sizes[name] > OUTPUT_BYTES:
                    killed = f"printed more than {OUTPUT_BYTES >> 20} MiB to {name}"
                    break
                if name == "stdout":
                    out += chunk
                else:
                    err = (err + chunk)[-2000:]
            if killed:
                break
    finally:
        sel.close()
    if killed is None and proc.poll() is None:
        try:  # both streams closed: the program is ending; wait for it within its deadline
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed = f"timed out after {seconds:.3g}s"
    _kill_group(proc)
    status = None if killed else proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if not stream.closed:
            stream.close()
    return Run(status, bytes(out), bytes(err), killed)
