"""The drop-reason enum and the shared constants are the same numbers in C and in Python."""

from __future__ import annotations

from dataplane import fastpath
from dataplane.drops import MAX_DROPS, Direction, Drop

lib = fastpath.load("c").lib


def c_name(member: Drop) -> str:
    return "DP_OK" if member is Drop.NONE else f"DP_DROP_{member.name}"


def test_every_drop_reason_has_its_c_twin():
    for member in Drop:
        assert getattr(lib, c_name(member)) == member.value, member


def test_c_has_no_reason_python_lacks():
    c_reasons = {n for n in dir(lib) if n.startswith("DP_DROP_") and n != "DP_DROP_COUNT"}
    assert c_reasons == {c_name(m) for m in Drop if m is not Drop.NONE}
    assert len(Drop) == lib.DP_DROP_COUNT


def test_counter_capacity_and_directions():
    assert lib.DP_MAX_DROPS == MAX_DROPS >= len(Drop)
    assert (lib.DP_EGRESS, lib.DP_INGRESS) == (Direction.EGRESS, Direction.INGRESS)


def test_labels_are_kebab_case_and_unique():
    labels = [m.label for m in Drop]
    assert len(set(labels)) == len(labels)
    assert Drop.UNKNOWN_PEER.label == "unknown-peer"
