"""A userspace TCP/UDP peer behind a TUN with IFF_VNET_HDR, so the kernel's own stack judges
what our offload functions make. test_offload_kernel.py runs it as
`unshare --net python3 kernel_peer.py`: a fresh network namespace that vanishes with the process.

    local stack 10.9.0.1 (tun dev ko0) <-- TUN --> this script, playing 10.9.0.2

  rx-tcp  our coalesced GSO_TCPV4 frames written to the TUN: a kernel socket must receive the
          exact byte stream (sent in window-sized frames, each one write and one rx_packet)
  rx-udp  a GSO_UDP_L4 frame: a kernel UDP socket must receive each datagram whole
  tx-tcp  the kernel's TSO super-packets read from the TUN, cut by gso_segment: every segment
          valid, the byte stream exact
  tx-udp  a UDP_SEGMENT send from a kernel socket, handed to us as USO and cut back
  fwd     our TCP and UDP frames routed on to a second TUN without offloads (ko1), so the
          kernel cuts them in software from the pseudo-header sum we left: the packets read
          from ko1 must be the segments we merged (TTL one less)
  partial what a kernel flannel.1 on veth sends, passed on as we pass it: a partial-checksum
          UDP datagram with our NEEDS_CSUM header reaches a kernel socket (without it, the
          kernel counts a checksum error), and a partial TSO super-packet with our GSO_TCPV4
          header reaches a kernel TCP socket whole

Prints one JSON object with what it saw; exits non-zero with a message on the first failure.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import select
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dataplane import fastpath                                        # noqa: E402
from dataplane.fastpath.types import (                               # noqa: E402
    CSUM_PARTIAL, GRO_TCP, GRO_UDP, GSO_TCPV4, GSO_UDP_L4, VNET_HLEN, VnetHdr)
from dataplane.tun import TUNSETOFFLOAD, open_tun                    # noqa: E402
from offload_packets import ACK, PSH, SYN, ip_ok, l4_ok, tcp, udp    # noqa: E402

# The implementation under test (test_offload_kernel.py runs each): "c" or "python".
IMPL = fastpath.load(sys.argv[1] if len(sys.argv) > 1 else "c")

TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_USO4, TUN_F_USO6 = 0x01, 0x02, 0x04, 0x20, 0x40
UDP_SEGMENT = 103
LOCAL, PEER = bytes([10, 9, 0, 1]), bytes([10, 9, 0, 2])
LOCAL_S, PEER_S = "10.9.0.1", "10.9.0.2"
DEV = "ko0"
FWD_DEV, FWD_NET, FWD_DST = "ko1", "10.9.1.0/24", bytes([10, 9, 1, 2])
MSS = 1448
TIMEOUT = 10.0


class Failed(Exception):
    pass


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def rx_packets() -> int:
    """Packets the TUN delivered to the stack (/proc/net/dev is per namespace; /sys is not)."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, counters = line.partition(":")
            if name.strip() == DEV:
                return int(counters.split()[1])
    raise Failed(f"{DEV} not in /proc/net/dev")


