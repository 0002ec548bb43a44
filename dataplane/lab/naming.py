"""Names and addresses in a lab, all derived from a short prefix and 1-based indexes.

    <prefix>-ul          underlay namespace: bridge `br0`, one port `n<i>` per node
    <prefix>-n<i>        node i: uplink `eth0` = 10.99.0.<i>/24, pod subnet = i-th /24 of the net
    <prefix>-n<i>-p<j>   pod j on node i: `eth0` from the CNI bridge plugin (cni0 on the node)
    <prefix>-out         the "outside" host: `eth0` = 10.99.0.249/24 on the underlay, no pod
                         subnet and no route to one, so pods reach it only through the NAT

With `--store etcd`, etcd member k (0-based) listens in the underlay namespace on 10.99.0.<254-k>,
an address of br0 itself: every node reaches it over its uplink, as it would a machine on the
same segment, and node addresses count up from .1, so the two never meet.

Every link is created directly inside its namespace (a veth's two ends are born in their own
namespaces), so nothing ever appears in the host's namespace and link names never collide
between labs; they are short constants (`eth0`, `br0`, `n<i>`), well under IFNAMSIZ.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network

from dataplane.backends import VXLAN
from dataplane.lab.errors import LabError

DEFAULT_PREFIX = "dpl"
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")   # no '-': it separates the name's fields

UNDERLAY_NETWORK = IPv4Network("10.99.0.0/24")
UNDERLAY_BRIDGE = "br0"
NODE_UPLINK = "eth0"          # what a node calls its link to the underlay
POD_IFNAME = "eth0"
SUBNET_LEN = 24               # flannel's default SubnetLen
ETCD_CLIENT_PORT, ETCD_PEER_PORT = 2379, 2380     # etcd's own defaults: one address per member
MAX_ETCD_MEMBERS = 5
# Below etcd's addresses (10.99.0.254 down to .250): the outside host, then the nodes' room.
OUTSIDE_IP = UNDERLAY_NETWORK.broadcast_address - 1 - MAX_ETCD_MEMBERS
OUTSIDE_PORT = "out"          # its port on the underlay bridge
MAX_NODES = int(OUTSIDE_IP) - int(UNDERLAY_NETWORK.network_address) - 1


def check_prefix(prefix: str) -> str:
    if not PREFIX_RE.match(prefix):
        raise LabError(f"bad lab prefix {prefix!r}: use 1-12 lowercase letters and digits, "
                       "starting with a letter")
    return prefix


def underlay_ns(prefix: str) -> str:
    return f"{prefix}-ul"


def node_ns(prefix: str, i: int) -> str:
    return f"{prefix}-n{i}"


def pod_ns(prefix: str, i: int | str, j: int) -> str:
    return f"{prefix}-n{i}-p{j}"


def outside_ns(prefix: str) -> str:
    return f"{prefix}-out"


def underlay_port(i: int) -> str:
    """The underlay bridge's port towards node i (lives in the underlay namespace)."""
    return f"n{i}"


def vxlan_device(vni: int) -> str:
    return VXLAN.device(vni)   # flannel's name; "flannel.1" for the default VNI


def underlay_ip(i: int) -> IPv4Address:
    if not 1 <= i <= MAX_NODES:
        raise LabError(f"node index {i} outside 1..{MAX_NODES}")
    return UNDERLAY_NETWORK.network_address + i


def etcd_ip(k: int) -> IPv4Address:
    """etcd member k's address on the underlay bridge, from the top: 10.99.0.254, .253, ..."""
    if not 0 <= k < MAX_ETCD_MEMBERS:
        raise LabError(f"etcd member index {k} outside 0..{MAX_ETCD_MEMBERS - 1}")
    return UNDERLAY_NETWORK.broadcast_address - 1 - k


def etcd_member(k: int) -> str:
    return f"m{k}"


def node_subnet(network: IPv4Network, i: int) -> IPv4Network:
    """Node i leases the i-th /24 of the pod network (the 0th is left out, as flannel's
    SubnetMin does), so 10.244.0.0/16 gives node 1 10.244.1.0/24."""
    if network.prefixlen > SUBNET_LEN - 1:
        raise LabError(f"pod network {network} is too small: it needs room for /{SUBNET_LEN} "
                       "node subnets")
    count = 2 ** (SUBNET_LEN - network.prefixlen) - 1
    if not 1 <= i <= count:
        raise LabError(f"pod network {network} holds only {count} node subnets, not {i}")
    return IPv4Network((int(network.network_address) + (i << (32 - SUBNET_LEN)), SUBNET_LEN))


def owned_namespace(prefix: str, name: str) -> bool:
    """Whether a namespace name is one a lab with this prefix creates (for crash cleanup)."""
    return re.fullmatch(rf"{re.escape(prefix)}-(ul|out|n\d+(-p\d+)?)", name) is not None


def namespace_order(name: str) -> tuple[int, str]:
    """Teardown order: pods first, then nodes, the underlay last."""
    if re.search(r"-n\d+-p\d+$", name):
        return (0, name)
    if name.endswith("-ul"):
        return (2, name)
    return (1, name)
