"""`dataplane explain`: one real packet, built by our fast path, printed layer by layer.

It shows what each encapsulation adds in front of a pod's packet, where every field sits, and
the MTU that follows. The bytes come from the same functions the daemon uses.
"""

from __future__ import annotations

import argparse
import struct
from dataclasses import dataclass

from dataplane import fastpath
from dataplane.backends import BACKENDS
from dataplane.errors import CommandError
from dataplane.fastpath.api import Fastpath
from dataplane.fastpath.types import parse_mac
from dataplane.layouts import ETHERNET, IPV4, TCP, UDP, VXLAN, Layout

HELP = "print one encapsulated packet layer by layer, with the overhead and MTU it forces"

POD_SRC, POD_DST = "10.244.1.2", "10.244.2.3"
NODE_SRC, NODE_DST = "10.99.0.1", "10.99.0.2"
SRC_MAC, DST_MAC = "02:00:0a:63:00:01", "02:00:0a:63:00:02"
UNDERLAY_ETH = 14          # the underlay's own Ethernet header, not part of any MTU


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=tuple(BACKENDS), default="vxlan")
    p.add_argument("--mtu", type=int, default=1500, help="underlay MTU (default %(default)s)")
    p.add_argument("--payload", type=int, default=None, metavar="BYTES",
                   help="TCP payload size (default: the largest that fits the pod MTU)")
    p.add_argument("--vni", type=int, default=1)
    p.add_argument("--fastpath", choices=fastpath.IMPLEMENTATIONS, default="python",
                   help="which implementation builds the packet (they agree byte for byte)")


@dataclass
class Segment:
    layout: Layout | None     # None: opaque bytes (payload)
    label: str
    offset: int
    data: bytes


def inner_tcp_packet(fp: Fastpath, payload_len: int) -> bytes:
    """A pod's TCP segment, checksums included, built with the fast path's checksum."""
    payload = bytes((i * 7) & 0xFF for i in range(payload_len))
    total = 40 + payload_len
    src = bytes(int(x) for x in POD_SRC.split("."))
    dst = bytes(int(x) for x in POD_DST.split("."))
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0x1C46, 0x4000, 64, 6, 0, src, dst))
    struct.pack_into("!H", ip, 10, fp.checksum(bytes(ip)))
    tcp = bytearray(struct.pack("!HHIIBBHHH", 43210, 5201, 1_000_000, 2_000_000, 5 << 4, 0x18,
                                502, 0, 0))
    pseudo = fp.csum_partial(src + dst, 6 + 20 + payload_len)
    struct.pack_into("!H", tcp, 16, fp.checksum(bytes(tcp) + payload, pseudo))
    return bytes(ip + tcp) + payload


def build(backend: str, mtu: int, payload: int | None, vni: int, impl: str) -> list[Segment]:
    fp = fastpath.load(impl)
    facts = BACKENDS[backend]
    pod_mtu = mtu - facts.overhead
    if payload is None:
        payload = pod_mtu - 40
    inner = inner_tcp_packet(fp, payload)
    if backend == "udp":
        udp_payload, sport = inner, facts.port
    else:
        udp_payload = fp.vxlan_encap(inner, vni, parse_mac(DST_MAC), parse_mac(SRC_MAC))
        sport = fp.flow_sport(inner)
    wire = fp.outer_udp4(udp_payload, NODE_SRC, NODE_DST, sport, facts.port)
    layers: list[tuple[Layout | None, str, int]] = [(IPV4, "outer IPv4", 20), (UDP, "outer UDP", 8)]
    if backend == "vxlan":
        layers += [(VXLAN, "VXLAN", 8), (ETHERNET, "inner Ethernet", 14)]
    layers += [(IPV4, "inner IPv4 (the pod's packet)", 20), (TCP, "inner TCP", 20),
               (None, "TCP payload", payload)]
    out, off = [], 0
    for layout, label, size in layers:
        out.append(Segment(layout, label, off, wire[off:off + size]))
        off += size
    assert off == len(wire)
    return out


def render(backend: str, mtu: int, segments: list[Segment]) -> str:
    lines = []
    total = sum(len(s.data) for s in segments)
    payload = len(segments[-1].data)
    title = {"udp": "flannel udp backend (raw IPv4 in UDP",
             "vxlan": "VXLAN backend (RFC 7348 as Linux speaks it"}[backend]
    title += f", port {BACKENDS[backend].port})"
    lines.append(f"{title}: pod {POD_SRC} -> pod {POD_DST}, "
                 f"node {NODE_SRC} -> node {NODE_DST}\n")
    for seg in segments:
        lines.append(f"{seg.label}: {len(seg.data)} bytes at offset {seg.offset}")
        if seg.layout is None:
            lines.append(f"  {seg.data[:16].hex(' ')} ...\n")
            continue
        lines.append(f"  {'offset':>6}  {'field':<14} {'value':<28} bytes")
        for f in seg.layout.fields:
            nbytes = (f.bits + f.shift + 7) // 8
            raw = seg.data[f.offset:f.offset + nbytes].hex(" ")
            lines.append(f"  {seg.offset + f.offset:>6}  {f.name:<14} "
                         f"{f.render(seg.data):<28} {raw}")
        lines.append("")
    overhead = BACKENDS[backend].overhead
    parts = "outer IPv4 20 + UDP 8" + (" + VXLAN 8 + inner Ethernet 14" if backend == "vxlan"
                                       else "")
    lines.append(f"overhead: {overhead} bytes per packet ({parts})")
    lines.append(f"MTU: underlay {mtu} -> pod MTU {mtu - overhead} "
                 f"(the TUN and cni0 must be {overhead} bytes smaller than the underlay)")
    on_wire = total + UNDERLAY_ETH
    lines.append(f"efficiency: {payload} bytes of TCP payload in {total} bytes of IP "
                 f"({100 * payload / total:.1f}%), {on_wire} with the underlay Ethernet header "
                 f"({100 * payload / on_wire:.1f}%); host routing would carry "
                 f"{mtu - 40} in {mtu} ({100 * (mtu - 40) / mtu:.1f}%)")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:

    overhead = BACKENDS[args.backend].overhead
    if not 68 + overhead <= args.mtu <= 65535:
        raise CommandError(f"--mtu {args.mtu}: must be between {68 + overhead} and 65535")
    if args.payload is not None and not 0 <= args.payload <= args.mtu - overhead - 40:
        raise CommandError(f"--payload {args.payload}: must be 0..{args.mtu - overhead - 40} "
                           f"to fit the pod MTU {args.mtu - overhead}")
    if not 0 <= args.vni < 1 << 24:
        raise CommandError(f"--vni {args.vni}: a VNI has 24 bits")
    segments = build(args.backend, args.mtu, args.payload, args.vni, args.fastpath)
    print(render(args.backend, args.mtu, segments))
    return 0
