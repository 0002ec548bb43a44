"""What each of flannel's backends we speak is, in one place: its port, what it costs in MTU,
the device flanneld gives it, and what it writes in a lease.

    udp    raw IPv4 in UDP           port 8285  overhead 28 = outer IPv4 20 + UDP 8
                                     device flannel0; lease: no BackendType, no BackendData
    vxlan  RFC 7348 as Linux has it  port 8472  overhead 50 = 28 + VXLAN 8 + inner Ethernet 14
                                     device flannel.<VNI>; lease: "vxlan", {"VNI", "VtepMAC"}

(flannel's vxlan backend leaves Port 0 to the kernel, which takes 8472, the Linux default.)
A leaf: it imports nothing of dataplane but the wire's header lengths and MAC format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dataplane.fastpath.types import (
    MODE_UDP,
    MODE_VXLAN,
    OUTER_HLEN,
    VXLAN_OVERHEAD,
    format_mac,
    parse_mac,
)

if TYPE_CHECKING:
    from dataplane.lease import Lease

VNI_KEY, VTEP_MAC_KEY = "VNI", "VtepMAC"          # BackendData keys of a vxlan lease
NO_MAC = b"\0" * 6                                # a udp peer's: the forwarder ignores it


@dataclass(frozen=True)
class Backend:
    name: str                   # Backend.Type in the network config
    port: int                   # the default Backend.Port
    overhead: int               # bytes of encapsulation: the TUN's MTU is the underlay's less
    lease_type: str | None      # BackendType in our lease (flannel's udp backend writes none)
    mode: int                   # the forwarder's MODE_*
    device_name: str            # flanneld's name for its device; {vni} stands for the VNI
    vtep: bool                  # a node is reached at a MAC too: its lease's VtepMAC

    def device(self, vni: int | str) -> str:
        """The TUN's name, as flanneld names its device (a str VNI: a placeholder for help)."""
        return self.device_name.format(vni=vni)

    def backend_data(self, vni: int, mac: bytes) -> dict[str, Any] | None:
        """BackendData of our lease."""
        return {VNI_KEY: vni, VTEP_MAC_KEY: format_mac(mac)} if self.vtep else None

    def peer_mac(self, lease: Lease) -> bytes:
        """The MAC a peer's packets are sent to; ValueError if its lease has none usable."""
        if not self.vtep:
            return NO_MAC
        if lease.backend_type != self.lease_type or lease.vtep_mac is None:
            raise ValueError(f"not a {self.name} lease")
        return parse_mac(lease.vtep_mac)


UDP = Backend("udp", 8285, OUTER_HLEN, None, MODE_UDP, "flannel0", vtep=False)
VXLAN = Backend("vxlan", 8472, OUTER_HLEN + VXLAN_OVERHEAD, "vxlan", MODE_VXLAN, "flannel.{vni}",
                vtep=True)
BACKENDS = {b.name: b for b in (UDP, VXLAN)}    # by Backend.Type