class Tun:
    def __init__(self) -> None:
        self.tun = open_tun(DEV, vnet_hdr=True)
        self.fd = self.tun.fd
        fcntl.ioctl(self.fd, TUNSETOFFLOAD,
                    TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6)
        sh("ip", "link", "set", "lo", "up")
        sh("ip", "addr", "add", f"{LOCAL_S}/24", "dev", DEV)
        sh("ip", "link", "set", DEV, "up")

    def write(self, frame: bytes) -> None:
        if os.write(self.fd, frame) != len(frame):
            raise Failed("short write to the TUN")

    def send(self, pkt: bytes) -> None:
        self.write(bytes(VNET_HLEN) + pkt)

    def read(self, want, timeout: float = TIMEOUT) -> tuple[VnetHdr, bytes]:
        """The next frame from the kernel for which want(hdr, pkt) is true."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not select.select([self.fd], [], [], end - time.monotonic())[0]:
                break
            frame = os.read(self.fd, 65536 + VNET_HLEN)
            hdr, pkt = VnetHdr.parse(frame), frame[VNET_HLEN:]
            if want(hdr, pkt):
                return hdr, pkt
        raise Failed("timed out waiting for a packet from the kernel")


def open_plain_tun() -> int:
    """ko1: no IFF_VNET_HDR, no offloads, so whatever is routed to it is cut in software."""
    fd = open_tun(FWD_DEV).fd
    sh("ip", "link", "set", FWD_DEV, "up")
    sh("ip", "route", "add", FWD_NET, "dev", FWD_DEV)
    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
        f.write("1")
    return fd


def read_plain(fd: int, count: int) -> list[bytes]:
    out: list[bytes] = []
    end = time.monotonic() + TIMEOUT
    while len(out) < count and time.monotonic() < end:
        if select.select([fd], [], [], end - time.monotonic())[0]:
            pkt = os.read(fd, 65536)
            if pkt[0] >> 4 == 4 and pkt[16:20] == FWD_DST:
                out.append(pkt)
    return out


def forwarded(sent: bytes) -> bytes:
    """What the router makes of a packet: TTL one less, IP checksum fixed incrementally."""
    b = bytearray(sent)
    b[8] -= 1
    b[10:12] = b"\0\0"
    b[10:12] = (~IMPL.csum_partial(bytes(b[:20])) & 0xFFFF).to_bytes(2, "big")
    return bytes(b)


def fwd(tun: Tun, report: dict) -> None:
    """Our merged frames, segmented again by the kernel's software GSO on the way to ko1."""
    fd = open_plain_tun()
    body = random.Random(5).randbytes(30 * MSS)
    flow = dict(src=PEER, dst=FWD_DST, sport=40002, dport=9000,
                options=b"\x01\x01\x08\x0a" + bytes(8))
    segs = [tcp(body[i * MSS:(i + 1) * MSS], seq=77 + i * MSS, ident=500 + i,
                flags=ACK | (PSH if i == 29 else 0), **flow) for i in range(30)]
    dgrams = [udp(body[i * 999:(i + 1) * 999], src=PEER, dst=FWD_DST, sport=40003, dport=9001,
                  ident=900 + i) for i in range(12)]
    frames = IMPL.gro_coalesce(segs + dgrams, GRO_TCP | GRO_UDP)
    if [len(f.members) for f in frames] != [30, 12]:
        raise Failed("fwd: the packets did not coalesce into two frames")
    for f in frames:
        tun.write(f.data)
    got = read_plain(fd, 42)
    want = [forwarded(p) for p in segs + dgrams]
    if got != want:
        bad = sum(g != w for g, w in zip(got, want))
        raise Failed(f"fwd: {len(got)} packets came out, {bad} differ from what was merged")
    report["fwd"] = {"tcp_segments": 30, "udp_datagrams": 12, "frames": len(frames)}
    os.close(fd)


def tcp_of(pkt: bytes) -> dict | None:
    if len(pkt) < 40 or pkt[9] != 6:
        return None
    ihl = (pkt[0] & 15) * 4
    t = pkt[ihl:]
    sport, dport, seq, ack, off, flags, window = struct.unpack_from("!HHIIBBH", t)
    thl = (off >> 4) * 4
    opts, wscale = t[20:thl], 0
    i = 0
    while i < len(opts) and opts[i] != 0:
        if opts[i] == 1:
            i += 1
            continue
        if opts[i] == 3:
            wscale = opts[i + 2]
        i += max(2, opts[i + 1])
    return {"sport": sport, "dport": dport, "seq": seq, "ack": ack, "flags": flags,
            "window": window, "wscale": wscale, "payload": t[thl:]}


SYN_OPTS = struct.pack("!BBH", 2, 4, 1460) + b"\x01\x03\x03\x07"   # MSS 1460, NOP, wscale 7


def rx_tcp(tun: Tun, report: dict) -> None:
    """Our GRO frames into a kernel TCP socket."""
    srv = socket.socket()
    srv.bind((LOCAL_S, 5000))
    srv.listen()
    srv.settimeout(TIMEOUT)
    iss = 1_000_000
    flow = dict(src=PEER, dst=LOCAL, sport=40000, dport=5000)
    tun.send(tcp(b"", seq=iss, ack=0, flags=SYN, window=65535, options=SYN_OPTS, **flow))
    _, pkt = tun.read(lambda h, p: (t := tcp_of(p)) is not None and t["flags"] & SYN)
    synack = tcp_of(pkt)
    shift, ack = synack["wscale"], synack["seq"] + 1
    tun.send(tcp(b"", seq=iss + 1, ack=ack, window=65535, **flow))
    conn, _ = srv.accept()
    conn.settimeout(TIMEOUT)

    data = random.Random(1).randbytes(400_000)
    got = bytearray()
    reader = threading.Thread(target=lambda: _recv_all(conn, got, len(data)))
    reader.start()
    sent, acked, window, ident, frames, segments = 0, 0, synack["window"], 1, 0, 0
    before = rx_packets()
    while acked < len(data):
        room = min(acked + window, len(data)) - sent
        segs = []
        while room > 0 and len(segs) < 44:
            n = min(MSS, room)
            segs.append(tcp(data[sent:sent + n], seq=iss + 1 + sent, ack=ack, window=65535,
                            ident=ident, flags=ACK | (PSH if sent + n == len(data) else 0),
                            **flow))
            sent, room, ident = sent + n, room - n, ident + 1
        if segs:
            for f in IMPL.gro_coalesce(segs, GRO_TCP):
                tun.write(f.data)
                frames += 1
            segments += len(segs)
        _, pkt = tun.read(lambda h, p: (t := tcp_of(p)) is not None and t["dport"] == 40000)
        t = tcp_of(pkt)
        acked = max(acked, (t["ack"] - iss - 1) & 0xFFFFFFFF)
        window = t["window"] << shift
    reader.join(TIMEOUT)
    if bytes(got) != data:
        raise Failed(f"rx-tcp: the socket got {len(got)} bytes, not the {len(data)} sent")
    report["rx_tcp"] = {"bytes": len(data), "segments": segments, "frames_written": frames,
                        "tun_rx_packets": rx_packets() - before}
    conn.close()
    srv.close()


