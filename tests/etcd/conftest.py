"""Fixtures for the etcd store's tests: real etcd servers on loopback, stopped even on failure.

One etcd serves the whole session (each test under its own key prefix); tests that stop, kill,
compact or pause etcd start their own with `etcd_factory`. Skipped only without /usr/bin/etcd.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvloop

from dataplane.store.etcd_server import INSTALL_HINT, EtcdServer, find_etcd, start_cluster
from tests.etcd.etcd_helpers import (DirectoryKind, EtcdKind, StoreKind, close_stores,
                                     shm_tempdir)


def _need_etcd() -> None:
    if find_etcd() is None:
        pytest.skip(f"etcd is not installed ({INSTALL_HINT})")


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """run(coro, timeout=10): the coroutine's result, on a fresh loop of the parametrized kind;
    then the stores it opened through StoreKind.new_store() are closed on that loop."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run(coro: Awaitable[Any], timeout: float = 10.0) -> Any:
        async def main() -> Any:
            try:
                return await asyncio.wait_for(coro, timeout)
            finally:
                await close_stores()           # those the test made with StoreKind.new_store
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main())
    return run


class _Servers:
    """Starts etcd servers and stops every one of them, whatever happened."""

    def __init__(self) -> None:
        self.dirs: list[str] = []
        self.servers: list[EtcdServer] = []

    def one(self, **kwargs: Any) -> EtcdServer:
        d = shm_tempdir("etcd-test-")
        self.dirs.append(d)
        server = EtcdServer(Path(d) / "data", fast=True, **kwargs)
        self.servers.append(server)
        return server.start()

    def cluster(self, size: int = 3) -> list[EtcdServer]:
        d = shm_tempdir("etcd-cluster-")
        self.dirs.append(d)
        members = start_cluster(d, size, fast=True)
        self.servers += members
        return members

    def stop_all(self) -> None:
        for server in self.servers:
            if server.proc is not None and server.proc.poll() is None:
                os.kill(server.proc.pid, signal.SIGCONT)      # in case a test paused it
            server.stop()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    _need_etcd()
    servers = _Servers()
    try:
        yield servers.one()
    finally:
        servers.stop_all()


@pytest.fixture
def etcd_url(etcd_server: EtcdServer) -> str:
    return etcd_server.client_url


@pytest.fixture
def etcd_factory() -> Iterator[_Servers]:
    """For tests that stop, kill or compact their etcd: servers of their own."""
    _need_etcd()
    servers = _Servers()
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture(params=["directory", "etcd"])
def kind(request: pytest.FixtureRequest, tmp_path: Path) -> StoreKind:
    """A fresh, configured store location of either kind (etcd: a new prefix)."""
    if request.param == "directory":
        return DirectoryKind(tmp_path / "store")
    return EtcdKind(request.getfixturevalue("etcd_url"))
