"""Wire layouts as data: every header we build, field by field.

Used to print packets for people (`dataplane explain`) and checked against scapy's dissection
in the tests, so the tables cannot drift from the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable


@dataclass(frozen=True)
class Field:
    name: str
    offset: int          # bytes from the start of the header
    bits: int            # width
    shift: int = 0       # for sub-byte fields: bits to the right of the field in its bytes
    show: Callable[[int], str] | None = None

    def read(self, header: bytes) -> int:
        nbytes = (self.bits + self.shift + 7) // 8
        raw = int.from_bytes(header[self.offset:self.offset + nbytes], "big")
        return (raw >> self.shift) & ((1 << self.bits) - 1)

    def render(self, header: bytes) -> str:
        value = self.read(header)
        return self.show(value) if self.show else str(value)


def _hex(width: int) -> Callable[[int], str]:
    return lambda v: f"0x{v:0{width}x}"


def _ipv4(v: int) -> str:
    return ".".join(str(v >> s & 0xFF) for s in (24, 16, 8, 0))


def _mac(v: int) -> str:
    return ":".join(f"{v >> s & 0xFF:02x}" for s in range(40, -1, -8))


_PROTOS = {1: "ICMP", 6: "TCP", 17: "UDP"}
_ETHERTYPES = {0x0800: "IPv4", 0x86DD: "IPv6", 0x0806: "ARP"}


@dataclass(frozen=True)
class Layout:
    name: str
    length: int          # fixed part, bytes
    fields: tuple[Field, ...]


IPV4 = Layout("IPv4", 20, (
    Field("version", 0, 4, 4),
    Field("ihl", 0, 4, 0, lambda v: f"{v} ({v * 4} bytes)"),
    Field("tos", 1, 8, 0, _hex(2)),
    Field("total_length", 2, 16),
    Field("id", 4, 16, 0, _hex(4)),
    Field("flags", 6, 3, 13, lambda v: "DF" if v & 2 else ("MF" if v & 1 else "0")),
    Field("frag_offset", 6, 13),
    Field("ttl", 8, 8),
    Field("protocol", 9, 8, 0, lambda v: f"{v} ({_PROTOS.get(v, '?')})"),
    Field("checksum", 10, 16, 0, _hex(4)),
    Field("src", 12, 32, 0, _ipv4),
    Field("dst", 16, 32, 0, _ipv4),
))

UDP = Layout("UDP", 8, (
    Field("src_port", 0, 16),
    Field("dst_port", 2, 16),
    Field("length", 4, 16),
    Field("checksum", 6, 16, 0, _hex(4)),
))

VXLAN = Layout("VXLAN", 8, (
    Field("flags", 0, 8, 0, lambda v: f"0x{v:02x} ({'I' if v & 0x08 else '-'}: VNI valid)"),
    Field("reserved1", 1, 24, 0, _hex(6)),
    Field("vni", 4, 24),
    Field("reserved2", 7, 8, 0, _hex(2)),
))

ETHERNET = Layout("Ethernet", 14, (
    Field("dst", 0, 48, 0, _mac),
    Field("src", 6, 48, 0, _mac),
    Field("type", 12, 16, 0, lambda v: f"0x{v:04x} ({_ETHERTYPES.get(v, '?')})"),
))

TCP = Layout("TCP", 20, (
    Field("src_port", 0, 16),
    Field("dst_port", 2, 16),
    Field("seq", 4, 32),
    Field("ack", 8, 32),
    Field("data_offset", 12, 4, 4, lambda v: f"{v} ({v * 4} bytes)"),
    Field("flags", 13, 8, 0, lambda v: "".join(c for c, b in zip("CEUAPRSF", range(7, -1, -1))
                                              if v >> b & 1) or "0"),
    Field("window", 14, 16),
    Field("checksum", 16, 16, 0, _hex(4)),
    Field("urgent", 18, 16),
))

ICMP = Layout("ICMP", 8, (
    Field("type", 0, 8),
    Field("code", 1, 8),
    Field("checksum", 2, 16, 0, _hex(4)),
    Field("rest", 4, 32, 0, _hex(8)),
))
