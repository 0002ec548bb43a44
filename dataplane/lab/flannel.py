"""What flannel's parts exchange, seen from the lab: the network config it writes as the
operator, the lease a kernel node publishes as flanneld would, and subnet.env read the way
flannel's CNI plugin reads it. Formats themselves live in dataplane.lease / dataplane.subnetenv.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from dataplane.backends import BACKENDS as OUR_BACKENDS
from dataplane.backends import UDP, VNI_KEY, VTEP_MAC_KEY, VXLAN
from dataplane.lab.errors import LabError
from dataplane.lease import LeaseAttrs

# The lab's backend names. kernel-vxlan is flannel's own `vxlan` backend (the kernel device);
# `vxlan` and `udp` are our daemon; host-gw is flannel's plain-routes backend.
BACKENDS = ("udp", "vxlan", "kernel-vxlan", "host-gw")
DAEMON_BACKENDS = ("udp", "vxlan")

# Backend.Type in flannel's network config for each lab backend.
FLANNEL_TYPE = {"udp": "udp", "vxlan": "vxlan", "kernel-vxlan": "vxlan", "host-gw": "host-gw"}
DEFAULT_PORT = {name: b.port for name, b in OUR_BACKENDS.items()}   # flannel's defaults
# bytes, what FLANNEL_MTU gives up (host-gw: plain routes, nothing)
ENCAP_OVERHEAD = {name: b.overhead for name, b in OUR_BACKENDS.items()} | {"host-gw": 0}


def net_conf(network: IPv4Network, flannel_type: str, *, vni: int = 1,
             port: int | None = None, subnet_len: int = 24,
             direct_routing: bool = False, nftables: bool = False) -> dict[str, Any]:
    """flannel's net-conf.json for this network and backend type."""
    backend: dict[str, Any] = {"Type": flannel_type}
    if flannel_type == "vxlan":
        backend["VNI"] = vni
        if direct_routing:
            backend["DirectRouting"] = True
    if flannel_type in DEFAULT_PORT:
        backend["Port"] = port or DEFAULT_PORT[flannel_type]
    conf = {"Network": str(network), "SubnetLen": subnet_len, "Backend": backend}
    if nftables:
        conf["EnableNFTables"] = True      # flanneld's rules through nftables, not iptables
    return conf


def config_json(conf: dict[str, Any]) -> str:
    return json.dumps(conf, separators=(",", ":"))


def lease_attrs(public_ip: IPv4Address, flannel_type: str, *, vni: int = 1,
                vtep_mac: str | None = None) -> LeaseAttrs:
    """What flanneld publishes for a node: udp writes no BackendType at all, vxlan its VNI
    and VtepMAC, host-gw just its type."""
    if flannel_type == "vxlan":
        if not vtep_mac:
            raise ValueError("a vxlan lease needs the node's VtepMAC")
        return LeaseAttrs(str(public_ip), VXLAN.lease_type,
                          {VNI_KEY: vni, VTEP_MAC_KEY: vtep_mac})
    return LeaseAttrs(str(public_ip),
                      UDP.lease_type if flannel_type == UDP.name else flannel_type)


@dataclass(frozen=True)
class SubnetEnv:
    """subnet.env as flannel's CNI plugin sees it."""

    network: IPv4Network
    subnet: IPv4Interface     # FLANNEL_SUBNET is the gateway address: 10.244.1.1/24
    mtu: int
    ipmasq: bool

    @classmethod
    def parse(cls, text: str, source: str = "subnet.env") -> SubnetEnv:
        """Read it the way flannel's CNI plugin does: KEY=VALUE lines, all four required,
        FLANNEL_IPMASQ true only when exactly "true"."""
        values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        missing = [k for k in ("FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_MTU",
                               "FLANNEL_IPMASQ") if k not in values]
        if missing:
            raise LabError(f"{source} is missing {', '.join(missing)}")
        try:
            return cls(IPv4Network(values["FLANNEL_NETWORK"], strict=False),
                       IPv4Interface(values["FLANNEL_SUBNET"]),
                       int(values["FLANNEL_MTU"]),
                       values["FLANNEL_IPMASQ"] == "true")
        except ValueError as exc:
            raise LabError(f"{source}: {exc}") from exc

    @classmethod
    def read(cls, path: Path) -> SubnetEnv:
        return cls.parse(path.read_text(), str(path))


def write_atomic(path: Path, text: str) -> None:
    """Write-then-rename, so a reader (a CNI plugin, a watcher) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
