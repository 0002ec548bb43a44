"""Helpers shared by the lab tests (a uniquely named module: `conftest` is ambiguous once
several test directories have one)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from dataplane.lab import naming, netns
from dataplane.lab.lab import STATE_ROOT

REPO = Path(__file__).resolve().parents[2]


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip`"
    probe = f"dplprobe{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    if made.returncode != 0:
        return f"cannot create network namespaces here: {made.stderr.strip()}"
    return None


NETNS_UNAVAILABLE = _netns_unavailable()


def leftovers(prefix: str) -> list[str]:
    """Anything of this lab's still on the host: namespaces and the state dir."""
    left = [n for n in netns.list_netns() if naming.owned_namespace(prefix, n)]
    if (STATE_ROOT / prefix).exists():
        left.append(str(STATE_ROOT / prefix))
    return left


def lab_cli(*args: str, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """`python3 -m dataplane.lab ...` as a separate process, from this source tree."""
    proc = subprocess.run([sys.executable, "-m", "dataplane.lab", *args],
                          capture_output=True, text=True, timeout=120,
                          env=netns.python_env(env), cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"dataplane lab {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc
