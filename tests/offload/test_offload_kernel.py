"""The kernel judges: our coalesced frames written to a real TUN reach real sockets intact (and
are cut back into the very segments when forwarded), and the kernel's own TSO/USO packets read
from it are cut into valid segments. kernel_peer.py runs in a network namespace of its own that
disappears with the process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dataplane import fastpath

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/net/tun")
                       or not shutil.which("unshare") or not shutil.which("ip"),
                       reason="needs root, /dev/net/tun, unshare and ip"),
]


@pytest.fixture(scope="module", params=fastpath.IMPLEMENTATIONS)
def report(request):
    """kernel_peer.py's findings with one implementation (segmentation and coalescing)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run(["unshare", "--net", sys.executable, str(HERE / "kernel_peer.py"),
                           request.param],
                          capture_output=True, text=True, timeout=120, env=env)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"kernel_peer.py printed nothing: {proc.stderr[-2000:]}"
    out = json.loads(lines[-1])
    assert proc.returncode == 0 and "error" not in out, (out, proc.stderr[-2000:])
    return out


def test_coalesced_tcp_frames_reach_a_kernel_socket(report):
    rx = report["rx_tcp"]
    assert rx["tun_rx_packets"] == rx["frames_written"]      # one packet per frame...
    assert rx["segments"] >= 10 * rx["frames_written"]       # ...carrying many segments


def test_coalesced_udp_frame_arrives_as_its_datagrams(report):
    assert report["rx_udp"]["datagrams"] == 20


def test_kernel_tso_super_packets_are_cut_into_valid_segments(report):
    tx = report["tx_tcp"]
    assert tx["tso_frames"] > 0 and tx["max_segments"] > 1
    assert tx["gso_sizes"] == [1460]


def test_kernel_uso_frame_is_cut_into_its_datagrams(report):
    assert report["tx_udp"]["datagrams"] == 11


def test_kernel_recuts_forwarded_frames_into_the_merged_segments(report):
    """Local delivery trusts NEEDS_CSUM; forwarding to a device without offloads makes the
    kernel segment in software from our pseudo-header sum, which must therefore be right."""
    assert report["fwd"] == {"tcp_segments": 30, "udp_datagrams": 12, "frames": 2}


def test_partial_checksums_from_kernel_peers_are_handed_on_as_the_kernel_takes_them(report):
    """NEEDS_CSUM on a lone partial packet and GSO_TCPV4 on a kernel peer's super-packet: the
    kernel's own stack accepts both; the same datagram without the header is a checksum error
    (what happened before this was handled)."""
    assert report["partial"] == {"udp_csum_errors_without_header": 1, "tcp_super_bytes": 30_000,
                                 "gso_size": 1450 - 40}
