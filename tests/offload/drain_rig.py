"""A rig for the offload drains (csrc/egress.c, ingress.c) without root: a fake TUN that speaks
virtio_net_hdr, loopback UDP sockets with the kernel's real UDP_SEGMENT and UDP_GRO, and a model
of what the drains must do, composed of the reference's primitives.

The fake TUN is a socketpair(AF_UNIX, SOCK_DGRAM): one datagram per read and write, like a TUN
with IFF_NO_PI | IFF_VNET_HDR. The test writes "what the kernel hands out" (a virtio_net_hdr and
a packet) into `kernel` and reads what the forwarder wrote to `dev`. Peers are UDP sockets on
127.0.0.2 / .3 on the node's port; a UDP_SEGMENT send from one of them to the node's UDP_GRO
socket arrives as one GRO run with its gso_size, exactly as a coalesced run off a NIC does.

The reference (pyref.py) has no offload drain of its own (`--fastpath python` never offloads);
`expect_egress` / `expect_ingress` compose its gso_segment, Forwarder.egress/ingress and
gro_coalesce in the order egress.c and ingress.c apply them, so the C drain's sends, TUN writes and
counters can be held to the reference byte for byte.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import time

from dataplane.drops import Direction, Drop
from dataplane.fastpath import cnative as C
from dataplane.fastpath import pyref as P
from dataplane.fastpath.types import (
    GRO_TCP,
    GRO_UDP,
    GSO_NONE,
    IO_TUN_USO,
    IO_UDP_GRO,
    IO_UDP_GSO,
    IO_VNET,
    MODE_VXLAN,
    VNET_HLEN,
    VXLAN_OVERHEAD,
    Action,
    ForwarderConfig,
)

EG, IN = Direction.EGRESS, Direction.INGRESS
SOL_UDP, UDP_SEGMENT, UDP_GRO = 17, 103, 104
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33

# csrc/adapters.h, the sizes the model has to know to cut rounds where C does.
OUT_CAP = 1 << 20            # segment area of one egress round
MAX_SEGS = 4096              # segments per egress round and per super-packet
RECVS = 32                   # datagrams per recvmmsg
IN_SEGS = RECVS * 64         # segments per ingress batch

LOCAL_SUBNET = "10.244.1.0/24"
OWN_MAC = bytes.fromhex("020000000001")
PEERS = {"127.0.0.2": ("10.244.2.0/24", bytes.fromhex("020000000002")),
         "127.0.0.3": ("10.244.3.0/24", bytes.fromhex("020000000003"))}
ZERO_VNET = bytes(VNET_HLEN)


def big_buffers(sock: socket.socket, size: int = 32 << 20) -> None:
    """Room for a whole test's traffic (root may exceed rmem_max/wmem_max; others get less)."""
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)


class VnetTun:
    """The fake TUN: `dev` is the forwarder's descriptor, `kernel` the stack's side."""

    def __init__(self) -> None:
        self.dev, self.kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (self.dev, self.kernel):
            s.setblocking(False)
            big_buffers(s)
        self.fd = self.dev.fileno()

    def inject(self, *reads: bytes) -> None:
        """What the kernel hands out: each one TUN read (virtio_net_hdr + packet)."""
        for r in reads:
            self.kernel.send(r)

    def written(self) -> list[bytes]:
        """What the forwarder wrote into the TUN, one write each."""
        out = []
        while True:
            try:
                out.append(self.kernel.recv(1 << 17))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.dev.close()
        self.kernel.close()


def udp_socket(addr: str, port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    s.setblocking(False)
    big_buffers(s)
    return s


def received(sock: socket.socket) -> list[tuple[bytes, str]]:
    """Every datagram waiting on sock, with its source address."""
    out = []
    while True:
        try:
            data, (src, _port) = sock.recvfrom(1 << 17)
        except BlockingIOError:
            return out
        out.append((data, src))


@dataclasses.dataclass
class Net:
    tun: VnetTun
    node: socket.socket          # our node's socket on 127.0.0.1 (UDP_GRO on)
    peers: dict[str, socket.socket]
    stranger: socket.socket      # 127.0.0.9: holds no lease
    port: int

    def close(self) -> None:
        self.tun.close()
        for s in (self.node, self.stranger, *self.peers.values()):
            s.close()

    def sent_to_peers(self) -> dict[str, list[bytes]]:
        return {ip: [d for d, _ in received(s)] for ip, s in self.peers.items()}

    def send_run(self, src: socket.socket, segments: list[bytes]) -> None:
        """One UDP_SEGMENT message: equal segments (the last may be shorter) that the node's
        UDP_GRO socket receives as one run with gso_size = len(segments[0])."""
        data = b"".join(segments)
        size = len(segments[0])
        if len(segments) == 1:
            src.sendto(data, self.node.getsockname())
        else:
            src.sendmsg([data], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))], 0,
                       self.node.getsockname())


