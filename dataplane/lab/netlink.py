"""pyroute2 access to a namespace, imported lazily: the traffic probes run in pod namespaces
on every ping and should not pay pyroute2's import time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dataplane.lab.errors import LabError


@contextmanager
def iproute(ns: str) -> Iterator[Any]:
    """An IPRoute bound to namespace `ns`; netlink errors become LabError naming the namespace."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with IPRoute(netns=ns) as ipr:
            yield ipr
    except NetlinkError as exc:
        raise LabError(f"netlink request in namespace {ns} failed: {exc}") from exc
