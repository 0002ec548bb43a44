"""Small UDP packets through two daemons with the TUN read through io_uring (multishot, batch)
and with io_uring denied (--tun-uring off plays a kernel without it, batch one without
multishot reads): every datagram arrives, in order, and the log, /metrics and the syscall
count say which path moved them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests import netns
from tests.daemon.test_lifecycle import metrics
from tests.daemon.test_offload import counter, start_pair, stop

N = 3000
RECV = ("import socket,sys,json; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22); "
        "s.bind(('10.244.2.0', 7200)); s.settimeout(5); print('READY', flush=True); seqs=[]\n"
        "try:\n"
        "    while len(seqs) < int(sys.argv[1]):\n"
        "        seqs.append(int.from_bytes(s.recv(100)[:4], 'big'))\n"
        "except TimeoutError: pass\n"
        "print(json.dumps(seqs))")
SEND = ("import socket,sys,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for i in range(int(sys.argv[1])):\n"
        "    s.sendto(i.to_bytes(4, 'big') + bytes(60), ('10.244.2.0', 7200))\n"
        "    if i % 20 == 19: time.sleep(0.002)")


def small_udp(host, n: int = N) -> list[int]:
    recv = subprocess.Popen(["ip", "netns", "exec", host.peer_ns, sys.executable, "-c", RECV,
                             str(n)], stdout=subprocess.PIPE, text=True, env=netns.env())
    try:
        assert recv.stdout.readline().strip() == "READY"
        subprocess.run(["ip", "netns", "exec", host.ns, sys.executable, "-c", SEND, str(n)],
                       check=True, timeout=60, env=netns.env())
        return json.loads(recv.communicate(timeout=30)[0])
    finally:
        recv.kill()
        recv.wait()


@pytest.mark.netns
@pytest.mark.parametrize("flag,offload,mode", [
    ("auto", "on", "io_uring-multishot"), ("batch", "on", "io_uring-batch"),
    ("off", "on", "read"), ("auto", "off", "io_uring-multishot")])
def test_small_packets_with_and_without_io_uring(host, flag, offload, mode):
    procs = start_pair(host, "vxlan", "--workers", "1", "--offload", offload,
                       "--tun-uring", flag)
    try:
        got = small_udp(host)
        m = metrics(host.ns, 9101)
        assert m[f'dataplane_tun_io_info{{mode="{mode}"}}'] == 1
        packets = counter(host.ns, 9101, "dataplane_packets_total", "egress")
        batches = counter(host.ns, 9101, "dataplane_batches_total", "egress")
        syscalls = counter(host.ns, 9101, "dataplane_syscalls_total", "egress")
        delivered = counter(host.peer_ns, 9102, "dataplane_packets_total", "ingress")
    finally:
        log = stop(procs)
    assert got == list(range(N))                  # every one, in order
    assert packets >= N and delivered >= N
    assert f"TUN I/O: {mode} (--tun-uring {flag}" in log
    # One sendmmsg per batch; the rest read the TUN. read() takes a call per packet (and one
    # more where it found the TUN empty); a batch read one io_uring_enter for the packets of
    # a wakeup (the sender sends 20 at a time); a multishot read none but to arm it again
    # after it ran out of buffers.
    reads = syscalls - batches
    if mode == "read":
        assert reads >= packets
    elif mode == "io_uring-batch":
        assert reads <= packets / 2, (reads, packets)
    else:
        assert reads <= packets / 4, (reads, packets)
