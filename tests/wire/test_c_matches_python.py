"""THE property: the C library and the Python reference are the same function.

Random configs, peers and packet batches (valid, mutated, truncated, lying, garbage) go through
both; verdicts (bytes, drop reasons, actions, addresses) and counters must be identical. Every
primitive gets the same treatment on its own.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from .strategies import (
    MACS,
    addresses,
    packets,
    scenarios,
    u8,
    u16,
    u32,
    valid_ipv4,
    vxlan_payload,
)

any_bytes = st.binary(max_size=200)
inputs = packets() | any_bytes


def same(c_call, py_call):
    """Both return the same value, or both raise the same exception type."""
    results = []
    for call in (c_call, py_call):
        try:
            results.append(("ok", call()))
        except Exception as exc:                       # noqa: BLE001 - compared, not hidden
            results.append(("raise", type(exc)))
    assert results[0] == results[1]
    return results[0]


@settings(max_examples=150)
@given(scenario=scenarios())
def test_forwarders_agree(cimpl, pyimpl, scenario):
    config, initial, ops = scenario
    fwds = [cimpl.Forwarder(config), pyimpl.Forwarder(config)]
    for peer in initial:                   # overlapping ones are refused, by both alike
        same(lambda: fwds[0].set_peer(*peer), lambda: fwds[1].set_peer(*peer))
    for op, arg in ops:
        if op in ("egress", "ingress"):
            kind, verdicts = same(lambda: getattr(fwds[0], op)(arg),
                                  lambda: getattr(fwds[1], op)(arg))
            for v in verdicts if kind == "ok" else ():
                event(f"{op} {v.action.name} {v.drop.name}")   # --hypothesis-show-statistics
        elif op == "set_peer":
            same(lambda: fwds[0].set_peer(*arg), lambda: fwds[1].set_peer(*arg))
        elif op == "clock":
            for f in fwds:
                f.set_clock(arg)
        else:
            same(lambda: fwds[0].del_peer(arg), lambda: fwds[1].del_peer(arg))
        assert fwds[0].peer_count == fwds[1].peer_count
    assert fwds[0].counters() == fwds[1].counters()


# ---- primitives ---------------------------------------------------------------------------

@given(data=st.binary(max_size=3000), initial=u32)
def test_checksum(cimpl, pyimpl, data, initial):
    assert cimpl.csum_partial(data, initial) == pyimpl.csum_partial(data, initial)
    assert cimpl.checksum(data, initial) == pyimpl.checksum(data, initial)


@given(total=u32)
def test_csum_fold(cimpl, pyimpl, total):
    assert cimpl.csum_fold(total) == pyimpl.csum_fold(total)


@given(check=u16, old=u16, new=u16)
def test_csum_update16(cimpl, pyimpl, check, old, new):
    assert cimpl.csum_update16(check, old, new) == pyimpl.csum_update16(check, old, new)


@given(pkt=inputs)
def test_ipv4_validate_and_udp_decap(cimpl, pyimpl, pkt):
    assert cimpl.ipv4_validate(pkt) == pyimpl.ipv4_validate(pkt)
    assert cimpl.udp_decap(pkt) == pyimpl.udp_decap(pkt)


@given(pkt=inputs)
def test_ttl_decrement(cimpl, pyimpl, pkt):
    a, b = bytearray(pkt), bytearray(pkt)
    assert cimpl.ttl_decrement(a) == pyimpl.ttl_decrement(b)
    assert a == b


@given(pkt=inputs, lo=u16, hi=u16)
def test_flow_hash_and_sport(cimpl, pyimpl, pkt, lo, hi):
    assert cimpl.flow_hash(pkt) == pyimpl.flow_hash(pkt)
    assert cimpl.flow_sport(pkt) == pyimpl.flow_sport(pkt)
    assert cimpl.flow_sport(pkt, lo, hi) == pyimpl.flow_sport(pkt, lo, hi)


@given(buf=valid_ipv4().flatmap(vxlan_payload) | any_bytes, vni=st.sampled_from([1]) | u32,
       mac=st.sampled_from(MACS))
def test_vxlan_check_and_decap(cimpl, pyimpl, buf, vni, mac):
    assert cimpl.vxlan_check(buf, vni, mac) == pyimpl.vxlan_check(buf, vni, mac)
    assert cimpl.vxlan_decap(buf, vni, mac) == pyimpl.vxlan_decap(buf, vni, mac)


@given(pkt=any_bytes, vni=u32, dst=st.binary(min_size=6, max_size=6),
       src=st.binary(min_size=6, max_size=6))
def test_vxlan_header_and_encap(cimpl, pyimpl, pkt, vni, dst, src):
    assert cimpl.vxlan_header(vni, dst, src) == pyimpl.vxlan_header(vni, dst, src)
    assert cimpl.vxlan_encap(pkt, vni, dst, src) == pyimpl.vxlan_encap(pkt, vni, dst, src)


def _ip(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


@given(payload=st.binary(max_size=1600) | st.integers(1600, 65600).map(lambda n: b"\xa5" * n),
       src=addresses, dst=addresses, sport=u16, dport=u16, ttl=u8, ident=u16)
def test_outer_udp4(cimpl, pyimpl, payload, src, dst, sport, dport, ttl, ident):
    args = (payload, _ip(src), _ip(dst), sport, dport, ttl, ident)
    same(lambda: cimpl.outer_udp4(*args), lambda: pyimpl.outer_udp4(*args))


@given(pkt=inputs, src=addresses)
def test_icmp_net_unreachable(cimpl, pyimpl, pkt, src):
    assert cimpl.icmp_net_unreachable(pkt, src) == pyimpl.icmp_net_unreachable(pkt, src)


@pytest.mark.parametrize("size", [0, 1, 19, 20, 21, 22, 27, 28, 29, 60, 61, 68, 95, 96, 97])
def test_primitives_at_the_edges(cimpl, pyimpl, size):
    # Every length around a header boundary, filled with IPv4-looking bytes and with zeros.
    for fill in (bytes([0x4F] + list(range(1, size))) if size else b"", bytes(size),
                 bytes([0x45, 0, 0, 0x14] + [0xFF] * max(0, size - 4))[:size]):
        for name in ("ipv4_validate", "flow_hash", "udp_decap"):
            same(lambda: getattr(cimpl, name)(fill), lambda: getattr(pyimpl, name)(fill))
        same(lambda: cimpl.icmp_net_unreachable(fill, 1),
             lambda: pyimpl.icmp_net_unreachable(fill, 1))
        same(lambda: cimpl.vxlan_check(fill, 0, bytes(6)),
             lambda: pyimpl.vxlan_check(fill, 0, bytes(6)))
