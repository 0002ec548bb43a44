"""Forwarder.drain_tun / drain_udp over real descriptors: a fake TUN and loopback UDP.

The fake TUN is a socketpair(AF_UNIX, SOCK_DGRAM): one datagram per read and write, like a TUN
with IFF_NO_PI. `dev` is the forwarder's end (the TUN fd), `kernel` is where the test plays the
kernel's side (what the pods send, what they receive). Peers are UDP sockets on 127.0.0.x;
nothing leaves loopback.
"""

from __future__ import annotations

import errno
import os
import socket

import pytest
from scapy.layers.inet import ICMP, IP

from dataplane.drops import Direction, Drop
from dataplane.fastpath.types import MODE_UDP, MODE_VXLAN, ForwarderConfig

from .pkts import LOCAL_SUBNET, OWN_MAC, PEER2, PEER3, inner_tcp, inner_udp, recomputed

EG, IN = Direction.EGRESS, Direction.INGRESS


class FakeTun:
    def __init__(self):
        self.dev, self.kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.dev.setblocking(False)
        self.kernel.setblocking(False)
        self.fd = self.dev.fileno()

    def inject(self, *packets: bytes) -> None:
        """Pods send: packets the forwarder will read from its TUN."""
        for p in packets:
            self.kernel.send(p)

    def delivered(self) -> list[bytes]:
        """Pods receive: what the forwarder wrote into its TUN."""
        out = []
        while True:
            try:
                out.append(self.kernel.recv(70000))
            except BlockingIOError:
                return out

    def close(self):
        self.dev.close()
        self.kernel.close()


