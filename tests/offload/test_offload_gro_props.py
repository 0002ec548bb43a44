"""Coalescing, by property: C and Python agree on random batches; frames keep every packet once
and each flow in order; merged frames are valid and cut back into exactly their members;
segmenting then coalescing gives back the super-packet."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from dataplane.fastpath import cnative as C
from dataplane.fastpath import pyref as P
from dataplane.fastpath.types import (
    GRO_TCP,
    GRO_UDP,
    GSO_TCPV4,
    GSO_UDP_L4,
    VNET_F_NEEDS_CSUM,
    VNET_HLEN,
    VnetHdr,
)
from offload_packets import (
    ACK, CWR, ECE, FIN, PSH, RST, SYN, TCP, UDP, URG,
    budget, ip_ok, l4_ok, payload_len, pseudo_sum, tcp, tcp_fields, tso, udp, uso,
)

BODY = random.Random(11).randbytes(200_000)
options = st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4])

# What may happen to one packet of a flow on its way (most of the time: nothing).
MISHAPS = ["flags", "bad-l4", "bad-ip", "gap", "repeat", "ack", "window", "options", "tos",
           "ttl", "id", "short", "pure-ack", "ip-options", "fragment", "long"]


@st.composite
def tcp_flow(draw, fid: int):
    mss = draw(st.sampled_from([1448, 1460, 536, 100, 7, 1000]))
    opts = draw(options)
    df = draw(st.booleans())
    seq = draw(st.integers(0, 2**32 - 1))
    ident = draw(st.integers(0, 0xFFFF))
    n = draw(st.integers(1, 12))
    base = dict(sport=30000 + fid, options=opts, df=df, ack=draw(st.integers(0, 2**32 - 1)))
    out, off = [], draw(st.integers(0, 100_000))
    for i in range(n):
        kw = dict(base, seq=seq, ident=(ident + i) & 0xFFFF)
        size = mss
        mishap = draw(st.sampled_from(MISHAPS)) if draw(st.integers(0, 5)) == 0 else None
        if mishap == "flags":
            kw["flags"] = draw(st.sampled_from([ACK | PSH, ACK | FIN, SYN, ACK | RST, ACK | URG,
                                                ACK | ECE, ACK | CWR, PSH, 0]))
        elif mishap == "gap":
            kw["seq"] = seq + mss
        elif mishap == "repeat":
            kw["seq"] = seq - mss
        elif mishap == "ack":
            kw["ack"] = base["ack"] + 1
        elif mishap == "window":
            kw["window"] = 1
        elif mishap == "options":
            kw["options"] = opts[:-4] if opts else b"\x01\x01\x01\x01"
        elif mishap == "tos":
            kw["tos"] = 2
        elif mishap == "ttl":
            kw["ttl"] = 3
        elif mishap == "id":
            kw["ident"] = ident + i + 7
        elif mishap == "short":
            size = draw(st.integers(1, mss))
        elif mishap == "pure-ack":
            size = 0
        elif mishap == "ip-options":
            kw["ip_options"] = b"\x01\x01\x01\x00"
        elif mishap == "fragment":
            kw["frag"] = draw(st.sampled_from([0x2000, 0x0010]))
        elif mishap == "long":
            size = mss + 1
        pkt = bytearray(tcp(BODY[off:off + size], **kw))
        if mishap == "bad-l4":
            pkt[-1 if size else 30] ^= 0x40
        elif mishap == "bad-ip":
            pkt[8] ^= 0x01
        out.append(bytes(pkt))
        seq = (seq + size) & 0xFFFFFFFF
        off += size
    return out


@st.composite
def udp_flow(draw, fid: int):
    size = draw(st.sampled_from([1200, 100, 9]))
    n = draw(st.integers(1, 70))
    last = draw(st.integers(1, size))
    csum = draw(st.sampled_from(["full", "full", "zero"]))
    return [udp(BODY[i:i + (size if i + 1 < n else last)], sport=20000 + fid, ident=i,
                csum=csum) for i in range(n)]


OTHERS = [b"", b"\x45", b"\x60" + bytes(50), bytes.fromhex("450000200000400040010000") + bytes(20),
          tcp(b"x", flags=ACK)[:30], udp(b"y" * 10)[:24]]


@st.composite
def batches(draw):
    flows = [draw(tcp_flow(f)) for f in range(draw(st.integers(1, 18)))]
    flows += [draw(udp_flow(f)) for f in range(draw(st.integers(0, 2)))]
    flows += [[o] for o in draw(st.lists(st.sampled_from(OTHERS), max_size=3))]
    # interleave: any order that keeps each flow's own order
    queues = [list(f) for f in flows]
    out = []
    while any(queues):
        live = [q for q in queues if q]
        q = live[draw(st.integers(0, len(live) - 1))]
        out.append(q.pop(0))
    return out


def flow_of(pkt: bytes):
    """(proto, addresses, ports) for TCP/UDP; ports None when they cannot be read."""
    if len(pkt) < 20 or pkt[0] >> 4 != 4 or pkt[9] not in (TCP, UDP):
        return None
    ihl = (pkt[0] & 15) * 4
    frag_off = (pkt[6] << 8 | pkt[7]) & 0x1FFF
    ports = pkt[ihl:ihl + 4] if not frag_off and ihl >= 20 and len(pkt) >= ihl + 4 else None
    return pkt[9], pkt[12:20], ports


def check_frames(pkts, frames, flags):
    # every packet exactly once; frames in order of their first member; members in order
    order = [k for f in frames for k in f.members]
    assert sorted(order) == list(range(len(pkts)))
    assert [f.members[0] for f in frames] == sorted(f.members[0] for f in frames)
    assert all(list(f.members) == sorted(f.members) for f in frames)
    # no flow reordered; a packet without ports (a later fragment) may belong to any flow of
    # its addresses, so it keeps its place relative to each of them
    keys = {flow_of(p) for p in pkts} - {None}
    for key in keys:
        mine = [k for k in order if (fk := flow_of(pkts[k])) is not None and fk[:2] == key[:2]
                and (fk[2] is None or fk[2] == key[2])]
        assert mine == sorted(mine), key
    for f in frames:
        if len(f.members) == 1:
            assert f.data == bytes(VNET_HLEN) + pkts[f.members[0]]
            continue
        check_merged(pkts, f, flags)


def check_merged(pkts, f, flags):
    hdr = VnetHdr.parse(f.data)
    pkt = f.data[VNET_HLEN:]
    first = pkts[f.members[0]]
    is_tcp = first[9] == TCP
    assert flags & (GRO_TCP if is_tcp else GRO_UDP)
    hlen = 20 + ((first[32] >> 4) * 4 if is_tcp else 8)
    assert hdr == VnetHdr(VNET_F_NEEDS_CSUM, GSO_TCPV4 if is_tcp else GSO_UDP_L4, hlen,
                          len(first) - hlen, 20, 16 if is_tcp else 6)
    assert ip_ok(pkt) and (pkt[2] << 8 | pkt[3]) == len(pkt) <= 65535
    at = 36 if is_tcp else 26
    assert int.from_bytes(pkt[at:at + 2], "big") == pseudo_sum(pkt[12:16], pkt[16:20], pkt[9],
                                                               len(pkt) - 20)
    for k in f.members:                         # nothing unverified went into a merge
        assert ip_ok(pkts[k]) and l4_ok(pkts[k]) and len(pkts[k]) - hlen <= hdr.gso_size
    # cutting the frame again gives back its members: what the kernel would send on
    res = C.gso_segment(hdr, pkt)
    assert len(res.segments) == len(f.members)
    df = pkt[6] & 0x40
    for got, k in zip(res.segments, f.members):
        want = pkts[k]
        if df:                                  # with DF the IP ID is free (RFC 6864)
            got, want = got[:4] + got[6:10] + got[12:], want[:4] + want[6:10] + want[12:]
        assert got == want


@budget(150)
@given(pkts=batches(), flags=st.sampled_from([GRO_TCP, GRO_TCP | GRO_UDP, GRO_UDP, 0]))
def test_random_batches_agree_and_keep_order(pkts, flags):
    frames = C.gro_coalesce(pkts, flags)
    assert frames == P.gro_coalesce(pkts, flags)
    check_frames(pkts, frames, flags)


@st.composite
def super_packets(draw):
    mss = draw(st.one_of(st.sampled_from([536, 1448, 1460, 8948]), st.integers(1, 3000)))
    opts = draw(options)
    room = 65535 - 40 - len(opts)
    n = payload_len(draw, st, mss, room, max_segs=120)
    off = draw(st.integers(0, 100_000))
    flags = draw(st.sampled_from([ACK, ACK | PSH, ACK | PSH | FIN, ACK | CWR]))
    return tso(BODY[off:off + n], mss, options=opts, flags=flags,
               seq=draw(st.integers(0, 2**32 - 1)), ident=draw(st.integers(0, 0xFFFF)),
               df=draw(st.booleans()), ack=draw(st.integers(0, 2**32 - 1)))


@budget(300)
@given(sp=super_packets())
def test_segment_then_coalesce_gives_back_the_super_packet(sp):
    hdr, pkt = sp
    segs = C.gso_segment(hdr, pkt, 22).segments
    frames = C.gro_coalesce(segs)
    assert frames == P.gro_coalesce(segs)
    body = tcp_fields(pkt)["payload"]
    flags = tcp_fields(pkt)["flags"]
    if len(segs) == 1:
        assert frames == [(bytes(VNET_HLEN) + segs[0], (0,))]
    elif flags in (ACK, ACK | PSH):
        # the very bytes the TUN handed out, virtio_net_hdr included
        assert frames == [(hdr.pack() + pkt, tuple(range(len(segs))))]
    else:
        # a CWR segment stays alone at the front, a FIN one at the back; the rest merges
        got = b"".join(tcp_fields(f.data[VNET_HLEN:])["payload"] for f in frames)
        assert got == body
        assert len(frames) == 2
    check_frames(segs, frames, GRO_TCP)


@budget(100)
@given(size=st.integers(1, 2000), count=st.integers(2, 64), last=st.integers(1, 2000),
       off=st.integers(0, 50_000))
def test_uso_then_udp_coalesce_gives_back_the_super_packet(size, count, last, off):
    last = min(last, size)
    n = min((count - 1) * size + last, 65535 - 28)
    hdr, pkt = uso(BODY[off:off + n], size)
    segs = C.gso_segment(hdr, pkt).segments
    frames = C.gro_coalesce(segs, GRO_UDP)
    assert frames == P.gro_coalesce(segs, GRO_UDP)
    if len(segs) > 1:
        assert frames == [(hdr.pack() + pkt, tuple(range(len(segs))))]


@st.composite
def mangled_batches(draw):
    pkts = draw(batches())
    for _ in range(draw(st.integers(0, 6))):
        k = draw(st.integers(0, len(pkts) - 1))
        b = bytearray(pkts[k])
        if draw(st.booleans()):
            b = b[: draw(st.integers(0, len(b)))]
        elif b:
            b[draw(st.integers(0, min(len(b) - 1, 70)))] ^= draw(st.integers(1, 255))
        pkts[k] = bytes(b)
    return pkts


@budget(60)
@given(pkts=mangled_batches(), flags=st.sampled_from([GRO_TCP, GRO_TCP | GRO_UDP]))
def test_c_stays_inside_exact_buffers(pkts, flags):
    """Every packet and every frame in a buffer of exactly its size, so the AddressSanitizer
    build catches a byte read or written past any of them; and C still agrees with Python."""
    ffi, lib = C.ffi, C.lib
    n = len(pkts)
    owners = [ffi.new("uint8_t[]", max(len(p), 1)) for p in pkts]
    arr = ffi.new("struct dp_buf[]", n)
    for i, p in enumerate(pkts):
        ffi.memmove(owners[i], p, len(p))
        arr[i].data, arr[i].len = owners[i], len(p)
    frames = ffi.new("struct dp_gro_frame[]", n)
    nxt = ffi.new("int32_t[]", n)
    count = lib.dp_gro_coalesce(arr, n, flags, frames, nxt)
    got = []
    for f in range(count):
        out = ffi.new("uint8_t[]", frames[f].len)
        assert lib.dp_gro_frame_copy(out, frames + f, arr, nxt) == frames[f].len
        got.append(bytes(out))
    want = P.gro_coalesce(pkts, flags)
    assert got == [f.data for f in want]
    check_frames(pkts, C.gro_coalesce(pkts, flags), flags)
