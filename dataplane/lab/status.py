"""`dataplane lab status` as text: the nodes, the pods and who can reach whom."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

OK, FAIL, SELF = "ok", "FAIL", "-"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
            for row in (header, *rows)]


def render(status: dict[str, Any],
           matrix: dict[tuple[str, str], bool] | None = None,
           paths: Sequence[dict[str, Any]] | None = None) -> str:
    lines = [f"lab {status['prefix']}: backend {status['backend']}, network "
             f"{status['network']}, phase {status['phase']}",
             f"state {status['state_dir']}, underlay namespace {status['underlay_ns']} "
             "(bridge br0)" + (f", outside host {status['outside']['ns']} "
                               f"{status['outside']['ip']}" if status.get("outside") else ""),
             *render_store(status.get("store") or {}), ""]
    node_rows = []
    for n in status["nodes"]:
        if n["daemon_pid"] is None:
            daemon = "-"
        else:
            daemon = f"pid {n['daemon_pid']} {'alive' if n['daemon_alive'] else 'DEAD'}"
        node_rows.append([n["name"] + ("" if n["netns_exists"] else " (gone)"), n["backend"],
                          n["underlay_ip"], n["subnet"], n["vtep_mac"] or "-", daemon])
    lines += table(["NODE", "BACKEND", "UNDERLAY", "SUBNET", "VTEP MAC", "DAEMON"], node_rows)
    lines.append("")
    pods = status["pods"]
    if pods:
        lines += table(["POD", "NODE", "IP"], [[p["name"], p["node"], p["ip"] or "(no address)"]
                                                for p in pods])
    else:
        lines.append("no pods")
    if matrix is not None:
        lines += ["", *render_matrix(status["prefix"], [p["name"] for p in pods], matrix)]
    if paths:
        lines += ["", *render_paths(paths)]
    return "\n".join(lines)


def render_store(store: dict[str, Any]) -> list[str]:
    if store.get("kind") in (None, "none"):
        return []
    lines = [f"store {store['location']}"]
    if store["kind"] == "etcd":
        rows = []
        for m in store["members"]:
            if m["pid"] is None:
                process = "stopped"
            else:
                process = f"pid {m['pid']} {'alive' if m['alive'] else 'DEAD'}"
            health = "leader" if m["leader"] else ("healthy" if m["healthy"] else "UNHEALTHY")
            rows.append([m["name"], m["client_url"], process, health])
        lines += ["", *table(["ETCD", "CLIENT URL", "PROCESS", "STATE"], rows),
                  f"read it: {store['etcdctl']}"]
    return lines


def render_matrix(prefix: str, names: Sequence[str],
                  matrix: dict[tuple[str, str], bool]) -> list[str]:
    if not matrix:
        return ["reachability: fewer than two pods with addresses"]
    short = {n: n[len(prefix) + 1:] for n in names}
    rows = []
    for src in names:
        row = [src]
        for dst in names:
            if src == dst:
                row.append(SELF)
            elif (src, dst) in matrix:
                row.append(OK if matrix[(src, dst)] else FAIL)
            else:
                row.append("?")
        rows.append(row)
    good = sum(matrix.values())
    return ["reachability (ICMP echo, row pings column):",
            *table(["FROM \\ TO", *(short[n] for n in names)], rows),
            f"{good}/{len(matrix)} pairs reachable"]


def render_paths(paths: Sequence[dict[str, Any]]) -> list[str]:
    """The four kinds of pod traffic (dataplane.lab.paths), with what the far end saw."""
    first = paths[0]
    rows = []
    for p in paths:
        seen = p["seen"] or "(nothing arrived)"
        if p["note"]:
            seen += f" ({p['note']})"
        rows.append([p["kind"], f"{p['dst_ip']} in {p['dst']}", p["via"], seen,
                     OK if p["seen"] and p["replied"] else FAIL])
    return [f"pod traffic from {first['src']} ({first['src_ip']}), one UDP datagram each way; "
            "SEEN FROM is the source address the far end saw:",
            *table(["KIND", "TO", "VIA", "SEEN FROM", ""], rows)]