def open_net() -> Net:
    for _ in range(20):                     # the shared port must be free on every address
        node = udp_socket("127.0.0.1")
        port = node.getsockname()[1]
        try:
            peers = {ip: udp_socket(ip, port) for ip in PEERS}
            break
        except OSError:
            node.close()
    else:
        raise RuntimeError("no port free on 127.0.0.1-3")
    node.setsockopt(SOL_UDP, UDP_GRO, 1)
    return Net(VnetTun(), node, peers, udp_socket("127.0.0.9"), port)


def config(mode: int, port: int, io_flags: int, **kw) -> ForwarderConfig:
    return ForwarderConfig(mode=mode, local_subnet=LOCAL_SUBNET, port=port, mac=OWN_MAC,
                           io_flags=io_flags, **kw)


def forwarders(mode: int, port: int, io_flags: int, **kw):
    """The C forwarder under test and a reference one with the same peers."""
    out = []
    for impl in (C, P):
        fwd = impl.Forwarder(config(mode, port, io_flags, **kw))
        for ip, (subnet, mac) in PEERS.items():
            fwd.set_peer(subnet, ip, mac)
        out.append(fwd)
    return out


ALL_OFFLOADS = IO_VNET | IO_UDP_GSO | IO_UDP_GRO | IO_TUN_USO


# ---- the model --------------------------------------------------------------------------

@dataclasses.dataclass
class Expected:
    sends: dict[str, list[bytes]]                 # peer public IP -> UDP payloads, in order
    tun: list[bytes]                              # writes into the TUN, in order
    drops: dict[tuple[Direction, Drop], int]      # drain-level and per-packet drops
    packets: int
    bytes: int
    super_packets: int
    icmp: tuple[int, int] = (0, 0)                # ICMP errors (sent, held back by the limit)


def _count(drops: dict, key) -> None:
    drops[key] = drops.get(key, 0) + 1


def expect_egress(ref: P.Forwarder, reads: list[bytes]) -> Expected:
    """What dp_drain_tun makes of these TUN reads with IFF_VNET_HDR (csrc/egress.c, tun_cut)."""
    headroom = VXLAN_OVERHEAD if ref.config.mode == MODE_VXLAN else 0
    before = ref.counters()
    drops: dict = {}
    sends: dict[str, list[bytes]] = {ip: [] for ip in PEERS}
    tun: list[bytes] = []
    supers = 0
    ref.set_clock(time.monotonic_ns() // 1_000_000)    # each drain reads the monotonic clock
    for r in reads:
        if len(r) < VNET_HLEN:
            _count(drops, (EG, Drop.TRUNCATED))
            continue
        vnet, pkt = r[:VNET_HLEN], r[VNET_HLEN:]
        why = Drop.IPV6_UNSUPPORTED if pkt[:1] and pkt[0] >> 4 == 6 else P.ipv4_validate(pkt)
        if why:
            _count(drops, (EG, why))
            continue
        if ref._peer_of(int.from_bytes(pkt[16:20], "big")) is None:
            # egress.c:check_super: one error for the whole super-packet, rate-limited
            _count(drops, (EG, Drop.NO_ROUTE))
            icmp = P.icmp_net_unreachable(pkt, ref.config.tun_addr)
            if icmp and ref._icmp_allow():
                tun.append(ZERO_VNET + icmp)
            continue
        res = P.gso_segment(vnet, pkt, headroom, capacity=OUT_CAP)
        why = res.drop if res.drop or len(res.segments) <= MAX_SEGS else Drop.OVERSIZE
        if why:
            _count(drops, (EG, why))
            continue
        supers += len(res.segments) > 1
        for v in ref.egress(res.segments):
            if v.action == Action.SEND:
                sends[v.addr].append(v.data)
            elif v.action == Action.TUN:
                tun.append(ZERO_VNET + v.data)
    return _expected(ref, before, drops, sends, tun, supers, EG)


def tunnelled_whole(mode: int, datagram: bytes) -> bool:
    """udp_adapter.c:tunnelled_whole: a datagram UDP_GRO reports with a gso_size but whose inner
    IPv4 length covers all of it is one kernel peer's tunnelled super-packet, not a run."""
    off = VXLAN_OVERHEAD if mode == MODE_VXLAN else 0
    return (len(datagram) >= off + 20 and datagram[off] >> 4 == 4
            and int.from_bytes(datagram[off + 2:off + 4], "big") == len(datagram) - off)


def cut_run(mode: int, segs: list[bytes]) -> tuple[list[bytes], int]:
    """The pieces the drain makes of one received run, and the hint it passes with them."""
    data = b"".join(segs)
    size = len(segs[0]) if len(segs) > 1 else 0     # no UDP_GRO cmsg for a lone datagram
    if size == 0 or size >= len(data):
        return [data], 0
    if tunnelled_whole(mode, data):
        return [data], size
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""], 0


