"""INTERIM stand-in for `dataplane.store` (directory engine), until that module lands.

It only writes and reads the few files the lab needs, in the layout the daemon reads:

    <store>/config                    flannel's net-conf.json
    <store>/subnets/10.244.1.0-24     one lease value per node subnet (flannel's key naming)

Swap point: replace `DirectoryStore` with the store module's directory engine; `daemon_args()`
is where a future `--store etcd` would hand the daemon `--etcd-endpoints` instead of a path.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from dataplane.lab.flannel import encode, write_atomic


def subnet_key(subnet: IPv4Network) -> str:
    """flannel's key for a subnet: 10.244.1.0/24 -> 10.244.1.0-24."""
    return f"{subnet.network_address}-{subnet.prefixlen}"


def parse_subnet_key(key: str) -> IPv4Network:
    addr, _, plen = key.partition("-")
    return IPv4Network(f"{addr}/{plen}")


class DirectoryStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def daemon_args(self) -> list[str]:
        """How a daemon is told where this store is."""
        return ["--store-dir", str(self.root)]

    def write_config(self, conf: dict[str, Any]) -> None:
        write_atomic(self.root / "config", encode(conf) + "\n")

    def write_lease(self, subnet: IPv4Network, attrs: dict[str, Any]) -> None:
        write_atomic(self.root / "subnets" / subnet_key(subnet), encode(attrs))

    def leases(self) -> dict[IPv4Network, dict[str, Any]]:
        """Every lease held, by subnet; unreadable or half-written entries are skipped."""
        out: dict[IPv4Network, dict[str, Any]] = {}
        directory = self.root / "subnets"
        if not directory.is_dir():
            return out
        for path in directory.iterdir():
            if path.name.startswith("."):
                continue    # a writer's temporary file
            try:
                out[parse_subnet_key(path.name)] = json.loads(path.read_text())
            except (ValueError, OSError):
                continue
        return out
