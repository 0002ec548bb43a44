"""Helpers for the etcd store's tests: lease attrs, etcdctl, and one store API over both kinds."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from dataplane.lease import LeaseAttrs
from dataplane.store.base import SubnetStore
from dataplane.store.directory import DirectoryStore
from dataplane.store.etcd import EtcdStore

MAC_A = "0a:00:00:00:00:0a"
MAC_B = "0a:00:00:00:00:0b"
NET_CONF = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}\n'
SMALL = ('{"Network": "10.244.0.0/16", "SubnetMin": "10.244.10.0", "SubnetMax": "10.244.15.0", '
         '"Backend": {"Type": "vxlan"}}')     # six subnets
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
_opened: list[SubnetStore] = []     # by StoreKind.new_store(); the run fixture closes them


async def close_stores() -> None:
    while _opened:
        await _opened.pop().close()


def vxlan(ip: str, mac: str = MAC_A) -> LeaseAttrs:
    return LeaseAttrs(ip, "vxlan", {"VNI": 1, "VtepMAC": mac})


def net(s: str) -> IPv4Network:
    return IPv4Network(s)


def shm_tempdir(prefix: str) -> str:
    """A temp dir in RAM when there is one: etcd fsyncs every write."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    return tempfile.mkdtemp(prefix=prefix, dir=base)


def etcdctl(endpoints: str, *args: str, check: bool = True) -> str:
    """Run etcdctl (API v3) against endpoints; its stdout."""
    proc = subprocess.run([ETCDCTL, "--endpoints", endpoints, "--dial-timeout", "2s",
                           "--command-timeout", "5s", *args], capture_output=True, text=True,
                          env={**os.environ, "ETCDCTL_API": "3"}, timeout=20)
    if check and proc.returncode != 0:
        raise AssertionError(f"etcdctl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def etcd_get_prefix(endpoints: str, prefix: str) -> list[dict[str, Any]]:
    """Raw key-values under prefix as etcdctl reads them: key and value as bytes, lease id."""
    doc = json.loads(etcdctl(endpoints, "get", "--prefix", prefix, "-w", "json"))
    return [{"key": base64.b64decode(kv["key"]), "value": base64.b64decode(kv.get("value", "")),
             "lease": int(kv.get("lease", 0)), "mod_revision": int(kv["mod_revision"])}
            for kv in doc.get("kvs", [])]


def etcd_revision(endpoints: str) -> int:
    doc = json.loads(etcdctl(endpoints, "get", "/", "-w", "json"))
    return int(doc["header"]["revision"])


class StoreKind:
    """One store location, directory or etcd, with raw access for the contract tests."""

    kind = ""

    def new_store(self) -> SubnetStore:
        raise NotImplementedError

    def set_config(self, text: str) -> None:
        raise NotImplementedError

    def values(self) -> dict[str, bytes]:
        """Lease key name ("10.244.1.0-24") -> raw value, for every subnet key."""
        raise NotImplementedError

    def put_raw(self, name: str, value: bytes) -> None:
        """Write a raw value under the subnets key/file `name`, as a foreign tool would."""
        raise NotImplementedError

    def spec(self) -> tuple[str, ...]:
        """Enough to open the same store in another process (open_spec)."""
        raise NotImplementedError


class DirectoryKind(StoreKind):
    kind = "directory"

    def __init__(self, path: Path, config: str | None = NET_CONF) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        if config is not None:
            self.set_config(config)

    def new_store(self) -> DirectoryStore:
        _opened.append(store := DirectoryStore(self.path, poll_interval=0.02))
        return store

    def set_config(self, text: str) -> None:
        (self.path / "config").write_text(text)

    def values(self) -> dict[str, bytes]:
        sub = self.path / "subnets"
        if not sub.is_dir():
            return {}
        return {p.name: p.read_bytes() for p in sub.iterdir() if not p.name.startswith(".")}

    def put_raw(self, name: str, value: bytes) -> None:
        (self.path / "subnets").mkdir(exist_ok=True)
        (self.path / "subnets" / name).write_bytes(value)

    def spec(self) -> tuple[str, ...]:
        return ("directory", str(self.path))


class EtcdKind(StoreKind):
    kind = "etcd"

    def __init__(self, endpoints: str, prefix: str | None = None,
                 config: str | None = NET_CONF) -> None:
        self.endpoints = endpoints
        self.prefix = prefix or f"/test-{uuid.uuid4().hex[:12]}/network"
        if config is not None:
            self.set_config(config)

    def new_store(self) -> EtcdStore:
        _opened.append(store := EtcdStore(self.endpoints, prefix=self.prefix))
        return store

    def set_config(self, text: str) -> None:
        etcdctl(self.endpoints, "put", f"{self.prefix}/config", text)

    def values(self) -> dict[str, bytes]:
        base = f"{self.prefix}/subnets/".encode()
        return {kv["key"][len(base):].decode(): kv["value"]
                for kv in etcd_get_prefix(self.endpoints, base.decode())}

    def put_raw(self, name: str, value: bytes) -> None:
        etcdctl(self.endpoints, "put", f"{self.prefix}/subnets/{name}", value.decode())

    def spec(self) -> tuple[str, ...]:
        return ("etcd", self.endpoints, self.prefix)


def open_spec(spec: tuple[str, ...]) -> SubnetStore:
    if spec[0] == "directory":
        return DirectoryStore(spec[1])
    return EtcdStore(spec[1], prefix=spec[2])
