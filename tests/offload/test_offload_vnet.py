"""virtio_net_hdr layout (C and Python constants and drop reasons: tests/wire/test_api.py)."""

from __future__ import annotations

import pytest

from dataplane.fastpath.types import VnetHdr


def test_pack_is_little_endian_in_kernel_field_order():
    h = VnetHdr(flags=1, gso_type=5, hdr_len=0x0102, gso_size=0x0304, csum_start=0x0506,
                csum_offset=0x0708)
    assert h.pack() == bytes.fromhex("0105" "0201" "0403" "0605" "0807")
    assert VnetHdr.parse(h.pack() + b"packet") == h


def test_parse_refuses_short_header():
    with pytest.raises(ValueError):
        VnetHdr.parse(b"\0" * 9)
