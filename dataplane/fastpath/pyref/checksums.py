"""Checksums (RFC 1071, RFC 1624): the twins of csrc/csum.c and csrc/csum64.c."""

from __future__ import annotations

import struct

# ---- checksums (RFC 1071, RFC 1624) -------------------------------------------------------

def csum_partial(data: bytes | bytearray, initial: int = 0) -> int:
    """One's-complement sum of data added to initial, folded to 16 bits (0 only for all-zero)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total: int = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def csum_fold(total: int) -> int:
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def checksum(data: bytes | bytearray, initial: int = 0) -> int:
    """The value that goes into a header: fold and complement the sum."""
    return csum_fold(csum_partial(data, initial))


def csum_update16(check: int, old: int, new: int) -> int:
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')."""
    return csum_fold((~check & 0xFFFF) + (~old & 0xFFFF) + new)


def csum_copy(src: bytes, initial: int = 0) -> tuple[bytes, int]:
    """A copy of src and its csum_partial: what dp_csum_copy produces in one pass."""
    return bytes(src), csum_partial(src, initial)


