"""Nodes in the test's own process, on FakeHost and a directory store in tmp_path: the daemon's
logic (leases, peers, drops, refusals) without root, namespaces or subprocesses.

    cli(...)        `dataplane run ...` through the real command line, on a FakeHost
    Cluster         Nodes a (10.244.1.0/24) and b (10.244.2.0/24), started and stopped at will
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

import uvloop

from dataplane import cli
from dataplane.daemon.metrics import parse_metrics, render_metrics
from dataplane.daemon.node import Node, NodeOptions
from dataplane.store.base import SubnetStore
from dataplane.store.directory import DirectoryStore
from dataplane.testing import FakeHost, FakeNetwork, started


@dataclass
class Refusal:
    code: int
    stderr: str


def cli_run(store: Path, host: FakeHost, *args: str, capsys, subnet_file: Path | None = None,
            timeout: float = 20.0) -> Refusal:
    """`dataplane run --store-dir STORE ARGS` in this process on `host`. A node that starts
    instead of refusing is stopped (SIGTERM, as systemd would) after `timeout` seconds."""
    argv = ["run", "--store-dir", str(store), "--subnet-file",
            str(subnet_file or store.parent / "a.env"), *args]
    timer = threading.Timer(timeout, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        code = cli.main(argv, host=host)
    finally:
        timer.cancel()
    return Refusal(code, capsys.readouterr().err)


def leases(store: Path) -> dict[str, dict]:
    d = store / "subnets"
    return {p.name: json.loads(p.read_text()) for p in d.iterdir()
            if not p.name.startswith(".")} if d.exists() else {}


def metrics(node: Node) -> dict[str, float]:
    """What /metrics would serve (same renderer, same parser as the namespace tests)."""
    return parse_metrics(render_metrics(node))


async def until(predicate, what: str, timeout: float = 10.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


SUBNETS = {"a": "10.244.1.0/24", "b": "10.244.2.0/24"}


class Cluster:
    """Nodes over one store directory, each on its own FakeHost (one per side, kept across
    restarts as a machine is)."""

    def __init__(self, tmp: Path, stack: contextlib.AsyncExitStack, backend: str = "udp",
                 fastpath: str = "c", config: dict | None = None,
                 new_store: Callable[[], SubnetStore] | None = None) -> None:
        """`new_store`: one store client per node start (default: the directory store in
        tmp/store, where the config is written; another store comes configured)."""
        self.tmp, self.stack, self.fastpath = tmp, stack, fastpath
        self.store = tmp / "store"
        if new_store is None:
            self.store.mkdir(exist_ok=True)
            (self.store / "config").write_text(json.dumps(
                config or {"Network": "10.244.0.0/16", "Backend": {"Type": backend}}))
        self.new_store = new_store or (lambda: DirectoryStore(self.store))
        self.net = FakeNetwork()
        stack.callback(self.net.close)
        self.hosts = {side: self.net.host() for side in SUBNETS}
        self._running: dict[str, contextlib.AsyncExitStack] = {}

    def env_file(self, side: str) -> Path:
        return self.tmp / f"{side}.env"

    async def start(self, side: str, subnet: str | None = "", **options) -> Node:
        """Start node `side` with --subnet `subnet` ("": the side's own; None: none asked)."""
        inner = contextlib.AsyncExitStack()
        store = self.new_store()
        inner.push_async_callback(store.close)
        subnet = SUBNETS[side] if subnet == "" else subnet
        node = Node(NodeOptions(
            store=store, subnet=IPv4Network(subnet) if subnet else None,
            subnet_file=str(self.env_file(side)), fastpath=self.fastpath,
            host=self.hosts[side], **options))
        try:
            await inner.enter_async_context(started(node))
        except BaseException:
            await inner.aclose()
            raise
        self._running[side] = inner
        self.stack.push_async_callback(self._stop_if_running, side)
        return node

    async def stop(self, side: str) -> None:
        await self._running.pop(side).aclose()

    async def _stop_if_running(self, side: str) -> None:
        if side in self._running:
            await self.stop(side)


def in_cluster(tmp: Path, test, **kwargs) -> None:
    """test(cluster) on the daemon's event loop (uvloop), everything stopped and closed
    afterwards."""
    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            await test(Cluster(tmp, stack, **kwargs))
    uvloop.run(main())
