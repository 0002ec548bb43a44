"""The dataplanes a run compares, as data: a new rung of the ladder is one line here.

A rung names a lab backend, for our daemon also a fast path and extra `dataplane run` flags,
and the encapsulation it puts on the wire (header sizes: bench.overhead, from `dataplane
explain`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench import tunnels
from bench.overhead import overhead

BASELINE = "kernel-vxlan"        # every figure is also given as a ratio to this one


@dataclass(frozen=True)
class Dataplane:
    name: str                     # as written on the command line and in the report
    backend: str                  # lab backend: host-gw | kernel-vxlan | udp | vxlan
    encap: str | None             # wire format: None (plain routing), "udp" or "vxlan"
    fastpath: str | None = None   # our daemon only: "c" or "python"
    daemon_args: tuple[str, ...] = ()   # extra `dataplane run` flags of this rung
    note: str = ""
    pin_daemons: bool = True      # False for a rung whose daemon spreads over the cores itself
    tunnel: Any = None            # a bench.tunnels.Tunnel carrying a host-gw lab's pod routes
    direct_routing: bool = False  # Backend.DirectRouting, both nodes on one underlay subnet
    needs_run_flag: str | None = None   # a `dataplane run` flag this build must offer

    @property
    def runs_daemon(self) -> bool:
        return self.fastpath is not None

    @property
    def overhead(self) -> int:
        """Bytes each inner IP packet gains on the underlay (none when DirectRouting routes
        it to a peer on our subnet)."""
        if self.tunnel is not None:
            return self.tunnel.overhead
        return 0 if self.direct_routing else overhead(self.encap)

    def pod_mtu(self, underlay_mtu: int = 1500) -> int:
        """A tunnel's pods get its device's MTU (not always underlay - overhead: wireguard-go
        keeps room for an IPv6 underlay); our daemon sizes it for its encapsulation,
        DirectRouting or not."""
        if self.tunnel is not None:
            return self.tunnel.mtu
        return underlay_mtu - overhead(self.encap)


# The batched C rungs are pinned to what DESIGN.md calls step 3 (one call per batch, one
# packet per syscall): no offloads, one worker. The offload rungs add the rest of the ladder.
PLAIN_C = ("--offload", "off", "--workers", "1")
BUSY_POLL_USEC = 50

LADDER: tuple[Dataplane, ...] = (
    Dataplane("host-gw", "host-gw", None, note="plain routes via the peer node: the ceiling"),
    Dataplane("kernel-vxlan", "kernel-vxlan", "vxlan", note="flannel's vxlan: the kernel device"),
    Dataplane("udp/c", "udp", "udp", "c", PLAIN_C,
              note="our daemon, flannel udp wire, batched C fast path"),
    Dataplane("vxlan/c", "vxlan", "vxlan", "c", PLAIN_C,
              note="our daemon, VXLAN wire, batched C fast path"),
    Dataplane("udp/python", "udp", "udp", "python", note="per-packet Python reference"),
    Dataplane("vxlan/python", "vxlan", "vxlan", "python", note="per-packet Python reference"),
    Dataplane("udp/c+offload", "udp", "udp", "c", ("--offload", "on", "--workers", "1"),
              note="flannel udp wire with TUN super-packets, UDP GSO/GRO, one worker"),
    Dataplane("vxlan/c+offload", "vxlan", "vxlan", "c", ("--offload", "on", "--workers", "1"),
              note="TUN super-packets, UDP GSO/GRO, one worker"),
    Dataplane("vxlan/c+offload+mq", "vxlan", "vxlan", "c", ("--offload", "on", "--workers", "2"),
              pin_daemons=False, note="offloads and a worker per core (multi-queue TUN)"),
    Dataplane("vxlan/c+offload+dr", "vxlan", "vxlan", "c", ("--offload", "on", "--workers", "1"),
              direct_routing=True,
              note="Backend.DirectRouting: the peer shares our subnet, so plain routes, no "
                   "encapsulation"),
    Dataplane("vxlan/c+offload+busypoll", "vxlan", "vxlan", "c",
              ("--offload", "on", "--workers", "1", "--busy-poll", str(BUSY_POLL_USEC)),
              needs_run_flag="--busy-poll",
              note=f"offloads, polling {BUSY_POLL_USEC} µs after each wakeup before sleeping"),
    Dataplane("vxlan/c+offload/read", "vxlan", "vxlan", "c",
              ("--offload", "on", "--workers", "1", "--tun-uring", "off"),
              note="vxlan/c+offload with the TUN read() and written a packet a call, "
                   "not through io_uring"),
) + tuple(Dataplane(t.name, "host-gw", None, note=t.note, tunnel=t) for t in tunnels.TOOLS)

BY_NAME = {dp.name: dp for dp in LADDER}


def command_rung(spec: str) -> Dataplane:
    """`cmd:PATH`: the rung of a program of yours (bench.tunnels.command); TunnelError if
    PATH cannot be one."""
    t = tunnels.command_tunnel(spec)
    return Dataplane(t.name, "host-gw", None, note=t.note, tunnel=t)


def select(names: list[str] | None) -> list[Dataplane]:
    """The named rungs in ladder order, the baseline always among them, then any `cmd:PATH`
    rungs in the order given; unknown names raise KeyError with the name."""
    if not names:
        return list(LADDER)
    commands = [n for n in names if n.startswith(tunnels.CMD_PREFIX)]
    for name in names:
        if name not in BY_NAME and name not in commands:
            raise KeyError(name)
    wanted = set(names) | {BASELINE}
    return [dp for dp in LADDER if dp.name in wanted] + [command_rung(n) for n in commands]
