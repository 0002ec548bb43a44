"""Seed corpora for the fuzz targets, generated (nothing binary is committed): a few well-formed
inputs per target in the layout its harness reads (see the comment at the top of each
fuzz_*.c), so the fuzzer starts from packets that get deep into the code and mutates from
there. Packets are built here with the reference's checksum; seeds need to be good inputs,
not to judge anything.

    python3 -m tests.fuzz.seeds DIR [TARGET...]     # writes DIR/<target>/seed-NN
"""

from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

from dataplane.fastpath import pyref as P
from dataplane.fastpath.types import (
    GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_UDP_L4, VNET_F_NEEDS_CSUM, VnetHdr,
)

ACK, PSH, FIN, CWR = 0x10, 0x08, 0x01, 0x80
LOCAL = bytes([10, 244, 1, 5])
POD2, POD3, NOWHERE = bytes([10, 244, 2, 7]), bytes([10, 244, 3, 7]), bytes([10, 250, 0, 1])
OWN_MAC = bytes([2, 0, 0, 0, 0, 1])
PEER_MAC = {2: bytes([2, 0, 0, 0, 0, 2]), 3: bytes([2, 0, 0, 0, 0, 3])}
BODY = random.Random(5).randbytes(70_000)


def ipv4(proto: int, l4: bytes, src: bytes, dst: bytes, ident: int = 1, ttl: int = 64,
         df: bool = True) -> bytes:
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident & 0xFFFF,
                                0x4000 if df else 0, ttl, proto, 0, src, dst))
    struct.pack_into("!H", hdr, 10, P.checksum(bytes(hdr)))
    return bytes(hdr) + l4


def _l4_check(src: bytes, dst: bytes, proto: int, l4: bytes, partial: bool) -> int:
    pseudo = P.csum_partial(src + dst, proto + len(l4))
    return pseudo if partial else (P.checksum(l4, pseudo) or 0xFFFF)


def tcp(payload: bytes, src: bytes = LOCAL, dst: bytes = POD2, seq: int = 1000,
        flags: int = ACK, options: bytes = b"", partial: bool = False, **ip) -> bytes:
    hdr = bytearray(struct.pack("!HHIIBBHHH", 40000, 5201, seq, 77, (20 + len(options)) // 4 << 4,
                                flags, 502, 0, 0) + options)
    struct.pack_into("!H", hdr, 16, _l4_check(src, dst, 6, bytes(hdr) + payload, partial))
    return ipv4(6, bytes(hdr) + payload, src, dst, **ip)


def udp(payload: bytes, src: bytes = LOCAL, dst: bytes = POD2, partial: bool = False,
        **ip) -> bytes:
    hdr = bytearray(struct.pack("!HHHH", 40000, 4433, 8 + len(payload), 0))
    struct.pack_into("!H", hdr, 6, _l4_check(src, dst, 17, bytes(hdr) + payload, partial))
    return ipv4(17, bytes(hdr) + payload, src, dst, **ip)


def tso(size: int, mss: int, **kw) -> bytes:
    """A TUN read: virtio_net_hdr for a TSO super-packet, then the packet."""
    pkt = tcp(BODY[:size], partial=True, **kw)
    hlen = 20 + (pkt[32] >> 4) * 4
    return VnetHdr(VNET_F_NEEDS_CSUM, GSO_TCPV4, hlen, mss, 20, 16).pack() + pkt


def uso(size: int, seg: int, **kw) -> bytes:
    pkt = udp(BODY[:size], partial=True, **kw)
    return VnetHdr(VNET_F_NEEDS_CSUM, GSO_UDP_L4, 28, seg, 20, 6).pack() + pkt


def stream(n: int, mss: int, src: bytes = POD2, dst: bytes = LOCAL, last: int | None = None,
           **kw) -> list[bytes]:
    kw.setdefault("options", b"\x01\x01\x08\x0a" + bytes(range(8)))
    out = []
    for i in range(n):
        size = last if last is not None and i == n - 1 else mss
        out.append(tcp(BODY[i * mss:i * mss + size], src=src, dst=dst, seq=1000 + i * mss,
                       ident=100 + i, **kw))
    return out


