"""`dataplane run` under systemd's Type=notify, with a datagram socket standing in for systemd:
READY=1 only once subnet.env exists, WATCHDOG=1 pings, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests import netns

pytestmark = pytest.mark.netns


class Receiver(threading.Thread):
    """Collects (message, whether subnet.env existed when it arrived)."""

    def __init__(self, path: Path, env_file: Path) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.env_file = env_file
        self.got: list[tuple[list[str], bool, float]] = []
        self.done = False

    def run(self) -> None:
        while not self.done:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.got.append((data.decode().split("\n"), self.env_file.exists(),
                             time.monotonic()))

    def first(self, line: str) -> tuple[list[str], bool, float] | None:
        return next((m for m in self.got if line in m[0]), None)

    def stop(self) -> None:
        self.done = True
        self.join(2)
        self.sock.close()


@pytest.mark.netns
def test_notify_ready_watchdog_stopping(host) -> None:
    env_file = host.tmp / "a.env"
    receiver = Receiver(host.tmp / "notify", env_file)
    receiver.start()
    argv = ["ip", "netns", "exec", host.ns, *netns.dataplane_cmd(
        "-v", "run", "--store-dir", str(host.store), "--public-ip", host.ip,
        "--subnet-file", str(env_file))]
    env = {**netns.env(), "NOTIFY_SOCKET": str(host.tmp / "notify"),
           "WATCHDOG_USEC": "400000"}                   # WatchdogSec=0.4s: a ping each 0.2 s
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    try:
        ready = netns.wait_for(lambda: receiver.first("READY=1") or proc.poll() is not None,
                               timeout=30, what="READY=1")
        assert proc.poll() is None, proc.stdout.read()
        lines, env_existed, ready_at = ready
        assert env_existed, "READY=1 came before subnet.env was written"
        assert any(line.startswith("STATUS=forwarding: subnet 10.244.") for line in lines)
        netns.wait_for(lambda: sum(m[0] == ["WATCHDOG=1"] and m[2] > ready_at
                                   for m in receiver.got) >= 3, timeout=10,
                       what="watchdog pings after READY=1")
        assert receiver.first("STOPPING=1") is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, proc.stdout.read()
        stopping = receiver.first("STOPPING=1")
        assert stopping is not None, receiver.got
        assert "STATUS=stopping" in stopping[0], "sent when SIGTERM came, not at the exit"
        assert env_file.exists()              # a stop keeps subnet.env, as flanneld does
        assert sum("READY=1" in m[0] for m in receiver.got) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        receiver.stop()
