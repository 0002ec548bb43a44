"""flannel's Node annotations and condition, as pkg/subnet/kube writes and reads them.

    <prefix>/kube-subnet-manager   "true": this Node is managed this way (else it is no peer)
    <prefix>/backend-type          "vxlan"; "" for udp (flannel's udp backend names no type)
    <prefix>/backend-data          the backend's JSON: {"VNI":1,"VtepMAC":"…"}; "null" for udp
    <prefix>/public-ip             where peers send to
    <prefix>/public-ip-overwrite   set by an operator: published as public-ip instead of ours
    <prefix>/node-public-ip        set by an operator: replaces --public-ip (flanneld's main.go)

The lease is the Node's spec.podCIDR (the first IPv4 entry of spec.podCIDRs), never allocated
here. The annotation patch is the two-way strategic merge patch client-go computes between the
Node as read and as changed: {"metadata":{"annotations":{…}}} with only the keys that change,
sorted, as Go's json.Marshal writes a map; flanneld sends it to the Node's status subresource
(kube-flannel's ClusterRole grants `patch` on nodes/status only). When ready, flanneld patches
status with one condition, NetworkUnavailable=False, reason FlannelIsUp.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from datetime import datetime, UTC
from ipaddress import IPv4Network
from typing import Any

from dataplane.lease import Lease, LeaseAttrs, LeaseFormatError, go_json

DEFAULT_PREFIX = "flannel.alpha.coreos.com"
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
READY_REASON = "FlannelIsUp"
READY_MESSAGE = "Flannel is running on this node"


@dataclass(frozen=True)
class Annotations:
    """The annotation names under one prefix (flannel's newAnnotations)."""

    kube_managed: str
    backend_data: str
    backend_type: str
    public_ip: str
    public_ip_overwrite: str
    node_public_ip: str

    @classmethod
    def for_prefix(cls, prefix: str) -> Annotations:
        """ValueError, in flannel's words, for a prefix Kubernetes would refuse."""
        if prefix.count("/") > 1:
            raise ValueError(f"--kube-annotation-prefix {prefix!r}: can contain at most a "
                             "single slash")
        if "/" not in prefix:
            prefix += "/"
        if not prefix.endswith(("/", "-")):
            prefix += "-"
        if not re.search(r"(?:[a-z0-9_-]+\.)+[a-z0-9_-]+/(?:[a-z0-9_-]+-)?$", prefix):
            raise ValueError(f"--kube-annotation-prefix {prefix!r}: must be in the format "
                             "fqdn/[0-9a-z-_]* (e.g. flannel.alpha.coreos.com)")
        return cls(kube_managed=prefix + "kube-subnet-manager",
                   backend_data=prefix + "backend-data", backend_type=prefix + "backend-type",
                   public_ip=prefix + "public-ip",
                   public_ip_overwrite=prefix + "public-ip-overwrite",
                   node_public_ip=prefix + "node-public-ip")


def node_name(node: dict[str, Any]) -> str:
    return str((node.get("metadata") or {}).get("name") or "")


def node_annotations(node: dict[str, Any]) -> dict[str, str]:
    return (node.get("metadata") or {}).get("annotations") or {}


def pod_cidr(node: dict[str, Any]) -> IPv4Network | None:
    """The Node's IPv4 pod CIDR: the first IPv4 entry of spec.podCIDRs, else spec.podCIDR.
    ValueError if one is malformed."""
    spec = node.get("spec") or {}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    for text in cidrs:
        net = ipaddress.ip_network(text, strict=False)
        if net.version == 4:
            return net
    return None


def node_lease(node: dict[str, Any], ann: Annotations) -> Lease:
    """The lease a Node publishes (flannel's nodeToLease). ValueError saying why it is none:
    not managed by a kube subnet manager, no IPv4 podCIDR, a bad public-ip or backend-data."""
    annotations = node_annotations(node)
    if annotations.get(ann.kube_managed) != "true":
        raise ValueError(f"no {ann.kube_managed}=true annotation")
    subnet = pod_cidr(node)
    if subnet is None:
        raise ValueError("no IPv4 spec.podCIDR")
    text = annotations.get(ann.backend_data, "")
    try:
        data = json.loads(text) if text else None
    except ValueError:
        raise ValueError(f"{ann.backend_data} is not JSON: {text[:80]!r}") from None
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{ann.backend_data} is not a JSON object: {text[:80]!r}")
    try:
        attrs = LeaseAttrs(public_ip=annotations.get(ann.public_ip, ""),
                           backend_type=annotations.get(ann.backend_type) or None,
                           backend_data=data)
    except LeaseFormatError as exc:
        raise ValueError(f"{ann.public_ip}: {exc}") from None
    return Lease.from_attrs(subnet, attrs)


def backend_data_json(attrs: LeaseAttrs) -> str:
    """What flanneld writes into backend-data: the backend's JSON, "null" when it has none."""
    return "null" if attrs.backend_data is None else go_json(attrs.backend_data).decode()


def publish_patch(node: dict[str, Any], attrs: LeaseAttrs, ann: Annotations) -> bytes | None:
    """The annotation patch flanneld's AcquireLease sends for `attrs` on this Node, or None
    when the Node already says it all (flanneld then sends nothing)."""
    current = node_annotations(node)
    data = backend_data_json(attrs)
    btype = attrs.backend_type or ""
    overwrite = current.get(ann.public_ip_overwrite, "")
    if (current.get(ann.backend_data) == data and current.get(ann.backend_type) == btype
            and current.get(ann.public_ip) == attrs.public_ip
            and current.get(ann.kube_managed) == "true"
            and (not overwrite or overwrite == attrs.public_ip)):
        return None
    new = dict(current)
    new[ann.backend_type] = btype
    # flannel: a vxlan backend without IPv4 data publishes no IPv4 side (dual-stack leftovers)
    if btype != "vxlan" or data != "null":
        new[ann.backend_data] = data
        new[ann.public_ip] = overwrite or attrs.public_ip
    new[ann.kube_managed] = "true"
    changed = {k: new[k] for k in sorted(new) if current.get(k) != new[k]}
    if not changed:
        return None
    return go_json({"metadata": {"annotations": changed}})


def ready_condition_patch(now: datetime | None = None) -> bytes:
    """flanneld's CompleteLease status patch, byte for byte: json.Marshal of one NodeCondition
    (fields in struct order, metav1.Time as RFC 3339 UTC seconds) inside {"status":…}."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    when = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    condition = go_json([{"type": "NetworkUnavailable", "status": "False",
                          "lastHeartbeatTime": when, "lastTransitionTime": when,
                          "reason": READY_REASON, "message": READY_MESSAGE}])
    return b'{"status":{"conditions":' + condition + b"}}"
