"""The Kubernetes subnet store (`--kube-subnet-mgr`): flannel's pkg/subnet/kube, restated.

Nothing is allocated here: the Node controller (kube-controller-manager --allocate-node-cidrs)
gives each Node a spec.podCIDR, and that is the node's lease. What a node publishes about itself
travels in annotations on its Node object (kube_annotations.py), so flanneld nodes and ours
read each other.

How each operation maps onto the API:
- get_network_config: the net-conf.json file (--net-config-path, the kube-flannel-cfg ConfigMap
  mounted at /etc/kube-flannel/); a missing file is an error, as in flanneld.
- node_public_ip: the Node's node-public-ip annotation, which replaces --public-ip.
- acquire: GET our Node. While spec.podCIDR is empty, StoreUnavailable (the daemon waits and
  retries, logging why). Then flanneld's annotation patch, if anything differs, strategic merge
  on nodes/NAME/status. The lease never expires (flanneld's RenewLease is unimplemented).
- renew: the same check and patch again; release: nothing (flanneld never deletes Node data,
  and the podCIDR belongs to the Node, not to us).
- node_ready: NetworkUnavailable=False (FlannelIsUp) on the Node's status, unless
  --set-node-network-unavailable=false.
- list: GET /api/v1/nodes, in pages; every Node with kube-subnet-manager=true, a public-ip
  and an IPv4 podCIDR is a lease; its resourceVersion and the leases by Node name are the
  cursor.
- watch: from the cursor's resourceVersion, with bookmarks, re-opened from the last version
  seen when the server ends the stream (its timeout) or says nothing for IDLE_TIMEOUT.
  410 Gone (an ERROR event or the HTTP status): list again and emit the difference, as
  client-go's reflector re-lists. Heartbeats and other changes that leave a Node's lease as
  it was produce no event. A broken connection raises StoreUnavailable: the daemon lists
  again with backoff and forwards meanwhile with the peers it knows; a watch that breaks
  again at once waits a growing pause before reconnecting.

Node name: NODE_NAME, else the pod POD_NAMESPACE/POD_NAME's spec.nodeName, as flanneld finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

from dataplane.lease import InvalidSubnet, Lease
from dataplane.netconf import NetworkConfig, parse_network_config
from dataplane.store.base import (LEASE_TTL, TTL, Attrs, ConfigNotFound, Cursor, LeaseEvent,
                                  StoreError, StoreUnavailable, SubnetStore, as_attrs,
                                  diff_leases)
from dataplane.store.kube_client import (KubeClient, KubeConfigError, KubeError, KubeGone,
                                         KubeIdle, KubeRequestError, KubeUnavailable,
                                         load_config)
from dataplane.store.kube_annotations import (DEFAULT_PREFIX, STRATEGIC_MERGE, Annotations,
                                              node_annotations, node_lease, node_name, pod_cidr,
                                              publish_patch, ready_condition_patch)

log = logging.getLogger(__name__)

DEFAULT_NET_CONF = "/etc/kube-flannel/net-conf.json"
NODES = "/api/v1/nodes"
LIST_PAGE = 200                 # Nodes per list page (~2 MB of JSON at most)
WATCH_TIMEOUT = (300, 600)      # seconds the server keeps one watch open (client-go: 5-10 min)
IDLE_TIMEOUT = 150.0            # bookmarks come about every minute: silence means trouble
REWATCH_MIN, REWATCH_MAX = 0.5, 10.0


@dataclass(frozen=True)
class _Cursor:
    resource_version: str
    leases: tuple[tuple[str, Lease], ...]    # (node name, lease), for the watch's diff


class KubeStore(SubnetStore):
    # the net-conf.json file is mounted with the pod: if it is missing, waiting will not help
    waits_for_config = False

    def __init__(self, *, api_url: str | None = None, kubeconfig: str | None = None,
                 annotation_prefix: str = DEFAULT_PREFIX,
                 net_config_path: str = DEFAULT_NET_CONF,
                 set_node_network_unavailable: bool = True,
                 env: Mapping[str, str] | None = None) -> None:
        """Nothing is contacted or read yet. ValueError for a bad annotation prefix."""
        self.ann = Annotations.for_prefix(annotation_prefix)
        self.api_url, self.kubeconfig = api_url, kubeconfig
        self.net_config_path = net_config_path
        self.set_node_network_unavailable = set_node_network_unavailable
        self.env = dict(os.environ if env is None else env)
        self._client: Any = None
        self._node_name: str | None = self.env.get("NODE_NAME") or None
        self._skipped: dict[str, str] = {}          # node -> why it is no peer (logged once)
        self._rewatch = 0.0                          # pause before the next watch (backoff)
        self._closed = False

    @property
    def location(self) -> str:
        where = self.api_url or (f"kubeconfig {self.kubeconfig}" if self.kubeconfig
                                 else "in-cluster")
        node = f", node {self._node_name}" if self._node_name else ""
        return f"Kubernetes API ({where}{node})"

    # -- the interface -------------------------------------------------------------------------

    async def get_network_config(self) -> NetworkConfig:
        self._check_open()
        path = self.net_config_path
        try:
            text = await asyncio.to_thread(Path(path).read_text)
        except FileNotFoundError:
            raise ConfigNotFound(
                f"{path}: no network config (with --kube-subnet-mgr it is flannel's "
                "net-conf.json, mounted from the kube-flannel-cfg ConfigMap; give its path "
                "with --net-config-path)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigNotFound(f"{path}: cannot read the network config: {exc}") from None
        return parse_network_config(text, source=path)

    async def node_public_ip(self) -> str | None:
        """The node-public-ip annotation of our Node, if an operator set one."""
        node = await self._get_node()
        value = node_annotations(node).get(self.ann.node_public_ip) or None
        if value:
            log.info("public IP %s from annotation %s of node %s", value,
                     self.ann.node_public_ip, self._node_name)
        return value

    async def acquire_lease(self, attrs: Attrs, *, requested: IPv4Network | None = None,
                            previous: IPv4Network | None = None, ttl: TTL = LEASE_TTL) -> Lease:
        attrs = as_attrs(attrs)
        node = await self._get_node()
        name = node_name(node)
        try:
            subnet = pod_cidr(node)
        except ValueError as exc:
            raise InvalidSubnet(f"node {name}: bad spec.podCIDR: {exc}") from None
        if subnet is None:
            raise StoreUnavailable(
                f"node {name} has no spec.podCIDR yet: waiting for the controller-manager to "
                "assign one (kube-controller-manager --allocate-node-cidrs)")
        config = await self.get_network_config()
        if not subnet.subnet_of(config.network):
            raise InvalidSubnet(f"subnet {config.network} specified in the flannel net config "
                                f"doesn't contain {subnet} PodCIDR of the {name} node")
        if requested is not None and requested != subnet:
            raise InvalidSubnet(f"{requested} was asked for, but node {name}'s spec.podCIDR is "
                                f"{subnet}: with --kube-subnet-mgr the subnet is the Node's")
        patch = publish_patch(node, attrs, self.ann)
        if patch is not None:
            await self._call(self._http().patch(f"{NODES}/{quote(name)}/status", patch,
                                                STRATEGIC_MERGE))
            log.info("published %s on node %s", ", ".join(
                k.rsplit("/", 1)[-1] for k in sorted(_patched_keys(patch))), name)
        return Lease.from_attrs(subnet, attrs, None)

    async def renew_lease(self, lease: Lease, ttl: TTL = LEASE_TTL) -> Lease:
        return await self.acquire_lease(lease.attrs, requested=lease.subnet)

    async def release_lease(self, subnet: IPv4Network) -> None:
        self._check_open()
        log.info("kube subnet manager: %s is the Node's spec.podCIDR; nothing to give back",
                 subnet)

    async def node_ready(self) -> None:
        """flanneld's CompleteLease: NetworkUnavailable=False on our Node, when asked to.
        StoreUnavailable if the API is out of reach (retry); a refusal is logged, as flanneld
        logs it, and forwarding goes on."""
        if not self.set_node_network_unavailable:
            return
        name = await self._get_node_name()
        try:
            await self._call(self._http().patch(f"{NODES}/{quote(name)}/status",
                                                ready_condition_patch(), STRATEGIC_MERGE))
        except StoreUnavailable:
            raise
        except StoreError as exc:
            log.error("could not set NetworkUnavailable=False on node %s: %s", name, exc)
            return
        log.info("node %s: NetworkUnavailable=False (FlannelIsUp)", name)

    async def list_leases(self) -> tuple[list[Lease], Cursor]:
        rv, by_node = await self._list()
        view = _by_subnet(by_node)
        return [view[s] for s in sorted(view)], _Cursor(rv, tuple(sorted(by_node.items())))

    async def watch_leases(self, cursor: Cursor) -> AsyncIterator[list[LeaseEvent]]:
        if not isinstance(cursor, _Cursor):
            raise TypeError("watch_leases() takes the cursor list_leases() returned")
        self._check_open()
        by_node = dict(cursor.leases)
        holders: dict[IPv4Network, set[str]] = {}
        for name, lease in by_node.items():
            holders.setdefault(lease.subnet, set()).add(name)
        rv = cursor.resource_version
        while not self._closed:
            if self._rewatch:
                await asyncio.sleep(self._rewatch)
            opened, gone = time.monotonic(), False
            params = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true",
                      "timeoutSeconds": str(random.randint(*WATCH_TIMEOUT))}
            client = self._http()
            try:
                stream = client.watch(NODES, params, IDLE_TIMEOUT)
                async with contextlib.aclosing(stream) as events:
                    async for event in events:
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            if obj.get("code") == 410:
                                gone = True
                                break
                            raise StoreUnavailable(f"{self.location}: node watch error: "
                                                   f"{obj.get('code')} {obj.get('message')}")
                        rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                        self._rewatch = 0.0
                        if kind not in ("ADDED", "MODIFIED", "DELETED"):
                            continue                            # BOOKMARK: the version only
                        batch = self._update(by_node, holders, obj, deleted=kind == "DELETED")
                        if batch:
                            yield batch
            except KubeGone:
                gone = True
            except KubeIdle:
                # a half-open connection, or a server that sends no bookmarks: open a new
                # watch from where we are; if the server is gone, that fails loudly
                log.debug("node watch silent for %g s; watching again from %s",
                          IDLE_TIMEOUT, rv)
            except KubeError as exc:
                if self._closed:
                    return
                self._backoff(opened)
                raise self._as_store_error(exc) from None
            if self._closed:
                return
            if not gone:
                continue                                    # the server's timeout: go on
            log.warning("node watch at resourceVersion %s is too old for the API server "
                        "(410 Gone): listing the nodes again", rv)
            old = _by_subnet(by_node)
            rv, by_node = await self._list()
            holders = {}
            for name, lease in by_node.items():
                holders.setdefault(lease.subnet, set()).add(name)
            batch = diff_leases(old, _by_subnet(by_node))
            if batch:
                yield batch

    async def close(self) -> None:
        self._closed = True
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    # -- the API -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.location}: store is closed")

    def _http(self) -> Any:
        self._check_open()
        if self._client is None:
            try:
                self._client = KubeClient(load_config(self.api_url, self.kubeconfig, self.env))
            except KubeConfigError as exc:
                raise StoreError(str(exc)) from None
        return self._client

    async def _call(self, request: Any) -> Any:
        try:
            return await request
        except KubeError as exc:
            raise self._as_store_error(exc) from None

    def _as_store_error(self, exc: Exception) -> StoreError:
        if self._closed:
            return StoreError(f"{self.location}: store is closed")
        if isinstance(exc, KubeUnavailable):
            return StoreUnavailable(str(exc))
        if isinstance(exc, KubeRequestError) and exc.code == 401:
            return StoreError(f"{exc} (the token or client certificate of "
                              f"{self._http().config.source} is not accepted)")
        return StoreError(str(exc))

    def _backoff(self, opened: float) -> None:
        """A watch that broke soon after it opened: pause before the next, growing."""
        if time.monotonic() - opened < 30:
            self._rewatch = min(max(self._rewatch * 2, REWATCH_MIN), REWATCH_MAX)

    async def _get_node_name(self) -> str:
        if self._node_name:
            return self._node_name
        pod, ns = self.env.get("POD_NAME"), self.env.get("POD_NAMESPACE")
        if not pod or not ns:
            raise StoreError("--kube-subnet-mgr needs the name of this node: set NODE_NAME "
                             "(the downward API's spec.nodeName), or POD_NAME and POD_NAMESPACE")
        doc = await self._call(self._http().get(f"/api/v1/namespaces/{quote(ns)}/pods/"
                                                f"{quote(pod)}"))
        name: str | None = ((doc or {}).get("spec") or {}).get("nodeName")
        if not name:
            raise StoreError(f"node name not present in pod spec '{ns}/{pod}'")
        self._node_name = name
        return name

    async def _get_node(self) -> dict[str, Any]:
        name = await self._get_node_name()
        try:
            node: dict[str, Any] = await self._http().get(f"{NODES}/{quote(name)}")
            return node
        except KubeRequestError as exc:
            if exc.code == 404:
                # a kubelet registers its Node at start: ours may come a moment later
                raise StoreUnavailable(f"node {name} does not exist (yet) in "
                                       f"{self.location}") from None
            raise self._as_store_error(exc) from None
        except KubeError as exc:
            raise self._as_store_error(exc) from None

    async def _list(self) -> tuple[str, dict[str, Lease]]:
        """Every Node's lease, in pages of LIST_PAGE Nodes (client-go's reflector pages too):
        a big cluster's whole NodeList at once would cost more memory than the daemon has.
        The pages are one snapshot; its resourceVersion is the first page's."""
        for _ in range(3):
            params = {"limit": str(LIST_PAGE)}
            rv, by_node = "", {}
            try:
                while True:
                    doc = await self._http().get(NODES, params)
                    meta = (doc or {}).get("metadata") or {}
                    rv = rv or str(meta.get("resourceVersion") or "")
                    for node in (doc or {}).get("items") or []:
                        lease = self._lease_of(node)
                        if lease is not None:
                            by_node[node_name(node)] = lease
                    if not meta.get("continue"):
                        return rv, by_node
                    params = {"limit": str(LIST_PAGE), "continue": meta["continue"]}
            except KubeGone:
                log.info("node list: the continue token expired; listing again")
            except KubeError as exc:
                raise self._as_store_error(exc) from None
        raise StoreUnavailable(f"{self.location}: the node list kept expiring between pages")

    def _lease_of(self, node: dict[str, Any]) -> Lease | None:
        name = node_name(node)
        try:
            lease = node_lease(node, self.ann)
        except ValueError as exc:
            why = str(exc)
            if self._skipped.get(name) != why:
                self._skipped[name] = why
                (log.debug if why.startswith("no ") else log.warning)(
                    "node %s is no peer: %s", name, why)
            return None
        self._skipped.pop(name, None)
        return lease

    def _update(self, by_node: dict[str, Lease], holders: dict[IPv4Network, set[str]],
                node: dict[str, Any], *, deleted: bool) -> list[LeaseEvent]:
        """Apply one watch event; the lease events it makes (none for a heartbeat)."""
        name = node_name(node)
        new = None if deleted else self._lease_of(node)
        if deleted:
            self._skipped.pop(name, None)
        old = by_node.get(name)
        if old == new:
            return []
        touched = {lease.subnet for lease in (old, new) if lease is not None}
        before = {s: _holder(s, holders, by_node) for s in touched}
        if old is not None:
            holders[old.subnet].discard(name)
            if not holders[old.subnet]:
                del holders[old.subnet]
            del by_node[name]
        if new is not None:
            by_node[name] = new
            holders.setdefault(new.subnet, set()).add(name)
        after = {s: _holder(s, holders, by_node) for s in touched}
        return diff_leases({s: l for s, l in before.items() if l is not None},
                           {s: l for s, l in after.items() if l is not None})


def _holder(subnet: IPv4Network, holders: dict[IPv4Network, set[str]],
            by_node: dict[str, Lease]) -> Lease | None:
    """Two Nodes given one podCIDR is a misconfiguration: the first by name is believed."""
    names = holders.get(subnet)
    return by_node[min(names)] if names else None


def _by_subnet(by_node: dict[str, Lease]) -> dict[IPv4Network, Lease]:
    view: dict[IPv4Network, Lease] = {}
    for name in sorted(by_node, reverse=True):        # the first by name wins
        view[by_node[name].subnet] = by_node[name]
    return view


def _patched_keys(patch: bytes) -> list[str]:
    return list(json.loads(patch)["metadata"]["annotations"])

