"""Small helpers for tests that need their own network namespaces (root only), over the
lab's own namespace and environment helpers (dataplane.lab.netns).

Every name carries a per-run prefix, and teardown kills what runs inside before deleting, so a
failed test leaves nothing behind.
"""

from __future__ import annotations

import sys
import os
import secrets
import signal
import subprocess
import time

import pytest

from dataplane.lab import netns as lab_netns


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, TUN devices and routes")
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("needs /dev/net/tun")


def run(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)


def prefix() -> str:
    return "t" + secrets.token_hex(3)


def netns_add(name: str) -> None:
    lab_netns.add(name)


def netns_del(name: str) -> None:
    for pid in lab_netns.pids_in(name):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    lab_netns.delete(name)


def dataplane_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dataplane", *args]


def env() -> dict[str, str]:
    """Child processes import this checkout, whatever is installed."""
    return lab_netns.python_env()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
