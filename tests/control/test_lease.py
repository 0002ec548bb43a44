"""Lease JSON byte for byte as flannel writes it, keys, and the allocation rules."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, UTC
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.lease import (InvalidSubnet, Lease, LeaseAttrs, LeaseFormatError,
                             candidate_subnets, go_json, is_compatible, parse_subnet,
                             parse_subnet_key, pick_free_subnet, subnet_key, validate_subnet)
from dataplane.netconf import parse_network_config

# What flanneld writes (json.Marshal of LeaseAttrs), as stored in etcd.
UDP = b'{"PublicIP":"10.99.0.1","PublicIPv6":null}'
VXLAN = (b'{"PublicIP":"10.99.0.1","PublicIPv6":null,"BackendType":"vxlan",'
         b'"BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}')
DUAL = (b'{"PublicIP":"10.99.0.2","PublicIPv6":"fd00::2","BackendType":"vxlan",'
        b'"BackendData":{"VNI":1,"VtepMAC":"0e:21:3a:4b:5c:6d"},'
        b'"BackendV6Data":{"VNI":1,"VtepMAC":"0e:21:3a:4b:5c:6e"}}')
HOST_GW = b'{"PublicIP":"192.168.1.20","PublicIPv6":null,"BackendType":"host-gw"}'


def test_udp_lease_json_is_flannels() -> None:
    assert LeaseAttrs(public_ip="10.99.0.1").to_json() == UDP


def test_vxlan_lease_json_is_flannels() -> None:
    attrs = LeaseAttrs(public_ip="10.99.0.1", backend_type="vxlan",
                       backend_data={"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"})
    assert attrs.to_json() == VXLAN


@pytest.mark.parametrize("value", [UDP, VXLAN, DUAL, HOST_GW])
def test_flannel_leases_round_trip_byte_for_byte(value: bytes) -> None:
    assert LeaseAttrs.from_json(value).to_json() == value


def test_parse_vxlan_lease_written_by_flannel() -> None:
    lease = Lease.from_json(IPv4Network("10.244.3.0/24"), DUAL)
    assert lease.public_ip == "10.99.0.2"
    assert lease.backend_type == "vxlan"
    assert lease.vtep_mac == "0e:21:3a:4b:5c:6d"
    assert lease.backend_data == {"VNI": 1, "VtepMAC": "0e:21:3a:4b:5c:6d"}
    assert lease.public_ipv6 == "fd00::2"


@pytest.mark.parametrize("value, expected", [
    # PublicIPv6 absent (older flannel), unknown fields, other key case, whitespace.
    (b'{"PublicIP":"10.99.0.3"}', UDP.replace(b"0.1", b"0.3")),
    (b'{"PublicIP":"10.99.0.1","Whatever":[1,2],"PublicIPv6":null}', UDP),
    (b'{"publicip":"10.99.0.1","backendtype":"vxlan",'
     b'"backenddata":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}', VXLAN),
    (b'{\n  "PublicIP": "10.99.0.1",\n  "BackendType": ""\n}\n', UDP),
])
def test_parse_accepts_what_go_accepts(value: bytes, expected: bytes) -> None:
    assert LeaseAttrs.from_json(value).to_json() == expected


@pytest.mark.parametrize("value, words", [
    (b"", "not JSON"),
    (b"{", "not JSON"),
    (b"[]", "not a JSON object"),
    (b'{"PublicIPv6":null}', "PublicIP missing"),
    (b'{"PublicIP":"10.99.0"}', "not an IPv4 address"),
    (b'{"PublicIP":"fd00::1"}', "not an IPv4 address"),
    (b'{"PublicIP":"10.99.0.1","BackendData":"x"}', "BackendData"),
    (b'{"PublicIP":"10.99.0.1","BackendType":7}', "BackendType"),
    (b"\xff\xfe", "not JSON"),
])
def test_malformed_leases_raise_lease_format_error(value: bytes, words: str) -> None:
    with pytest.raises(LeaseFormatError, match=words):
        LeaseAttrs.from_json(value)


def test_go_json_escapes_like_go() -> None:
    assert go_json({"a": "<x>&\u2028é"}) == '{"a":"\\u003cx\\u003e\\u0026\\u2028é"}'.encode()


def test_lease_attrs_view_and_expiry() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    attrs = LeaseAttrs.from_json(VXLAN)
    lease = Lease.from_attrs(IPv4Network("10.244.7.0/24"), attrs, now + timedelta(seconds=5))
    assert lease.attrs == attrs and lease.to_json() == VXLAN
    assert lease.key == "10.244.7.0-24"
    assert not lease.expired(now) and lease.expired(now + timedelta(seconds=5))
    assert Lease(IPv4Network("10.244.7.0/24"), "10.99.0.1").expired() is False
    assert Lease(IPv4Network("10.244.7.0/24"), "10.99.0.1").vtep_mac is None


# -- keys --------------------------------------------------------------------------------------

@pytest.mark.parametrize("subnet, key", [
    ("10.244.1.0/24", "10.244.1.0-24"), ("10.0.0.128/25", "10.0.0.128-25"),
    ("192.168.0.0/16", "192.168.0.0-16")])
def test_subnet_keys(subnet: str, key: str) -> None:
    assert subnet_key(IPv4Network(subnet)) == key
    assert parse_subnet_key(key) == IPv4Network(subnet)


@pytest.mark.parametrize("name", [
    ".lock", "config", "10.244.1.0", "10.244.1.0-", "10.244.1.5-24", "10.244.1.0-024",
    "10.244.1.0-33", "10.244.1.0-24&fd00::-64", ".10.244.1.0-24.123.ab.tmp", "010.244.1.0-24"])
def test_other_names_are_not_keys(name: str) -> None:
    assert parse_subnet_key(name) is None


@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_key_round_trip(addr: int, plen: int) -> None:
    subnet = IPv4Network((addr, plen), strict=False)
    assert parse_subnet_key(subnet_key(subnet)) == subnet


# -- allocation --------------------------------------------------------------------------------

CFG = parse_network_config('{"Network": "10.244.0.0/16", "SubnetMin": "10.244.10.0", '
                           '"SubnetMax": "10.244.14.0"}')


def test_candidates_honor_subnet_min_and_max() -> None:
    assert [str(s) for s in candidate_subnets(CFG)] == [
        "10.244.10.0/24", "10.244.11.0/24", "10.244.12.0/24", "10.244.13.0/24", "10.244.14.0/24"]
    default = parse_network_config('{"Network": "10.244.0.0/16"}')
    subnets = list(candidate_subnets(default))
    assert len(subnets) == 255 and subnets[0] == IPv4Network("10.244.1.0/24")
    assert subnets[-1] == IPv4Network("10.244.255.0/24")


def test_pick_free_subnet_skips_taken_and_reports_full() -> None:
    taken = {IPv4Network("10.244.10.0/24"), IPv4Network("10.244.12.0/24")}
    rng = random.Random(1)
    picks = {pick_free_subnet(CFG, taken, rng) for _ in range(200)}
    assert picks == {IPv4Network(s) for s in ("10.244.11.0/24", "10.244.13.0/24",
                                              "10.244.14.0/24")}
    assert pick_free_subnet(CFG, set(candidate_subnets(CFG))) is None


def test_pick_free_subnet_avoids_overlap_with_other_prefix_lengths() -> None:
    # Leases left from a config with SubnetLen 23 still occupy their addresses.
    taken = [IPv4Network("10.244.10.0/23"), IPv4Network("10.244.12.0/23")]
    assert pick_free_subnet(CFG, taken) == IPv4Network("10.244.14.0/24")


def test_pick_free_subnet_chooses_among_the_first_hundred_free() -> None:
    cfg = parse_network_config('{"Network": "10.0.0.0/8"}')
    rng = random.Random(7)
    picks = [pick_free_subnet(cfg, [], rng) for _ in range(500)]
    assert all(IPv4Address("10.0.1.0") <= p.network_address <= IPv4Address("10.0.100.0")
               for p in picks)
    assert len(set(picks)) > 50          # spread, so simultaneous starters rarely collide


def test_is_compatible() -> None:
    assert is_compatible(CFG, IPv4Network("10.244.12.0/24"))
    assert not is_compatible(CFG, IPv4Network("10.244.15.0/24"))     # above SubnetMax
    assert not is_compatible(CFG, IPv4Network("10.244.12.0/25"))     # other SubnetLen


@pytest.mark.parametrize("subnet, words", [
    ("10.244.12.0/25", "/24 subnets (SubnetLen)"),
    ("10.245.12.0/24", "not inside the network 10.244.0.0/16"),
    ("10.244.9.0/24", "outside SubnetMin..SubnetMax"),
    ("10.244.15.0/24", "outside SubnetMin..SubnetMax"),
])
def test_validate_subnet_explains(subnet: str, words: str) -> None:
    with pytest.raises(InvalidSubnet, match=words.replace("(", r"\(").replace(")", r"\)")):
        validate_subnet(CFG, IPv4Network(subnet))


def test_validate_subnet_accepts_the_range() -> None:
    for subnet in candidate_subnets(CFG):
        validate_subnet(CFG, subnet)


@pytest.mark.parametrize("text, words", [
    ("10.244.12.5/24", "did you mean 10.244.12.0/24"),
    ("10.244.12.0", "CIDR"),
    ("10.244.12/24", "not an IPv4 address"),
    ("10.244.12.0/40", "prefix length"),
])
def test_parse_subnet_explains(text: str, words: str) -> None:
    with pytest.raises(InvalidSubnet, match=words):
        parse_subnet(text)
    assert parse_subnet(" 10.244.12.0/24 ") == IPv4Network("10.244.12.0/24")


MACS = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))


@settings(max_examples=200)
@given(ip=st.integers(0, 2**32 - 1).map(lambda i: str(IPv4Address(i))),
       mac=st.one_of(st.none(), MACS), vni=st.integers(0, 2**24 - 1))
def test_attrs_round_trip(ip: str, mac: str | None, vni: int) -> None:
    attrs = (LeaseAttrs(ip) if mac is None else
             LeaseAttrs(ip, "vxlan", {"VNI": vni, "VtepMAC": mac}))
    data = attrs.to_json()
    assert LeaseAttrs.from_json(data) == attrs
    expected = f'{{"PublicIP":"{ip}","PublicIPv6":null'
    if mac is not None:
        expected += f',"BackendType":"vxlan","BackendData":{{"VNI":{vni},"VtepMAC":"{mac}"}}'
    assert data == (expected + "}").encode()
