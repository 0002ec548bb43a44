"""The lab (dataplane.lab.Lab) run with --kube-subnet-mgr against the stand-in API server.

    <prefix>-ul:  br0 10.99.0.254:6443   the stand-in API server: its listening socket made in
                                         the underlay namespace, served by threads of the test
                                         process (sockets keep their namespace)
    every node    a Node object named after its namespace, spec.podCIDR = the lab's subnet for
                  it, InternalIP = its underlay address; our daemons run with NODE_NAME set
                  and find each other through the Nodes' annotations
    kernel nodes  annotated as flanneld annotates its Node (cluster.flanneld_annotations)

The lab itself stays as it is: only its store and how it spawns daemons are replaced here.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from ipaddress import IPv4Network
from typing import Any

from dataplane.daemon.metrics import parse_metrics
from dataplane.lab import Lab, LabNode, daemon, naming, netns
from dataplane.lab.errors import LabError
from dataplane.lab.labstore import LabStore
from dataplane.lab.nsthread import call_in_netns
from dataplane.lease import Lease, LeaseAttrs
from dataplane.store.kube import KubeStore
from tests.kube.cluster import flanneld_annotations, write_kubeconfig
from tests.kube.standin_apiserver import StandinApiServer

API_IP = str(naming.etcd_ip(0))       # the top of the underlay, as the lab's etcd uses
API_PORT = 6443


class KubeLabStore(LabStore):
    def __init__(self, lab: KubeLab) -> None:
        super().__init__(lab.dir / "kube")
        self.lab = lab
        self.kubeconfig = self.root / "kubeconfig"
        self.net_conf = self.root / "net-conf.json"

    @property
    def location(self) -> str:
        return f"stand-in API server {self.lab.api.url}"

    def daemon_args(self) -> list[str]:
        return ["--kube-subnet-mgr", "--kubeconfig-file", str(self.kubeconfig),
                "--net-config-path", str(self.net_conf)]

    def write_config(self, conf_json: str) -> None:
        """The lab's "operator" step: the API server up, a Node per lab node (as kubelets and
        the controller-manager would make them), kubeconfig and net-conf.json written."""
        self.root.mkdir(parents=True, exist_ok=True)
        netns.run(["ip", "-n", self.lab.underlay_ns, "addr", "replace",
                   f"{API_IP}/{naming.UNDERLAY_NETWORK.prefixlen}", "dev",
                   naming.UNDERLAY_BRIDGE])
        self.lab.api.up()
        write_kubeconfig(self.kubeconfig, self.lab.api.url, self.lab.api.token)
        self.net_conf.write_text(conf_json + "\n")
        for node in self.lab.nodes:
            self.lab.api.add_node(node.name, str(node.subnet), address=str(node.underlay_ip))

    def acquire(self, subnet: IPv4Network, attrs: LeaseAttrs) -> Lease:
        """A kernel node's flanneld annotating its Node."""
        node = next(n for n in self.lab.nodes if n.subnet == subnet)
        self.lab.api.set_annotations(node.name, flanneld_annotations(
            attrs.public_ip, (attrs.backend_data or {}).get("VtepMAC"),
            (attrs.backend_data or {}).get("VNI", 1)))
        return Lease.from_attrs(subnet, attrs)

    def leases(self) -> dict[IPv4Network, Lease]:
        async def go() -> list[Lease]:
            async with KubeStore(kubeconfig=str(self.kubeconfig),
                                 net_config_path=str(self.net_conf), env={}) as store:
                return (await store.list_leases())[0]
        found = call_in_netns(self.lab.underlay_ns, lambda: asyncio.run(go()))
        return {lease.subnet: lease for lease in found}


class KubeLab(Lab):
    def __init__(self, prefix: str, **kwargs: Any) -> None:
        super().__init__(prefix, **kwargs)
        self.api = StandinApiServer(host=API_IP, port=API_PORT, netns=self.underlay_ns)
        self.store = KubeLabStore(self)

    def _spawn_daemon(self, node: LabNode, fastpath: str | None):
        program = ["env", f"NODE_NAME={node.name}", *daemon.default_program()]
        proc = daemon.start(node, daemon.argv(node, self.store.daemon_args(), program=program,
                                              fastpath=fastpath, ip_masq=self.ip_masq,
                                              extra=self.daemon_args))
        self._procs[node.name] = proc
        node.pid, node.pid_start = proc.pid, netns.start_time(proc.pid)
        self._save()
        return proc

    def down(self) -> list[str]:
        try:
            return super().down()
        finally:
            self.api.down()


def metrics(node: LabNode) -> dict[str, float]:
    def get() -> str:
        url = f"http://127.0.0.1:{daemon.METRICS_PORT}/metrics"
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read().decode()
    return parse_metrics(call_in_netns(node.netns, get))


def peers(node: LabNode) -> float:
    try:
        return metrics(node)["dataplane_peers"]
    except (OSError, urllib.error.URLError, LabError):
        return -1


def wait_peers(nodes: list[LabNode], count: int, timeout: float = 20.0) -> None:
    """Until every one of `nodes` forwards to exactly `count` peers (its C peer table)."""
    for node in nodes:
        deadline = time.monotonic() + timeout
        while peers(node) != count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{node.name} has {peers(node)} peers, not {count}, "
                                     f"after {timeout:g} s; log:\n{daemon.log_tail(node, 30)}")
            time.sleep(0.1)
