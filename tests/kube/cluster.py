"""What the kube tests run against: the stand-in API server, or a real cluster.

With DATAPLANE_TEST_KUBECONFIG set (a kubeconfig whose user may create, patch and delete
Nodes, e.g. a kind cluster's admin), the same tests run against that cluster: they create Node
objects of their own (named dataplane-test-<run>-…, with podCIDRs from 10.250.0.0/16) and delete
them afterwards. Tests that need the stand-in's controls (a forced 410, dropped connections, an
outage, the recorded request bytes) skip there, saying so.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.kube.standin_apiserver import StandinApiServer

REAL_ENV = "DATAPLANE_TEST_KUBECONFIG"
PREFIX = "flannel.alpha.coreos.com/"
NET_CONF = '{"Network": "10.250.0.0/16", "Backend": {"Type": "vxlan"}}\n'


def write_kubeconfig(path: Path, server: str, token: str | None) -> Path:
    """A minimal kubeconfig (JSON is YAML) pointing at `server`."""
    user = {"token": token} if token else {}
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "standin",
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "tester"}}],
        "clusters": [{"name": "standin", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": user}]}))
    return path


class Cluster:
    """Nodes in an API server, as an operator (or kubelet and controller-manager) makes them."""

    real = False
    api: StandinApiServer | None = None
    kubeconfig: Path

    def __init__(self, tmp: Path) -> None:
        self.run = secrets.token_hex(3)
        self.net_conf = tmp / "net-conf.json"
        self.net_conf.write_text(NET_CONF)
        self.made: list[str] = []

    def name(self, short: str) -> str:
        return short

    def add_node(self, name: str, pod_cidr: str | None,
                 annotations: dict[str, str] | None = None) -> None:
        raise NotImplementedError

    def set_annotations(self, name: str, annotations: dict[str, str | None]) -> None:
        raise NotImplementedError

    def set_pod_cidr(self, name: str, pod_cidr: str) -> None:
        raise NotImplementedError

    def delete_node(self, name: str) -> None:
        raise NotImplementedError

    def node(self, name: str) -> dict[str, Any]:
        raise NotImplementedError

    def standin(self) -> StandinApiServer:
        """The stand-in, for a test that needs its controls; skips on a real cluster."""
        if self.api is None:
            pytest.skip("needs the stand-in API server's controls (410, outages, recorded "
                        "requests); not possible against a real cluster")
        return self.api

    def close(self) -> None:
        pass


class StandinCluster(Cluster):
    def __init__(self, tmp: Path, **standin: Any) -> None:
        super().__init__(tmp)
        self.api = StandinApiServer(**standin).start()
        self.kubeconfig = write_kubeconfig(tmp / "kubeconfig", self.api.url, self.api.token)

    def add_node(self, name, pod_cidr, annotations=None):
        self.api.add_node(name, pod_cidr, annotations=annotations)

    def set_annotations(self, name, annotations):
        self.api.set_annotations(name, annotations)

    def set_pod_cidr(self, name, pod_cidr):
        self.api.set_pod_cidr(name, pod_cidr)

    def delete_node(self, name):
        self.api.delete_node(name)

    def node(self, name):
        return self.api.node(name)

    def close(self):
        self.api.stop()


class RealCluster(Cluster):
    """Node objects of our own in a real cluster, through a synchronous httpx client."""

    real = True

    def __init__(self, tmp: Path, kubeconfig: str) -> None:
        import httpx

        from dataplane.store.kube_client import load_config
        super().__init__(tmp)
        self.kubeconfig = Path(kubeconfig)
        cfg = load_config(None, kubeconfig)
        headers = {"Authorization": f"Bearer {cfg.bearer()}"} if cfg.bearer() else {}
        self.http = httpx.Client(base_url=cfg.server, verify=cfg.ssl_context() or True,
                                 headers=headers, timeout=10)

    def name(self, short: str) -> str:
        return f"dataplane-test-{self.run}-{short}"

    def _check(self, resp: Any) -> Any:
        if resp.status_code >= 300:
            raise AssertionError(f"{resp.request.method} {resp.request.url}: "
                                 f"{resp.status_code} {resp.text[:300]}")
        return resp.json()

    def add_node(self, name, pod_cidr, annotations=None):
        spec = {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]} if pod_cidr else {}
        self._check(self.http.post("/api/v1/nodes", json={
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": annotations or {}}, "spec": spec}))
        self.made.append(name)

    def _merge(self, name: str, patch: dict[str, Any], sub: str = "") -> None:
        self._check(self.http.patch(f"/api/v1/nodes/{name}{sub}", content=json.dumps(patch),
                                    headers={"Content-Type": "application/merge-patch+json"}))

    def set_annotations(self, name, annotations):
        self._merge(name, {"metadata": {"annotations": annotations}})

    def set_pod_cidr(self, name, pod_cidr):
        pytest.skip("a real API server does not let spec.podCIDR change once set")

    def delete_node(self, name):
        self._check(self.http.delete(f"/api/v1/nodes/{name}"))
        self.made.remove(name)

    def node(self, name):
        return self._check(self.http.get(f"/api/v1/nodes/{name}"))

    def close(self):
        for name in list(self.made):
            self.http.delete(f"/api/v1/nodes/{name}")
        self.http.close()


def open_cluster(tmp: Path, **standin: Any) -> Cluster:
    real = os.environ.get(REAL_ENV)
    return RealCluster(tmp, real) if real else StandinCluster(tmp, **standin)


def flanneld_annotations(public_ip: str, vtep_mac: str | None, vni: int = 1) -> dict[str, str]:
    """What flanneld v0.2x writes on its Node, spelt out from pkg/subnet/kube and the vxlan
    backend (json.Marshal of vxlanLeaseAttrs), not computed by our code."""
    if vtep_mac is None:                    # the udp backend: no type, BackendData nil
        return {PREFIX + "backend-data": "null", PREFIX + "backend-type": "",
                PREFIX + "kube-subnet-manager": "true", PREFIX + "public-ip": public_ip}
    return {PREFIX + "backend-data": '{"VNI":%d,"VtepMAC":"%s"}' % (vni, vtep_mac),
            PREFIX + "backend-type": "vxlan", PREFIX + "kube-subnet-manager": "true",
            PREFIX + "public-ip": public_ip}
