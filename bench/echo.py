"""ICMP echo round trips, run inside a pod: `python3 -m bench.echo DST --count N`.

What `ping` measures (the peer kernel answers, no server process), with every round trip
printed as JSON for the harness: {"sent": N, "rtt_us": [...]}. One request in flight at a
time, `interval` apart: light load. Built in because iputils' ping is not among the project's
dependencies.
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

ECHO_REQUEST, ECHO_REPLY = 8, 0


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total & 0xFFFF) + (total >> 16)
    total += total >> 16
    return ~total & 0xFFFF


def request(ident: int, seq: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, _checksum(header + payload), ident,
                       seq) + payload


def round_trips(dst: str, count: int, interval: float, size: int, timeout: float
                ) -> list[float]:
    """RTT in microseconds of each echo that was answered within `timeout`."""
    ident = os.getpid() & 0xFFFF
    payload = os.urandom(max(size, 8))
    rtts = []
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        for seq in range(count):
            start = time.perf_counter_ns()
            sock.sendto(request(ident, seq, payload), (dst, 0))
            deadline = start + int(timeout * 1e9)
            while (left := deadline - time.perf_counter_ns()) > 0:
                if not select.select([sock], [], [], left / 1e9)[0]:
                    break
                packet, (src, _) = sock.recvfrom(65535)
                now = time.perf_counter_ns()
                ihl = (packet[0] & 0x0F) * 4      # a raw socket hands over the IP header
                kind, _, _, rid, rseq = struct.unpack_from("!BBHHH", packet, ihl)
                if (kind == ECHO_REPLY and rid == ident and rseq == seq and src == dst
                        and packet[ihl + 8:] == payload):
                    rtts.append((now - start) / 1e3)
                    break
            pause = start + int(interval * 1e9) - time.perf_counter_ns()
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
