"""Types and constants shared by both hot-path implementations (C and the Python reference)."""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import struct
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

# The state of a delivered packet's TCP/UDP checksum (DP_CSUM_* in csrc/dp_api.h, l4csum.c).
CSUM_UNKNOWN = 0   # not checked: not TCP/UDP, a fragment, UDP checksum 0, header cut short
CSUM_VALID = 1     # verified, or completed by us
CSUM_PARTIAL = 2   # the field holds the pseudo-header sum (a CHECKSUM_PARTIAL kernel sender)
CSUM_BAD = 3       # wrong in any other way: dropped as Drop.BAD_L4_CHECKSUM

# ForwarderConfig.io_flags (DP_IO_* in csrc/dp_api.h): negotiated by the daemon, used by C.
IO_VNET = 1       # the TUN has IFF_VNET_HDR and TUNSETOFFLOAD: super-packets both ways
IO_UDP_GSO = 2    # the socket sends runs of equal segments with UDP_SEGMENT
IO_UDP_GRO = 4    # the socket has UDP_GRO: datagrams may arrive coalesced
IO_TUN_USO = 8    # the TUN took TUN_F_USO4: UDP may be coalesced too

# How the C forwarder reads and writes its TUN (Forwarder.tun_uring; the Python twin: OFF).
URING_OFF = 0        # read() and write(), a packet each
URING_BATCH = 1      # a batch of reads in flight per io_uring_enter, a batch of writes likewise
URING_MULTISHOT = 2  # one multishot read fills a provided-buffer ring (Linux 6.7+)
URING_MODES = {"off": URING_OFF, "batch": URING_BATCH, "multishot": URING_MULTISHOT}


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
    csum: int = 0      # ingress: CSUM_* of a delivered packet (PARTIAL: goes up as NEEDS_CSUM)


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
    io_flags: int = 0              # IO_*: what the descriptors given to drain_* can do (C only;
                                   # IO_VNET also leaves partial checksums partial on ingress)
    # ICMP errors: a token bucket per forwarder, the kernel's host-wide icmp_msgs_per_sec and
    # icmp_msgs_burst defaults (a forwarder answers for all the pods of its node). 0: no limit.
    icmp_rate: int = 1000          # errors per second, refilled
    icmp_burst: int = 50           # the bucket's depth

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
    super_packets: list[int] = dataclasses.field(default_factory=lambda: [0, 0])
    syscalls: list[int] = dataclasses.field(default_factory=lambda: [0, 0])
    gso_fallbacks: int = 0
    icmp_suppressed: int = 0       # ICMP errors the rate limit held back
    gso_sends: int = 0             # UDP_SEGMENT messages the kernel took
    gso_too_big: int = 0           # of gso_fallbacks: EMSGSIZE (path MTU below the stride)
    gso_backoffs: int = 0          # times GSO to one peer address was paused

    def dropped(self, direction: Direction, reason: Drop) -> int:
        return self.drops.get((direction, reason), 0)

    @classmethod
    def total(cls, parts: list[Counters]) -> Counters:
        """The sum of several forwarders' counters (one per worker)."""
        drops: dict[tuple[Direction, Drop], int] = {}
        for part in parts:
            for key, n in part.drops.items():
                drops[key] = drops.get(key, 0) + n

        def pair(name: str) -> list[int]:
            return [sum(getattr(p, name)[d] for p in parts) for d in (0, 1)]

        def one(name: str) -> int:
            return sum(getattr(p, name) for p in parts)

        return cls(pair("packets"), pair("bytes"), drops, pair("batches"), one("icmp_sent"),
                   pair("super_packets"), pair("syscalls"), one("gso_fallbacks"),
                   one("icmp_suppressed"), one("gso_sends"), one("gso_too_big"),
                   one("gso_backoffs"))


def ip_to_int(addr: str | ipaddress.IPv4Address) -> int:
    return int(ipaddress.IPv4Address(addr))


def int_to_ip(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


Subnet = str | ipaddress.IPv4Network   # the daemon passes IPv4Network; tests may write a str


def parse_net(cidr: Subnet) -> tuple[int, int]:
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


# ---- offloads: virtio_net_hdr, GSO, GRO (csrc/dp_api.h, "offloads") -------------------------

VNET_HLEN = 10                 # struct virtio_net_hdr, without num_buffers
VNET_F_NEEDS_CSUM = 1          # the L4 checksum field holds the pseudo-header sum only
VNET_F_DATA_VALID = 2          # the checksum was verified
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3                    # UFO: never negotiated here
GSO_TCPV6 = 4
GSO_UDP_L4 = 5                 # USO
GSO_ECN = 0x80                 # TCP: the super-packet carries CWR

GSO_CAPACITY = 320 * 1024      # fits any super-packet: MSS >= 48, headers <= 120, head-room <= 64
GRO_TCP = 1                    # dp_gro_coalesce flags
GRO_UDP = 2
GRO_FLOWS = 16                 # flows open at once in a coalescing pass; others go alone
GRO_UDP_MAX_SEGS = 64          # datagrams per UDP_L4 frame
GRO_HEAD_MAX = 96              # virtio_net_hdr + IPv4 (20) + TCP header (<= 60)
TCP_MIN_MSS = 48               # the kernel's tcp_min_snd_mss default: no cut below it

_VNET = struct.Struct("<BBHHHH")


class VnetHdr(NamedTuple):
    """struct virtio_net_hdr as a TUN with IFF_VNET_HDR speaks it (little-endian fields)."""

    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    def pack(self) -> bytes:
        return _VNET.pack(*self)

    @classmethod
    def parse(cls, data: bytes) -> VnetHdr:
        """The header at the start of data (a TUN read: header, then the packet)."""
        if len(data) < VNET_HLEN:
            raise ValueError(f"a virtio_net_hdr has {VNET_HLEN} bytes, not {len(data)}")
        return cls(*_VNET.unpack_from(data))


class GsoResult(NamedTuple):
    """What gso_segment made of one TUN read: wire-ready IPv4 packets, or why none."""

    drop: Drop                 # Drop.NONE when segments holds the packets
    segments: list[bytes]      # IPv4 packets without head-room, in order
    stride: int                # head-room + len(segments[0]): the UDP_SEGMENT size


class GroFrame(NamedTuple):
    """One write to the TUN: a virtio_net_hdr, then an IPv4 packet (maybe a super-packet)."""

    data: bytes
    members: tuple[int, ...]   # input indices it carries, in order
