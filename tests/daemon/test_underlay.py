"""Choosing the underlay as flanneld does (main.go, LookupExtIface): --iface names or addresses
in order, then --iface-regex (addresses, then names), then --iface-can-reach; with none of
them the interface holding --public-ip, else the default route's. A --public-ip that is not
on the chosen interface (NAT) is published while we send from the interface's address.
Real interfaces in a namespace of the test's own, read over netlink from a thread inside it."""

from __future__ import annotations

import logging

import pytest

from dataplane.hostnet import HostNetError, Selection, find_underlay
from dataplane.lab.nsthread import call_in_netns
from tests import netns

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module")
def ns():
    """ul0 10.50.0.1/24 (default route), ul1 10.60.0.1/24 + 10.60.0.2/24 (route to
    10.70.0.0/24), ul2 without an IPv4 address; each a veth whose peer (pa0..pa2, no address)
    stays in the namespace too."""
    netns.require_root()
    name = f"{netns.prefix()}-ul"
    try:
        netns.netns_add(name)
        for i, dev in enumerate(("ul0", "ul1", "ul2")):
            netns.run("ip", "-n", name, "link", "add", dev, "type", "veth", "peer", "name",
                      f"pa{i}")
            netns.run("ip", "-n", name, "link", "set", dev, "up")
            netns.run("ip", "-n", name, "link", "set", f"pa{i}", "up")
        netns.run("ip", "-n", name, "addr", "add", "10.50.0.1/24", "dev", "ul0")
        netns.run("ip", "-n", name, "addr", "add", "10.60.0.1/24", "dev", "ul1")
        netns.run("ip", "-n", name, "addr", "add", "10.60.0.2/24", "dev", "ul1")
        netns.run("ip", "-n", name, "route", "add", "default", "dev", "ul0")
        netns.run("ip", "-n", name, "route", "add", "10.70.0.0/24", "dev", "ul1", "src",
                  "10.60.0.2")
        netns.run("ip", "-n", name, "route", "add", "unreachable", "10.80.0.0/24")
        yield name
    finally:
        netns.netns_del(name)


def pick(ns: str, **kw) -> tuple[str, str, str]:
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}
    ul = call_in_netns(ns, lambda: find_underlay(selection=Selection(**kw)))
    return ul.ifname, ul.address, ul.bind_address


@pytest.mark.parametrize("kw,expected", [
    ({}, ("ul0", "10.50.0.1", "10.50.0.1")),                            # default route
    ({"public_ip": "10.60.0.2"}, ("ul1", "10.60.0.2", "10.60.0.2")),
    ({"ifaces": ["ul1"]}, ("ul1", "10.60.0.1", "10.60.0.1")),           # its first address
    ({"ifaces": ["10.60.0.2"]}, ("ul1", "10.60.0.2", "10.60.0.2")),     # by address
    ({"ifaces": ["nope", "10.9.9.9", "ul1", "ul0"]}, ("ul1", "10.60.0.1", "10.60.0.1")),
    ({"regexes": [r"^10\.60\.0\.2$"]}, ("ul1", "10.60.0.2", "10.60.0.2")),   # address first
    ({"regexes": ["^nomatch", "ul[1-9]"]}, ("ul1", "10.60.0.1", "10.60.0.1")),  # then names
    ({"ifaces": ["ul0"], "regexes": ["ul1"]}, ("ul0", "10.50.0.1", "10.50.0.1")),
    ({"regexes": ["nomatch"], "can_reach": "10.70.0.9"}, ("ul1", "10.60.0.2", "10.60.0.2")),
    ({"ifaces": ["ul1"], "public_ip": "10.60.0.2"}, ("ul1", "10.60.0.2", "10.60.0.2")),
])
def test_the_interface_flanneld_would_choose(ns, kw, expected):
    assert pick(ns, **kw) == expected


def test_nothing_matching_names_every_flag_and_the_interfaces(ns):
    with pytest.raises(HostNetError) as exc:
        pick(ns, ifaces=["eth9", "10.1.1.1"], regexes=["^wl"], can_reach="10.80.0.1")
    message = str(exc.value)
    for word in ("--iface eth9", "--iface 10.1.1.1", "--iface-regex ^wl",
                 "--iface-can-reach 10.80.0.1", "no interface named eth9",
                 "no interface has address 10.1.1.1", "no route to 10.80.0.1",
                 "ul0 10.50.0.1", "ul1 10.60.0.1/10.60.0.2"):
        assert word in message, message
    assert "\n" not in message


def test_an_interface_without_ipv4_is_refused(ns):
    with pytest.raises(HostNetError, match="ul2 has no IPv4 address"):
        pick(ns, ifaces=["ul2"])


def test_public_ip_off_the_host_is_a_warning_not_a_refusal(ns, caplog):
    """flanneld allows it (a NATed node publishes its outside address): we bind to the
    interface's address and publish the public IP, and say so."""
    with caplog.at_level(logging.WARNING, logger="dataplane.hostnet"):
        assert pick(ns, ifaces=["ul0"], public_ip="203.0.113.5") == \
            ("ul0", "203.0.113.5", "10.50.0.1")
    (message,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "203.0.113.5" in message and "ul0" in message and "10.50.0.1" in message
    assert "NAT" in message


def test_public_ip_of_another_interface_says_where_it_is(ns, caplog):
    with caplog.at_level(logging.WARNING, logger="dataplane.hostnet"):
        assert pick(ns, ifaces=["ul0"], public_ip="10.60.0.2") == \
            ("ul0", "10.60.0.2", "10.50.0.1")
    assert any("it is on ul1" in r.getMessage() for r in caplog.records)


def test_public_ip_alone_must_be_on_this_host(ns):
    """Without --iface the public IP is how the interface is found, as in flanneld."""
    with pytest.raises(HostNetError, match="203.0.113.5 is not an address of this host"):
        pick(ns, public_ip="203.0.113.5")
