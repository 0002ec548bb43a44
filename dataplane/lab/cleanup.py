"""Removing a lab by prefix, whatever state it is in (complete, half-built, crashed, gone)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from dataplane.lab import cni, naming, netns
from dataplane.lab.errors import LabError
from dataplane.lab.labetcd import terminate_members
from dataplane.lab.state import STATE_ROOT, LabState

log = logging.getLogger(__name__)


def existing_labs(state_root: Path | str = STATE_ROOT) -> list[str]:
    root = Path(state_root)
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def teardown(prefix: str, state_root: Path | str = STATE_ROOT) -> list[str]:
    """Remove a lab by prefix, whatever state it is in: daemons (SIGTERM, then SIGKILL), its
    etcd, any other process left in its namespaces, pods (CNI DEL), namespaces, state dir (with
    etcd's data). Works from state.json, from a scan of `ip netns list` when that is gone, and
    twice in a row."""
    naming.check_prefix(prefix)
    labdir = Path(state_root) / prefix
    state = None
    try:
        state = LabState.load(labdir / "state.json")
    except FileNotFoundError:
        pass
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable %s: %s", labdir / "state.json", exc)

    namespaces = {n for n in netns.list_netns() if naming.owned_namespace(prefix, n)}
    if state is not None:
        namespaces |= {n for n in state.namespaces if netns.exists(n)}
        netns.terminate((n.pid, n.pid_start) for n in state.nodes if n.pid is not None)
        # etcd after the daemons, which release their leases in it as they stop.
        terminate_members(state.etcd)
    # Whatever else still runs in the lab: daemons of a lab whose state was lost, servers a
    # benchmark left behind. They hold namespaces (and their links) alive after deletion.
    netns.terminate((pid, netns.start_time(pid)) for ns in sorted(namespaces)
                    for pid in netns.pids_in(ns))

    # CNI DEL for every pod whose ADD was started (its saved delegate config exists).
    for scratch in sorted(labdir.glob("*/cni/*.json")):
        node_ns, pod_ns = scratch.parent.parent.name, scratch.stem
        if netns.exists(node_ns):
            try:
                cni.del_pod(node_ns, pod_ns, pod_ns, scratch)
            except LabError as exc:
                log.warning("%s", exc)

    for name in sorted(namespaces, key=naming.namespace_order):
        netns.delete(name)
    left = [n for n in namespaces if netns.exists(n)]
    shutil.rmtree(labdir, ignore_errors=True)
    try:
        labdir.parent.rmdir()          # the shared root, once the last lab is gone
    except OSError:
        pass
    if left:
        raise LabError(f"could not remove namespaces {', '.join(sorted(left))}")
    return sorted(namespaces, key=naming.namespace_order)
