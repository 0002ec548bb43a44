"""Host network configuration over netlink (pyroute2): the underlay, the TUN's address, MTU,
queue length and the one route of the pod network. No shelling out to `ip`."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

log = logging.getLogger(__name__)

AF_INET = 2


class HostNetError(RuntimeError):
    pass


@dataclass(frozen=True)
class Underlay:
    ifname: str
    index: int
    address: str      # the node's public IP
    mtu: int


def _links(ipr: IPRoute) -> dict[int, dict]:
    return {link["index"]: link for link in ipr.get_links()}


def find_underlay(public_ip: str | None = None, iface: str | None = None) -> Underlay:
    """The interface that carries overlay traffic and the address we publish, as flanneld
    chooses them: --iface names it, --public-ip picks the interface holding that address,
    and with neither the interface of the default route is used."""
    with IPRoute() as ipr:
        links = _links(ipr)
        addrs = [(a["index"], a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr(family=AF_INET)]
        if iface is not None:
            index = next((i for i, l in links.items() if l.get_attr("IFLA_IFNAME") == iface), None)
            if index is None:
                raise HostNetError(f"--iface {iface}: no such interface")
        elif public_ip is not None:
            index = next((i for i, a in addrs if a == public_ip), None)
            if index is None:
                raise HostNetError(f"--public-ip {public_ip} is not an address of this host "
                                   "(name the underlay with --iface if it is NATed)")
        else:
            routes = ipr.get_default_routes(family=AF_INET)
            if not routes:
                raise HostNetError("no default route: name the underlay with --iface or "
                                   "--public-ip")
            index = routes[0].get_attr("RTA_OIF")
        link = links[index]
        if public_ip is None:
            public_ip = next((a for i, a in addrs if i == index), None)
            if public_ip is None:
                raise HostNetError(f"{link.get_attr('IFLA_IFNAME')} has no IPv4 address; "
                                   "give --public-ip")
        return Underlay(link.get_attr("IFLA_IFNAME"), index, public_ip,
                        link.get_attr("IFLA_MTU"))


def link_exists(name: str) -> bool:
    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=name))


def configure_tun(name: str, address: str, mtu: int, network: str, txqueuelen: int) -> None:
    """address/32 on the TUN, its MTU and queue length, link up, and one route for the whole
    pod network through it (the TUN is layer 3: no per-peer routes or neighbours)."""
    net = ipaddress.IPv4Network(network, strict=False)
    _disable_ipv6(name)
    with IPRoute() as ipr:
        (index,) = ipr.link_lookup(ifname=name)
        ipr.link("set", index=index, mtu=mtu, txqlen=txqueuelen)
        try:
            ipr.addr("add", index=index, address=address, prefixlen=32)
        except NetlinkError as exc:
            if exc.code != 17:          # EEXIST: attached to a TUN that kept its address
                raise
        ipr.link("set", index=index, state="up")
        try:
            ipr.route("replace", dst=str(net.network_address), dst_len=net.prefixlen, oif=index)
        except NetlinkError as exc:
            raise HostNetError(f"route {net} dev {name}: {exc}") from None
    log.info("%s: %s/32, mtu %d, txqueuelen %d, route %s", name, address, mtu, txqueuelen, net)


def _disable_ipv6(name: str) -> None:
    """The overlay is IPv4: without this the kernel sends router solicitations and MLD reports
    into the TUN, which the fast path can only count as drops."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass                    # no IPv6 in this kernel or namespace: nothing to silence


def remove_route(network: str, name: str) -> None:
    net = ipaddress.IPv4Network(network, strict=False)
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=name)
        if not index:
            return
        try:
            ipr.route("del", dst=str(net.network_address), dst_len=net.prefixlen, oif=index[0])
        except NetlinkError:
            pass      # already gone with the link


def delete_link(name: str) -> None:
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=name)
        if index:
            try:
                ipr.link("del", index=index[0])
            except NetlinkError as exc:
                if exc.code != 19:      # ENODEV: went away meanwhile
                    raise
