"""Measure how a coalesced frame is best written to a TUN (see gro_tun_write.c): builds the
harness against csrc/, makes 44 TCP segments of 1448 bytes, runs it in a fresh network
namespace. Needs root, gcc, /dev/net/tun.

    python3 bench/micro/gro_tun_write.py [iterations per round] [rounds]
"""

from __future__ import annotations

import random
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from dataplane.fastpath import pyref as P  # noqa: E402


def segments(count: int = 44, mss: int = 1448) -> list[bytes]:
    body = random.Random(1).randbytes(count * mss)
    out = []
    for i in range(count):
        payload = body[i * mss:(i + 1) * mss]
        tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 5201, 1 + i * mss, 1, 8 << 4, 0x10, 502,
                                    0, 0) + b"\x01\x01\x08\x0a" + bytes(8))
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 32 + mss, i, 0x4000, 64, 6, 0,
                                   bytes([10, 9, 0, 2]), bytes([10, 9, 5, 2])))
        struct.pack_into("!H", ip, 10, P.checksum(ip))
        psum = P.csum_partial(bytes(ip[12:20]), 6 + len(tcp) + mss)
        struct.pack_into("!H", tcp, 16, P.checksum(bytes(tcp) + payload, psum))
        out.append(bytes(ip + tcp) + payload)
    return out


def main() -> None:
    iters = sys.argv[1] if len(sys.argv) > 1 else "2000"
    rounds = sys.argv[2] if len(sys.argv) > 2 else "21"
    with tempfile.TemporaryDirectory() as tmp:
        exe, data = Path(tmp) / "gro_tun_write", Path(tmp) / "segments"
        segs = segments()
        data.write_bytes(struct.pack("=I", len(segs)) +
                         b"".join(struct.pack("=I", len(s)) + s for s in segs))
        srcs = [str(ROOT / "csrc" / n) for n in ("csum.c", "csum64.c", "gro.c")]
        subprocess.run(["gcc", "-O3", "-std=gnu11", "-I", str(ROOT / "csrc"), "-o", str(exe),
                        str(HERE / "gro_tun_write.c"), *srcs], check=True)
        subprocess.run(["unshare", "--net", str(exe), str(data), iters, rounds], check=True)


if __name__ == "__main__":
    main()
