"""`dataplane leases`: the subnet leases in the store, as a table or JSON; `dataplane leases
release` gives one back (a stopped daemon keeps its lease, as flanneld does)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import datetime, UTC
from ipaddress import IPv4Network
from typing import Any

from dataplane import subnetenv
from dataplane.errors import CommandError
from dataplane.lease import Lease
from dataplane.netconf import ConfigError
from dataplane.store.base import StoreError, format_duration
from dataplane.store.directory import DirectoryStore
from dataplane.store.options import add_store_arguments, open_store

HELP = ("list the subnet leases in the store (subnet, public IP, backend, VtepMAC, expiry), "
        "or release one")

COLUMNS = ("SUBNET", "PUBLIC IP", "BACKEND", "VTEP MAC", "EXPIRES IN")


def configure(parser: argparse.ArgumentParser) -> None:
    add_store_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help="print a JSON array (one object per lease) instead of a table")
    parser.add_argument("--all", action="store_true",
                        help="include expired leases still on disk (directory store)")
    sub = parser.add_subparsers(dest="leases_action", metavar="ACTION")
    release = sub.add_parser(
        "release", help="give a subnet back: delete its lease (and decommission the node)",
        description="Give a subnet back. A stopped `dataplane run` keeps its lease until its "
                    "TTL runs out\nand leaves subnet.env in place, so that a restart takes the "
                    "same subnet: this is\nhow a subnet is released on purpose. Stop the "
                    "node's daemon first (a running one\ntakes its lease back).",
        epilog="Examples:\n"
               "  dataplane leases release 10.244.3.0/24 --etcd-endpoints http://10.0.0.5:2379\n"
               "  dataplane leases release --subnet-file /run/flannel/subnet.env   "
               "# decommission this node",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    release.add_argument("subnet", nargs="?", type=_subnet, metavar="SUBNET",
                         help="the subnet whose lease to delete (default: the one "
                              "--subnet-file names)")
    release.add_argument("--subnet-file", metavar="PATH",
                         help="decommission the node that wrote this subnet.env "
                              f"({subnetenv.DEFAULT_PATH} on a flannel node): release the "
                              "subnet it names, run the node's other clean-up steps, then "
                              "remove the file")
    add_store_arguments(release)
    # The store flags work before and after `release`: the subcommand's copies must not
    # overwrite what was given before it with their defaults.
    for action in release._actions:
        if action.dest in {a.dest for a in parser._actions if a.option_strings}:
            action.default = argparse.SUPPRESS


def main(args: argparse.Namespace) -> int:
    if getattr(args, "leases_action", None) == "release":
        return release_main(args)
    try:
        leases = asyncio.run(_fetch(args))
    except (StoreError, ConfigError) as exc:
        raise CommandError(str(exc)) from None
    now = datetime.now(UTC)
    if args.json:
        text = json.dumps([lease_to_dict(lease, now) for lease in leases], indent=2)
    else:
        text = format_table(leases, now) if leases else "no leases"
    try:
        print(text, flush=True)
    except BrokenPipeError:                   # `dataplane leases | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def release_main(args: argparse.Namespace) -> int:
    from dataplane.daemon.decommission import Decommission, DecommissionError, decommission
    from dataplane.hostnet import HostNetError
    from dataplane.netfilter import NetfilterError

    if args.subnet is None and args.subnet_file is None:
        raise CommandError("release: name the SUBNET to release, or give --subnet-file PATH "
                           "(decommission the node that wrote it)")

    async def go() -> Decommission:
        async with open_store(args) as store:
            return await decommission(store, args.subnet, args.subnet_file)
    try:
        job = asyncio.run(go())
    except (DecommissionError, StoreError, ConfigError, NetfilterError, HostNetError) as exc:
        raise CommandError(f"release: {exc}") from None
    print("; ".join(job.done), flush=True)
    return 0


def _subnet(value: str) -> IPv4Network:
    try:
        return IPv4Network(value, strict=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an IPv4 subnet: {exc}") from None


async def _fetch(args: argparse.Namespace) -> list[Lease]:
    async with open_store(args) as store:
        if args.all:
            if not isinstance(store, DirectoryStore):
                raise CommandError("--all applies to the directory store only")
            return await store.list_all_leases()
        leases, _ = await store.list_leases()
        return leases


def backend_name(lease: Lease) -> str:
    # flannel's udp backend is the one that writes no BackendType.
    return lease.backend_type or "udp"


def expires_in(lease: Lease, now: datetime) -> str:
    if lease.expiration is None:
        return "never"
    return format_duration(lease.expiration - now)


def format_table(leases: list[Lease], now: datetime) -> str:
    rows = [COLUMNS] + [(str(l.subnet), l.public_ip, backend_name(l), l.vtep_mac or "-",
                         expires_in(l, now)) for l in leases]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in rows)


def lease_to_dict(lease: Lease, now: datetime) -> dict[str, Any]:
    exp = lease.expiration
    return {
        "subnet": str(lease.subnet),
        "key": lease.key,
        "public_ip": lease.public_ip,
        "backend_type": lease.backend_type,
        "backend_data": lease.backend_data,
        "vtep_mac": lease.vtep_mac,
        "expiration": exp.isoformat(timespec="seconds") if exp else None,
        "expires_in": max(0, int((exp - now).total_seconds())) if exp else None,
        "expired": lease.expired(now),
        "value": json.loads(lease.to_json()),      # the lease JSON as flannel stores it
    }
