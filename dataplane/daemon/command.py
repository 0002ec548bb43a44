"""`dataplane run`: the node daemon, with flanneld's flag names where flanneld has the option."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import re
import signal
from typing import TYPE_CHECKING

from dataplane import __version__, fastpath, subnetenv
from dataplane.backends import UDP, VXLAN
from dataplane.errors import CommandError
from dataplane.daemon.pump import BUSY_POLL_MAX
from dataplane.netfilter.options import add_netfilter_arguments, netfilter_options
from dataplane.store.options import add_store_arguments, open_store

if TYPE_CHECKING:
    from dataplane.daemon.host import Host

if TYPE_CHECKING:
    from dataplane.daemon.node import Node

HELP = "run the node daemon: lease a subnet, bring up the TUN device and forward pod traffic"

# Every flag can also come from FLANNELD_<FLAG> (--subnet-file: FLANNELD_SUBNET_FILE), as
# flanneld's; the command line wins (dataplane/cli.py apply_env).
ENV_PREFIX = "FLANNELD"
RENEW_MARGIN_MINUTES = 60          # flanneld's default --subnet-lease-renew-margin

log = logging.getLogger("dataplane.daemon")


def configure(p: argparse.ArgumentParser) -> None:
    p.epilog = ("The backend (udp or vxlan), its port and VNI come from the network config in "
                "the store (flannel's net-conf.json at STORE/config).\n"
                "Every flag can also be set in the environment as flanneld's are: "
                "FLANNELD_ and the flag's name\nin upper case with '-' as '_' "
                "(--iface eth0: FLANNELD_IFACE=eth0; --ip-masq: FLANNELD_IP_MASQ=true);\n"
                "a flag on the command line wins.\n"
                "A stop (SIGTERM) keeps the lease and subnet.env, so a restart keeps the "
                "subnet; give it back\nwith `dataplane leases release`. Example:\n"
                "  dataplane run --store-dir /tmp/store --public-ip 10.99.0.1 "
                "--subnet 10.244.1.0/24")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    add_store_arguments(p)
    node = p.add_argument_group("node")
    p.add_argument("--version", action="version", version=f"dataplane {__version__}",
                   help="print the version and exit")
    node.add_argument("--public-ip", metavar="IP", type=_address,
                      help="address other nodes reach us at, published in the lease (default: "
                           "the underlay interface's). May be an address the host does not "
                           "have (NAT): we then send from the interface's address, with a "
                           "warning")
    node.add_argument("--iface", metavar="NAME|IP", action="append", default=[],
                      help="underlay interface, by name or by one of its addresses; repeat to "
                           "try several in order, the first that exists wins (default: the "
                           "interface holding --public-ip, else the default route's)")
    node.add_argument("--iface-regex", metavar="REGEX", action="append", default=[],
                      type=_regex,
                      help="underlay interface whose address, else whose name, matches REGEX; "
                           "repeatable, tried in order after every --iface")
    node.add_argument("--iface-can-reach", metavar="IP", type=_address,
                      help="underlay interface: the one the route to IP leaves by (as `ip "
                           "route get IP`), tried after --iface and --iface-regex")
    node.add_argument("--subnet", metavar="CIDR", type=_network,
                      help="ask for this subnet lease (default: the one our public IP holds, "
                           "the one --subnet-file names if it is free, or any free one)")
    node.add_argument("--subnet-file", default=subnetenv.DEFAULT_PATH, metavar="PATH",
                      help="where to write subnet.env for the CNI plugin (default %(default)s)")
    node.add_argument("--tun-name", metavar="NAME",
                      help=f"TUN device name (default {UDP.device(1)} for udp, "
                           f"{VXLAN.device('<VNI>')} for vxlan)")
    node.add_argument("--lease-ttl", type=_positive, default=24 * 3600, metavar="SECONDS",
                      help="lease lifetime (default 24 h, flanneld's)")
    node.add_argument("--subnet-lease-renew-margin", type=int, metavar="MINUTES",
                      help=f"renew the lease this long before it expires (default "
                           f"{RENEW_MARGIN_MINUTES}, as flanneld; with a --lease-ttl of an hour "
                           "or less, half the TTL); 1 to 1439 and below --lease-ttl")
    add_netfilter_arguments(p)
    ops = p.add_argument_group("health and metrics")
    ops.add_argument("--healthz-ip", default="0.0.0.0", metavar="IP", type=_address,
                     help="address of /healthz, /readyz and /metrics (default %(default)s, "
                          "every address, as flanneld; 127.0.0.1 keeps them on loopback)")
    ops.add_argument("--healthz-port", type=int, default=0, metavar="PORT",
                     help="port of /healthz, /readyz and /metrics (default 0: disabled)")
    dp = p.add_argument_group("fast path")
    dp.add_argument("--fastpath", choices=fastpath.IMPLEMENTATIONS, default=fastpath.DEFAULT,
                    help="c: batched C hot path (default); python: the per-packet reference")
    dp.add_argument("--offload", choices=("on", "off"), default="on",
                    help="on (default): TUN super-packets with virtio-net headers, UDP GSO and "
                         "GRO, each as far as the kernel grants it; off: the batched path one "
                         "packet at a time. The python fast path always runs without")
    dp.add_argument("--tun-uring", choices=("auto", "batch", "off"), default="auto",
                    help="how the c fast path reads and writes the TUN: auto (default): through "
                         "io_uring, a multishot read where the kernel has it (6.7+), else a "
                         "batch of reads per call; batch: never multishot; off: read() and "
                         "write(), a packet each (also where io_uring is missing or disabled)")
    dp.add_argument("--workers", type=int, default=None, metavar="N",
                    help="forwarding threads, each with its own TUN queue (IFF_MULTI_QUEUE) and "
                         "socket (default: the CPUs this process may run on; the python fast "
                         "path always uses one)")
    dp.add_argument("--busy-poll", type=_busy_poll, default=0, metavar="USEC",
                    help="after a wakeup that found packets, keep polling the TUN and the "
                         "socket for up to USEC microseconds of quiet before sleeping again "
                         f"(0 to {BUSY_POLL_MAX}; default 0: off). It saves the wakeup "
                         "(an interrupt and a context switch, ~20 us on a VM) on each hop of a "
                         "request/response exchange, and costs CPU: each worker spins for up to "
                         "USEC after every burst, so under steady light traffic a worker can "
                         "keep a core busy; when traffic stops it sleeps again within USEC. "
                         "Also sets SO_BUSY_POLL on the tunnel sockets where the underlay "
                         "driver supports it")


def _network(value: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an IPv4 subnet: {exc}") from None


def _address(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: not an IPv4 address") from None


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: not a regular expression ({exc})") from None
    return value


def renew_margin(args: argparse.Namespace) -> float:
    """Seconds before expiry to renew: --subnet-lease-renew-margin (minutes, flanneld's range
    1..1439) below the TTL; unset, flanneld's 60 minutes, or half a TTL of an hour or less."""
    minutes: int | None = args.subnet_lease_renew_margin
    ttl: float = args.lease_ttl
    if minutes is None:
        return min(RENEW_MARGIN_MINUTES * 60.0, ttl / 2)
    if not 1 <= minutes <= 24 * 60 - 1:
        raise CommandError(f"--subnet-lease-renew-margin {minutes}: minutes, from 1 to 1439")
    if minutes * 60 >= args.lease_ttl:
        raise CommandError(f"--subnet-lease-renew-margin {minutes} (minutes) must be below "
                           f"--lease-ttl {args.lease_ttl:g} (seconds)")
    return minutes * 60.0