def refuse_run(ref: P.Forwarder, src: str, pieces: int) -> tuple[Drop, int] | None:
    """dp_drain_udp_gro's checks of a whole run before it takes any of the batch's room, as
    (reason, count): the lease first (an address that holds none costs its receive and nothing
    more: UNKNOWN_PEER once per segment, the run not decided), then a run of more segments than
    a whole batch holds, far more than UDP_GRO ever merges (OVERSIZE, once for the run)."""
    if P.ip_to_int(src) not in ref._by_ip:
        return Drop.UNKNOWN_PEER, pieces
    if pieces > IN_SEGS:
        return Drop.OVERSIZE, 1
    return None


def _tun_deliver(ref: P.Forwarder, pkt: bytes, udp_gso: int) -> list[bytes]:
    """csrc/tun_adapter.c:write_plain through the reference's own (P.Forwarder._deliver): a kernel
    peer's super-packet is cut before the writes; the counters follow its unforwards."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        big_buffers(a)
        big_buffers(b)
        b.setblocking(False)
        ref._deliver(a.fileno(), pkt, udp_gso)
        out = []
        while True:
            try:
                out.append(b.recv(1 << 17))
            except BlockingIOError:
                return out
    finally:
        a.close()
        b.close()


def expect_ingress(ref: P.Forwarder, runs: list[tuple[str, list[bytes]]],
                   budget: int = 1 << 30) -> Expected:
    """What dp_drain_udp_gro makes of these runs (source IP, segments), all queued before the
    drain: recvmmsg takes RECVS at a time, each batch is cut, decided and coalesced alone
    (refuse_run first, for the run as a whole), and a batch whose runs would pass IN_SEGS
    segments is decided and delivered up to the run that does not fit, then starts again.
    The decision classifies each packet's L4 checksum (Verdict.csum) and recognises a kernel
    peer's super-packet (super_gso); the coalescer trusts the one and passes the other on whole
    (vnet), or delivery cuts it (no vnet)."""
    flags = ref.config.io_flags
    mode, max_inner = ref.config.mode, ref.config.max_inner
    vnet = bool(flags & IO_VNET)
    gro = GRO_TCP | (GRO_UDP if flags & IO_TUN_USO else 0)
    before = ref.counters()
    drops: dict = {}
    tun: list[bytes] = []
    supers = 0
    runs = runs[:budget]

    def deliver(pieces: list, hints: list[int]) -> None:
        """ingress.c + tun_adapter.c:tun_write_batch: decide what was gathered, coalesce it,
        write the frames."""
        nonlocal supers
        delivered = [(v, h) for v, h in zip(ref.ingress(pieces, hints), hints)
                     if v.action == Action.TUN]
        if not vnet:
            for v, h in delivered:
                tun.extend(_tun_deliver(ref, v.data, h))
            return
        gso = [P.super_gso(v.data, max_inner, h) if len(v.data) > max_inner else 0
               for v, h in delivered]
        frames = P.gro_coalesce([v.data for v, _ in delivered], gro,
                                csum=[v.csum for v, _ in delivered], gso=gso)
        for frame in frames:
            tun.append(frame.data)
            supers += len(frame.members) > 1 or frame.data[1] != GSO_NONE

    for b in range(0, len(runs), RECVS):
        pieces, hints = [], []
        for src, segs in runs[b:b + RECVS]:
            cut, hint = cut_run(mode, segs)
            refused = refuse_run(ref, src, len(cut))
            if refused:
                drops[(IN, refused[0])] = drops.get((IN, refused[0]), 0) + refused[1]
                continue
            if len(pieces) + len(cut) > IN_SEGS:     # the batch is full: deliver, start again
                deliver(pieces, hints)
                pieces, hints = [], []
            pieces += [(src, 0, s) for s in cut]
            hints += [hint] * len(cut)
        deliver(pieces, hints)
    return _expected(ref, before, drops, {}, tun, supers, IN)


def _expected(ref, before, drops, sends, tun, supers, d) -> Expected:
    after = ref.counters()
    for key, n in after.drops.items():
        n -= before.drops.get(key, 0)
        if n:
            drops[key] = drops.get(key, 0) + n
    return Expected(sends, tun, drops, after.packets[d] - before.packets[d],
                    after.bytes[d] - before.bytes[d], supers,
                    (after.icmp_sent - before.icmp_sent,
                     after.icmp_suppressed - before.icmp_suppressed))


def assert_counters(fwd: C.Forwarder, want: Expected, d: Direction) -> None:
    c = fwd.counters()
    assert c.packets[d] == want.packets
    assert c.bytes[d] == want.bytes
    assert {k: n for k, n in c.drops.items() if k[0] == d} == want.drops
    assert c.super_packets[d] == want.super_packets
    assert (c.icmp_sent, c.icmp_suppressed) == want.icmp
