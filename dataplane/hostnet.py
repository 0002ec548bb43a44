"""Host network configuration over netlink (pyroute2): the underlay, the TUN's address, MTU,
queue length and the one route of the pod network. No shelling out to `ip`."""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import Any

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
    address: str      # the node's public IP: published in the lease, other nodes send to it
    mtu: int
    local: str = ""   # the interface's own address we send from; "" = address

    @property
    def bind_address(self) -> str:
        """Where the tunnel sockets bind: the interface's address. It differs from the public
        IP only behind NAT (flannel's ExtAddr vs IfaceAddr)."""
        return self.local or self.address


@dataclass(frozen=True)
class Selection:
    """How to choose the underlay, flanneld's flags: --iface (names or addresses, in order),
    then --iface-regex (matched against addresses, then names), then --iface-can-reach; with
    none of them the interface holding --public-ip, else the default route's."""
    public_ip: str | None = None
    ifaces: tuple[str, ...] = ()
    regexes: tuple[str, ...] = ()
    can_reach: str | None = None

    @property
    def explicit(self) -> bool:
        return bool(self.ifaces or self.regexes or self.can_reach)

    def describe(self) -> str:
        parts = [f"--iface {i}" for i in self.ifaces]
        parts += [f"--iface-regex {r}" for r in self.regexes]
        parts += [f"--iface-can-reach {self.can_reach}"] if self.can_reach else []
        return ", ".join(parts)


def _links(ipr: IPRoute) -> dict[int, Any]:        # pyroute2's messages are untyped
    return {link["index"]: link for link in ipr.get_links()}


class _Host:
    """The host's interfaces and IPv4 addresses, read once (what the choice is made from)."""

    def __init__(self, ipr: IPRoute) -> None:
        self.ipr = ipr
        links = _links(ipr)
        self.names = {i: l.get_attr("IFLA_IFNAME") for i, l in sorted(links.items())}
        self.mtus = {i: l.get_attr("IFLA_MTU") for i, l in links.items()}
        self.addrs = [(a["index"], a.get_attr("IFA_ADDRESS"))
                      for a in ipr.get_addr(family=AF_INET)]

    def addresses(self, index: int) -> list[str]:
        return [a for i, a in self.addrs if i == index]

    def by_address(self, address: str) -> int | None:
        return next((i for i, a in self.addrs if a == address), None)

    def by_name(self, name: str) -> int | None:
        return next((i for i, n in self.names.items() if n == name), None)


def choose_interface(host: _Host, sel: Selection) -> tuple[int, str | None]:
    """(interface index, address to use or None for its first) as flanneld's LookupExtIface
    tries them; HostNetError naming what was asked when nothing matches."""
    tried = []
    for iface in sel.ifaces:
        try:
            ipaddress.IPv4Address(iface)
            index = host.by_address(iface)
            if index is not None:
                return index, iface
            tried.append(f"no interface has address {iface}")
        except ValueError:
            index = host.by_name(iface)
            if index is not None:
                return index, None
            tried.append(f"no interface named {iface}")
    for pattern in sel.regexes:
        regex = re.compile(pattern)          # checked when the flag was parsed
        for index in host.names:             # addresses first, then names, as flanneld
            for address in host.addresses(index):
                if regex.search(address):
                    return index, address
        for index, name in host.names.items():
            if regex.search(name):
                return index, None
        tried.append(f"nothing matches {pattern!r}")
    if sel.can_reach:
        try:
            routes = host.ipr.route("get", dst=sel.can_reach)
        except NetlinkError as exc:
            routes = []
            tried.append(f"no route to {sel.can_reach} ({exc.args[-1] if exc.args else exc})")
        for route in routes:
            index = route.get_attr("RTA_OIF")
            if index in host.names:
                return index, route.get_attr("RTA_PREFSRC")
    if sel.explicit:
        available = ", ".join(f"{n} {'/'.join(host.addresses(i)) or '(no IPv4)'}"
                              for i, n in host.names.items())
        raise HostNetError(f"no interface matches {sel.describe()} ({'; '.join(tried)}); "
                           f"interfaces: {available}")
    if sel.public_ip is not None:
        index = host.by_address(sel.public_ip)
        if index is None:
            raise HostNetError(f"--public-ip {sel.public_ip} is not an address of this host "
                               "(name the underlay with --iface if it is NATed)")
        return index, sel.public_ip
    routes = host.ipr.get_default_routes(family=AF_INET)
    if not routes:
        raise HostNetError("no default route: name the underlay with --iface or --public-ip")
    return routes[0].get_attr("RTA_OIF"), None


