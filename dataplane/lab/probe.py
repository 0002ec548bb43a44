"""Traffic probes run inside pod namespaces: `python3 -m dataplane.lab.probe ...`.

    ping DST...            ICMP echo to several addresses at once; prints {"DST": true|false}
    tcp-serve IP PORT      accept one connection, read to EOF; prints {"bytes", "sha256"}
    tcp-send IP PORT N     send N deterministic pseudo-random bytes; prints the same
    flow DST               ICMP echo every --interval for --duration seconds, to watch an event
                           (etcd stopped, a leader killed) for loss; prints FLOWING once the
                           first reply is back, then {"sent", "received", "lost"}

In Python rather than iputils' ping (which the lab installs, for people): one process pinging
every destination keeps a reachability matrix at one process per pod, and prints JSON.
Imports stay light (no pyroute2): a probe runs on every `lab status`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import select
import socket
import struct
import sys
import time
from collections.abc import Iterator

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
CHUNK = 64 * 1024
LISTENING = "LISTENING"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _echo_request(ident: int, seq: int, token: bytes) -> bytes:
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, _checksum(header + token), ident,
                       seq) + token


def _echo_replies(sock: socket.socket, ident: int, token: bytes,
                  wait: float) -> list[tuple[str, int]]:
    """Our echo replies waiting on a non-blocking raw socket, after up to `wait` seconds for the
    first: (source, sequence) each. Others' ICMP, which raw sockets see too, is skipped."""
    found: list[tuple[str, int]] = []
    if select.select([sock], [], [], max(wait, 0))[0]:
        while True:
            try:
                packet, (src, _) = sock.recvfrom(2048)
            except BlockingIOError:
                break
            ihl = (packet[0] & 0x0F) * 4    # raw sockets deliver the IP header
            kind, _, _, rid, seq = struct.unpack_from("!BBHHH", packet, ihl)
            if (kind == ICMP_ECHO_REPLY and rid == ident
                    and packet[ihl + 8:ihl + 24] == token):
                found.append((src, seq))
    return found


def ping(targets: list[str], *, count: int = 2, interval: float = 0.2,
         timeout: float = 1.0) -> dict[str, bool]:
    """Send `count` echo requests to each target, `interval` apart; a target is reachable if
    any reply arrives within `timeout` of the last request."""
    ident = os.getpid() & 0xFFFF
    token = os.urandom(16)    # ties replies to this process even if identifiers collide
    replied: set[str] = set()
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.setblocking(False)
        start = time.monotonic()
        deadline = start + (count - 1) * interval + timeout
        next_send, sent = start, 0
        while len(replied) < len(targets):
            now = time.monotonic()
            if now >= deadline:
                break
            if sent < count and now >= next_send:
                for target in targets:
                    if target not in replied:
                        try:
                            sock.sendto(_echo_request(ident, sent, token), (target, 0))
                        except OSError:
                            pass    # no route yet: counts as no reply
                sent += 1
                next_send += interval
            wait = (deadline if sent >= count else min(next_send, deadline)) - time.monotonic()
            replied.update(src for src, _ in _echo_replies(sock, ident, token, wait)
                           if src in targets)
    return {t: t in replied for t in targets}


def flow(target: str, *, interval: float = 0.01, duration: float = 10.0,
         timeout: float = 1.0, warmup: float = 5.0) -> dict[str, object]:
    """A steady stream of echo requests to one target. Warm-up requests (not counted) go out
    until one is answered, so neighbour resolution is out of the way; then `duration` seconds
    of requests on a fixed schedule (late sends do not shift the rest), and replies are
    awaited `timeout` seconds more. "lost" holds the send time (seconds from the start of the
    counted flow) of every request that got no reply."""
    ident = os.getpid() & 0xFFFF
    token = os.urandom(16)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        def replies(wait: float) -> list[int]:
            return [seq for src, seq in _echo_replies(sock, ident, token, wait) if src == target]

        def send(seq: int) -> None:
            try:
                sock.sendto(_echo_request(ident, seq, token), (target, 0))
            except OSError:
                pass                      # no route or buffer: a loss like any other

        sock.setblocking(False)
        # Warm-up on the top sequence numbers, which the counted flow never reaches.
        deadline, seq = time.monotonic() + warmup, 0xFFFF
        while True:
            send(seq)
            seq -= 1
            if replies(interval):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"flow: no reply from {target} within {warmup:g} s")
        print("FLOWING", flush=True)

        count = min(int(duration / interval), 0x7FFF)
        start = time.monotonic()
        got: set[int] = set()
        for n in range(count):
            while (wait := start + n * interval - time.monotonic()) > 0:
                got.update(replies(wait))
            send(n)
        end = time.monotonic() + timeout
        while len(got & set(range(count))) < count and time.monotonic() < end:
            got.update(replies(end - time.monotonic()))
    received = got & set(range(count))
    return {"sent": count, "received": len(received), "interval": interval,
            "lost": [round(n * interval, 3) for n in range(count) if n not in received]}


def _payload(nbytes: int, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    left = nbytes
    while left:
        chunk = rng.randbytes(min(CHUNK, left))
        left -= len(chunk)
        yield chunk


def tcp_serve(ip: str, port: int, timeout: float) -> dict[str, object]:
    with socket.create_server((ip, port), reuse_port=False) as server:
        print(LISTENING, flush=True)
        server.settimeout(timeout)
        conn, _ = server.accept()
        with conn:
            conn.settimeout(timeout)
            digest, total = hashlib.sha256(), 0
            while data := conn.recv(CHUNK):
                digest.update(data)
                total += len(data)
    return {"bytes": total, "sha256": digest.hexdigest()}


def tcp_send(ip: str, port: int, nbytes: int, seed: int, timeout: float) -> dict[str, object]:
    digest = hashlib.sha256()
    start = time.monotonic()
    with socket.create_connection((ip, port), timeout=timeout) as conn:
        for chunk in _payload(nbytes, seed):
            conn.sendall(chunk)
            digest.update(chunk)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)    # wait for the server to close: every byte has been read
    return {"bytes": nbytes, "sha256": digest.hexdigest(),
            "seconds": round(time.monotonic() - start, 6)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m dataplane.lab.probe")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ping")
    p.add_argument("targets", nargs="+")
    p.add_argument("--count", type=int, default=2)
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--timeout", type=float, default=1.0)
    s = sub.add_parser("tcp-serve")
    s.add_argument("ip")
    s.add_argument("port", type=int)
    s.add_argument("--timeout", type=float, default=30.0)
    c = sub.add_parser("tcp-send")
    c.add_argument("ip")
    c.add_argument("port", type=int)
    c.add_argument("nbytes", type=int)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--timeout", type=float, default=30.0)
    f = sub.add_parser("flow")
    f.add_argument("target")
    f.add_argument("--interval", type=float, default=0.01)
    f.add_argument("--duration", type=float, default=10.0)
    f.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args(argv)
    result: dict[str, object]
    if args.cmd == "ping":
        result = dict(ping(args.targets, count=args.count, interval=args.interval,
                           timeout=args.timeout))
    elif args.cmd == "flow":
        result = flow(args.target, interval=args.interval, duration=args.duration,
                      timeout=args.timeout)
    elif args.cmd == "tcp-serve":
        result = tcp_serve(args.ip, args.port, args.timeout)
    else:
        result = tcp_send(args.ip, args.port, args.nbytes, args.seed, args.timeout)
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
