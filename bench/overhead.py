"""What an encapsulation costs on paper: its headers, the pod MTU it forces, and the share
of the underlay's bytes left for the pod's packet. The headers are read off a real packet
built by `dataplane explain`, so the report and that command cannot disagree."""

from __future__ import annotations

from functools import cache

from dataplane import explain

INNER_LABEL = "inner IPv4"       # explain's segments from here on are the pod's packet
IP_UDP = 28                      # the inner IPv4 + UDP headers of a UDP test packet


@cache
def headers(encap: str | None, underlay_mtu: int = 1500) -> tuple[tuple[str, int], ...]:
    """(header, bytes) put in front of each pod packet, outermost first."""
    if encap is None:
        return ()
    segments = explain.build(encap, underlay_mtu, None, 1, "python")
    out = []
    for seg in segments:
        if seg.label.startswith(INNER_LABEL):
            break
        out.append((seg.label, len(seg.data)))
    return tuple(out)


def overhead(encap: str | None) -> int:
    return sum(size for _, size in headers(encap))


def pod_mtu(encap: str | None, underlay_mtu: int = 1500) -> int:
    return underlay_mtu - overhead(encap)


def efficiency(inner_size: float, encap: str | None) -> float:
    """Inner IP bytes per underlay IP byte for one packet of `inner_size` bytes."""
    return inner_size / (inner_size + overhead(encap))
