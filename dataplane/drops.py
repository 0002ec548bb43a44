"""Why a packet was dropped: one enumeration for C, Python, metrics, logs and tests.

The numbering is mirrored by `enum dp_drop` in csrc/dp_api.h; tests/wire/test_drops.py fails if
the two ever disagree. Metric labels are the kebab-case `label` of each member.
"""

from __future__ import annotations

import enum


class Drop(enum.IntEnum):
    NONE = 0               # not dropped
    TRUNCATED = 1          # shorter than its headers say
    BAD_IP_VERSION = 2     # not IPv4
    BAD_IP_HEADER = 3      # IHL < 5 or total length < header length
    BAD_IP_CHECKSUM = 4
    TTL_EXCEEDED = 5       # flannel udp decrements TTL on both ends
    NO_ROUTE = 6           # egress: no peer holds the destination (ICMP net-unreachable sent)
    UNKNOWN_PEER = 7       # ingress: the outer source holds no lease
    SPOOFED_SOURCE = 8     # ingress: inner source is outside the sending peer's subnet
    NOT_LOCAL = 9          # ingress: inner destination is outside our subnet
    BAD_VXLAN_FLAGS = 10   # I flag missing or reserved bits set
    WRONG_VNI = 11
    WRONG_INNER_MAC = 12   # inner destination MAC is not our VtepMAC
    LOOPED_INNER_MAC = 13  # inner source MAC is our own VtepMAC
    BAD_ETHERTYPE = 14     # inner frame is not IPv4
    OVERSIZE = 15          # larger than a buffer slot / the device MTU
    TX_ERROR = 16          # the UDP socket refused the datagram
    TUN_WRITE_ERROR = 17   # the TUN device refused the packet
    BAD_VNET_HDR = 18      # virtio_net_hdr disagrees with the packet (GSO type, gso_size, csum)
    BAD_L4_HEADER = 19     # TCP data offset < 5 or UDP length != IP payload length
    IPV6_UNSUPPORTED = 20  # an IPv6 packet: the overlay carries IPv4 only
    BAD_L4_CHECKSUM = 21   # ingress: TCP/UDP checksum neither right nor a partial (kernel) sum
    TX_TOO_BIG = 22        # egress: EMSGSIZE: above the path MTU with DF, or the UDP maximum

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class Direction(enum.IntEnum):
    EGRESS = 0   # TUN -> wire
    INGRESS = 1  # wire -> TUN

    @property
    def label(self) -> str:
        return self.name.lower()


# Capacity of the per-direction drop counter arrays in C (struct dp_counters).
MAX_DROPS = 32
assert len(Drop) <= MAX_DROPS
