"""Calling a function whose sockets live in a lab namespace, from a process that stays outside.

The lab's etcd listens on the underlay bridge, inside the underlay namespace: nothing of a lab
appears in the host's namespace, so the lab process (a test, `dataplane lab status`) cannot
connect to it from where it runs. A network namespace belongs to a thread, not a process
(setns(2) with CLONE_NEWNET moves the calling thread only), so a short-lived thread that joins
the namespace and makes its connections there reaches etcd, while every other thread of the
process stays where it was. Sockets keep the namespace they were created in.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from dataplane.lab import netns
from dataplane.lab.errors import LabError

T = TypeVar("T")
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):                      # python >= 3.12
        os.setns(fd, CLONE_NEWNET)
        return
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def call_in_netns(ns: str, fn: Callable[[], T]) -> T:
    """fn(), run on a thread of its own inside namespace `ns`; its result or its exception."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            fd = os.open(netns.netns_path(ns), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            outcome["error"] = LabError(f"namespace {ns} does not exist")
            return
        try:
            _setns(fd)
        except OSError as exc:
            outcome["error"] = LabError(f"cannot enter namespace {ns}: {exc}")
            return
        finally:
            os.close(fd)
        try:
            outcome["value"] = fn()
        except BaseException as exc:        # handed to the caller, whatever it is
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"netns:{ns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]              # type: ignore[misc]
    return outcome["value"]                 # type: ignore[return-value]
