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


def _store_args(state: LabState, labdir: Path) -> list[str] | None:
    """How a daemon of this lab was pointed at its store; None for a lab without one."""
    kind = state.options.get("store", "directory")
    if kind == "etcd":
        return ["--etcd-endpoints", ",".join(m.client_url for m in state.etcd)] \
            if state.etcd else None
    if state.options.get("backend") == "host-gw":
        return None
    return ["--store-dir", str(labdir / "store")]


def _decommission_nodes(state: LabState, labdir: Path) -> None:
    """Every node that has a subnet.env gives its subnet back, as an operator decommissions
    a node; best effort (a crashed lab's store may be gone: the lab's removal takes it)."""
    from dataplane.lab.daemon import decommission

    store_args = _store_args(state, labdir)
    for node in state.nodes:
        if not node.subnet_file.exists():
            continue
        if store_args is None or not netns.exists(node.netns):
            node.subnet_file.unlink(missing_ok=True)
            continue
        try:
            log.info("%s: %s", node.name, decommission(node, store_args))
        except LabError as exc:
            log.warning("%s; removing %s anyway", exc, node.subnet_file)
            node.subnet_file.unlink(missing_ok=True)


def teardown(prefix: str, state_root: Path | str = STATE_ROOT) -> list[str]:
    """Remove a lab by prefix, whatever state it is in: daemons (SIGTERM, then SIGKILL), their
    nodes decommissioned (a stop keeps lease and subnet.env: `dataplane leases release
    --subnet-file`), its etcd, any other process left in its namespaces, pods (CNI DEL),
    namespaces, state dir (with etcd's data). Works from state.json, from a scan of `ip netns
    list` when that is gone, and twice in a row."""
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
        # Decommissioned before etcd goes: their leases are released in it.
        _decommission_nodes(state, labdir)
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
