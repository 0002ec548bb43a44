"""flannel's udp format: the UDP payload is the inner IPv4 packet, nothing else."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, UDP
from scapy.packet import bind_layers, split_layers

from dataplane.drops import Drop

from .pkts import FLANNEL_UDP_PORT, INNER_BUILDERS, inner_tcp, ipv4, recomputed


@pytest.fixture(scope="module", autouse=True)
def ip_in_udp_8285():
    bind_layers(UDP, IP, dport=FLANNEL_UDP_PORT)
    yield
    split_layers(UDP, IP, dport=FLANNEL_UDP_PORT)


@pytest.mark.parametrize("proto", sorted(INNER_BUILDERS))
def test_what_we_build_dissects_in_scapy(impl, proto):
    inner = INNER_BUILDERS[proto]()
    raw = impl.outer_udp4(inner, "192.0.2.1", "192.0.2.2", FLANNEL_UDP_PORT, FLANNEL_UDP_PORT)
    p = IP(raw)
    assert raw == recomputed(p)
    assert p[UDP].sport == p[UDP].dport == FLANNEL_UDP_PORT
    assert p[UDP].len == 8 + len(inner)
    assert bytes(p[UDP].payload) == inner           # no header of any kind between them
    assert p[UDP].payload.src == "10.244.1.5"


@pytest.mark.parametrize("proto", sorted(INNER_BUILDERS))
def test_what_scapy_builds_we_decapsulate(impl, proto):
    inner = INNER_BUILDERS[proto]()
    datagram = IP(bytes(IP(src="192.0.2.2", dst="192.0.2.1") /
                        UDP(sport=FLANNEL_UDP_PORT, dport=FLANNEL_UDP_PORT) / IP(inner)))
    assert impl.udp_decap(bytes(datagram[UDP].payload)) == (Drop.NONE, inner)


def test_trailing_bytes_are_trimmed(impl):
    inner = inner_tcp()
    assert impl.udp_decap(inner + b"\xde\xad\xbe\xef") == (Drop.NONE, inner)


@pytest.mark.parametrize("payload, why", [
    (inner_tcp()[:-1], Drop.TRUNCATED),                         # total length says one more
    (ipv4("10.244.2.7", "10.244.1.5", b"x" * 4, total=1500), Drop.TRUNCATED),
    (ipv4("10.244.2.7", "10.244.1.5", b"x" * 4, total=12), Drop.BAD_IP_HEADER),
    (ipv4("10.244.2.7", "10.244.1.5", b"x" * 40, ihl=15), Drop.BAD_IP_CHECKSUM),  # eats data
    (ipv4("10.244.2.7", "10.244.1.5", b"x" * 4, ihl=15), Drop.BAD_IP_HEADER),     # > total
    (ipv4("10.244.2.7", "10.244.1.5", b"x" * 4, ihl=3), Drop.BAD_IP_HEADER),
    (b"", Drop.TRUNCATED),
    (bytes(IP(inner_tcp()))[:20], Drop.TRUNCATED),              # header alone, total says more
], ids=["one-short", "total-1500", "total-12", "ihl-over-data", "ihl-over-total", "ihl-3",
        "empty", "header-only"])
def test_lies_in_lengths_are_refused(impl, payload, why):
    assert impl.udp_decap(payload) == (why, b"")


def test_outer_udp4_refuses_what_does_not_fit(impl):
    # 65507 is the most an IPv4/UDP datagram carries; past it the length fields would wrap.
    raw = impl.outer_udp4(bytes(65507), "192.0.2.1", "192.0.2.2", 1, 2)
    assert raw[2:4] == b"\xff\xff" and raw[24:26] == (65515).to_bytes(2, "big")
    with pytest.raises(ValueError):
        impl.outer_udp4(bytes(65508), "192.0.2.1", "192.0.2.2", 1, 2)
