"""VXLAN as Linux speaks it: what we build dissects in scapy, what scapy builds we accept, and
every reason a kernel receiver has to refuse a frame is ours too."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw, bind_layers

from dataplane.drops import Drop

from .pkts import (
    IANA_VXLAN_PORT,
    INNER_BUILDERS,
    OWN_MAC,
    PEER2,
    VXLAN_PORT,
    recomputed,
)

PEER_MAC = PEER2[2]
VNI = 0x123456                       # all three bytes in use


@pytest.fixture(scope="module", autouse=True)
def vxlan_on_8472():
    # scapy 2.8 already knows 8472; saying so keeps the tests true on versions that do not.
    bind_layers(UDP, VXLAN, dport=VXLAN_PORT)


def wire(impl, inner: bytes, dport: int, vni: int = VNI) -> bytes:
    """A whole outer datagram as a peer would send it to us."""
    payload = impl.vxlan_encap(inner, vni, OWN_MAC, PEER_MAC)
    return impl.outer_udp4(payload, "192.0.2.2", "192.0.2.1", impl.flow_sport(inner), dport,
                           ttl=64, ident=0x4242)


@pytest.mark.parametrize("dport", [VXLAN_PORT, IANA_VXLAN_PORT])
@pytest.mark.parametrize("proto", sorted(INNER_BUILDERS))
def test_what_we_build_dissects_in_scapy(impl, proto, dport):
    inner = INNER_BUILDERS[proto]()
    raw = wire(impl, inner, dport)
    p = IP(raw)

    assert raw == recomputed(p)                      # outer IP, UDP, inner IP, L4 checksums
    assert (p.src, p.dst, p.ttl, p.id, p.proto) == ("192.0.2.2", "192.0.2.1", 64, 0x4242, 17)
    assert p.len == len(raw) and p.ihl == 5 and p.frag == 0 and p.flags == 0
    u = p[UDP]
    assert u.dport == dport and 49152 <= u.sport <= 65535
    assert u.sport == impl.flow_sport(inner) and u.len == len(raw) - 20
    assert u.chksum != 0                             # we always checksum the outer UDP
    v = p[VXLAN]
    assert int(v.flags) == 0x08 and v.vni == VNI
    assert v.reserved1 == 0 and v.reserved2 == 0
    e = p[Ether]
    assert (e.dst, e.src, e.type) == ("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800)
    assert bytes(e.payload) == inner                 # the inner packet, untouched
    ip = e[IP]
    assert (ip.src, ip.dst, ip.ttl) == ("10.244.1.5", "10.244.2.7", 64)
    layer = {"tcp": TCP, "udp": UDP, "icmp": ICMP}[proto]
    assert layer in ip
    if proto == "tcp":
        assert (ip[TCP].sport, ip[TCP].dport, ip[TCP].seq, ip[TCP].ack) == (40000, 80, 1000, 2000)
        assert ip[Raw].load == b"hello over the overlay"
    if proto == "icmp":
        assert (ip[ICMP].type, ip[ICMP].id, ip[ICMP].seq) == (8, 77, 3)


def test_header_bytes_are_exactly_rfc7348(impl):
    hdr = impl.vxlan_header(VNI, PEER_MAC, OWN_MAC)
    assert hdr == bytes.fromhex("08000000" "12345600") + PEER_MAC + OWN_MAC + b"\x08\x00"
    # The VNI is 24 bits: anything above is cut, not spilled into the reserved byte.
    assert impl.vxlan_header(0x1_000001, PEER_MAC, OWN_MAC)[4:8] == b"\0\0\x01\0"


def test_string_macs_mean_the_same(impl):
    as_str = impl.vxlan_encap(b"x", 1, "02:00:00:00:00:02", "02:00:00:00:00:01")
    assert as_str == impl.vxlan_encap(b"x", 1, PEER_MAC, OWN_MAC)
    assert impl.vxlan_header(1, "02:00:00:00:00:02", "02:00:00:00:00:01") == as_str[:22]
    assert impl.vxlan_check(as_str[:22], 1, "02:00:00:00:00:02") == (Drop.NONE, 22)


def test_outer_udp_checksum_zero_is_sent_as_ffff(impl):
    # With a zero word as payload the checksum is c; putting c there instead adds ~sum to the
    # sum, which makes it 0xffff and the checksum 0: that must go out as 0xffff (RFC 768).
    c = struct.unpack("!H", impl.outer_udp4(b"\0\0", "10.0.0.1", "10.0.0.2", 1, 2)[26:28])[0]
    raw = impl.outer_udp4(struct.pack("!H", c), "10.0.0.1", "10.0.0.2", 1, 2)
    assert raw[26:28] == b"\xff\xff"
    assert recomputed(IP(raw)) == raw              # scapy makes the same substitution


def scapy_frame(inner, vni=VNI, dst=OWN_MAC, src=PEER_MAC, dport=VXLAN_PORT, flags=0x08):
    """A VXLAN datagram as a kernel VTEP sends it, built by scapy."""
    mac = ":".join(f"{b:02x}" for b in dst), ":".join(f"{b:02x}" for b in src)
    return (IP(src="192.0.2.2", dst="192.0.2.1") / UDP(sport=51000, dport=dport) /
            VXLAN(flags=flags, vni=vni) / Ether(dst=mac[0], src=mac[1]) / inner)


@pytest.mark.parametrize("dport", [VXLAN_PORT, IANA_VXLAN_PORT])
@pytest.mark.parametrize("proto", sorted(INNER_BUILDERS))
def test_what_scapy_builds_we_decapsulate(impl, proto, dport):
    inner = INNER_BUILDERS[proto]()
    datagram = IP(bytes(scapy_frame(IP(inner), dport=dport)))
    assert impl.vxlan_decap(bytes(datagram[UDP].payload), VNI, OWN_MAC) == (Drop.NONE, inner)


def test_inner_padding_is_kept_by_decap(impl):
    # Hardware VTEPs pad short inner frames to 60 bytes; decap hands it all over and the
    # forwarder trims to the IP total length (tests/wire/test_forwarder.py).
    inner = INNER_BUILDERS["icmp"]()
    payload = bytes(scapy_frame(IP(inner) / Raw(b"\0" * 6))[UDP].payload)
    why, got = impl.vxlan_decap(payload, VNI, OWN_MAC)
    assert why == Drop.NONE and got == inner + b"\0" * 6


def _payload(**kw) -> bytes:
    return bytes(scapy_frame(IP(INNER_BUILDERS["udp"]()), **kw)[UDP].payload)


def _set(buf: bytes, offset: int, value: bytes) -> bytes:
    return buf[:offset] + value + buf[offset + len(value):]


@pytest.mark.parametrize("mutate, why", [
    (lambda b: _set(b, 0, b"\x0c"), Drop.BAD_VXLAN_FLAGS),          # I plus a reserved flag bit
    (lambda b: _set(b, 0, b"\x88"), Drop.BAD_VXLAN_FLAGS),          # the G bit of VXLAN-GBP
    (lambda b: _set(b, 1, b"\x01"), Drop.BAD_VXLAN_FLAGS),          # reserved, byte 1
    (lambda b: _set(b, 3, b"\x80"), Drop.BAD_VXLAN_FLAGS),          # reserved, byte 3
    (lambda b: _set(b, 7, b"\x01"), Drop.BAD_VXLAN_FLAGS),          # the reserved byte after VNI
    (lambda b: _set(b, 0, b"\x00"), Drop.BAD_VXLAN_FLAGS),          # I flag missing
    (lambda b: _set(b, 4, b"\x12\x34\x57"), Drop.WRONG_VNI),
    (lambda b: _set(b, 4, b"\x00\x00\x01"), Drop.WRONG_VNI),
    (lambda b: _set(b, 8, b"\xff" * 6), Drop.WRONG_INNER_MAC),      # broadcast is not ours
    (lambda b: _set(b, 13, b"\x02"), Drop.WRONG_INNER_MAC),
    (lambda b: _set(b, 14, OWN_MAC), Drop.LOOPED_INNER_MAC),        # our own frame came back
    (lambda b: _set(b, 20, b"\x86\xdd"), Drop.BAD_ETHERTYPE),       # IPv6
    (lambda b: _set(b, 20, b"\x08\x06"), Drop.BAD_ETHERTYPE),       # ARP
    (lambda b: _set(b, 20, b"\x81\x00"), Drop.BAD_ETHERTYPE),       # a VLAN tag
    (lambda b: b[:21], Drop.TRUNCATED),
    (lambda b: b[:8], Drop.TRUNCATED),
    (lambda b: b"", Drop.TRUNCATED),
], ids=["flag-bit", "gbp", "reserved-1", "reserved-3", "reserved-7", "no-I-flag", "vni+1",
        "vni-1", "broadcast-dst", "other-dst", "looped-src", "ipv6", "arp", "vlan",
        "21-bytes", "8-bytes", "empty"])
def test_every_rejection_reason(impl, mutate, why):
    good = _payload()
    assert impl.vxlan_check(good, VNI, OWN_MAC) == (Drop.NONE, 22)
    bad = mutate(good)
    assert impl.vxlan_check(bad, VNI, OWN_MAC) == (why, 0)
    assert impl.vxlan_decap(bad, VNI, OWN_MAC) == (why, b"")


def test_checks_run_in_kernel_order(impl):
    # Flags before VNI before MACs: a frame wrong in every way is refused for its flags.
    bad = _set(_set(_set(_payload(), 0, b"\x00"), 4, b"\0\0\x07"), 8, b"\xff" * 6)
    assert impl.vxlan_check(bad, VNI, OWN_MAC)[0] == Drop.BAD_VXLAN_FLAGS
    assert impl.vxlan_check(_set(bad, 0, b"\x08"), VNI, OWN_MAC)[0] == Drop.WRONG_VNI


def test_vni_compare_uses_24_bits(impl):
    assert impl.vxlan_check(_payload(), VNI | 0x7F000000, OWN_MAC) == (Drop.NONE, 22)


def test_header_only_frame_is_accepted_by_check(impl):
    # The VXLAN check is about the 22 bytes it owns; the inner packet is validated next.
    assert impl.vxlan_check(_payload()[:22], VNI, OWN_MAC) == (Drop.NONE, 22)
    assert impl.vxlan_decap(_payload()[:22], VNI, OWN_MAC) == (Drop.NONE, b"")
