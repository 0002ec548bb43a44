"""Per-packet primitives on one 1400-byte packet: checksum, VXLAN encap and decap."""

from __future__ import annotations

from .conftest import OWN_MAC, PEER_MAC, SIZE, ipv4_udp, tag

PKT = ipv4_udp("10.244.1.5", "10.244.2.7")


def test_checksum_1400(benchmark, impl):
    tag(benchmark, impl, f"checksum {SIZE} B")
    assert benchmark(impl.checksum, PKT) == impl.checksum(PKT)


def test_vxlan_encap_1400(benchmark, impl):
    tag(benchmark, impl, f"vxlan_encap {SIZE} B")
    assert len(benchmark(impl.vxlan_encap, PKT, 1, PEER_MAC, OWN_MAC)) == SIZE + 22


def test_vxlan_decap_1400(benchmark, impl):
    frame = impl.vxlan_encap(PKT, 1, OWN_MAC, PEER_MAC)
    tag(benchmark, impl, f"vxlan_decap {SIZE} B")
    assert benchmark(impl.vxlan_decap, frame, 1, OWN_MAC)[1] == PKT


def test_ipv4_validate_1400(benchmark, impl):
    tag(benchmark, impl, f"ipv4_validate {SIZE} B")
    assert benchmark(impl.ipv4_validate, PKT) == 0
