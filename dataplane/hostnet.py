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


# ---- DirectRouting: plain routes to peers on the underlay's own subnet -------------------------

RTPROT_DATAPLANE = 0xDB       # rtm_protocol of our routes (unassigned in iproute2's rt_protos)
RTN_UNICAST = 1


def reaches_directly(address: str, ifindex: int) -> bool:
    """True if the kernel reaches `address` without a gateway, through interface `ifindex`:
    flannel's ip.DirectRouting test (`ip route get`: no gateway), plus the interface, so only
    peers on the underlay itself qualify."""
    with IPRoute() as ipr:
        try:
            routes = ipr.route("get", dst=address)
        except NetlinkError:
            return False               # unreachable: encapsulation will fail the same way
    return (len(routes) == 1 and routes[0]["type"] == RTN_UNICAST
            and routes[0].get_attr("RTA_GATEWAY") is None
            and routes[0].get_attr("RTA_OIF") == ifindex)


def replace_direct_route(subnet: str, gateway: str, ifindex: int) -> None:
    """`ip route replace <subnet> via <gateway> dev <underlay> proto 0xdb`, as host-gw does."""
    net = ipaddress.IPv4Network(subnet)
    with IPRoute() as ipr:
        try:
            ipr.route("replace", dst=str(net.network_address), dst_len=net.prefixlen,
                      gateway=gateway, oif=ifindex, proto=RTPROT_DATAPLANE)
        except NetlinkError as exc:
            raise HostNetError(f"route {net} via {gateway}: {exc}") from None


def delete_direct_route(subnet: str, gateway: str, ifindex: int) -> None:
    """Remove that route; one that is already gone (or replaced by someone else's) is left."""
    net = ipaddress.IPv4Network(subnet)
    with IPRoute() as ipr:
        try:
            ipr.route("del", dst=str(net.network_address), dst_len=net.prefixlen,
                      gateway=gateway, oif=ifindex, proto=RTPROT_DATAPLANE)
        except NetlinkError as exc:
            if exc.code not in (3, 19):        # ESRCH: no such route; ENODEV: link gone
                raise HostNetError(f"route {net} via {gateway}: {exc}") from None


def direct_routes(ifindex: int, network: str) -> dict[str, str]:
    """Our routes through `ifindex` into the pod network: {subnet: gateway}. What a previous
    run left (a stop keeps them, as it keeps the lease), for the next one to adopt or remove."""
    net = ipaddress.IPv4Network(network)
    found: dict[str, str] = {}
    with IPRoute() as ipr:
        for route in ipr.get_routes(family=AF_INET, table=254, proto=RTPROT_DATAPLANE):
            dst, gateway = route.get_attr("RTA_DST"), route.get_attr("RTA_GATEWAY")
            if (dst is None or gateway is None or route.get_attr("RTA_OIF") != ifindex
                    or route["proto"] != RTPROT_DATAPLANE):
                continue
            subnet = ipaddress.IPv4Network(f"{dst}/{route['dst_len']}")
            if subnet.subnet_of(net):
                found[str(subnet)] = gateway
    return found
