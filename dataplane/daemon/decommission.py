"""Giving a node's subnet back: the explicit counterpart of a stop, which keeps it.

A stop (SIGTERM) leaves the lease to expire on its TTL and subnet.env in place, as flanneld
does, so a restart takes the same subnet back. Decommissioning a node is a separate act
(`dataplane leases release`, with the daemon stopped):

    1. the subnet: the one named, or the one subnet.env's FLANNEL_SUBNET names
    2. its lease deleted from the store
    3. with subnet.env given (this node is being decommissioned): CLEANUP_STEPS, in order,
       what the node leaves behind besides the lease; then subnet.env removed, and the CNI
       plugin refuses new pods. A subnet named alone is only released (any node's, from
       anywhere: nothing of this host is touched).

CLEANUP_STEPS is the one place further clean-up hooks in. Each step is a callable taking the
Decommission being carried out and returning None or an awaitable; it runs in the caller's
network namespace (the node's), after the lease is gone and before subnet.env is removed, so a
step that fails leaves subnet.env there and the command can be run again. The steps: the
FLANNEL-* chains and the flannel-ipv4 table (a stop keeps them, so pods keep their NAT across
a restart), the DirectRouting routes (a stop keeps them with the lease), and the blackhole
route of --ip-blackhole-route (left, it would swallow the subnet's traffic once another node
holds it).
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from collections.abc import Awaitable, Callable

from dataplane import subnetenv
from dataplane.lease import Lease
from dataplane.store.base import SubnetStore

log = logging.getLogger(__name__)


class DecommissionError(Exception):
    """Nothing to release, or subnet.env unreadable: a one-line message for the user."""


@dataclass
class Decommission:
    subnet: IPv4Network
    subnet_file: str | None               # removed at the end, when given
    lease: Lease | None                   # what the store held (None: had expired or gone)
    done: list[str] = field(default_factory=list)    # what was done, for the report


CleanupStep = Callable[[Decommission], Awaitable[None] | None]

def remove_netfilter_rules(job: Decommission) -> None:
    from dataplane.netfilter import remove_rules
    job.done += [f"removed {what}" for what in remove_rules()]


async def remove_direct_routes(job: Decommission) -> None:
    import asyncio

    from dataplane import hostnet
    # pyroute2's synchronous API refuses to run on a thread whose event loop is running
    removed = await asyncio.to_thread(hostnet.remove_direct_routes)
    job.done += [f"removed the direct route to {subnet}" for subnet in removed]


async def remove_blackhole_route(job: Decommission) -> None:
    import asyncio

    from dataplane import hostnet
    if await asyncio.to_thread(hostnet.remove_blackhole_route, str(job.subnet)):
        job.done.append(f"removed the blackhole route to {job.subnet}")


# Clean-up steps beyond the lease and subnet.env (see the module docstring).
CLEANUP_STEPS: list[CleanupStep] = [remove_netfilter_rules, remove_direct_routes,
                                    remove_blackhole_route]


def subnet_from_file(path: str) -> IPv4Network:
    """The subnet FLANNEL_SUBNET names in subnet.env; DecommissionError if it cannot be read."""
    try:
        values = subnetenv.read(path)
    except FileNotFoundError:
        raise DecommissionError(f"{path}: no such file (nothing to decommission, or give the "
                                "subnet)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DecommissionError(f"{path}: cannot read it: "
                                f"{getattr(exc, 'strerror', None) or exc}") from None
    value = values.get("FLANNEL_SUBNET")
    if not value:
        raise DecommissionError(f"{path}: no FLANNEL_SUBNET line")
    try:
        return IPv4Network(value, strict=False)
    except ValueError:
        raise DecommissionError(f"{path}: FLANNEL_SUBNET={value} is not an IPv4 subnet") from None


async def decommission(store: SubnetStore, subnet: IPv4Network | None = None,
                       subnet_file: str | None = None,
                       steps: list[CleanupStep] | None = None) -> Decommission:
    """Release `subnet` (default: subnet_file's) and, with subnet_file, clean the node up.

    DecommissionError: no lease on an explicitly named subnet, subnet.env unreadable or naming
    another subnet. Store errors (StoreUnavailable, ...) propagate. With subnet_file, a lease
    already gone (expired, released) is no error: the rest of the node is still cleaned up."""
    if subnet_file is not None:
        named = subnet_from_file(subnet_file)
        if subnet is not None and named != subnet:
            raise DecommissionError(f"{subnet_file} names {named}, not {subnet}: give one of "
                                    "them")
        subnet = named
    elif subnet is None:
        raise DecommissionError("name the subnet to release, or give --subnet-file")
    leases, _ = await store.list_leases()
    lease = next((l for l in leases if l.subnet == subnet), None)
    if lease is None and subnet_file is None:
        held = ", ".join(str(l.subnet) for l in leases) or "none"
        raise DecommissionError(f"no lease on {subnet} in {store.location} (leases: {held})")
    job = Decommission(subnet, subnet_file, lease)
    if lease is not None:
        await store.release_lease(subnet)
        job.done.append(f"released lease {subnet} (held by {lease.public_ip})")
    else:
        job.done.append(f"no lease on {subnet} any more (expired or released)")
    if subnet_file is not None:             # this node is going: what it left behind goes
        for step in CLEANUP_STEPS if steps is None else steps:
            result = step(job)
            if inspect.isawaitable(result):
                await result
        try:
            os.unlink(subnet_file)
            job.done.append(f"removed {subnet_file}")
        except FileNotFoundError:
            pass
    for line in job.done:
        log.debug("%s", line)
    return job