def udp_socket(addr: str, port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    s.setblocking(False)
    return s


def received(sock: socket.socket) -> list[tuple[bytes, tuple[str, int]]]:
    out = []
    while True:
        try:
            out.append(sock.recvfrom(70000))
        except BlockingIOError:
            return out


@pytest.fixture
def net():
    """Our node's socket on 127.0.0.1 and peers on 127.0.0.2 / .3, all on one port."""
    for _ in range(20):                         # the shared port must be free on every address
        node = udp_socket("127.0.0.1")
        port = node.getsockname()[1]
        try:
            peers = {ip: udp_socket(ip, port) for ip in ("127.0.0.2", "127.0.0.3")}
            break
        except OSError:
            node.close()
    else:
        pytest.fail("no port free on 127.0.0.1-3")
    tun = FakeTun()
    yield tun, node, peers, port
    tun.close()
    node.close()
    for s in peers.values():
        s.close()


@pytest.fixture(params=["udp", "vxlan"])
def mode(request):
    return {"udp": MODE_UDP, "vxlan": MODE_VXLAN}[request.param]


def forwarder(impl, mode, port, **kw):
    fwd = impl.Forwarder(ForwarderConfig(mode=mode, local_subnet=LOCAL_SUBNET, port=port,
                                         mac=OWN_MAC, **kw))
    for subnet, ip, mac in (PEER2, PEER3):
        fwd.set_peer(subnet, ip, mac)
    return fwd


def expected_payload(impl, mode, pkt: bytes, peer) -> bytes:
    if mode == MODE_VXLAN:
        return impl.vxlan_encap(pkt, 1, peer[2], OWN_MAC)
    out = bytearray(pkt)
    impl.ttl_decrement(out)
    return bytes(out)


def test_drain_tun_sends_to_the_right_peer(impl, mode, net):
    tun, node, peers, port = net
    fwd = forwarder(impl, mode, port)
    to2 = [inner_tcp(dst="10.244.2.7", data=bytes([i]) * 100) for i in range(5)]
    to3 = [inner_udp(dst="10.244.3.9")]
    tun.inject(*to2, *to3)
    assert fwd.drain_tun(tun.fd, node, 100) == 6
    got2 = received(peers["127.0.0.2"])
    got3 = received(peers["127.0.0.3"])
    assert [d for d, _ in got2] == [expected_payload(impl, mode, p, PEER2) for p in to2]
    assert [d for d, _ in got3] == [expected_payload(impl, mode, p, PEER3) for p in to3]
    assert {src for _, src in got2 + got3} == {("127.0.0.1", port)}    # from our node socket
    c = fwd.counters()
    assert c.packets == [6, 0] and c.bytes[0] == sum(len(p) for p in to2 + to3)   # inner
    assert tun.delivered() == []


def test_drain_tun_respects_the_budget(impl, net):
    tun, node, peers, port = net
    fwd = forwarder(impl, MODE_UDP, port)
    tun.inject(*[inner_udp(dst="10.244.2.7", data=bytes([i])) for i in range(10)])
    assert [fwd.drain_tun(tun.fd, node, 4) for _ in range(4)] == [4, 4, 2, 0]
    got = [d for d, _ in received(peers["127.0.0.2"])]
    assert [d[-1] for d in got] == list(range(10))                   # in order, each once
    assert fwd.drain_tun(tun.fd, node, 0) == 0


def test_drain_tun_more_than_one_batch(impl, net):
    # More than the C side's 64-slot batch in one call.
    tun, node, peers, port = net
    fwd = forwarder(impl, MODE_UDP, port)
    n = 150
    tun.inject(*[inner_udp(dst="10.244.2.7", data=i.to_bytes(2, "big")) for i in range(n)])
    assert fwd.drain_tun(tun.fd, node, 1000) == n
    got = [d for d, _ in received(peers["127.0.0.2"])]
    assert [int.from_bytes(d[-2:], "big") for d in got] == list(range(n))
    c = fwd.counters()
    assert c.packets[0] == n
    # C moves a batch per 64 reads; the reference moves one packet per call (flannel's way).
    assert c.batches[0] == (3 if impl.NAME == "c" else n)


def test_drain_tun_writes_icmp_back_and_counts_drops(impl, mode, net):
    tun, node, peers, port = net
    fwd = forwarder(impl, mode, port)
    nowhere = inner_tcp(dst="10.250.0.9")
    tun.inject(nowhere, b"\x45garbage", inner_tcp(dst="10.244.2.7", ttl=1),
               inner_tcp(dst="10.244.2.7"))
    assert fwd.drain_tun(tun.fd, node, 64) == 4
    [icmp] = tun.delivered()
    assert icmp == impl.icmp_net_unreachable(nowhere, "10.244.1.0")
    p = IP(icmp)
    assert icmp == recomputed(p) and (p[ICMP].type, p[ICMP].code) == (3, 0)
    sent = received(peers["127.0.0.2"])
    c = fwd.counters()
    assert c.icmp_sent == 1
    assert c.dropped(EG, Drop.NO_ROUTE) == 1 and c.dropped(EG, Drop.TRUNCATED) == 1
    if mode == MODE_UDP:
        assert len(sent) == 1 and c.dropped(EG, Drop.TTL_EXCEEDED) == 1
    else:
        assert len(sent) == 2
    assert c.packets[0] == len(sent)


def test_drain_tun_counts_a_refused_send(impl, mode, net):
    # A maximal inner packet plus our header exceeds the largest UDP datagram: sendto fails
    # with EMSGSIZE, the packet moves from "forwarded" to TX_TOO_BIG, the next one still goes.
    tun, node, peers, port = net
    fwd = forwarder(impl, mode, port)
    huge = inner_udp(dst="10.244.2.7", data=b"\0" * (65535 - 28))
    assert len(huge) == 65535
    tun.dev.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    tun.kernel.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    small = inner_udp(dst="10.244.2.7")
    tun.inject(huge, small)
    assert fwd.drain_tun(tun.fd, node, 64) == 2
    assert [d for d, _ in received(peers["127.0.0.2"])] == [expected_payload(impl, mode, small,
                                                                             PEER2)]
    c = fwd.counters()
    assert c.dropped(EG, Drop.TX_TOO_BIG) == 1 and c.dropped(EG, Drop.TX_ERROR) == 0
    assert c.packets[0] == 1 and c.bytes[0] == len(small)


def test_drain_tun_read_error_raises(impl, net):
    _tun, node, _peers, port = net
    fwd = forwarder(impl, MODE_UDP, port)
    fd = os.open(os.devnull, os.O_WRONLY)              # reading it fails with EBADF
    try:
        with pytest.raises(OSError) as exc:
            fwd.drain_tun(fd, node, 8)
        assert exc.value.errno == errno.EBADF
    finally:
        os.close(fd)


def from_peer(impl, mode, inner: bytes, peer=PEER2) -> bytes:
    return impl.vxlan_encap(inner, 1, OWN_MAC, peer[2]) if mode == MODE_VXLAN else inner


def test_drain_udp_delivers_to_the_tun(impl, mode, net):
    tun, node, peers, port = net
    fwd = forwarder(impl, mode, port)
    pkts = [inner_tcp(src="10.244.2.7", dst="10.244.1.5", data=bytes([i]) * 50) for i in range(5)]
    for p in pkts:
        peers["127.0.0.2"].sendto(from_peer(impl, mode, p), node.getsockname())
    assert fwd.drain_udp(node, tun.fd, 100) == 5
    want = []
    for p in pkts:
        b = bytearray(p)
        if mode == MODE_UDP:
            impl.ttl_decrement(b)
        want.append(bytes(b))
    assert tun.delivered() == want
    assert fwd.counters().packets == [0, 5]


def test_drain_udp_respects_the_budget(impl, net):
    tun, node, peers, port = net
    fwd = forwarder(impl, MODE_UDP, port)
    for i in range(10):
        peers["127.0.0.2"].sendto(inner_udp(src="10.244.2.7", dst="10.244.1.5", data=bytes([i])),
                                  node.getsockname())
    assert [fwd.drain_udp(node, tun.fd, 3) for _ in range(5)] == [3, 3, 3, 1, 0]
    assert [p[-1] for p in tun.delivered()] == list(range(10))


def test_drain_udp_more_than_one_batch(impl, net):
    tun, node, peers, port = net
    fwd = forwarder(impl, MODE_UDP, port)
    n = 150
    for i in range(n):
        peers["127.0.0.3"].sendto(inner_udp(src="10.244.3.7", dst="10.244.1.5",
                                            data=i.to_bytes(2, "big")), node.getsockname())
    assert fwd.drain_udp(node, tun.fd, 1000) == n
    assert [int.from_bytes(p[-2:], "big") for p in tun.delivered()] == list(range(n))
    assert fwd.counters().packets == [0, n]


def test_drain_udp_counts_drops(impl, mode, net):
    tun, node, peers, port = net
    fwd = forwarder(impl, mode, port)
    stranger = udp_socket("127.0.0.9")
    try:
        ok = inner_tcp(src="10.244.2.7", dst="10.244.1.5")
        stranger.sendto(from_peer(impl, mode, ok), node.getsockname())              # unknown
        peers["127.0.0.2"].sendto(from_peer(impl, mode, inner_tcp(src="10.244.3.7",
                                                                  dst="10.244.1.5")),
                                  node.getsockname())                               # spoofed
        peers["127.0.0.2"].sendto(b"", node.getsockname())                          # empty
        peers["127.0.0.2"].sendto(from_peer(impl, mode, ok), node.getsockname())    # fine
        assert fwd.drain_udp(node, tun.fd, 64) == 4
    finally:
        stranger.close()
    assert len(tun.delivered()) == 1
    c = fwd.counters()
    assert c.packets[1] == 1
    assert c.dropped(IN, Drop.UNKNOWN_PEER) == 1 and c.dropped(IN, Drop.SPOOFED_SOURCE) == 1
    assert c.dropped(IN, Drop.TRUNCATED) == 1                                   # empty


def test_drain_udp_counts_a_full_tun(impl, net):
    # The TUN refuses writes when its queue is full (EAGAIN on a non-blocking fd): every
    # packet is then either delivered or counted as TUN_WRITE_ERROR, never lost silently.
    tun, node, peers, port = net
    fwd = forwarder(impl, MODE_UDP, port)
    tun.dev.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)       # a tiny queue
    n = 40
    for _ in range(n):
        peers["127.0.0.2"].sendto(inner_udp(src="10.244.2.7", dst="10.244.1.5", data=b"x" * 1000),
                                  node.getsockname())
    assert fwd.drain_udp(node, tun.fd, 100) == n
    delivered = tun.delivered()
    c = fwd.counters()
    assert 0 < c.dropped(IN, Drop.TUN_WRITE_ERROR) < n
    assert c.packets[1] == len(delivered)
    assert c.packets[1] + c.dropped(IN, Drop.TUN_WRITE_ERROR) == n
    assert c.bytes[1] == sum(len(p) for p in delivered)


def test_drain_udp_read_error_raises(impl, net):
    tun, _node, _peers, port = net
    fwd = forwarder(impl, MODE_UDP, port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as not_connected:
        with pytest.raises(OSError):
            fwd.drain_udp(not_connected, tun.fd, 8)
