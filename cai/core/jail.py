"""One untrusted Python program in an isolated process: bubblewrap's namespaces, or rlimits only when named.

`bubblewrap` (the default, Debian's `bwrap`): the program sees a read-only interpreter and standard library (the
files the interpreter needs, found by asking it and `ldd`), a private writable `/sandbox` holding only its
`main.py`, its own `/tmp` and `/dev/shm` (small tmpfs, gone with the sandbox), a minimal `/dev`, no `/proc`, no
environment; its own user, PID, network, IPC, UTS and cgroup namespaces; it dies with its parent. As root, cai
first becomes a user id of its own (unused by any account), so the program is never root outside; as an ordinary
user, bubblewrap makes the namespaces unprivileged. `rlimits` (only when a rule names it): today's weaker mode,
a temporary folder on the host, the network cut where the OS allows, a user id of its own as root.

Both keep the rlimits (CPU, memory, file size, open files; processes counted inside the sandbox's own user
namespace, so the caller's own processes do not count), read stdout and stderr with a cap while they stream
(past it the program is killed: the caller's memory stays bounded whatever it prints), and kill it at a
wall-clock deadline or when told to stop. Killing the sandbox's first process ends its PID namespace: the kernel
kills every process in it before that process can be reaped, so nothing it started is left running.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

from cai.core.capped import Run, collect

SANDBOXES = ("bubblewrap", "rlimits")
CPU_SECONDS = 2
MEMORY_BYTES = 512 * 1024 * 1024
FILE_BYTES = 1024 * 1024
TMPFS_BYTES = 8 * 1024 * 1024  # each of /sandbox, /tmp and /dev/shm: memory the host lends while the test runs
PROCESSES = 16
OPEN_FILES = 64
SANDBOX_UIDS = (200_000, 299_999)  # user ids no account uses: as root, each run takes one of its own
CLONE_NEWNET = 0x40000000
# Run first in the sandbox, in the program's own interpreter: the process limit (set here, inside the user
# namespace, so it counts only the sandbox's processes), then the program as __main__; with a call, the call's
# value, encoded, on the stdout cai kept (the program's own prints go to stderr). exec, not runpy: importing runpy
# cost 45 ms per test here.
LAUNCHER = """
import os, resource, sys
resource.setrlimit(resource.RLIMIT_NPROC, ({n}, {n}))
path, call = sys.argv[1], sys.argv[2:]
sys.argv = [path]
with open(path, "rb") as f:
    code = compile(f.read(), path, "exec")
scope = {{"__name__": "__main__", "__file__": path, "__builtins__": __builtins__}}
if not call:
    exec(code, scope)
else:
    import json
    result = os.dup(1)
    os.dup2(2, 1)
    exec(code, scope)
{encoder}
    data = json.dumps(_enc(eval(call[0], scope)))
    sys.stdout.flush()
    os.write(result, data.encode())
"""


def run(
    sandbox: str,
    program: str,
    call: str | None,
    stdin: bytes,
    seconds: float,
    stop: threading.Event | None = None,
    encoder: str = "",
) -> Run:
    """Run `program` (and then `call`, whose encoded value is the stdout) in `sandbox`, for at most `seconds`."""
    launcher = LAUNCHER.format(n=PROCESSES, encoder=_indent(encoder))
    argv = ["-I", "-S", "-c", launcher, "/sandbox/main.py" if sandbox == "bubblewrap" else "main.py"]
    argv += [call] if call is not None else []
    if sandbox == "bubblewrap":
        return _bubblewrap(program, argv, stdin, seconds, stop)
    return _rlimits(program, argv, stdin, seconds, stop)


def _indent(source: str) -> str:
    return "\n".join("    " + line if line.strip() else line for line in source.splitlines())


# -- bubblewrap ---------------------------------------------------------------------------------------------------
@functools.cache
def available(sandbox: str = "bubblewrap") -> str | None:
    """None when `sandbox` works here, else the reason in one line (checked once per process, by running a
    program that must see no network and no host file)."""
    if sandbox == "rlimits":
        return None
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (Debian: apt-get install bubblewrap)"
    probe = "import os, socket\nprint(len(socket.if_nameindex()), os.path.exists('/etc/passwd'))"
    try:
        r = _bubblewrap(probe, ["-I", "-S", "/sandbox/main.py"], b"", 30.0, None)
    except OSError as e:
        return f"bubblewrap does not start: {e}"
    if r.status != 0 or r.stdout.strip() != b"1 False":
        last = r.stderr.decode(errors="replace").strip().splitlines()
        return f"bubblewrap does not run a sandbox here: {last[-1] if last else r.killed or r.status}"
    return None


@functools.cache
def interpreter() -> str:
    """The Python that runs sandboxed code: this one, or where others cannot enter its folder (a venv under /root,
    and cai runs as root: the program runs as another user), the system's."""
    own = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    for candidate in (own, shutil.which("python3") or "", "/usr/bin/python3"):
        if candidate and os.path.exists(candidate) and (os.getuid() != 0 or _for_anyone(candidate)):
            return os.path.realpath(candidate)
    return own


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
def _mounts() -> tuple[list[str], list[str]]:
    """(files, folders) the interpreter needs, bound read-only at their own paths: the binary, its standard library
    folders (sys.path under -I -S), and the shared libraries it and its C modules load."""
    python = interpreter()
    out = subprocess.run(
        [python, "-I", "-S", "-c", "import sys, json; print(json.dumps(sys.path))"],
        capture_output=True,
        text=True,
        env={},
        timeout=30,
        check=True,
    ).stdout
    folders = [p for p in json.loads(out) if os.path.isdir(p)]
    objects = [python] + [os.path.join(f, n) for f in folders for n in os.listdir(f) if n.endswith(".so")]
    files = {python}
    for path in objects:
        r = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30)
        for line in r.stdout.splitlines():
            words = line.split()
            lib = words[2] if len(words) > 2 and words[1] == "=>" else words[0] if words else ""
            if lib.startswith("/") and os.path.exists(lib):
                files.add(lib)
    return sorted(files), folders


