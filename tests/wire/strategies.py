"""Hypothesis strategies: configs, peers, and packets from valid to hostile.

Addresses come from small pools (our subnet, peer subnets, special addresses) so that random
packets actually hit every branch: known peers, spoofed sources, broadcasts, our own MAC.
"""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import strategies as st
from scapy.utils import checksum as scapy_checksum

from dataplane.fastpath.types import IO_VNET, MODE_UDP, MODE_VXLAN, ForwarderConfig

MACS = [bytes.fromhex(m) for m in ("020000000001", "020000000002", "020000000003",
                                   "ffffffffffff", "000000000000")]
PUBLIC_IPS = [f"127.0.0.{i}" for i in range(1, 7)]
SUBNETS = ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24", "10.244.3.128/25",
           "10.244.0.0/16", "10.244.4.7/32", "0.0.0.0/0", "10.0.0.0/8"]
SPECIAL_ADDRS = ["10.244.1.5", "10.244.1.0", "10.244.2.7", "10.244.3.200", "10.244.4.7",
                 "10.250.0.1", "8.8.8.8", "0.0.0.0", "255.255.255.255", "224.0.0.1",
                 "239.1.2.3"]

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)

addresses = st.sampled_from([int(ipaddress.IPv4Address(a)) for a in SPECIAL_ADDRS]) | u32
protos = st.sampled_from([1, 6, 17, 47]) | u8
ttls = st.sampled_from([0, 1, 2, 64, 255]) | u8
frags = st.sampled_from([0, 0x4000, 0x2000, 0x0001, 0x2001, 0x1FFF]) | u16
icmp_types = st.sampled_from([0, 3, 4, 5, 8, 11, 12]) | u8


def _fix_checksum(hdr: bytearray, ihl: int) -> None:
    hdr[10:12] = b"\0\0"
    hdr[10:12] = struct.pack("!H", scapy_checksum(bytes(hdr[:ihl])))


@st.composite
def valid_ipv4(draw, src=addresses, dst=addresses, max_payload: int = 120) -> bytes:
    proto = draw(protos)
    if proto == 1:
        l4 = bytes([draw(icmp_types), draw(u8)]) + draw(st.binary(max_size=max_payload))
    elif proto in (6, 17):
        l4 = struct.pack("!HH", draw(u16), draw(u16)) + draw(st.binary(max_size=max_payload))
    else:
        l4 = draw(st.binary(max_size=max_payload))
    if draw(st.integers(0, 9)) == 0:                       # now and then a full-size packet
        l4 += bytes(draw(st.sampled_from([1400, 1480])))
    options = draw(st.sampled_from([b"", b"", b"", b"\x01" * 4, b"\x01" * 40]))
    ihl = 20 + len(options)
    saddr, daddr = draw(src), draw(dst)
    if proto in (6, 17):
        l4 = _l4_checksum(draw, proto, bytearray(l4), saddr, daddr)
    hdr = bytearray(struct.pack("!BBHHHBBHII", 0x40 | ihl // 4, draw(u8), ihl + len(l4),
                                draw(u16), draw(frags), draw(ttls), proto, 0, saddr,
                                daddr) + options)
    _fix_checksum(hdr, ihl)
    return bytes(hdr) + l4


def _l4_checksum(draw, proto: int, l4: bytearray, saddr: int, daddr: int) -> bytes:
    """TCP/UDP with a checksum that is random, right, partial (the pseudo-header sum a
    CHECKSUM_PARTIAL kernel sender leaves), 0 or off by one bit; lengths that agree."""
    how = draw(st.sampled_from(["random", "right", "right", "partial", "partial", "zero", "off"]))
    if how == "random":
        return bytes(l4)
    at = 16 if proto == 6 else 6
    if len(l4) < at + 2:
        l4 += bytes(at + 2 - len(l4))
    if proto == 6:
        l4[12] = draw(st.sampled_from([0x50, 0x50, 0x80])) if len(l4) >= 32 else 0x50
    else:
        l4[4:6] = struct.pack("!H", len(l4))
    l4[at:at + 2] = b"\0\0"
    pseudo = struct.pack("!IIBBH", saddr, daddr, 0, proto, len(l4))
    psum = 0xFFFF & ~scapy_checksum(pseudo)                # folded, not complemented
    right = scapy_checksum(pseudo + bytes(l4)) or (0xFFFF if proto == 17 else 0)
    value = {"right": right, "partial": psum or 0xFFFF, "zero": 0, "off": right ^ 0x0100}[how]
    l4[at:at + 2] = struct.pack("!H", value)
    return bytes(l4)


MUTATIONS = ["byte", "byte-fixed", "truncate", "cut-l4", "trail", "total", "ihl", "empty",
             "garbage"]


