"""The lab's side of the subnet store, synchronous, over `dataplane.store`'s directory store
or, with `--store etcd`, its etcd store (EtcdLabStore).

The lab plays two roles flannel leaves to others: the operator who writes the network config,
and flanneld on the kernel-vxlan nodes it programs itself, which take their leases through the
store like any daemon, so our daemons learn them by the same list and watch. (host-gw labs use
no store: dataplane.netconf accepts only the backends our daemon runs, udp and vxlan.)

    <store>/config                    flannel's net-conf.json
    <store>/subnets/10.244.1.0-24     one lease per node subnet

`daemon_args()` is how a daemon is pointed at the store, `_open()` the one place that picks
the store implementation and `_run()` where its calls are made (for etcd: from inside the
underlay namespace, where etcd listens).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any, TypeVar

from dataplane.lab.errors import LabError
from dataplane.lab.flannel import write_atomic
from dataplane.lab.nsthread import call_in_netns
from dataplane.lease import Lease, LeaseAttrs
from dataplane.store.base import StoreError, SubnetStore
from dataplane.store.directory import DirectoryStore

T = TypeVar("T")


class LabStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def location(self) -> str:
        return str(self.root)

    def daemon_args(self) -> list[str]:
        return ["--store-dir", str(self.root)]

    def write_config(self, conf_json: str) -> None:
        write_atomic(self.root / "config", conf_json + "\n")

    def acquire(self, subnet: IPv4Network, attrs: LeaseAttrs) -> Lease:
        """Take exactly `subnet` for attrs.public_ip, as flanneld does at start (24 h TTL; a
        lab does not renew, it lives far less)."""
        lease: Lease = self._call(lambda s: s.acquire_lease(attrs, requested=subnet))
        return lease

    def release(self, subnet: IPv4Network) -> None:
        """Give a subnet back, as an operator decommissioning a node does."""
        self._call(lambda s: s.release_lease(subnet))

    def leases(self) -> dict[IPv4Network, Lease]:
        """Every unexpired lease, by subnet."""
        leases, _ = self._call(lambda s: s.list_leases())
        return {lease.subnet: lease for lease in leases}

    def _open(self) -> SubnetStore:
        return DirectoryStore(self.root)

    def _run(self, coro_fn: Callable[[], Awaitable[T]]) -> T:
        return _run_sync(coro_fn)

    def _call(self, op: Callable[[Any], Awaitable[T]]) -> T:
        async def go() -> T:
            async with self._open() as store:
                return await op(store)
        try:
            return self._run(go)
        except (StoreError, ValueError) as exc:
            raise LabError(f"subnet store {self.location}: {exc}") from exc


class EtcdLabStore(LabStore):
    """The lab's etcd (labetcd), under flannel's default prefix /coreos.com/network."""

    def __init__(self, endpoints: str, netns_name: str) -> None:
        self.endpoints = endpoints
        self.netns = netns_name

    @property
    def location(self) -> str:
        return f"etcd {self.endpoints}"

    def daemon_args(self) -> list[str]:
        return ["--etcd-endpoints", self.endpoints]

    def write_config(self, conf_json: str) -> None:
        self._call(lambda s: s.write_network_config(conf_json))

    def _open(self) -> SubnetStore:
        from dataplane.store.etcd import EtcdStore      # only etcd labs load the etcd modules
        return EtcdStore(self.endpoints)

    def _run(self, coro_fn: Callable[[], Awaitable[T]]) -> T:
        return call_in_netns(self.netns, lambda: asyncio.run(coro_fn()))  # type: ignore[arg-type]


def _run_sync(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, also when the caller (a benchmark
    harness, say) is itself inside a running event loop: then on a thread of its own."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is None:
        return asyncio.run(coro_fn())   # type: ignore[arg-type]
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_fn())).result()  # type: ignore[arg-type]