def find_underlay(public_ip: str | None = None, iface: str | None = None, *,
                  selection: Selection | None = None) -> Underlay:
    """The interface that carries overlay traffic and the address we publish, as flanneld
    chooses them (see Selection). With --public-ip the lease names it even when it is not on
    the interface (NAT, as flannel allows): we then send from the interface's address and
    warn, since other nodes must reach the public IP through that NAT."""
    if selection is None:
        selection = Selection(public_ip, (iface,) if iface else ())
    with IPRoute() as ipr:
        host = _Host(ipr)
        index, address = choose_interface(host, selection)
        name = host.names[index]
        if address is None:
            found = host.addresses(index)
            if not found:
                raise HostNetError(f"{name} has no IPv4 address; give --public-ip or another "
                                   "--iface")
            address = found[0]
        public = selection.public_ip or address
        if public != address and public not in host.addresses(index):
            where = host.by_address(public)
            log.warning("--public-ip %s is not an address of %s (%s): publishing %s in the "
                        "lease and sending from %s; other nodes must reach %s (NAT)%s", public,
                        name, address, public, address, public,
                        f"; it is on {host.names[where]}" if where is not None else "")
        elif public != address:
            address = public                      # the public IP is on the chosen interface
        return Underlay(name, index, public, host.mtus[index],
                        local="" if address == public else address)


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


# ---- DirectRouting: plain routes to peers on the underlay's own subnet -------------------------

RTPROT_DATAPLANE = 0xDB       # rtm_protocol of our routes (unassigned in iproute2's rt_protos)
RTN_UNICAST = 1
RTN_BLACKHOLE = 6
# flanneld adds its blackhole at metric 0, which collides with cni0's own route to the subnet
# (EEXIST every resync); behind that route, at a metric of its own, it catches what the bridge
# does not hold, and equally when there is no bridge (Canal), which is what it is for.
BLACKHOLE_METRIC = 4096


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


def _blackholes(ipr: IPRoute, net: ipaddress.IPv4Network) -> list[Any]:
    return [r for r in ipr.get_routes(family=AF_INET, table=254)
            if r["type"] == RTN_BLACKHOLE and r["dst_len"] == net.prefixlen
            and r.get_attr("RTA_DST") == str(net.network_address)]


def ensure_blackhole_route(subnet: str) -> bool:
    """`ip route add blackhole <subnet> metric 4096` unless a blackhole for it is there, as
    flanneld's --ip-blackhole-route does: traffic for our subnet's unused addresses ends here
    instead of following the default route out. True if it had to be added."""
    net = ipaddress.IPv4Network(subnet)
    with IPRoute() as ipr:
        if _blackholes(ipr, net):
            return False
        try:
            ipr.route("add", dst=str(net.network_address), dst_len=net.prefixlen,
                      type=RTN_BLACKHOLE, priority=BLACKHOLE_METRIC)
        except NetlinkError as exc:
            raise HostNetError(f"blackhole route {net}: {exc}") from None
    return True


def remove_blackhole_route(subnet: str) -> bool:
    """Delete the blackhole routes for `subnet`; True if there was one."""
    net = ipaddress.IPv4Network(subnet)
    with IPRoute() as ipr:
        found = _blackholes(ipr, net)
        for route in found:
            try:
                ipr.route("del", dst=str(net.network_address), dst_len=net.prefixlen,
                          type=RTN_BLACKHOLE, priority=route.get_attr("RTA_PRIORITY") or 0)
            except NetlinkError as exc:
                if exc.code != 3:
                    raise HostNetError(f"blackhole route {net}: {exc}") from None
    return bool(found)


def remove_direct_routes() -> list[str]:
    """Delete every DirectRouting route of ours (proto 0xdb) from the main table, whatever its
    interface: decommissioning a node. Returns the subnets removed."""
    removed = []
    with IPRoute() as ipr:
        for route in ipr.get_routes(family=AF_INET, table=254, proto=RTPROT_DATAPLANE):
            if route["proto"] != RTPROT_DATAPLANE or route.get_attr("RTA_DST") is None:
                continue
            subnet = f"{route.get_attr('RTA_DST')}/{route['dst_len']}"
            try:
                ipr.route("del", dst=route.get_attr("RTA_DST"), dst_len=route["dst_len"],
                          table=254, proto=RTPROT_DATAPLANE)
                removed.append(subnet)
            except NetlinkError as exc:
                if exc.code != 3:                        # ESRCH: gone meanwhile
                    raise HostNetError(f"route {subnet}: {exc}") from None
    return removed


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
