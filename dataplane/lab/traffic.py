"""Traffic between pods, driven from outside: ping, a reachability matrix, a verified TCP
transfer. Each runs `dataplane.lab.probe` inside the pod namespaces involved, and only ever
towards pod addresses of the lab."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from dataplane.lab import netns
from dataplane.lab.errors import LabError
from dataplane.lab.state import Pod

if TYPE_CHECKING:
    from dataplane.lab.lab import Lab

PROBE = "dataplane.lab.probe"


@dataclass(frozen=True)
class TransferResult:
    ok: bool                 # every byte arrived and the digests match
    sent: int
    received: int
    seconds: float           # the sender's view: connect to the receiver's close
    sha256_sent: str
    sha256_received: str


@dataclass(frozen=True)
class FlowResult:
    sent: int
    received: int
    interval: float            # seconds between requests
    lost: tuple[float, ...]    # send times of unanswered requests, seconds into the flow

    @property
    def longest_gap(self) -> float:
        """The longest run of consecutive losses, in seconds: how long forwarding stopped."""
        longest = run = 0
        previous = None
        for t in self.lost:
            run = run + 1 if previous is not None and t - previous < 1.5 * self.interval else 1
            longest, previous = max(longest, run), t
        return round(longest * self.interval, 3)


class Flow:
    """A running `probe flow`: ICMP echo from one pod to another on a fixed schedule."""

    def __init__(self, proc: subprocess.Popen[str], src: Pod, dst: Pod, duration: float) -> None:
        self.proc, self.src, self.dst, self.duration = proc, src, dst, duration

    def result(self, timeout: float | None = None) -> FlowResult:
        """Wait for the flow to end (at most its duration plus `timeout`, default 15 s)."""
        try:
            out, err = self.proc.communicate(timeout=self.duration + (timeout or 15.0))
        except subprocess.TimeoutExpired:
            self.stop()
            raise LabError(f"flow {self.src.name} -> {self.dst.name} did not finish") from None
        if self.proc.returncode != 0:
            raise LabError(f"flow probe in {self.src.name} failed: {err.strip()}")
        doc = json.loads(out)
        return FlowResult(doc["sent"], doc["received"], doc["interval"], tuple(doc["lost"]))

    def stop(self) -> str:
        """End it early; its stderr."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.communicate()[1] or ""


def flow(lab: Lab, src: Pod, dst: Pod, *, duration: float, interval: float) -> Flow:
    """Start a flow and return once it is under way (its first echo answered)."""
    proc = lab.popen(src, netns.python_argv(PROBE, "flow", str(dst.ip), "--interval",
                                            str(interval), "--duration", str(duration)),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    handle = Flow(proc, src, dst, duration)
    line = proc.stdout.readline().strip() if proc.stdout else ""
    if line != "FLOWING":
        raise LabError(f"flow {src.name} -> {dst.name} did not start: {handle.stop().strip()}")
    return handle


def _ping_argv(count: int, timeout: float, targets: list[str]) -> list[str]:
    return netns.python_argv(PROBE, "ping", "--count", str(count), "--timeout", str(timeout),
                             *targets)


def ping(lab: Lab, src: Pod, dst: IPv4Address | None, *, count: int, timeout: float) -> bool:
    target = str(dst)
    proc = lab.exec(src, _ping_argv(count, timeout, [target]), timeout=count + timeout + 10)
    return bool(json.loads(proc.stdout)[target])


def reachability(lab: Lab, pods: list[Pod], *, count: int, timeout: float
                 ) -> dict[tuple[str, str], bool]:
    """One probe process per source pod, pinging all the others, all started at once."""
    procs = {}
    for src in pods:
        targets = [str(p.ip) for p in pods if p is not src]
        if targets:
            procs[src.name] = lab.popen(src, _ping_argv(count, timeout, targets),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
    pod_at_address = {str(p.ip): p.name for p in pods}   # ping reports addresses
    matrix: dict[tuple[str, str], bool] = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=count + timeout + 20)
        if proc.returncode != 0:
            raise LabError(f"ping probe in {name} failed: {err.strip()}")
        for ip, ok in json.loads(out).items():
            matrix[(name, pod_at_address[ip])] = ok
    return matrix


def tcp_check(lab: Lab, src: Pod, dst: Pod, nbytes: int, *, port: int, seed: int,
              timeout: float) -> TransferResult:
    server = lab.popen(dst, netns.python_argv(PROBE, "tcp-serve", str(dst.ip), str(port),
                                              "--timeout", str(timeout)),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = server.stdout.readline().strip() if server.stdout else ""
        if ready != "LISTENING":
            _, err = server.communicate(timeout=5)
            raise LabError(f"tcp server in {dst.name} did not start: {err.strip()}")
        sent = json.loads(lab.exec(src, netns.python_argv(
            PROBE, "tcp-send", str(dst.ip), str(port), str(nbytes), "--seed", str(seed),
            "--timeout", str(timeout)), timeout=timeout + 10).stdout)
        out, err = server.communicate(timeout=timeout)
        if server.returncode != 0:
            raise LabError(f"tcp server in {dst.name} failed: {err.strip()}")
        got = json.loads(out)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return TransferResult(ok=sent["sha256"] == got["sha256"] and got["bytes"] == nbytes,
                          sent=sent["bytes"], received=got["bytes"], seconds=sent["seconds"],
                          sha256_sent=sent["sha256"], sha256_received=got["sha256"])