def _recv_all(conn: socket.socket, into: bytearray, n: int) -> None:
    try:
        while len(into) < n:
            chunk = conn.recv(1 << 20)
            if not chunk:
                return
            into += chunk
    except OSError:
        return


def rx_udp(tun: Tun, report: dict) -> None:
    """A GSO_UDP_L4 frame into a kernel UDP socket: each datagram arrives whole."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOCAL_S, 6000))
    s.settimeout(TIMEOUT)
    body = random.Random(2).randbytes(20 * 1200)
    dgrams = [udp(body[i * 1200:(i + 1) * 1200], src=PEER, dst=LOCAL, sport=40001, dport=6000,
                  ident=i) for i in range(19)]
    dgrams.append(udp(body[:333], src=PEER, dst=LOCAL, sport=40001, dport=6000, ident=19))
    frames = IMPL.gro_coalesce(dgrams, GRO_UDP)
    if len(frames) != 1 or VnetHdr.parse(frames[0].data).gso_type != GSO_UDP_L4:
        raise Failed("rx-udp: the datagrams did not coalesce")
    tun.write(frames[0].data)
    got = [s.recv(65536) for _ in range(20)]
    if got != [d[28:] for d in dgrams]:
        raise Failed("rx-udp: datagrams differ")
    report["rx_udp"] = {"datagrams": len(got)}
    s.close()


def tx_tcp(tun: Tun, report: dict) -> None:
    """The kernel's TSO super-packets, cut by gso_segment."""
    data = random.Random(3).randbytes(1_000_000)
    cli = socket.socket()
    cli.settimeout(TIMEOUT)
    errors: list[str] = []

    def app() -> None:
        try:
            cli.connect((PEER_S, 7000))
            cli.sendall(data)
        except OSError as exc:
            errors.append(str(exc))

    sender = threading.Thread(target=app)
    sender.start()
    _, pkt = tun.read(lambda h, p: (t := tcp_of(p)) is not None and t["flags"] & SYN)
    syn = tcp_of(pkt)
    iss, peer_iss = syn["seq"] + 1, 5_000_000
    flow = dict(src=PEER, dst=LOCAL, sport=7000, dport=syn["sport"])
    tun.send(tcp(b"", seq=peer_iss, ack=iss, flags=SYN | ACK, window=65535, options=SYN_OPTS,
                 **flow))
    got = bytearray(len(data))
    have = 0
    seen = {"frames": 0, "tso_frames": 0, "max_segments": 0, "hdr_len_hints": set(),
            "gso_sizes": set()}
    while have < len(data):
        hdr, pkt = tun.read(lambda h, p: (t := tcp_of(p)) is not None and t["dport"] == 7000)
        res = IMPL.gso_segment(hdr, pkt)
        if res.drop:
            raise Failed(f"tx-tcp: gso_segment refused a kernel frame: {res.drop.name} {hdr}")
        seen["frames"] += 1
        if hdr.gso_type & 0x7F == GSO_TCPV4:
            seen["tso_frames"] += 1
            seen["hdr_len_hints"].add(hdr.hdr_len)
            seen["gso_sizes"].add(hdr.gso_size)
        seen["max_segments"] = max(seen["max_segments"], len(res.segments))
        for seg in res.segments:
            if not (ip_ok(seg) and l4_ok(seg)):
                raise Failed("tx-tcp: a segment has a bad checksum")
            if len(seg) > 1500:
                raise Failed("tx-tcp: a segment is larger than the MTU")
            t = tcp_of(seg)
            off = (t["seq"] - iss) & 0xFFFFFFFF
            if t["payload"] and off <= have:
                got[off:off + len(t["payload"])] = t["payload"]
                have = max(have, off + len(t["payload"]))
        tun.send(tcp(b"", seq=peer_iss + 1, ack=(iss + have) & 0xFFFFFFFF, window=65535,
                     **flow))
    sender.join(TIMEOUT)
    if errors or bytes(got) != data:
        raise Failed(f"tx-tcp: stream differs ({errors})")
    seen["hdr_len_hints"] = sorted(seen["hdr_len_hints"])
    seen["gso_sizes"] = sorted(seen["gso_sizes"])
    report["tx_tcp"] = seen
    cli.close()


