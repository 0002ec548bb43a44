"""virtio_net_hdr layout, constants and drop reasons: Python and C agree on the numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dataplane.drops import Drop
from dataplane.fastpath import cnative, types
from dataplane.fastpath.types import VnetHdr

API_H = Path(__file__).resolve().parents[2] / "csrc" / "dp_api.h"


def test_pack_is_little_endian_in_kernel_field_order():
    h = VnetHdr(flags=1, gso_type=5, hdr_len=0x0102, gso_size=0x0304, csum_start=0x0506,
                csum_offset=0x0708)
    assert h.pack() == bytes.fromhex("0105" "0201" "0403" "0605" "0807")
    assert VnetHdr.parse(h.pack() + b"packet") == h


def test_parse_refuses_short_header():
    with pytest.raises(ValueError):
        VnetHdr.parse(b"\0" * 9)


@pytest.mark.parametrize("py, c", [
    ("VNET_HLEN", "DP_VNET_HLEN"), ("VNET_F_NEEDS_CSUM", "DP_VNET_F_NEEDS_CSUM"),
    ("VNET_F_DATA_VALID", "DP_VNET_F_DATA_VALID"), ("GSO_NONE", "DP_VNET_GSO_NONE"),
    ("GSO_TCPV4", "DP_VNET_GSO_TCPV4"), ("GSO_UDP", "DP_VNET_GSO_UDP"),
    ("GSO_TCPV6", "DP_VNET_GSO_TCPV6"), ("GSO_UDP_L4", "DP_VNET_GSO_UDP_L4"),
    ("GSO_ECN", "DP_VNET_GSO_ECN"), ("GRO_TCP", "DP_GRO_TCP"), ("GRO_UDP", "DP_GRO_UDP"),
    ("GRO_FLOWS", "DP_GRO_FLOWS"), ("GRO_UDP_MAX_SEGS", "DP_GRO_UDP_MAX_SEGS"),
])
def test_constants_match_c(py, c):
    assert getattr(types, py) == getattr(cnative.lib, c)


def test_drop_enum_matches_dp_api_h():
    declared = dict(re.findall(r"DP_DROP_(\w+) = (\d+)", API_H.read_text()))
    declared.pop("COUNT")
    assert {name: int(v) for name, v in declared.items()} == {
        d.name: d.value for d in Drop if d is not Drop.NONE}
    assert cnative.lib.DP_DROP_COUNT == len(Drop)
    for reason in (Drop.BAD_VNET_HDR, Drop.BAD_L4_HEADER, Drop.IPV6_UNSUPPORTED):
        assert getattr(cnative.lib, "DP_DROP_" + reason.name) == reason
