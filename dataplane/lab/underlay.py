"""The underlay: one Linux bridge in its own namespace, one veth per node into it.

    <prefix>-ul:  br0 ── n1 ─┐            ┌─ eth0 10.99.0.1/24    <prefix>-n1
                     ── n2 ─┼── veth ──── ┼─ eth0 10.99.0.2/24    <prefix>-n2
                     ── …   │             │  …
                     ── out ┘            └─ eth0 10.99.0.249/24  <prefix>-out (outside)

This is the "physical network" between nodes; every encapsulated packet crosses br0, so a
capture (`--pcap`, later) belongs here: `ip netns exec <prefix>-ul tcpdump -i br0`.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from dataplane.lab import naming, netns
from dataplane.lab.netlink import iproute


def build(ul_ns: str, mtu: int) -> None:
    """Create the underlay namespace's bridge. The namespace itself must exist."""
    with iproute(ul_ns) as ipr:
        ipr.link("add", ifname=naming.UNDERLAY_BRIDGE, kind="bridge", mtu=mtu)
        ipr.link("set", index=ipr.link_lookup(ifname=naming.UNDERLAY_BRIDGE)[0], state="up")
    # No iptables on a plain wire: bridged frames skip netfilter here (per-namespace sysctl;
    # absent when br_netfilter is not loaded, which is fine).
    netns.sysctl(ul_ns, {"net.bridge.bridge-nf-call-iptables": 0,
                         "net.bridge.bridge-nf-call-ip6tables": 0})


def attach(ul_ns: str, node_ns: str, i: int, address: IPv4Address, mtu: int) -> None:
    """Connect node i: veth `n<i>` (underlay side, in the bridge) <-> `eth0` (node side)."""
    _plug(ul_ns, node_ns, naming.underlay_port(i), address, mtu)
    # A node routes between its pods, its overlay device and the underlay.
    netns.sysctl(node_ns, {"net.ipv4.ip_forward": 1})


def attach_outside(ul_ns: str, out_ns: str, mtu: int) -> None:
    """The outside host: an address on the underlay, no pod subnet, no route to any. What a
    pod sends it arrives only if a node NATs it to the node's own underlay address (a reply
    to a pod address would have nowhere to go), so it shows the masquerade at work."""
    _plug(ul_ns, out_ns, naming.OUTSIDE_PORT, naming.OUTSIDE_IP, mtu)


def _plug(ul_ns: str, ns: str, port: str, address: IPv4Address, mtu: int) -> None:
    with iproute(ul_ns) as ipr:
        # Both ends are born in their final namespaces: nothing ever touches the host's.
        ipr.link("add", ifname=port, kind="veth", mtu=mtu,
                 peer={"ifname": naming.NODE_UPLINK, "net_ns_fd": ns, "mtu": mtu})
        bridge = ipr.link_lookup(ifname=naming.UNDERLAY_BRIDGE)[0]
        ipr.link("set", index=ipr.link_lookup(ifname=port)[0], master=bridge, state="up")
    with iproute(ns) as ipr:
        uplink = ipr.link_lookup(ifname=naming.NODE_UPLINK)[0]
        ipr.addr("add", index=uplink, address=str(address),
                 prefixlen=naming.UNDERLAY_NETWORK.prefixlen)
        ipr.link("set", index=uplink, state="up")
