"""The two backends whose dataplane is the kernel's, programmed as flanneld programs them.

kernel-vxlan (flannel pkg/backend/vxlan): one `flannel.<VNI>` device per node, no learning,
bound to the underlay address; for each remote node a permanent neighbour entry for its
`<subnet>.0` gateway, an FDB entry sending its VtepMAC to its public IP, and an onlink route for
its subnet via that gateway, in that order (the route last, so the kernel never ARPs for it).
With DirectRouting, a peer the kernel reaches without a gateway gets host-gw's route instead.

host-gw (flannel pkg/backend/hostgw): for each remote node, `<subnet> via <public IP>`.

Both get flanneld's NAT and FORWARD rules too (flanneld installs them whatever the backend),
through the daemon's own code (dataplane.netfilter), run inside the node's namespace.
"""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING

from dataplane.lab import naming, netns
from dataplane.lab.errors import LabError
from dataplane.lab.netlink import iproute

if TYPE_CHECKING:
    from pyroute2 import IPRoute

RTNH_F_ONLINK = 0x4
NTF_SELF = 0x2


def random_mac() -> str:
    """A random locally administered unicast MAC, as flannel's mac.NewHardwareAddr makes."""
    octets = [random.randrange(256) for _ in range(6)]
    octets[0] = (octets[0] & 0xFE) | 0x02
    return ":".join(f"{o:02x}" for o in octets)


def create_vxlan_device(ns: str, *, vni: int, port: int, local: IPv4Address,
                        underlay_mtu: int, subnet: IPv4Network) -> str:
    """Create and configure `flannel.<vni>` like flanneld; returns its MAC (the VtepMAC).

    Its offloads stay as the kernel sets them, as flanneld leaves them: over veth it sends inner
    checksums partial (CHECKSUM_PARTIAL), which our daemons must accept as a kernel would."""
    mac = random_mac()
    name = naming.vxlan_device(vni)
    with iproute(ns) as ipr:
        uplink = ipr.link_lookup(ifname=naming.NODE_UPLINK)[0]
        ipr.link("add", ifname=name, kind="vxlan", address=mac, mtu=underlay_mtu - 50,
                 vxlan_id=vni, vxlan_link=uplink, vxlan_local=str(local), vxlan_port=port,
                 vxlan_learning=0)
        dev = ipr.link_lookup(ifname=name)[0]
        # <subnet>.0/32: a source address for host-to-pod traffic and no broadcast routes.
        ipr.addr("add", index=dev, address=str(subnet.network_address), prefixlen=32)
        ipr.link("set", index=dev, state="up")
    netns.sysctl(ns, {f"net.ipv6.conf.{name}.accept_ra": 0})
    return mac


def add_vxlan_peer(ns: str, *, vni: int, subnet: IPv4Network, public_ip: IPv4Address,
                   vtep_mac: str, direct_routing: bool = False) -> None:
    gateway = str(subnet.network_address)
    with iproute(ns) as ipr:
        if direct_routing and _reached_directly(ipr, public_ip):
            # flannel's vxlan DirectRouting: `ip route replace <subnet> via <PublicIP>`
            ipr.route("replace", dst=str(subnet), gateway=str(public_ip))
            return
        dev = ipr.link_lookup(ifname=naming.vxlan_device(vni))[0]
        # ip neigh replace <X>.0 lladdr <VtepMAC> dev flannel.1 nud permanent
        ipr.neigh("replace", ifindex=dev, dst=gateway, lladdr=vtep_mac, state="permanent")
        # bridge fdb replace <VtepMAC> dev flannel.1 dst <PublicIP> self permanent
        ipr.fdb("replace", ifindex=dev, lladdr=vtep_mac, dst=str(public_ip),
                state="permanent", flags=NTF_SELF)
        # ip route replace <X>.0/24 via <X>.0 dev flannel.1 onlink
        ipr.route("replace", dst=str(subnet), gateway=gateway, oif=dev, flags=RTNH_F_ONLINK)


def _reached_directly(ipr: IPRoute, address: IPv4Address) -> bool:
    """flannel's ip.DirectRouting: `ip route get` gives one route, without a gateway."""
    routes = ipr.route("get", dst=str(address))
    return len(routes) == 1 and routes[0].get_attr("RTA_GATEWAY") is None


def add_host_gw_peer(ns: str, *, subnet: IPv4Network, public_ip: IPv4Address) -> None:
    with iproute(ns) as ipr:
        uplink = ipr.link_lookup(ifname=naming.NODE_UPLINK)[0]
        ipr.route("replace", dst=str(subnet), gateway=str(public_ip), oif=uplink)


def install_flannel_rules(ns: str, *, network: IPv4Network, subnet: IPv4Network,
                          ip_masq: bool, nftables: bool) -> None:
    """What flanneld installs at start: FLANNEL-POSTRTG with --ip-masq, FLANNEL-FWD always
    (--iptables-forward-rules defaults to true); nftables when the config says EnableNFTables.
    No resync: nothing but the lab touches a kernel node's rules."""
    from dataplane.netfilter import NetfilterError, TrafficManager

    try:
        manager = TrafficManager(network, subnet, ip_masq=ip_masq, nftables=nftables, netns=ns)
        manager.setup()
        if not all(manager.backend.in_sync(part) for part in manager.parts):
            raise NetfilterError("the rules did not read back as installed")
    except NetfilterError as exc:
        raise LabError(f"{ns}: {exc}") from None
