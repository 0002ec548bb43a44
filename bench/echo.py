"""ICMP echo round trips, run inside a pod: `python3 -m bench.echo DST --count N`.

What `ping` measures (the peer kernel answers, no server process), with every round trip
printed as JSON for the harness: {"sent": N, "rtt_us": [...]}. One request in flight at a
time, `interval` apart: light load. Built in rather than iputils' ping so that every round trip
comes out as a number at microsecond resolution, not as text to parse.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import struct
import sys
import time

# The lab's reachability probe builds the same echo requests.
from dataplane.lab.probe import ICMP_ECHO_REPLY, _echo_request


SO_TIMESTAMPNS = 35          # Linux; also the type of the control message it adds
TIMESPEC = struct.Struct("@qq")


def round_trips(dst: str, count: int, interval: float, size: int, timeout: float
                ) -> list[float]:
    """RTT in microseconds of each echo that was answered within `timeout`: from just before
    sendto to the kernel's receive timestamp (SO_TIMESTAMPNS, as ping does), so the time this
    process takes to wake up is not counted."""
    ident = os.getpid() & 0xFFFF
    payload = os.urandom(max(size, 8))
    rtts = []
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        for seq in range(count):
            start = time.time_ns()                # the clock the kernel stamps with
            sock.sendto(_echo_request(ident, seq, payload), (dst, 0))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([sock], [], [], left)[0]:
                    break
                packet, ancillary, _, (src, _) = sock.recvmsg(65535, 64)
                stamp = next((TIMESPEC.unpack(data[:TIMESPEC.size]) for level, kind, data
                              in ancillary if level == socket.SOL_SOCKET
                              and kind == SO_TIMESTAMPNS), None)
                received = stamp[0] * 10**9 + stamp[1] if stamp else time.time_ns()
                ihl = (packet[0] & 0x0F) * 4      # a raw socket hands over the IP header
                kind, _, _, rid, rseq = struct.unpack_from("!BBHHH", packet, ihl)
                if (kind == ICMP_ECHO_REPLY and rid == ident and rseq == seq and src == dst
                        and packet[ihl + 8:] == payload):
                    rtts.append((received - start) / 1e3)
                    break
            pause = start + int(interval * 1e9) - time.time_ns()
            if pause > 0:
                time.sleep(pause / 1e9)
    return rtts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.echo")
    p.add_argument("dst")
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--interval", type=float, default=0.01, help="seconds between requests")
    p.add_argument("--size", type=int, default=56, help="ICMP payload bytes (ping's default)")
    p.add_argument("--timeout", type=float, default=1.0)
    args = p.parse_args(argv)
    rtts = round_trips(args.dst, args.count, args.interval, args.size, args.timeout)
    json.dump({"sent": args.count, "rtt_us": [round(r, 1) for r in rtts]}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
