"""The traffic tools' command lines, and servers that live for one measurement.

A server is started in the server pod, pinned, and the client starts only once the server's
socket is listening (`ss` inside the pod: the tools print nothing reliable when piped).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time

from bench.topology import Endpoint, Topology

IPERF_PORT = 5201
SOCKPERF_PORT = 11111


class ToolError(RuntimeError):
    """A traffic tool failed; the message quotes its command and output."""


def iperf3_server(ip: str) -> list[str]:
    return ["iperf3", "-s", "-1", "-B", ip, "-p", str(IPERF_PORT)]


def iperf3_tcp(ip: str, seconds: float, streams: int) -> list[str]:
    return ["iperf3", "-c", ip, "-p", str(IPERF_PORT), "-t", f"{seconds:g}", "-J",
            "-P", str(streams)]


UDP_SOCKET_BUFFER = "4M"


def iperf3_udp(ip: str, seconds: float, payload: int) -> list[str]:
    # -b 0: as fast as the sender can; the receiver's count says what got through. -w gives
    # both ends 4 MB socket buffers, so that what is lost is lost in the dataplane, not in a
    # receiving socket that was scheduled out for a moment.
    return ["iperf3", "-c", ip, "-p", str(IPERF_PORT), "-t", f"{seconds:g}", "-J",
            "-u", "-b", "0", "-l", str(payload), "-w", UDP_SOCKET_BUFFER]


def sockperf_server(ip: str, tcp: bool = False) -> list[str]:
    return ["sockperf", "server", "-i", ip, "-p", str(SOCKPERF_PORT)] + (["--tcp"] if tcp else [])


def sockperf_ping_pong(ip: str, seconds: float, mps: int | None, log_path: str,
                       tcp: bool = False) -> list[str]:
    """One 64-byte message in flight; `mps` a second, or back to back when None."""
    return (["sockperf", "ping-pong", "-i", ip, "-p", str(SOCKPERF_PORT), "-t", f"{seconds:g}",
             "-m", "64", f"--mps={mps if mps else 'max'}", "--full-log", log_path]
            + (["--tcp"] if tcp else []))


def echo(ip: str, count: int, interval: float) -> list[str]:
    return [sys.executable, "-m", "bench.echo", ip, "--count", str(count),
            "--interval", f"{interval:g}"]


def _listening(topo: Topology, ep: Endpoint, proto: str, port: int) -> bool:
    flag = "-Hltn" if proto == "tcp" else "-Hlun"
    out = topo.run(ep.netns, ["ss", flag, f"sport = :{port}"], timeout=10).stdout
    return bool(out.strip())


@contextlib.contextmanager
def server(topo: Topology, argv: list[str], proto: str, port: int, cpus: set[int] | None,
           timeout: float = 10.0):
    """Run a server in the server pod for the duration of the block."""
    ep = topo.server
    proc = topo.popen(ep.netns, argv, cpus=cpus, stdin=subprocess.DEVNULL,
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while not _listening(topo, ep, proto, port):
            if proc.poll() is not None:
                raise ToolError(f"`{' '.join(argv)}` exited with {proc.returncode}: "
                                f"{proc.stderr.read().decode(errors='replace').strip()}")
            if time.monotonic() > deadline:
                raise ToolError(f"`{' '.join(argv)}` not listening on {port} after {timeout} s")
            time.sleep(0.02)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM a tool we started, SIGKILL after `grace` seconds; reap it, close its stderr."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.stderr.close()


def client(topo: Topology, argv: list[str], cpus: set[int] | None, timeout: float
           ) -> subprocess.CompletedProcess[str]:
    """Run a client in the client pod to completion; its exit status is left to the parser
    (iperf3 -J reports its errors in the JSON)."""
    return topo.run(topo.client.netns, argv, cpus=cpus, timeout=timeout)
