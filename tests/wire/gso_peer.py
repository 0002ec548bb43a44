"""Run by test_gso_fallback.py inside `unshare --net`: a network namespace of our own whose
loopback has a route MTU of 1000 to 127.0.0.3 (`mtu lock`, as a smaller path MTU or a forged
ICMP "fragmentation needed" would leave it) and none to 127.0.0.2.

The C forwarder, offloads on, sends TSO super-packets to both peers; each phase prints what
each peer received (checked against the segments dp_gso_segment makes) and the counters. The
test asserts; this script only reports, as one JSON line.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dataplane.fastpath import cnative  # noqa: E402
from dataplane.fastpath.types import (GSO_TCPV4, IO_UDP_GSO, IO_VNET, MODE_UDP,  # noqa: E402
                                      VNET_F_NEEDS_CSUM, ForwarderConfig, VnetHdr)
from tests.wire.pkts import ipv4  # noqa: E402
from tests.wire.test_drain_io import FakeTun, received, udp_socket  # noqa: E402

MSS = 1400
SEGS = 20
IP_MTU_DISCOVER, IP_PMTUDISC_WANT = 10, 1


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True)


def super_packet(dst: str, seq: int) -> tuple[bytes, bytes]:
    """A TSO read from a TUN: virtio_net_hdr, then one IPv4/TCP packet of SEGS segments."""
    payload = bytes((seq + i) & 0xFF for i in range(MSS * SEGS))
    tcp = (40000).to_bytes(2, "big") + (7001).to_bytes(2, "big") + seq.to_bytes(4, "big") + \
        (1).to_bytes(4, "big") + bytes([0x50, 0x10]) + (502).to_bytes(2, "big") + bytes(4)
    pkt = ipv4("10.244.1.5", dst, tcp + payload, proto=6, frag=0x4000)
    vnet = VnetHdr(VNET_F_NEEDS_CSUM, GSO_TCPV4, 40, MSS, 20, 16).pack()
    return vnet, pkt


def main() -> None:
    sh("ip link set lo up")
    sh("ip route replace local 127.0.0.3 dev lo table local mtu lock 1000")
    tun = FakeTun()
    for s in (tun.dev, tun.kernel):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    node = udp_socket("127.0.0.1")
    node.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_WANT)
    port = node.getsockname()[1]
    peers = {ip: udp_socket(ip, port) for ip in ("127.0.0.2", "127.0.0.3")}
    for s in peers.values():
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    fwd = cnative.Forwarder(ForwarderConfig(mode=MODE_UDP, local_subnet="10.244.1.0/24",
                                            port=port, ttl_decrement=False,
                                            io_flags=IO_VNET | IO_UDP_GSO))
    fwd.set_peer("10.244.2.0/24", "127.0.0.2")
    fwd.set_peer("10.244.3.0/24", "127.0.0.3")
    phases = []
    seq = 1000

    def phase(name: str, to: list[str]) -> None:
        nonlocal seq
        want = {}
        for ip in to:
            vnet, pkt = super_packet("10.244." + ip[-1] + ".9", seq)
            seq += MSS * SEGS
            tun.inject(vnet + pkt)
            want[ip] = cnative.gso_segment(vnet, pkt).segments
        n = fwd.drain_tun(tun.fd, node, 64)
        time.sleep(0.05)
        got = {ip: [d for d, _ in received(s)] for ip, s in peers.items()}
        phases.append({
            "name": name, "read": n,
            "intact": {ip: got[ip] == want.get(ip, []) for ip in peers},
            "datagrams": {ip: len(got[ip]) for ip in peers},
            "counters": dataclasses.asdict(fwd.counters()) | {"drops": {
                f"{d.name}/{r.name}": v for (d, r), v in fwd.counters().drops.items()}},
        })

    phase("both", ["127.0.0.2", "127.0.0.3"])           # .3 refused: resent one by one
    phase("paused", ["127.0.0.2", "127.0.0.3"])         # .3 plain from the start; .2 GSO
    time.sleep(1.1)
    phase("retry", ["127.0.0.3"])                       # the pause is over: refused again
    sh("ip route replace local 127.0.0.3 dev lo table local")   # the path MTU is back
    time.sleep(2.1)
    phase("healed", ["127.0.0.3"])                      # after 2 s more: GSO goes through
    phase("after", ["127.0.0.3"])
    print(json.dumps({"phases": phases}))


if __name__ == "__main__":
    main()
