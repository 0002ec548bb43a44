"""Processes racing for subnet leases: the harness both stores' race tests share."""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
from collections.abc import Callable
from ipaddress import IPv4Network
from typing import Any

import pytest

from dataplane.lease import LeaseAttrs
from dataplane.store.base import NoFreeSubnet, SubnetStore, SubnetTaken

VTEP_MAC = "0e:00:00:00:00:01"


def _contend(make_store: Callable[[], SubnetStore], public_ip: str, requested: str | None,
             barrier: Any, results: Any) -> None:
    async def go() -> str:
        store = make_store()
        try:
            attrs = LeaseAttrs(public_ip, "vxlan", {"VNI": 1, "VtepMAC": VTEP_MAC})
            lease = await store.acquire_lease(
                attrs, requested=IPv4Network(requested) if requested else None)
            return str(lease.subnet)
        except NoFreeSubnet:
            return "full"
        except SubnetTaken:
            return "taken"
        finally:
            await store.close()
    barrier.wait()
    try:
        results.put((public_ip, asyncio.run(go())))
    except BaseException as exc:            # report, never hang the parent
        results.put((public_ip, f"error {exc!r}"))


def race(make_store: Callable[[], SubnetStore], n: int, requested: str | None = None,
         timeout: float = 30) -> dict[str, str]:
    """n forked processes (public IPs 10.99.0.1...), each with the store make_store() opens,
    acquire a lease at the same moment: public IP -> subnet, "full", "taken" or "error ..."."""
    ctx = multiprocessing.get_context("fork")        # make_store need not be picklable
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(make_store, f"10.99.0.{i + 1}", requested,
                                                barrier, results)) for i in range(n)]
    for p in procs:
        p.start()
    try:
        out = dict(results.get(timeout=timeout) for _ in procs)
    except queue.Empty:
        pytest.fail("a racing process did not report")
    finally:
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
    return out
