"""Capturing the underlay for Wireshark: tcpdump on a lab's underlay bridge, bounded by a
packet count and a snap length, and the pieces joined into one pcap file.

The pieces are taken one after another, so joining them in order keeps the records in time
order; all of them are Ethernet captures with the same snap length.
"""

from __future__ import annotations

import contextlib
import select
import struct
import subprocess
import time

from bench.topology import Topology
from bench.traffic import stop

SNAPLEN = 192         # outer headers + VXLAN + inner Ethernet/IP/TCP, and some payload
GLOBAL_HEADER = 24
RECORD_HEADER = 16


class CaptureError(RuntimeError):
    pass


@contextlib.contextmanager
def capture(topo: Topology, path: str, packets: int, timeout: float = 10.0):
    """tcpdump on the underlay bridge of `topo` for the duration of the block."""
    argv = ["tcpdump", "-i", topo.underlay_bridge, "-n", "-U", "-Z", "root", "-s", str(SNAPLEN),
            "-c", str(packets), "-w", path]
    proc = topo.popen(topo.underlay_netns, argv, stdin=subprocess.DEVNULL,
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(proc, timeout)
        yield
    finally:
        if proc.poll() is None:
            time.sleep(0.1)                     # the last packets reach the file
        stop(proc)                              # tcpdump flushes and exits on SIGTERM


def _wait_listening(proc: subprocess.Popen, timeout: float) -> None:
    deadline, seen = time.monotonic() + timeout, b""
    while b"listening on" not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise CaptureError(f"tcpdump did not start: {seen.decode(errors='replace').strip()}")
        if select.select([proc.stderr], [], [], left)[0]:
            chunk = proc.stderr.read1(4096)
            if not chunk:
                continue
            seen += chunk


def join(pieces: list[str], out_path: str) -> int:
    """Concatenate pcap files (same link type) into one; returns the number of records."""
    header, records = None, 0
    with open(out_path, "wb") as out:
        for piece in pieces:
            with open(piece, "rb") as f:
                head = f.read(GLOBAL_HEADER)
                if len(head) < GLOBAL_HEADER:
                    continue                    # tcpdump stopped before writing anything
                if header is None:
                    header = head
                    out.write(head)
                elif head[20:24] != header[20:24]:
                    raise CaptureError(f"{piece}: a different link type")
                endian = "<" if head[:4] == b"\xd4\xc3\xb2\xa1" else ">"
                while rec := f.read(RECORD_HEADER):
                    if len(rec) < RECORD_HEADER:
                        break
                    incl = struct.unpack(endian + "IIII", rec)[2]
                    data = f.read(incl)
                    if len(data) < incl:
                        break                   # a record cut short at SIGTERM
                    out.write(rec + data)
                    records += 1
    return records