def tx_udp(tun: Tun, report: dict) -> None:
    """A UDP_SEGMENT send: the TUN hands us one USO frame, gso_segment cuts it back."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_UDP, UDP_SEGMENT, 1000)
    body = random.Random(4).randbytes(10 * 1000 + 10)
    s.sendto(body, (PEER_S, 8000))
    hdr, pkt = tun.read(lambda h, p: p[9] == 17 and p[22:24] == b"\x1f\x40")
    res = IMPL.gso_segment(hdr, pkt)
    if res.drop or hdr.gso_type != GSO_UDP_L4:
        raise Failed(f"tx-udp: not a USO frame or refused: {hdr} {res.drop.name}")
    if [seg[28:] for seg in res.segments] != [body[i:i + 1000] for i in range(0, len(body), 1000)]:
        raise Failed("tx-udp: datagrams differ")
    if not all(ip_ok(seg) and l4_ok(seg) for seg in res.segments):
        raise Failed("tx-udp: a datagram has a bad checksum")
    report["tx_udp"] = {"datagrams": len(res.segments), "hdr": list(hdr)}
    s.close()


def snmp(proto: str, field: str) -> int:
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith(proto + ":")]
    return int(rows[1][rows[0].index(field)])


def partial(tun: Tun, report: dict) -> None:
    """A kernel peer's partial checksums, handed on as the ingress path hands them on."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOCAL_S, 6100))
    s.settimeout(1.0)
    dgram = udp(b"from a kernel peer", src=PEER, dst=LOCAL, sport=40005, dport=6100,
                csum="partial")
    before = snmp("Udp", "InCsumErrors")
    tun.send(dgram)                              # no header: what we wrote before
    [frame] = IMPL.gro_coalesce([dgram], GRO_UDP, csum=[CSUM_PARTIAL])
    tun.write(frame.data)
    if s.recv(65536) != dgram[28:]:
        raise Failed("partial: the datagram differs")
    try:
        s.recv(65536)
        raise Failed("partial: the datagram without NEEDS_CSUM was delivered too")
    except TimeoutError:
        pass
    errors = snmp("Udp", "InCsumErrors") - before
    s.close()

    srv = socket.socket()
    srv.bind((LOCAL_S, 5100))
    srv.listen()
    srv.settimeout(TIMEOUT)
    iss, flow = 7_000_000, dict(src=PEER, dst=LOCAL, sport=40006, dport=5100)
    tun.send(tcp(b"", seq=iss, ack=0, flags=SYN, window=65535, options=SYN_OPTS, **flow))
    _, pkt = tun.read(lambda h, p: (t := tcp_of(p)) is not None and t["dport"] == 40006)
    ack = tcp_of(pkt)["seq"] + 1
    tun.send(tcp(b"", seq=iss + 1, ack=ack, window=65535, **flow))
    conn, _ = srv.accept()
    conn.settimeout(TIMEOUT)
    data = random.Random(6).randbytes(30_000)
    sup = tcp(data, seq=iss + 1, ack=ack, window=65535, flags=ACK | PSH, csum="partial",
              ident=9, **flow)
    gso = IMPL.super_gso(sup, 1450)
    tun.write(IMPL.super_vnet(sup, gso) + sup)
    got = bytearray()
    _recv_all(conn, got, len(data))
    if bytes(got) != data:
        raise Failed(f"partial: the TCP socket got {len(got)} of {len(data)} bytes")
    report["partial"] = {"udp_csum_errors_without_header": errors, "tcp_super_bytes": len(got),
                         "gso_size": gso}
    conn.close()
    srv.close()


def main() -> int:
    report: dict = {}
    try:
        tun = Tun()
        for step in (rx_tcp, rx_udp, tx_tcp, tx_udp, fwd, partial):
            step(tun, report)
    except Failed as exc:
        print(json.dumps({"error": str(exc), **report}))
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
