"""A path MTU below the segment stride to one peer (issue 9, item 1), on a loopback of our own.

gso_peer.py runs in `unshare --net` with a route MTU of 1000 locked to 127.0.0.3: every
UDP_SEGMENT send there fails with EMSGSIZE. The segments of the refused message must still
arrive (resent one by one; the kernel fragments each), GSO to that peer must pause and be
retried later, and the other peer must keep GSO throughout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
                       reason="needs root, unshare and ip"),
]


@pytest.fixture(scope="module")
def phases():
    proc = subprocess.run(["unshare", "--net", sys.executable, str(HERE / "gso_peer.py")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {p["name"]: p for p in json.loads(proc.stdout.strip().splitlines()[-1])["phases"]}


def test_refused_segments_are_resent_and_arrive_intact(phases):
    p = phases["both"]
    assert p["intact"] == {"127.0.0.2": True, "127.0.0.3": True}
    assert p["datagrams"] == {"127.0.0.2": 20, "127.0.0.3": 20}
    c = p["counters"]
    assert c["drops"] == {} and c["packets"] == [40, 0]
    assert (c["gso_sends"], c["gso_fallbacks"], c["gso_too_big"], c["gso_backoffs"]) == (1, 1, 1, 1)


def test_the_paused_peer_goes_plain_and_the_other_keeps_gso(phases):
    c = phases["paused"]["counters"]
    assert all(phases["paused"]["intact"].values()) and c["drops"] == {}
    assert c["gso_sends"] == 2                              # the other peer: GSO again
    assert (c["gso_fallbacks"], c["gso_backoffs"]) == (1, 1)   # no new refusal: plain at once


def test_the_pause_ends_with_a_retry_and_then_gso_resumes(phases):
    retry, healed, after = phases["retry"], phases["healed"], phases["after"]
    assert all(p["intact"]["127.0.0.3"] and p["counters"]["drops"] == {}
               for p in (retry, healed, after))
    assert (retry["counters"]["gso_fallbacks"], retry["counters"]["gso_backoffs"]) == (2, 2)
    assert retry["counters"]["gso_too_big"] == 2
    # the route MTU is back: the next retry (2 s after the second refusal) goes through
    assert healed["counters"]["gso_sends"] == 3 and healed["counters"]["gso_fallbacks"] == 2
    assert after["counters"]["gso_sends"] == 4 and after["counters"]["gso_backoffs"] == 2
