from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import netns


@dataclass
class Host:
    """One node namespace on a veth pair, with a directory store in tmp_path."""

    ns: str
    peer_ns: str
    ip: str
    store: Path
    tmp: Path

    def config(self, text: str) -> None:
        (self.store / "config").write_text(text)

    def start(self, *args: str, ns: str | None = None, ip: str | None = None,
              env_file: str = "a.env") -> subprocess.Popen:
        argv = ["ip", "netns", "exec", ns or self.ns, *netns.dataplane_cmd(
            "-v", "run", "--store-dir", str(self.store), "--public-ip", ip or self.ip,
            "--subnet-file", str(self.tmp / env_file), *args)]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=netns.env())

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        argv = ["ip", "netns", "exec", self.ns, *netns.dataplane_cmd(
            "run", "--store-dir", str(self.store), "--public-ip", self.ip,
            "--subnet-file", str(self.tmp / "a.env"), *args)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env=netns.env())

    def leases(self) -> dict[str, dict]:
        d = self.store / "subnets"
        return {p.name: json.loads(p.read_text()) for p in d.iterdir()
                if not p.name.startswith(".")} if d.exists() else {}

    def links(self, ns: str | None = None) -> list[str]:
        out = netns.run("ip", "-n", ns or self.ns, "-o", "link", "show").stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


@pytest.fixture
def host(tmp_path):
    """Two namespaces joined by a veth: 10.99.0.1 (ours) and 10.99.0.2 (a peer)."""
    netns.require_root()
    p = netns.prefix()
    a, b = f"{p}-a", f"{p}-b"
    try:
        netns.netns_add(a)
        netns.netns_add(b)
        netns.run("ip", "link", "add", f"{p}a", "netns", a, "type", "veth", "peer", "name",
                  f"{p}b", "netns", b)
        for ns, dev, ip in ((a, f"{p}a", "10.99.0.1"), (b, f"{p}b", "10.99.0.2")):
            netns.run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            netns.run("ip", "-n", ns, "link", "set", dev, "up")
        store = tmp_path / "store"
        store.mkdir()
        (store / "config").write_text('{"Network": "10.244.0.0/16"}\n')
        yield Host(a, b, "10.99.0.1", store, tmp_path)
    finally:
        netns.netns_del(a)
        netns.netns_del(b)