def _bwrap_argv(memfd: int, info: int) -> list[str]:
    files, folders = _mounts()
    argv = [
        "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
    ]
    argv += ["--hostname", "sandbox", "--info-fd", str(info), "--dev", "/dev"]
    for where in ("/tmp", "/dev/shm", "/sandbox"):
        argv += ["--size", str(TMPFS_BYTES), "--tmpfs", where]
    argv += ["--ro-bind-data", str(memfd), "/sandbox/main.py"]
    for path in files:
        argv += ["--ro-bind", path, path]
    for path in folders:
        argv += ["--ro-bind", path, path]
        for hidden in ("site-packages", "dist-packages"):  # the standard library only, never installed packages
            if os.path.isdir(os.path.join(path, hidden)):
                argv += ["--tmpfs", os.path.join(path, hidden), "--remount-ro", os.path.join(path, hidden)]
    return [*argv, "--chdir", "/sandbox", "--", interpreter()]


def _bubblewrap(program: str, argv: list[str], stdin: bytes, seconds: float, stop: threading.Event | None) -> Run:
    memfd = os.memfd_create("main.py")
    info_r, info_w = os.pipe()
    try:
        os.write(memfd, program.encode("utf-8", errors="replace"))
        os.lseek(memfd, 0, os.SEEK_SET)
        uid = _uid()
        _adopt_orphans()
        proc = subprocess.Popen(
            [*_bwrap_argv(memfd, info_w), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={},
            pass_fds=(memfd, info_w),
            preexec_fn=functools.partial(_limits, uid, False),
        )
    finally:
        os.close(memfd)
        os.close(info_w)
    try:
        return collect(proc, stdin, seconds, stop)
    finally:
        _end_namespace(proc, info_r)


def _end_namespace(proc: subprocess.Popen, info_r: int) -> None:
    """Kill bubblewrap, then the sandbox's first process (our child once bubblewrap is gone: we are the
    subreaper), and reap it: its exit waits for the kernel to kill every other process of its PID namespace."""
    _kill_group(proc)
    proc.wait()
    os.set_blocking(info_r, False)
    try:
        info = json.loads(os.read(info_r, 4096) or b"{}")
    except (OSError, ValueError):
        info = {}
    finally:
        os.close(info_r)
    child = info.get("child-pid")
    # Only while it is still our child (bubblewrap reaped it on a normal end, and its pid may be anyone's since)
    if isinstance(child, int) and child > 1 and _parent(child) == os.getpid():
        try:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        except (ProcessLookupError, ChildProcessError, PermissionError):
            pass  # already reaped: bubblewrap waited for it


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


# -- rlimits only (named by the rule) -----------------------------------------------------------------------------
def _rlimits(program: str, argv: list[str], stdin: bytes, seconds: float, stop: threading.Event | None) -> Run:
    folder = tempfile.mkdtemp(prefix="cai-sandbox-")
    os.chmod(folder, 0o777)  # writable by the user id the program runs as
    with open(os.path.join(folder, "main.py"), "w") as f:
        f.write(program)
    uid = _uid()
    _adopt_orphans()
    proc = subprocess.Popen(
        [interpreter(), *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=folder,
        env={},
        preexec_fn=functools.partial(_limits, uid, True),
    )
    try:
        return collect(proc, stdin, seconds, stop)
    finally:
        _kill_group(proc)
        proc.wait()
        _sweep(uid)
        shutil.rmtree(folder, ignore_errors=True)


def _sweep(uid: int | None) -> None:
    """As root, every process of the run's own user id: a daemonised child that left the process group too."""
    for _ in range(50):  # a fork racing the sweep is caught by the next pass (the process limit bounds them)
        left = [pid for pid in _pids_of(uid)] if uid is not None else []
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)  # ours through _adopt_orphans: reaped, not left as a zombie
            except (ProcessLookupError, ChildProcessError):
                pass
        if not left:
            return


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


# -- common -------------------------------------------------------------------------------------------------------
def _uid() -> int | None:
    """A user id of its own for one run when cai runs as root (so the program is never root, and its process
    limit is its own); else None."""
    if os.getuid() != 0:
        return None
    return secrets.randbelow(SANDBOX_UIDS[1] - SANDBOX_UIDS[0]) + SANDBOX_UIDS[0]


def _limits(uid: int | None, cut_network: bool) -> None:
    """In the child, before exec: its own session, rlimits, no root; the rlimits mode cuts the network itself."""
    import resource

    os.setsid()
    if cut_network:
        ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET)  # fails without the right to: documented
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_BYTES, FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


@functools.cache
def _adopt_orphans() -> None:
    """Make this process the subreaper of its descendants (Linux): a sandbox's first process, orphaned when
    bubblewrap is killed, becomes ours to reap (and a daemonised child in rlimits mode)."""
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
