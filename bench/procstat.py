"""CPU time and memory from /proc: the whole machine (/proc/stat) and single processes
(/proc/<pid>/stat, /proc/<pid>/status)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

HZ = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class MachineCpu:
    """Cumulative CPU time of all CPUs, in seconds."""
    busy: float      # user + nice + system + irq + softirq (guest time is inside user)
    idle: float      # idle + iowait
    steal: float     # taken by the hypervisor: neither ours nor idle

    def __sub__(self, other: MachineCpu) -> MachineCpu:
        return MachineCpu(self.busy - other.busy, self.idle - other.idle,
                          self.steal - other.steal)


def parse_proc_stat(text: str) -> MachineCpu:
    for line in text.splitlines():
        if line.startswith("cpu "):
            f = [int(x) for x in line.split()[1:]]
            f += [0] * (8 - len(f))
            user, nice, system, idle, iowait, irq, softirq, steal = f[:8]
            return MachineCpu((user + nice + system + irq + softirq) / HZ,
                              (idle + iowait) / HZ, steal / HZ)
    raise ValueError("no aggregate 'cpu ' line in /proc/stat")


def machine_cpu() -> MachineCpu:
    with open("/proc/stat") as f:
        return parse_proc_stat(f.read())


def parse_pid_stat(text: str) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = text.rsplit(")", 1)[1].split()   # the name in parentheses may hold spaces
    return (int(fields[11]) + int(fields[12])) / HZ


def process_cpu(pids: Iterable[int]) -> float | None:
    """Summed CPU seconds of the processes; None if one of them is gone."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                total += parse_pid_stat(f.read())
        except (FileNotFoundError, ProcessLookupError):
            return None
    return total


def rss_bytes(pid: int) -> int | None:
    """Resident set size (VmRSS) of a process; None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None

