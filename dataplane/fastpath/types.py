"""Types and constants shared by both hot-path implementations (C and the Python reference)."""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from typing import NamedTuple

from dataplane.drops import Direction, Drop

MODE_UDP = 0
MODE_VXLAN = 1

VXLAN_HLEN = 8
ETH_HLEN = 14
VXLAN_OVERHEAD = VXLAN_HLEN + ETH_HLEN  # what we prepend to an inner packet in vxlan mode
OUTER_HLEN = 28                         # outer IPv4 + UDP
MAX_UDP_PAYLOAD = 0xFFFF - OUTER_HLEN   # 65507: the most one IPv4/UDP datagram carries
HEADROOM = 64                           # free bytes before each packet in a C batch slot
ICMP_MAX = 96                           # largest ICMP error we build: 20 + 8 + 60 + 8
SPORT_RANGE = (49152, 65535)            # VXLAN source ports (RFC 7348 section 5)


class Action(enum.IntEnum):
    DROP = 0   # counted under Verdict.drop
    SEND = 1   # egress: send data to addr:port
    TUN = 2    # ingress: deliver to the TUN; egress: an ICMP error written back to the TUN


class Verdict(NamedTuple):
    action: Action
    drop: Drop
    addr: str | None   # egress: the peer's public IP
    port: int
    data: bytes        # what is sent or written (empty for a silent drop)


@dataclasses.dataclass(frozen=True)
class ForwarderConfig:
    """One node's hot-path parameters, the same for both implementations."""

    mode: int                      # MODE_UDP or MODE_VXLAN
    local_subnet: str              # our lease, e.g. "10.244.1.0/24"
    port: int                      # the UDP port every node listens on
    vni: int = 1
    mac: bytes = b"\0" * 6         # our VtepMAC (vxlan)
    ttl_decrement: bool | None = None   # default: on for udp (as flannel), off for vxlan (as Linux)
    max_inner: int = 65535         # largest inner packet forwarded (the TUN MTU)

    @property
    def tun_addr(self) -> str:
        """<subnet>.0: our TUN address, source of the ICMP errors we write back."""
        return str(ipaddress.ip_network(self.local_subnet, strict=False).network_address)

    @property
    def decrements_ttl(self) -> bool:
        return self.mode == MODE_UDP if self.ttl_decrement is None else self.ttl_decrement


@dataclasses.dataclass
class Counters:
    packets: list[int]             # [egress, ingress] forwarded
    bytes: list[int]
    drops: dict[tuple[Direction, Drop], int]   # only reasons seen
    batches: list[int]             # hot-path calls that moved at least one packet
    icmp_sent: int

    def dropped(self, direction: Direction, reason: Drop) -> int:
        return self.drops.get((direction, reason), 0)


def ip_to_int(addr: str | ipaddress.IPv4Address) -> int:
    return int(ipaddress.IPv4Address(addr))


def int_to_ip(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


def parse_net(cidr: str | ipaddress.IPv4Network) -> tuple[int, int]:
    """'10.244.1.0/24' -> (prefix as int, length); host bits are cleared."""
    net = ipaddress.IPv4Network(cidr, strict=False)
    return int(net.network_address), net.prefixlen


def parse_mac(mac: str | bytes) -> bytes:
    if isinstance(mac, (bytes, bytearray)):
        if len(mac) != 6:
            raise ValueError(f"a MAC address has 6 bytes, not {len(mac)}")
        return bytes(mac)
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return bytes(int(p, 16) for p in parts)


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)