def udp_stream(n: int, size: int, src: bytes = POD2, dst: bytes = LOCAL) -> list[bytes]:
    return [udp(BODY[i * size:(i + 1) * size], src=src, dst=dst, ident=i) for i in range(n)]


def _bad(pkt: bytes) -> bytes:
    """The packet with its L4 checksum off by one (BAD_L4_CHECKSUM on ingress)."""
    b = bytearray(pkt)
    at = 20 + (16 if b[9] == 6 else 6)
    b[at + 1] ^= 1
    return bytes(b)


def rec(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big") + b


def vxlan(inner: bytes, peer: int) -> bytes:
    return P.vxlan_encap(inner, 1, OWN_MAC, PEER_MAC[peer])


# ---- per target --------------------------------------------------------------------------

def gso() -> list[bytes]:
    def case(read: bytes, ctl: int = 0) -> bytes:
        return read[:10] + bytes([ctl]) + read[10:]
    partial_udp = udp(BODY[:300], partial=True)
    return [
        case(tso(3000, 500)), case(tso(3000, 500), 1),
        case(tso(1448 * 4 + 3, 1448, flags=ACK | PSH | FIN)),
        case(tso(2000, 536, options=bytes([2, 4, 5, 0xB4]) + bytes(8)), 1),
        case(VnetHdr(VNET_F_NEEDS_CSUM, GSO_TCPV4 | GSO_ECN, 40, 700, 20, 16).pack()
             + tcp(BODY[:2100], partial=True, flags=ACK | CWR)),
        case(uso(2400, 800)), case(uso(301, 100), 1),
        case(VnetHdr(VNET_F_NEEDS_CSUM, GSO_NONE, 0, 0, 20, 6).pack() + partial_udp),
        case(VnetHdr().pack() + tcp(BODY[:64])),
        case(tso(4000, 64), 3 << 1 | 5 << 3),                      # a small output buffer
        case(tso(60000, 1448), 2 << 1),
        case(VnetHdr().pack() + bytes([0x60]) + bytes(39)),        # IPv6
    ]


def gro() -> list[bytes]:
    return [
        bytes([1]) + b"".join(rec(p) for p in stream(12, 200)),
        bytes([1]) + b"".join(rec(p) for p in stream(6, 300, last=100)),
        bytes([3]) + b"".join(rec(p) for p in udp_stream(8, 150)),
        bytes([3]) + b"".join(rec(p) for pair in zip(stream(5, 100), udp_stream(5, 120),
                                                    stream(5, 100, src=POD3)) for p in pair),
        bytes([1]) + b"".join(rec(p) for p in stream(4, 100, flags=ACK | PSH)),
        bytes([1]) + b"".join(rec(p) for p in stream(6, 100, df=False)),
        # checksum states given (bit 2): a partial run, a bad segment in the middle; then
        # super-packets marked (bit 3) among partial and complete segments
        bytes([1 | 4]) + b"".join(rec(p) for p in stream(8, 200, partial=True)),
        bytes([3 | 4]) + b"".join(rec(p) for p in stream(3, 200)[:2] + [_bad(stream(3, 200)[2])]
                                  + stream(4, 200, partial=True)),
        bytes([3 | 4 | 8]) + b"".join(rec(p) for p in [
            *stream(2, 300, partial=True),
            tcp(BODY[:6000], src=POD2, dst=LOCAL, partial=True),
            udp(BODY[:4000], src=POD2, dst=LOCAL, partial=True), *udp_stream(3, 150)]),
    ]


def ingress() -> list[bytes]:
    def batch(ctl: int, items: list[tuple[int, bytes]]) -> bytes:
        return bytes([ctl]) + b"".join(bytes([who]) + rec(d) for who, d in items)
    s2, s3 = stream(6, 200), stream(3, 100, src=POD3)
    return [
        batch(2, [(0, p) for p in s2] + [(1, p) for p in s3]),                    # udp, TTL
        batch(1, [(0, vxlan(p, 2)) for p in s2] + [(1, vxlan(p, 3)) for p in s3]),  # vxlan
        batch(3, [(0, vxlan(s3[0], 2)), (3, vxlan(s2[0], 2)), (2, vxlan(s2[1], 2)),
                  (0, vxlan(udp(b"x" * 50, src=POD2, dst=LOCAL), 2))]),
        batch(2 | 2 << 2, [(0, udp(BODY[:1500], src=POD2, dst=LOCAL)),     # max_inner 576
                           (0, tcp(b"", src=POD2, dst=LOCAL, ttl=1))] +
              [(0, tcp(b"hello", src=LOCAL, dst=d)) for d in (LOCAL, POD2, POD3, NOWHERE)]),
        # max_inner 1450: partial, bad and super-packets (TCP; UDP with the hint, bit 7), with
        # a vnet TUN (bit 4) and without USO, then with it (bit 5)
        *(batch(1 << 2 | io, [(0, p) for p in stream(3, 200, partial=True)] +
                [(0, _bad(s2[0])), (0, tcp(BODY[:6000], src=POD2, dst=LOCAL, partial=True)),
                 (0x80, udp(BODY[:4000], src=POD2, dst=LOCAL, partial=True)),
                 (0, udp(BODY[:300], src=POD2, dst=LOCAL, partial=True))])
          for io in (0, 16, 48)),
    ]


def drain_tun() -> list[bytes]:
    def reads(ctl: int, rs: list[bytes]) -> bytes:
        return bytes([ctl]) + b"".join(rec(r) for r in rs)
    plain = VnetHdr().pack()
    return [
        reads(2, [tso(5000, 1448), uso(2000, 500, dst=POD3), plain + tcp(b"hi", dst=NOWHERE)]),
        reads(3, [tso(3000, 700), tso(3000, 700, dst=POD3), plain + udp(b"x" * 80)]),
        reads(6, [tso(8000, 1000), uso(1000, 300)]),                 # UDP_SEGMENT refused
        reads(0, [tso(2000, 400), b"", plain]),                      # one by one
        reads(2 | 2 << 3, [tso(1000, 100) for _ in range(4)]),       # budget 2
        reads(2, [tso(60000, 200)]),
    ]


def drain_udp() -> list[bytes]:
    def runs(ctl: int, items: list[tuple[int, list[bytes]]]) -> bytes:
        out = bytes([ctl])
        for who, segs in items:
            gso = len(segs[0]) if len(segs) > 1 else 0
            out += bytes([who]) + gso.to_bytes(2, "big") + rec(b"".join(segs))
        return out
    s = stream(10, 300)
    u = udp_stream(6, 200)
    return [
        runs(2, [(0, s), (1, stream(3, 200, src=POD3)), (0, s[:1])]),
        runs(3, [(0, [vxlan(p, 2) for p in s]),
                 (1, [vxlan(p, 3) for p in stream(4, 100, src=POD3)])]),
        runs(6, [(0, u), (0, stream(5, 300, last=10))]),                  # USO
        runs(0, [(0, s[:4]), (2, s[4:])]),                                # no vnet; a stranger
        runs(2 | 1 << 3, [(0, s[:3]), (0, s[3:6])]),                      # budget 1
    ]


# Inputs that once crashed a target, replayed by test_fuzz.py before it fuzzes: target ->
# {name: input}.
REGRESSIONS: dict[str, dict[str, bytes]] = {}

TARGETS = {"gso": gso, "gro": gro, "ingress": ingress, "drain_tun": drain_tun,
           "drain_udp": drain_udp}


def write(target: str, directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    seeds = TARGETS[target]()
    for i, seed in enumerate(seeds):
        (directory / f"seed-{i:02d}").write_bytes(seed)
    return len(seeds)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    out = Path(argv[0])
    for t in argv[1:] or TARGETS:
        print(f"{t}: {write(t, out / t)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
