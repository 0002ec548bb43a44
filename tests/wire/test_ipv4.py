"""IPv4 validation (every drop reason), TTL decrement, and the flow hash behind VXLAN ports."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6

from dataplane.drops import Drop

from .pkts import PROTO_TCP, PROTO_UDP, header_checksum_ok, inner_tcp, ipv4, recomputed, udp_hdr

GOOD = ipv4("10.244.1.5", "10.244.2.7", udp_hdr(1, 2, b"data"))


def test_valid_packets_pass(impl):
    assert impl.ipv4_validate(GOOD) == Drop.NONE
    assert impl.ipv4_validate(inner_tcp()) == Drop.NONE
    assert impl.ipv4_validate(ipv4("1.2.3.4", "5.6.7.8")) == Drop.NONE   # header only
    # Options: IHL 15, the largest header there is.
    assert impl.ipv4_validate(ipv4("1.2.3.4", "5.6.7.8", b"x", options=b"\x01" * 40)) == Drop.NONE


def test_trailing_bytes_are_not_an_error(impl):
    # Ethernet padding or a sloppy sender: the total length field rules, the rest is ignored.
    assert impl.ipv4_validate(GOOD + b"\0" * 10) == Drop.NONE


@pytest.mark.parametrize("pkt, why", [
    (b"", Drop.TRUNCATED),
    (b"\x45", Drop.TRUNCATED),
    (GOOD[:19], Drop.TRUNCATED),                                       # shorter than a header
    (GOOD[:-1], Drop.TRUNCATED),                                       # total length lies
    (ipv4("1.2.3.4", "5.6.7.8", b"x" * 10, total=31), Drop.TRUNCATED),
    (ipv4("1.2.3.4", "5.6.7.8", options=b"\x01" * 8)[:24], Drop.TRUNCATED),  # IHL > len
    (b"\x60" + bytes(39), Drop.BAD_IP_VERSION),                        # IPv6
    (b"\x60\x00", Drop.BAD_IP_VERSION),                                # even when short
    (bytes(20), Drop.BAD_IP_VERSION),
    (ipv4("1.2.3.4", "5.6.7.8", version=5), Drop.BAD_IP_VERSION),
    (ipv4("1.2.3.4", "5.6.7.8", ihl=4), Drop.BAD_IP_HEADER),           # IHL < 5
    (ipv4("1.2.3.4", "5.6.7.8", ihl=0), Drop.BAD_IP_HEADER),
    (ipv4("1.2.3.4", "5.6.7.8", b"x" * 8, total=19), Drop.BAD_IP_HEADER),   # total < header
    (ipv4("1.2.3.4", "5.6.7.8", b"x" * 8, total=0), Drop.BAD_IP_HEADER),
    (ipv4("1.2.3.4", "5.6.7.8", b"x" * 8, options=b"\1" * 4, total=22), Drop.BAD_IP_HEADER),
    (ipv4("1.2.3.4", "5.6.7.8", check=0), Drop.BAD_IP_CHECKSUM),
    (GOOD[:12] + b"\x0b" + GOOD[13:], Drop.BAD_IP_CHECKSUM),            # a flipped address bit
], ids=["empty", "one-byte", "19-bytes", "total-lies", "total-lies-2", "ihl-beyond-data",
        "ipv6", "ipv6-short", "zeros", "version-5", "ihl-4", "ihl-0", "total-19", "total-0",
        "total-inside-options", "checksum-zero", "bit-flip"])
def test_every_drop_reason(impl, pkt, why):
    assert impl.ipv4_validate(pkt) == why


def test_scapy_ipv6_is_bad_version(impl):
    assert impl.ipv4_validate(bytes(IPv6() / UDP())) == Drop.BAD_IP_VERSION


def test_ttl_decrement_fixes_the_checksum(impl):
    pkt = bytearray(inner_tcp(ttl=64))
    assert impl.ttl_decrement(pkt) == Drop.NONE
    parsed = IP(bytes(pkt))
    assert parsed.ttl == 63
    assert bytes(pkt) == recomputed(parsed)       # scapy's checksum is the same as ours
    assert pkt[:8] == inner_tcp()[:8] and pkt[9:10] == inner_tcp()[9:10]


@pytest.mark.parametrize("ttl", [0, 1])
def test_ttl_expiry_leaves_the_packet_alone(impl, ttl):
    pkt = bytearray(inner_tcp(ttl=ttl))
    before = bytes(pkt)
    assert impl.ttl_decrement(pkt) == Drop.TTL_EXCEEDED
    assert bytes(pkt) == before


def test_ttl_decrement_of_a_stub_is_truncated(impl):
    stub = bytearray(inner_tcp()[:19])
    assert impl.ttl_decrement(stub) == Drop.TRUNCATED
    assert bytes(stub) == inner_tcp()[:19]


@given(ttl=st.integers(2, 255), proto=st.integers(0, 255), tos=st.integers(0, 255),
       ident=st.integers(0, 0xFFFF), frag=st.integers(0, 0xFFFF),
       src=st.integers(0, 2**32 - 1), dst=st.integers(0, 2**32 - 1),
       options=st.binary(max_size=40))
def test_ttl_decrement_keeps_any_header_valid(impl, ttl, proto, tos, ident, frag, src, dst,
                                              options):
    pkt = bytearray(ipv4(str(IPv4Address(src)), str(IPv4Address(dst)), b"payload", proto=proto,
                         ttl=ttl, tos=tos, ident=ident, frag=frag, options=options))
    assert impl.ttl_decrement(pkt) == Drop.NONE
    assert pkt[8] == ttl - 1
    assert header_checksum_ok(pkt)
    assert impl.ipv4_validate(bytes(pkt)) == Drop.NONE


# ---- flow hash: FNV-1a, so known vectors exist -------------------------------------------------

def test_flow_hash_of_short_input_is_plain_fnv1a(impl):
    assert impl.flow_hash(b"") == 0x811C9DC5          # the FNV-1a offset basis
    assert impl.flow_hash(b"a") == 0xE40C292C         # the published FNV-1a 32 vector


def _flow(sport=1000, dport=80, proto=PROTO_TCP, frag=0, src="10.244.1.5", dst="10.244.2.7"):
    ports = sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    return ipv4(src, dst, ports + b"rest of header", proto=proto, frag=frag)


def test_flow_hash_covers_the_five_tuple(impl):
    base = impl.flow_hash(_flow())
    assert impl.flow_hash(_flow(sport=1001)) != base
    assert impl.flow_hash(_flow(dport=81)) != base
    assert impl.flow_hash(_flow(proto=PROTO_UDP)) != base
    assert impl.flow_hash(_flow(src="10.244.1.6")) != base
    assert impl.flow_hash(_flow(dst="10.244.2.8")) != base


def test_flow_hash_ignores_what_is_not_the_flow(impl):
    base = impl.flow_hash(_flow())
    assert impl.flow_hash(_flow() + b"more") == base
    assert impl.flow_hash(ipv4("10.244.1.5", "10.244.2.7", b"\x03\xe8\x00\x50xx", proto=PROTO_TCP,
                               ttl=3, ident=99)) == base


def test_flow_hash_ignores_ports_where_there_are_none(impl):
    # Non-first fragments carry no ports; other protocols have none to read.
    frag = 0x0010
    assert impl.flow_hash(_flow(sport=1, frag=frag)) == impl.flow_hash(_flow(sport=2, frag=frag))
    assert impl.flow_hash(_flow(sport=1, proto=47)) == impl.flow_hash(_flow(sport=2, proto=47))
    # A first fragment with more to come still has its ports.
    more = 0x2000
    assert impl.flow_hash(_flow(sport=1, frag=more)) != impl.flow_hash(_flow(sport=2, frag=more))


def test_flow_sport_stays_in_range_and_spreads(impl):
    ports = {impl.flow_sport(_flow(sport=s)) for s in range(200)}
    assert all(49152 <= p <= 65535 for p in ports)
    assert len(ports) > 150                           # 200 flows, few collisions
    assert impl.flow_sport(_flow(), 5000, 5000) == 5000
    assert impl.flow_sport(_flow(), 6000, 5000) == 6000    # an empty range yields lo
    assert impl.flow_sport(_flow(), 0, 65535) == impl.flow_hash(_flow()) % 65536
