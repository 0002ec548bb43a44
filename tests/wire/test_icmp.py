"""ICMP net-unreachable written back into the TUN for destinations no peer holds (RFC 792,
RFC 1812 section 4.3.2.7: never about an error, a non-first fragment, or a broadcast)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from scapy.layers.inet import ICMP, IP, IPerror, TCPerror, UDPerror

from dataplane.drops import Direction, Drop
from dataplane.fastpath.types import ICMP_MAX, MODE_UDP, Action, ForwarderConfig

from .pkts import PROTO_ICMP, PROTO_TCP, inner_tcp, inner_udp, ipv4, recomputed
from .strategies import valid_ipv4

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


# ---- RFC 1812 4.3.2.7: sources that name no single host, ICMP that is not a query ---------

@pytest.mark.parametrize("src", ["255.255.255.255", "240.0.0.1", "250.1.2.3", "127.0.0.1",
                                 "127.255.0.9", "0.0.0.0", "0.1.2.3", "224.0.0.5",
                                 "239.255.255.250"])
def test_no_error_to_a_source_that_is_not_one_host(impl, src):
    assert impl.icmp_net_unreachable(ipv4(src, "10.250.0.9", b"x" * 8), SRC) == b""


@pytest.mark.parametrize("src", ["1.0.0.1", "126.255.255.255", "128.0.0.1", "223.255.255.254",
                                 "10.244.1.5"])
def test_errors_to_ordinary_sources(impl, src):
    assert IP(impl.icmp_net_unreachable(ipv4(src, "10.250.0.9", b"x" * 8), SRC)).dst == src


QUERIES = [0, 8, 13, 14, 15, 16, 17, 18]     # echo, timestamp, information, address mask


@pytest.mark.parametrize("icmp_type", QUERIES)
def test_errors_about_icmp_queries(impl, icmp_type):
    pkt = bytes(IP(src="10.244.1.5", dst="10.250.0.9") / ICMP(type=icmp_type) / (b"q" * 8))
    assert IP(impl.icmp_net_unreachable(pkt, SRC))[ICMP].type == 3


@pytest.mark.parametrize("icmp_type", [1, 2, 6, 7, 9, 10, 19, 40, 41, 42, 200, 255])
def test_no_error_about_unknown_or_unassigned_icmp(impl, icmp_type):
    pkt = bytes(IP(src="10.244.1.5", dst="10.250.0.9") / ICMP(type=icmp_type) / (b"q" * 8))
    assert impl.icmp_net_unreachable(pkt, SRC) == b""


@given(pkt=valid_ipv4())
def test_every_error_obeys_rfc_1812(impl, pkt):
    raw = impl.icmp_net_unreachable(pkt, SRC)
    if not raw:
        return
    src = ipaddress.IPv4Address(pkt[12:16])
    dst = ipaddress.IPv4Address(pkt[16:20])
    assert not (src.is_multicast or src.is_loopback or src.is_reserved or
                int(src) >> 24 == 0 or src == ipaddress.IPv4Address("255.255.255.255"))
    assert not (dst.is_multicast or dst == ipaddress.IPv4Address("255.255.255.255"))
    ihl = (pkt[0] & 15) * 4
    if pkt[9] == PROTO_ICMP:
        assert pkt[ihl] in QUERIES
    assert (int.from_bytes(pkt[6:8], "big") & 0x1FFF) == 0


# ---- the rate limit: a token bucket per forwarder ----------------------------------------

def limited(impl, rate: int, burst: int):
    fwd = impl.Forwarder(ForwarderConfig(mode=MODE_UDP, local_subnet="10.244.1.0/24", port=8285,
                                         icmp_rate=rate, icmp_burst=burst))
    fwd.set_peer("10.244.2.0/24", "127.0.0.2")
    return fwd


def answered(fwd, n: int) -> int:
    vs = fwd.egress([inner_tcp(dst="10.250.0.9")] * n)
    assert all(v.drop == Drop.NO_ROUTE for v in vs)
    return sum(v.action == Action.TUN for v in vs)


def test_rate_limit_holds_back_errors_beyond_the_burst(impl):
    fwd = limited(impl, rate=2, burst=3)
    fwd.set_clock(10_000)
    assert answered(fwd, 5) == 3                       # the burst
    fwd.set_clock(10_499)
    assert answered(fwd, 1) == 0                       # 0.998 of a token
    fwd.set_clock(10_500)
    assert answered(fwd, 2) == 1                       # 2 a second: one per 500 ms
    fwd.set_clock(99_000)
    assert answered(fwd, 9) == 3                       # refilled, never beyond the burst
    fwd.set_clock(50_000)                              # a clock set back refills nothing
    assert answered(fwd, 1) == 0
    c = fwd.counters()
    assert (c.icmp_sent, c.icmp_suppressed) == (7, 11)
    assert c.dropped(Direction.EGRESS, Drop.NO_ROUTE) == 18


def test_rate_limit_spends_nothing_on_packets_that_get_no_error(impl):
    fwd = limited(impl, rate=1, burst=1)
    vs = fwd.egress([ipv4("127.0.0.1", "10.250.0.9", b"x" * 8), inner_tcp(dst="10.250.0.9")])
    assert [v.action for v in vs] == [Action.DROP, Action.TUN]
    assert fwd.counters().icmp_suppressed == 0


def test_default_bucket_is_the_kernels_host_wide_one(impl):
    fwd = limited(impl, rate=ForwarderConfig.icmp_rate, burst=ForwarderConfig.icmp_burst)
    assert (ForwarderConfig.icmp_rate, ForwarderConfig.icmp_burst) == (1000, 50)
    assert answered(fwd, 80) == 50                     # the clock stands still between calls
    fwd.set_clock(10)
    assert answered(fwd, 80) == 10                     # 1000 a second: one a millisecond


def test_no_limit_when_the_rate_is_zero(impl):
    fwd = limited(impl, rate=0, burst=0)
    assert answered(fwd, 300) == 300
    c = fwd.counters()
    assert (c.icmp_sent, c.icmp_suppressed) == (300, 0)    # unlimited errors are counted too