def _busy_poll(value: str) -> int:
    try:
        usec = int(value)
    except ValueError:
        usec = -1
    if not 0 <= usec <= BUSY_POLL_MAX:
        raise argparse.ArgumentTypeError(
            f"{value!r}: microseconds, a whole number from 0 (off) to {BUSY_POLL_MAX}")
    return usec


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: a number of seconds, at least 1")
    return number


def preflight(args: argparse.Namespace, host: Host) -> None:
    """Fail before touching anything, with what to do about it."""
    problem = host.unfit()
    if problem is not None:
        raise CommandError(problem)
    try:
        fastpath.load(args.fastpath)
    except fastpath.FastpathUnavailable as exc:
        raise CommandError(str(exc)) from None
    if args.workers is not None and not 1 <= args.workers <= 64:
        raise CommandError(f"--workers {args.workers}: between 1 and 64")
    if not 0 <= args.healthz_port <= 65535:
        raise CommandError(f"--healthz-port {args.healthz_port}: not a port")
    renew_margin(args)


def main(args: argparse.Namespace, host: Host | None = None) -> int:
    """`host`: the machine to run on (default this one; tests pass a fake or an older kernel)."""
    from dataplane.daemon.host import LinuxHost

    host = host or LinuxHost()
    preflight(args, host)
    from dataplane.daemon.node import Node, NodeOptions
    from dataplane.hostnet import Selection

    selection = Selection(args.public_ip, tuple(args.iface), tuple(args.iface_regex),
                          args.iface_can_reach)
    node = Node(NodeOptions(
        store=open_store(args), public_ip=args.public_ip, selection=selection,
        subnet=args.subnet,
        subnet_file=args.subnet_file, fastpath=args.fastpath, offload=args.offload == "on",
        tun_uring=args.tun_uring,
        workers=args.workers or len(os.sched_getaffinity(0)), busy_poll=args.busy_poll,
        ip_masq=args.ip_masq, netfilter=netfilter_options(args),
        blackhole_route=args.ip_blackhole_route,
        tun_name=args.tun_name, lease_ttl=args.lease_ttl,
        renew_margin=renew_margin(args),
        healthz=(args.healthz_ip, args.healthz_port) if args.healthz_port else None,
        host=host))
    return run_node(node)


def run_node(node: Node) -> int:
    import uvloop

    from dataplane.daemon import sdnotify

    async def go() -> None:
        loop = asyncio.get_running_loop()
        # systemd's Type=notify: READY=1, WATCHDOG=1, STOPPING=1 (nothing without NOTIFY_SOCKET)
        async with sdnotify.supervise(node) as systemd:
            def stop() -> None:
                systemd.stopping()
                node.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop)
            try:
                await node.run()
            finally:
                await node.store.close()

    try:
        uvloop.run(go())
    except Exception as exc:
        message = user_error(exc)
        if message is None:
            raise
        raise CommandError(message) from None
    return 0


def user_error(exc: BaseException) -> str | None:
    """The one-line message for an error the user can act on; None for a bug."""
    from dataplane.daemon.errors import BindError
    from dataplane.daemon.node import LeaseLost
    from dataplane.hostnet import HostNetError
    from dataplane.lease import InvalidSubnet
    from dataplane.netconf import ConfigError
    from dataplane.netfilter import NetfilterError
    from dataplane.store.base import StoreError
    from dataplane.tun import TunError

    # Each socket names its own purpose, address and port (BindError): an OSError from
    # elsewhere is not guessed at.
    if isinstance(exc, (ConfigError, InvalidSubnet, StoreError, HostNetError, TunError,
                        LeaseLost, NetfilterError, BindError)):
        return str(exc)
    return None
