"""ICMP net-unreachable written back into the TUN for destinations no peer holds (RFC 792,
RFC 1812 section 4.3.2.7: never about an error, a non-first fragment, or a broadcast)."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, IPerror, TCPerror, UDPerror

from dataplane.fastpath.types import ICMP_MAX

from .pkts import PROTO_ICMP, PROTO_TCP, inner_tcp, inner_udp, ipv4, recomputed

SRC = "10.244.1.0"


def test_answer_dissects_as_net_unreachable(impl):
    pkt = inner_tcp(dst="10.250.0.9")
    raw = impl.icmp_net_unreachable(pkt, SRC)
    p = IP(raw)
    assert raw == recomputed(p)                       # IP and ICMP checksums are right
    assert (p.src, p.dst, p.proto, p.ttl, p.len) == (SRC, "10.244.1.5", 1, 64, len(raw))
    assert (p[ICMP].type, p[ICMP].code) == (3, 0)
    assert raw[24:28] == b"\0\0\0\0"                   # unused (no next-hop MTU: not code 4)
    assert bytes(p[ICMP].payload) == pkt[:28]         # header + 8 bytes (RFC 792)
    assert p[IPerror].dst == "10.250.0.9" and p[TCPerror].sport == 40000
    assert len(raw) == 20 + 8 + 28


def test_source_as_int_or_string(impl):
    pkt = inner_udp(dst="10.250.0.9")
    assert impl.icmp_net_unreachable(pkt, 0x0AF40100) == impl.icmp_net_unreachable(pkt, SRC)
    assert IP(impl.icmp_net_unreachable(pkt, SRC))[UDPerror].dport == 53


@pytest.mark.parametrize("options", [0, 4, 40])
def test_quote_follows_the_header_length(impl, options):
    pkt = ipv4("10.244.1.5", "10.250.0.9", b"ABCDEFGHIJKLMNOP", proto=PROTO_TCP,
               options=b"\x01" * options)
    raw = impl.icmp_net_unreachable(pkt, SRC)
    assert raw[28:] == pkt[:20 + options + 8]
    assert raw == recomputed(IP(raw))
    assert len(raw) <= ICMP_MAX


def test_short_packet_is_quoted_whole(impl):
    pkt = ipv4("10.244.1.5", "10.250.0.9", b"abc")   # fewer than 8 bytes after the header
    raw = impl.icmp_net_unreachable(pkt, SRC)
    assert raw[28:] == pkt
    assert raw == recomputed(IP(raw))


def test_echo_request_is_answered(impl):
    pkt = bytes(IP(src="10.244.1.5", dst="10.250.0.9") / ICMP(type=8))
    assert IP(impl.icmp_net_unreachable(pkt, SRC))[ICMP].type == 3


def test_first_fragment_is_answered(impl):
    pkt = ipv4("10.244.1.5", "10.250.0.9", b"x" * 16, frag=0x2000)  # MF set, offset 0
    assert impl.icmp_net_unreachable(pkt, SRC) != b""


@pytest.mark.parametrize("icmp_type", [3, 4, 5, 11, 12])
def test_never_about_an_icmp_error(impl, icmp_type):
    pkt = bytes(IP(src="10.244.1.5", dst="10.250.0.9") / ICMP(type=icmp_type) /
                inner_tcp()[:28])
    assert impl.icmp_net_unreachable(pkt, SRC) == b""


@pytest.mark.parametrize("pkt", [
    ipv4("10.244.1.5", "10.250.0.9", b"x" * 16, frag=0x0001),        # offset 8
    ipv4("10.244.1.5", "10.250.0.9", b"x" * 16, frag=0x2100),        # MF and an offset
    ipv4("10.244.1.5", "255.255.255.255", b"x" * 8),                  # limited broadcast
    ipv4("10.244.1.5", "224.0.0.1", b"x" * 8),                        # multicast
    ipv4("10.244.1.5", "239.255.255.250", b"x" * 8),
    ipv4("0.0.0.0", "10.250.0.9", b"x" * 8),                          # no source to answer
    ipv4("224.0.0.5", "10.250.0.9", b"x" * 8),                        # multicast source
    ipv4("10.244.1.5", "10.250.0.9", proto=PROTO_ICMP),               # ICMP without a type
    ipv4("10.244.1.5", "10.250.0.9", b"x" * 8)[:19],                  # not a header
    b"\x65" + ipv4("10.244.1.5", "10.250.0.9", b"x" * 8)[1:],         # not IPv4
    ipv4("10.244.1.5", "10.250.0.9", b"x" * 8, ihl=4),                # IHL < 5
    ipv4("10.244.1.5", "10.250.0.9", options=b"\1" * 8)[:24],         # IHL beyond the data
    b"",
], ids=["fragment", "fragment-mf", "broadcast", "multicast", "ssdp", "src-zero",
        "src-multicast", "icmp-no-type", "short", "ipv6", "ihl-4", "ihl-beyond", "empty"])
def test_never_answered(impl, pkt):
    assert impl.icmp_net_unreachable(pkt, SRC) == b""