@st.composite
def mutated(draw, pkt: bytes, intact: int = 2) -> bytes:
    """pkt unchanged (intact chances in len(MUTATIONS) + intact) or broken in one of the ways
    a wire or a bug breaks packets."""
    how = draw(st.sampled_from(["none"] * intact + MUTATIONS))
    buf = bytearray(pkt)
    if how == "byte" and buf:
        buf[draw(st.integers(0, len(buf) - 1))] = draw(u8)
    elif how == "byte-fixed" and len(buf) >= 20:           # a change the checksum vouches for
        buf[draw(st.integers(0, 19))] = draw(u8)
        ihl = (buf[0] & 0xF) * 4
        if 20 <= ihl <= len(buf):
            _fix_checksum(buf, ihl)
    elif how == "truncate":
        del buf[draw(st.integers(0, len(buf))):]
    elif how == "cut-l4" and len(buf) >= 20:              # a few bytes of L4, or none
        ihl = max(20, (buf[0] & 0xF) * 4)
        del buf[ihl + draw(st.integers(0, 8)):]
        if draw(st.booleans()) and len(buf) >= ihl:        # ... in a packet that says so
            buf[2:4] = struct.pack("!H", len(buf))
            _fix_checksum(buf, ihl)
    elif how == "trail":
        buf += draw(st.binary(min_size=1, max_size=40))
    elif how == "total" and len(buf) >= 20:                # a lying total length, checksummed
        buf[2:4] = struct.pack("!H", draw(st.sampled_from([0, 19, 20, len(buf) + 1]) | u16))
        _fix_checksum(buf, 20)
    elif how == "ihl" and len(buf) >= 20:                  # IHL < 5, or past the data
        buf[0] = 0x40 | draw(st.integers(0, 15))
        ihl = (buf[0] & 0xF) * 4
        _fix_checksum(buf, max(20, min(ihl, len(buf) - len(buf) % 2)))
    elif how == "empty":
        buf = bytearray()
    elif how == "garbage":
        buf = bytearray(draw(st.binary(max_size=80)))
    return bytes(buf)


def packets(src=addresses, dst=addresses, intact: int = 2):
    return valid_ipv4(src, dst).flatmap(lambda p: mutated(p, intact))


configs = st.builds(
    ForwarderConfig,
    mode=st.sampled_from([MODE_UDP, MODE_VXLAN]),
    local_subnet=st.sampled_from(SUBNETS[:3] + ["10.244.0.0/16", "10.244.1.5/32"]),
    port=st.integers(1, 0xFFFF),
    vni=st.sampled_from([1, 0, 0xFFFFFF, 0x1000001]) | u32,
    mac=st.sampled_from(MACS),
    ttl_decrement=st.sampled_from([None, True, False]),
    max_inner=st.sampled_from([65535, 65535, 65535, 1500, 20, 24, 0]),   # 20: a bare header
    io_flags=st.sampled_from([0, 0, IO_VNET]),     # IO_VNET: partial checksums stay partial
    icmp_rate=st.sampled_from([1000, 1000, 0, 1, 3]),       # 1: a refill each second or so
    icmp_burst=st.sampled_from([50, 1, 2, 0]),
)

peers = st.tuples(st.sampled_from(SUBNETS), st.sampled_from(PUBLIC_IPS), st.sampled_from(MACS))


@st.composite
def vxlan_payload(draw, inner: bytes, vni=st.sampled_from([1, 0xFFFFFF]) | u32,
                  dst_mac=st.sampled_from(MACS), src_mac=st.sampled_from(MACS)) -> bytes:
    """inner wrapped as a VXLAN payload, usually right, sometimes wrong in one field."""
    hdr = bytearray(struct.pack("!II", 0x08000000, (draw(vni) & 0xFFFFFF) << 8) +
                    draw(dst_mac) + draw(src_mac) + b"\x08\x00")
    if draw(st.integers(0, 3)) == 0:                        # flags and reserved bytes first
        hdr[draw(st.sampled_from([0, 1, 2, 3, 7]) | st.integers(0, 21))] = draw(u8)
    frame = bytes(hdr) + inner
    return draw(mutated(frame)) if draw(st.integers(0, 5)) == 0 else frame


def addr_in(cidr: str):
    net = ipaddress.IPv4Network(cidr, strict=False)
    base = int(net.network_address)
    return st.integers(0, net.num_addresses - 1).map(lambda off: base + off)


def _often(value, others):
    """value three times out of four, else one of others."""
    return st.one_of(st.just(value), st.just(value), st.just(value), others)


@st.composite
def scenarios(draw):
    """A config, the peers it starts with, and a list of operations whose packets mostly make
    sense for them (a peer's pod talking to ours), so that every branch is reached."""
    config = draw(configs)
    initial = draw(st.lists(peers, min_size=1, max_size=6))
    local = addr_in(config.local_subnet)
    peer_pods = st.sampled_from(initial).flatmap(lambda p: addr_in(p[0]))

    @st.composite
    def datagram(draw):
        subnet, public_ip, mac = draw(st.sampled_from(initial))
        src = draw(_often(public_ip, st.sampled_from(PUBLIC_IPS + ["192.0.2.1"])))
        inner = draw(packets(src=_often(None, addresses).flatmap(
            lambda a: addr_in(subnet) if a is None else st.just(a)),
            dst=_often(None, addresses).flatmap(lambda a: local if a is None else st.just(a)),
            intact=24))
        if (config.mode == MODE_VXLAN) == draw(_often(True, st.just(False))):
            payload = draw(vxlan_payload(inner, vni=_often(config.vni, u32),
                                         dst_mac=_often(config.mac, st.sampled_from(MACS)),
                                         src_mac=_often(mac, st.sampled_from(MACS))))
        else:
            payload = inner
        return src, draw(u16), payload

    egress = packets(src=local | addresses, dst=st.one_of(peer_pods, peer_pods, local, addresses),
                     intact=8)
    ops = draw(st.lists(st.one_of(
        st.tuples(st.just("egress"), st.lists(egress, max_size=12)),
        st.tuples(st.just("ingress"), st.lists(datagram(), max_size=12)),
        st.tuples(st.just("set_peer"), peers),
        st.tuples(st.just("del_peer"), st.sampled_from(SUBNETS)),
        st.tuples(st.just("clock"), st.integers(0, 5000)),      # ms: time goes both ways
    ), min_size=1, max_size=8))
    return config, initial, ops
