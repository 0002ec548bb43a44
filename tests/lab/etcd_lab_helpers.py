"""Helpers for the labs with `store="etcd"`: daemons with /metrics, scraped from inside their
node namespaces, and etcd read with etcdctl, as an operator would."""

from __future__ import annotations

import base64
import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from dataplane.daemon.metrics import parse_metrics
from dataplane.lab import Lab, LabNode
from dataplane.lab.daemon import METRICS_PORT
from dataplane.lab.nsthread import call_in_netns
from dataplane.store.etcd_server import INSTALL_HINT, find_etcd

T = TypeVar("T")

HEALTHZ_PORT = METRICS_PORT  # the lab serves every daemon's /metrics there
DAEMON_ARGS: list[str] = []
PREFIX = "/coreos.com/network"


def _etcd_missing() -> str | None:
    if find_etcd() is None:
        return f"etcd is not installed ({INSTALL_HINT})"
    if shutil.which("etcdctl") is None:
        return "etcdctl is not installed (apt-get install etcd-client)"
    return None


ETCD_MISSING = _etcd_missing()


def http_get(node: LabNode, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:HEALTHZ_PORT<path> from inside the node's namespace."""
    def get() -> tuple[int, str]:
        url = f"http://127.0.0.1:{HEALTHZ_PORT}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
    return call_in_netns(node.netns, get)


def metrics(node: LabNode) -> dict[str, float]:
    status, text = http_get(node, "/metrics")
    assert status == 200, text
    return parse_metrics(text)


def ready(node: LabNode) -> bool:
    return http_get(node, "/readyz")[0] == 200


def wait_for(predicate: Callable[[], T], timeout: float, what: str,
             interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def wait_peers(nodes: Iterable[LabNode], count: int, timeout: float = 15.0) -> None:
    """Until every one of `nodes` forwards to exactly `count` peers."""
    for node in nodes:
        wait_for(lambda: metrics(node)["dataplane_peers"] == count, timeout,
                 f"{node.name} to have {count} peers")


def etcd_kvs(lab: Lab, prefix: str = PREFIX + "/") -> dict[str, dict[str, Any]]:
    """Every key under prefix, read with etcdctl inside the lab: key -> value bytes, lease id."""
    assert lab.etcd is not None
    doc = json.loads(lab.etcd.etcdctl("get", "--prefix", prefix, "-w", "json").stdout)
    return {base64.b64decode(kv["key"]).decode(): {
                "value": base64.b64decode(kv.get("value", "")),
                "lease": int(kv.get("lease", 0))}
            for kv in doc.get("kvs", [])}


def granted_ttl(lab: Lab, lease_id: int) -> int:
    assert lab.etcd is not None
    out = lab.etcd.etcdctl("lease", "timetolive", format(lease_id, "x"), "-w", "json").stdout
    return int(json.loads(out)["granted-ttl"])


def lease_key(node: LabNode) -> str:
    return f"{PREFIX}/subnets/{node.subnet.network_address}-{node.subnet.prefixlen}"
