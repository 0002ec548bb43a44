"""The machine a run was measured on, for the report: numbers mean little without it."""

from __future__ import annotations

import os
import platform
import subprocess


def _first_line(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> dict:
    uname = platform.uname()
    return {
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "kernel": f"{uname.system} {uname.release} {uname.version}",
        "machine": uname.machine,
        "python": platform.python_version(),
        "iperf3": _first_line(["iperf3", "--version"]),
        "sockperf": _first_line(["sockperf", "--version"]),
        "tcpdump": _first_line(["tcpdump", "--version"]),
        "tcp_congestion_control": _read("/proc/sys/net/ipv4/tcp_congestion_control"),
    }


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None
