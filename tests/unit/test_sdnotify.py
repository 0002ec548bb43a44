"""systemd's notify protocol over a real AF_UNIX datagram socket standing in for systemd's."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import pytest

from dataplane.daemon.sdnotify import Notifier, parse_address, supervise, watchdog_usec


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET: every datagram, split into assignments."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def receive(self, timeout: float = 5.0) -> list[str]:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode().split("\n")

    def pending(self) -> list[list[str]]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            return out


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeSystemd]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        path = str(tmp_path / "notify")
        sock.bind(path)
        value = path
    else:
        name = f"dataplane-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind(b"\0" + name.encode())
        value = "@" + name
    try:
        yield FakeSystemd(sock, value)
    finally:
        sock.close()


def test_messages_reach_the_socket(systemd: FakeSystemd) -> None:
    env = {"NOTIFY_SOCKET": systemd.env_value}
    n = Notifier.from_environ(env)
    assert env == {}, "NOTIFY_SOCKET is removed so that children do not inherit it"
    assert n.ready("forwarding:\n subnet 10.244.1.0/24")
    assert systemd.receive() == ["READY=1", "STATUS=forwarding: subnet 10.244.1.0/24"]
    assert n.stopping()
    assert systemd.receive() == ["STOPPING=1", "STATUS=stopping"]
    assert not n.stopping(), "STOPPING=1 is sent once"
    assert systemd.pending() == []
    n.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    n = Notifier.from_environ({})
    assert not n.enabled
    assert not n.ready() and not n.stopping() and n.watchdog_interval is None


def test_addresses() -> None:
    assert parse_address("/run/systemd/notify") == "/run/systemd/notify"
    assert parse_address("@abc") == b"\0abc"
    assert parse_address("") is None
    assert parse_address("vsock:2:1234") is None


def test_watchdog_variables() -> None:
    assert watchdog_usec({"WATCHDOG_USEC": "30000000"}, pid=42) == 30_000_000
    assert watchdog_usec({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=42) == 30e6
    assert watchdog_usec({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "41"}, pid=42) == 0
    assert watchdog_usec({"WATCHDOG_USEC": "soon"}, pid=42) == 0
    assert watchdog_usec({}, pid=42) == 0
    n = Notifier.from_environ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "20000000",
                               "WATCHDOG_PID": str(os.getpid())})
    assert n.watchdog_interval == 10.0
    n = Notifier.from_environ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "20000000",
                               "WATCHDOG_PID": "1"}, pid=2)
    assert n.watchdog_interval is None, "another process's watchdog"


def test_a_vanished_socket_is_logged_once_and_ignored(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier(str(tmp_path / "gone"))
    assert not n.ready() and not n.status("x")
    warnings = [r for r in caplog.records if "cannot notify systemd" in r.getMessage()]
    assert len(warnings) == 1 and "gone" in warnings[0].getMessage()


@dataclass
class FakeOpts:
    on_ready: list[Any] = field(default_factory=list)


@dataclass
class FakeLease:
    subnet: IPv4Network


@dataclass
class FakeNode:
    """What supervise() touches: the on_ready hooks, and what the status line names."""
    opts: FakeOpts = field(default_factory=FakeOpts)
    lease: FakeLease = field(default_factory=lambda: FakeLease(IPv4Network("10.244.3.0/24")))
    tun_name: str = "flannel.1"
    peers: dict[Any, Any] = field(default_factory=lambda: {1: None, 2: None})

    def become_ready(self) -> None:
        for callback in self.opts.on_ready:
            callback(self)


def test_supervise_ready_watchdog_stopping(systemd: FakeSystemd) -> None:
    node = FakeNode()
    env = {"NOTIFY_SOCKET": systemd.env_value, "WATCHDOG_USEC": "100000"}   # ping each 50 ms

    async def go() -> None:
        async with supervise(node, Notifier.from_environ(env)):
            await asyncio.sleep(0.4)
            before = systemd.pending()
            assert before[0] == ["STATUS=starting: waiting for the network config and a lease"]
            pings = [m for m in before if m == ["WATCHDOG=1"]]
            assert len(pings) >= 3, before
            assert all(m[0] != "READY=1" for m in before), "READY=1 before the node was ready"
            node.become_ready()
            assert systemd.receive() == [
                "READY=1", "STATUS=forwarding: subnet 10.244.3.0/24 on flannel.1, 2 peers"]
        after = systemd.pending()
        assert after[-1] == ["STOPPING=1", "STATUS=stopped"]
        time.sleep(0.15)
        assert systemd.pending() == [], "the watchdog stops with the node"
    asyncio.run(go())


def test_supervise_is_inert_without_systemd() -> None:
    node = FakeNode()

    async def go() -> None:
        async with supervise(node, Notifier(None)) as n:
            assert not n.enabled
    asyncio.run(go())
    assert node.opts.on_ready == []
