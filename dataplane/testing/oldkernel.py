"""This kernel, playing an older or stricter one: LinuxHost with offloads refused, so the
fallbacks run against the real TUN and sockets.

    tso          TUNSETOFFLOAD takes only checksum offload (no super-packets from the TUN)
    gso          UDP_SEGMENT reported refused: segments go one by one
    gro          UDP_GRO refused (and switched off on the receive sockets)
    gso-at-send  UDP_SEGMENT granted, but the kernel refuses each such send later (SO_NO_CHECK
                 makes it), exercising the switch-off in the hot path

A daemon in a subprocess (the namespace tests) gets one through this module's entry point,
which runs the ordinary command line on it:

    python -m dataplane.testing.oldkernel --deny tso,gro -- -v run --store-dir ...

Production code knows nothing of it: the host is passed in, as a test's FakeHost is.
"""

from __future__ import annotations

import argparse
import socket
import sys

from dataplane.daemon.host import LinuxHost, Offloads, SocketPair
from dataplane.daemon.pump import SOL_UDP, UDP_GRO
from dataplane.tun import OFFLOAD_CHOICES, Tun

DENIABLE = ("tso", "gso", "gro", "gso-at-send")
SO_NO_CHECK = 11                            # asm-generic/socket.h: no UDP checksums sent


class DenyingLinuxHost(LinuxHost):
    def __init__(self, deny: set[str] | frozenset[str]) -> None:
        unknown = set(deny) - set(DENIABLE)
        if unknown:
            raise ValueError(f"cannot deny {', '.join(sorted(unknown))}: one of "
                             f"{', '.join(DENIABLE)}")
        self.deny = frozenset(deny)
        if "tso" in self.deny:
            self.offload_choices = OFFLOAD_CHOICES[-2:]          # csum, or nothing

    def negotiate_offloads(self, tun: Tun, pairs: list[SocketPair]) -> Offloads:
        granted = super().negotiate_offloads(tun, pairs)
        if "gro" in self.deny:
            for recv, _send in pairs:
                recv.setsockopt(SOL_UDP, UDP_GRO, 0)
        if "gso-at-send" in self.deny:
            for _recv, send in pairs:
                send.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
        return Offloads(granted.tun, granted.gso and "gso" not in self.deny,
                        granted.gro and "gro" not in self.deny)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dataplane.testing.oldkernel",
        description="run `dataplane ARGS` (the daemon: `run ...`) on this kernel with some "
                    "offloads refused, as an older kernel would")
    parser.add_argument("--deny", required=True, metavar="LIST",
                        help=f"comma-separated: {', '.join(DENIABLE)}")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="-- ARGS")
    ns = parser.parse_args(argv)
    args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    try:
        host = DenyingLinuxHost(set(filter(None, ns.deny.split(","))))
    except ValueError as exc:
        parser.error(str(exc))
    from dataplane import cli
    return cli.main(args, host=host)


if __name__ == "__main__":
    sys.exit(main())
