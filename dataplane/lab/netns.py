"""Network namespaces and the processes inside them, through iproute2's `ip netns`.

`ip netns exec` execs the command after entering the namespace (no extra fork), so the pid of
a process started this way is the pid of the command itself: the benchmark harness can pin it
and the lab can signal it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from dataplane.lab.errors import LabError

NETNS_DIR = Path("/run/netns")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def netns_path(name: str) -> str:
    return str(NETNS_DIR / name)


def list_netns() -> list[str]:
    """Names of all named namespaces (what `ip netns list` shows)."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def add(name: str) -> None:
    run(["ip", "netns", "add", name])
    # A fresh namespace has `lo` down; pods, daemons and probes all expect it up.
    run(["ip", "-n", name, "link", "set", "lo", "up"])


def delete(name: str) -> None:
    """Remove a namespace; missing is fine (teardown is idempotent)."""
    if exists(name):
        run(["ip", "netns", "delete", name], check=False)


def ns_argv(ns: str | None, argv: Sequence[str], cpus: Iterable[int] | None = None) -> list[str]:
    """argv to run a command inside a namespace (None: the host's), optionally pinned to CPUs."""
    out = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    if cpus is not None:
        out = ["taskset", "--cpu-list", ",".join(str(c) for c in sorted(cpus)), *out]
    return out


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for `python3 -m dataplane...` in a namespace: this very source tree first on
    the path, so a lab started from a worktree runs that worktree's daemon and probes, and
    never a `dataplane` directory that happens to be the caller's working directory."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["PYTHONSAFEPATH"] = "1"      # no cwd on sys.path (python >= 3.11)
    env.setdefault("PATH", SYSTEM_PATH)
    env.update(extra or {})
    return env


def python_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def run(argv: Sequence[str], *, check: bool = True, input: str | None = None,
        timeout: float | None = 30.0, env: Mapping[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; on failure raise LabError quoting the command and its stderr."""
    try:
        proc = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                              timeout=timeout, env=None if env is None else dict(env))
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]} not found: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout} s: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise LabError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {detail}")
    return proc


def sysctl(ns: str, settings: Mapping[str, str | int]) -> None:
    """Set sysctls inside a namespace; keys this kernel lacks are skipped (-e)."""
    run(ns_argv(ns, ["sysctl", "-q", "-e", "-w", *(f"{k}={v}" for k, v in settings.items())]))


def pids_in(ns: str) -> list[int]:
    """Processes whose network namespace is `ns` (`ip netns pids`)."""
    if not exists(ns):
        return []
    proc = run(["ip", "netns", "pids", ns], check=False)
    # Never ourselves, should `down` be run from inside the lab.
    return [int(tok) for tok in proc.stdout.split() if tok.isdigit() and int(tok) != os.getpid()]


# --- processes, identified by (pid, start time) so a recycled pid is never signalled ---------

def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat.rsplit(")", 1)[1].split()   # the command name may hold spaces and ')'
    return int(fields[19])


def alive(pid: int, started: int | None = None) -> bool:
    """Running (not a zombie) and, if `started` is given, still the same process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return False
    return started is None or int(fields[19]) == started


def pin(pid: int, cpus: Iterable[int]) -> None:
    """Pin every thread of a running process to `cpus` (sched_setaffinity on a pid moves one
    thread only; threads created later inherit from their creator)."""
    cpuset = set(cpus)
    tasks = Path(f"/proc/{pid}/task")
    for tid in (int(t.name) for t in tasks.iterdir()) if tasks.is_dir() else [pid]:
        try:
            os.sched_setaffinity(tid, cpuset)
        except ProcessLookupError:
            pass      # a thread that just ended


def terminate(procs: Iterable[tuple[int, int | None]], grace: float = 5.0) -> None:
    """SIGTERM each (pid, start time), wait up to `grace` seconds, SIGKILL what is left."""
    targets = [(pid, st) for pid, st in procs if alive(pid, st)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, st in targets:
            if alive(pid, st):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 2.0)
        while time.monotonic() < deadline:
            # A zombie counts as gone: whoever spawned it (a Popen) collects its status.
            targets = [(pid, st) for pid, st in targets if alive(pid, st)]
            if not targets:
                return
            time.sleep(0.02)
