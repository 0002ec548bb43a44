"""What a lab is made of, and state.json: written before each step so `down` can undo a lab
whose `up` crashed half-way (a namespace is recorded before it is created, a pod before its
CNI ADD, a daemon's or etcd member's pid as soon as it is spawned)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from dataplane.lab.flannel import DAEMON_BACKENDS, write_atomic
from dataplane.lab.naming import ETCD_CLIENT_PORT, ETCD_PEER_PORT

STATE_VERSION = 1
STATE_ROOT = Path("/run/dataplane-lab")    # one directory per lab prefix; tmpfs, like netns


@dataclass
class LabNode:
    """One node of a lab as state.json records it: a namespace, its backend and addresses (not
    the daemon's dataplane.daemon.node.Node, which may run inside it)."""

    name: str                  # also its network namespace
    index: int                 # 1-based; fixes its underlay IP and subnet
    backend: str               # udp | vxlan | kernel-vxlan | host-gw
    underlay_ip: IPv4Address
    subnet: IPv4Network
    dir: Path                  # its files: subnet.env, daemon.log, cni/
    vtep_mac: str | None = None
    pid: int | None = None     # our daemon (udp, vxlan)
    pid_start: int | None = None   # its start time: guards against a recycled pid

    @property
    def netns(self) -> str:
        return self.name

    @property
    def runs_daemon(self) -> bool:
        return self.backend in DAEMON_BACKENDS

    @property
    def gateway(self) -> IPv4Address:
        """cni0's address, the pods' gateway (FLANNEL_SUBNET)."""
        return self.subnet.network_address + 1

    @property
    def subnet_file(self) -> Path:
        return self.dir / "subnet.env"

    @property
    def log_file(self) -> Path:
        return self.dir / "daemon.log"

    @property
    def cni_dir(self) -> Path:
        return self.dir / "cni"


@dataclass
class Pod:
    name: str                  # also its network namespace and its CNI container id
    node: str
    index: int
    ip: IPv4Address | None = None

    @property
    def netns(self) -> str:
        return self.name

    @property
    def container_id(self) -> str:
        return self.name


@dataclass
class EtcdMember:
    """One member of the lab's etcd (`--store etcd`), in the underlay namespace."""
    name: str                  # m0, m1, ...
    ip: IPv4Address            # on the underlay bridge
    data_dir: Path             # inside the lab's state dir: `down` removes it with the rest
    pid: int | None = None
    pid_start: int | None = None

    @property
    def client_url(self) -> str:
        return f"http://{self.ip}:{ETCD_CLIENT_PORT}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.ip}:{ETCD_PEER_PORT}"

    @property
    def log_file(self) -> Path:
        return self.data_dir.with_name(self.data_dir.name + ".log")


@dataclass
class LabState:
    prefix: str
    options: dict[str, Any]            # the Lab(...) arguments, to reattach with Lab.load
    phase: str = "new"
    namespaces: list[str] = field(default_factory=list)
    nodes: list[LabNode] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)
    etcd: list[EtcdMember] = field(default_factory=list)
    created: float = field(default_factory=time.time)

    def to_json(self) -> str:
        def plain(obj: Any) -> Any:
            if isinstance(obj, dict):
                return {k: plain(v) for k, v in obj.items()}
            if isinstance(obj, list):
                return [plain(v) for v in obj]
            if isinstance(obj, (IPv4Address, IPv4Network, Path)):
                return str(obj)
            return obj
        return json.dumps({"version": STATE_VERSION, **plain(asdict(self))}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> LabState:
        raw = json.loads(text)
        nodes = [LabNode(**{**n, "underlay_ip": IPv4Address(n["underlay_ip"]),
                         "subnet": IPv4Network(n["subnet"]), "dir": Path(n["dir"])})
                 for n in raw["nodes"]]
        pods = [Pod(**{**p, "ip": IPv4Address(p["ip"]) if p["ip"] else None})
                for p in raw["pods"]]
        etcd = [EtcdMember(**{**m, "ip": IPv4Address(m["ip"]), "data_dir": Path(m["data_dir"])})
                for m in raw.get("etcd", [])]       # absent from labs of directory-store days
        return cls(prefix=raw["prefix"], options=raw["options"], phase=raw["phase"],
                   namespaces=raw["namespaces"], nodes=nodes, pods=pods, etcd=etcd,
                   created=raw["created"])

    def save(self, path: Path) -> None:
        write_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> LabState:
        return cls.from_json(path.read_text())
