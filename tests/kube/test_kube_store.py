"""The kube subnet store (dataplane/store/kube.py) against the stand-in API server, or a real
cluster with DATAPLANE_TEST_KUBECONFIG (cluster.py): what flanneld writes, byte for byte, what
it reads, and how the Node watch survives 410 Gone, dropped connections and outages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from datetime import datetime, UTC
from ipaddress import IPv4Network
from typing import Any

import pytest

from dataplane.lease import InvalidSubnet, LeaseAttrs
from dataplane.store import kube as kube_store
from dataplane.store.base import (EventKind, StoreError, StoreUnavailable, SubnetStore)
from dataplane.store.kube import KubeStore
from dataplane.store.kube_annotations import Annotations, ready_condition_patch
from tests.kube.cluster import PREFIX, Cluster, flanneld_annotations

MAC_A, MAC_B = "0a:00:00:00:00:0a", "0a:00:00:00:00:0b"


def vxlan(ip: str, mac: str = MAC_A) -> LeaseAttrs:
    return LeaseAttrs(ip, "vxlan", {"VNI": 1, "VtepMAC": mac})


def store_for(cluster: Cluster, node: str | None, **kw: Any) -> KubeStore:
    env = {"NODE_NAME": node} if node else {}
    env.update(kw.pop("env", {}))
    return KubeStore(kubeconfig=str(cluster.kubeconfig), net_config_path=str(cluster.net_conf),
                     env=env, **kw)


def ours(cluster: Cluster, annotations: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in annotations.items() if k.startswith(PREFIX)}


def net(text: str) -> IPv4Network:
    return IPv4Network(text)


async def next_batch(watch, timeout: float = 5.0):
    return await asyncio.wait_for(watch.__anext__(), timeout)


# -- what we publish -------------------------------------------------------------------------

def test_is_a_subnet_store(cluster: Cluster) -> None:
    store = store_for(cluster, "n1")
    assert isinstance(store, SubnetStore) and not store.waits_for_config
    assert "Kubernetes API" in store.location and "n1" in store.location


def test_vxlan_annotations_are_flanneld_s_bytes(run, cluster: Cluster) -> None:
    n1 = cluster.name("n1")
    cluster.add_node(n1, "10.250.1.0/24")

    async def go():
        async with store_for(cluster, n1) as store:
            return await store.acquire_lease(vxlan("10.99.0.1"))
    lease = run(go())
    assert (lease.subnet, lease.public_ip, lease.expiration) == (net("10.250.1.0/24"),
                                                                 "10.99.0.1", None)
    node = cluster.node(n1)
    assert ours(cluster, node["metadata"]["annotations"]) == \
        flanneld_annotations("10.99.0.1", MAC_A)
    if cluster.api is not None:
        (patch,) = cluster.api.patches()
        # client-go's two-way strategic merge patch, sent to the status subresource
        assert patch.path == f"/api/v1/nodes/{n1}/status"
        assert patch.content_type == "application/strategic-merge-patch+json"
        assert patch.body == (
            b'{"metadata":{"annotations":{'
            b'"flannel.alpha.coreos.com/backend-data":"{\\"VNI\\":1,\\"VtepMAC\\":\\"'
            + MAC_A.encode() + b'\\"}",'
            b'"flannel.alpha.coreos.com/backend-type":"vxlan",'
            b'"flannel.alpha.coreos.com/kube-subnet-manager":"true",'
            b'"flannel.alpha.coreos.com/public-ip":"10.99.0.1"}}}')
        # and the kubelet's own annotations are untouched
        assert node["metadata"]["annotations"]["node.alpha.kubernetes.io/ttl"] == "0"


def test_udp_annotations_are_flanneld_s_bytes(run, cluster: Cluster) -> None:
    n1 = cluster.name("n1")
    cluster.add_node(n1, "10.250.1.0/24")

    async def go():
        async with store_for(cluster, n1) as store:
            return await store.acquire_lease(LeaseAttrs("10.99.0.1"))
    run(go())
    assert ours(cluster, cluster.node(n1)["metadata"]["annotations"]) == \
        flanneld_annotations("10.99.0.1", None)


def test_unchanged_annotations_are_not_patched_again(run, cluster: Cluster) -> None:
    api = cluster.standin()
    cluster.add_node("n1", "10.250.1.0/24")

    async def go():
        async with store_for(cluster, "n1") as store:
            await store.acquire_lease(vxlan("10.99.0.1"))
            await store.acquire_lease(vxlan("10.99.0.1"))           # a restart
            assert len(api.patches()) == 1
            await store.acquire_lease(vxlan("10.99.0.1", MAC_B))    # a new VtepMAC
    run(go())
    last = json.loads(api.patches()[-1].body)
    assert last == {"metadata": {"annotations": {
        PREFIX + "backend-data": '{"VNI":1,"VtepMAC":"%s"}' % MAC_B}}}


def test_public_ip_overwrite_is_published(run, cluster: Cluster) -> None:
    n1 = cluster.name("n1")
    cluster.add_node(n1, "10.250.1.0/24", {PREFIX + "public-ip-overwrite": "192.0.2.7"})

    async def go():
        async with store_for(cluster, n1) as store:
            return await store.acquire_lease(vxlan("10.99.0.1"))
    lease = run(go())
    ann = cluster.node(n1)["metadata"]["annotations"]
    assert ann[PREFIX + "public-ip"] == "192.0.2.7"        # what peers send to
    assert lease.public_ip == "10.99.0.1"                  # flanneld's lease keeps its own


def test_node_public_ip_annotation_replaces_the_flag(run, cluster: Cluster) -> None:
    n1, n2 = cluster.name("n1"), cluster.name("n2")
    cluster.add_node(n1, "10.250.1.0/24", {PREFIX + "node-public-ip": "10.99.0.9"})
    cluster.add_node(n2, "10.250.2.0/24")

    async def go():
        async with store_for(cluster, n1) as a, store_for(cluster, n2) as b:
            return await a.node_public_ip(), await b.node_public_ip()
    assert run(go()) == ("10.99.0.9", None)


def test_ready_sets_flanneld_s_condition(run, cluster: Cluster) -> None:
    n1 = cluster.name("n1")
    cluster.add_node(n1, "10.250.1.0/24")

    async def go():
        async with store_for(cluster, n1) as store:
            await store.acquire_lease(vxlan("10.99.0.1"))
            await store.node_ready()
    before = datetime.now(UTC).replace(microsecond=0)
    run(go())
    conditions = {c["type"]: c for c in cluster.node(n1)["status"].get("conditions", [])}
    cond = conditions["NetworkUnavailable"]
    assert (cond["status"], cond["reason"], cond["message"]) == \
        ("False", "FlannelIsUp", "Flannel is running on this node")
    when = datetime.strptime(cond["lastTransitionTime"], "%Y-%m-%dT%H:%M:%SZ")
    assert when.replace(tzinfo=UTC) >= before
    if cluster.api is not None:
        assert "Ready" in conditions                         # merged by type, not replaced
        patch = cluster.api.patches()[-1]
        assert patch.path == f"/api/v1/nodes/{n1}/status"
        assert patch.content_type == "application/strategic-merge-patch+json"
        assert re.fullmatch(
            rb'\{"status":\{"conditions":\[\{"type":"NetworkUnavailable","status":"False",'
            rb'"lastHeartbeatTime":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)",'
            rb'"lastTransitionTime":"\1","reason":"FlannelIsUp",'
            rb'"message":"Flannel is running on this node"\}\]\}\}', patch.body), patch.body


def test_ready_condition_bytes() -> None:
    stamp = datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=UTC)
    assert ready_condition_patch(stamp) == (
        b'{"status":{"conditions":[{"type":"NetworkUnavailable","status":"False",'
        b'"lastHeartbeatTime":"2026-01-02T03:04:05Z","lastTransitionTime":'
        b'"2026-01-02T03:04:05Z","reason":"FlannelIsUp","message":"Flannel is running on '
        b'this node"}]}}')


def test_ready_can_be_switched_off(run, cluster: Cluster) -> None:
    api = cluster.standin()
    cluster.add_node("n1", "10.250.1.0/24")

    async def go():
        async with store_for(cluster, "n1", set_node_network_unavailable=False) as store:
            await store.node_ready()
    run(go())
    assert api.patches() == []


def test_lease_waits_for_a_pod_cidr(run, cluster: Cluster) -> None:
    api = cluster.standin()

    async def go():
        async with store_for(cluster, "n1") as store:
            with pytest.raises(StoreUnavailable, match="node n1 does not exist"):
                await store.acquire_lease(vxlan("10.99.0.1"))
            api.add_node("n1", None)
            with pytest.raises(StoreUnavailable, match="no spec.podCIDR yet"):
                await store.acquire_lease(vxlan("10.99.0.1"))
            api.set_pod_cidr("n1", "10.250.3.0/24")
            return await store.acquire_lease(vxlan("10.99.0.1"))
    assert run(go()).subnet == net("10.250.3.0/24")


def test_pod_cidr_must_be_in_the_network_and_as_requested(run, cluster: Cluster) -> None:
    n1, n2 = cluster.name("n1"), cluster.name("n2")
    cluster.add_node(n1, "10.251.1.0/24")
    cluster.add_node(n2, "10.250.2.0/24")

    async def go():
        async with store_for(cluster, n1) as a, store_for(cluster, n2) as b:
            with pytest.raises(InvalidSubnet, match=r"subnet 10.250.0.0/16 specified in the "
                               r"flannel net config doesn't contain 10.251.1.0/24 PodCIDR"):
                await a.acquire_lease(vxlan("10.99.0.1"))
            with pytest.raises(InvalidSubnet, match="spec.podCIDR is 10.250.2.0/24"):
                await b.acquire_lease(vxlan("10.99.0.2"), requested=net("10.250.9.0/24"))
            return await b.acquire_lease(vxlan("10.99.0.2"), requested=net("10.250.2.0/24"))
    assert run(go()).subnet == net("10.250.2.0/24")


def test_release_and_renew_leave_the_node_alone(run, cluster: Cluster) -> None:
    n1 = cluster.name("n1")
    cluster.add_node(n1, "10.250.1.0/24")

    async def go():
        async with store_for(cluster, n1) as store:
            lease = await store.acquire_lease(vxlan("10.99.0.1"))
            await store.release_lease(lease.subnet)
            again = await store.renew_lease(lease)
            return lease, again
    lease, again = run(go())
    assert again == lease
    node = cluster.node(n1)
    assert node["spec"]["podCIDR"] == "10.250.1.0/24"
    assert ours(cluster, node["metadata"]["annotations"]) == \
        flanneld_annotations("10.99.0.1", MAC_A)


# -- what we read ----------------------------------------------------------------------------

def test_flanneld_nodes_are_peers_and_others_are_not(run, cluster: Cluster) -> None:
    names = {k: cluster.name(k) for k in ("fl", "udp", "bare", "nocidr", "badip", "baddata")}
    cluster.add_node(names["fl"], "10.250.2.0/24", flanneld_annotations("10.99.0.2", MAC_B))
    cluster.add_node(names["udp"], "10.250.3.0/24", flanneld_annotations("10.99.0.3", None))
    cluster.add_node(names["bare"], "10.250.4.0/24")
    cluster.add_node(names["nocidr"], None, flanneld_annotations("10.99.0.5", MAC_A))
    cluster.add_node(names["badip"], "10.250.6.0/24",
                     {**flanneld_annotations("10.99.0.6", MAC_A), PREFIX + "public-ip": "x"})
    cluster.add_node(names["baddata"], "10.250.7.0/24",
                     {**flanneld_annotations("10.99.0.7", MAC_A), PREFIX + "backend-data": "{"})

    async def go():
        async with store_for(cluster, None) as store:      # listing needs no node name
            return (await store.list_leases())[0]
    leases = {str(l.subnet): l for l in run(go()) if l.subnet.subnet_of(net("10.250.0.0/16"))}
    assert sorted(leases) == ["10.250.2.0/24", "10.250.3.0/24"]
    fl, udp = leases["10.250.2.0/24"], leases["10.250.3.0/24"]
    assert (fl.public_ip, fl.backend_type, fl.vtep_mac, fl.expiration) == \
        ("10.99.0.2", "vxlan", MAC_B, None)
    assert fl.to_json() == (b'{"PublicIP":"10.99.0.2","PublicIPv6":null,"BackendType":"vxlan",'
                            b'"BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:0b"}}')
    assert udp.to_json() == b'{"PublicIP":"10.99.0.3","PublicIPv6":null}'


def test_node_name_from_the_pod(run, cluster: Cluster) -> None:
    api = cluster.standin()
    api.add_node("worker-7", "10.250.7.0/24")
    api.add_pod("kube-flannel", "kube-flannel-ds-abcde", "worker-7")

    async def go():
        env = {"POD_NAME": "kube-flannel-ds-abcde", "POD_NAMESPACE": "kube-flannel"}
        async with store_for(cluster, None, env=env) as store:
            lease = await store.acquire_lease(vxlan("10.99.0.7"))
        async with store_for(cluster, None) as store:
            with pytest.raises(StoreError, match="set NODE_NAME"):
                await store.acquire_lease(vxlan("10.99.0.7"))
        async with store_for(cluster, None, env={"POD_NAME": "gone", "POD_NAMESPACE": "x"}) as s:
            with pytest.raises(StoreError, match='pods "gone" not found'):
                await s.acquire_lease(vxlan("10.99.0.7"))
        return lease
    assert run(go()).subnet == net("10.250.7.0/24")


# -- the watch -------------------------------------------------------------------------------

def test_watch_add_change_heartbeat_unannotate_delete(run, cluster: Cluster) -> None:
    a, b = cluster.name("a"), cluster.name("b")
    cluster.add_node(a, "10.250.1.0/24", flanneld_annotations("10.99.0.1", MAC_A))

    async def go():
        async with store_for(cluster, None) as store:
            _, cursor = await store.list_leases()
            async with contextlib.aclosing(store.watch_leases(cursor)) as watch:
                cluster.add_node(b, "10.250.2.0/24", flanneld_annotations("10.99.0.2", MAC_B))
                (ev,) = await next_batch(watch)
                assert (ev.kind, str(ev.lease.subnet), ev.lease.vtep_mac) == \
                    (EventKind.ADDED, "10.250.2.0/24", MAC_B)
                if cluster.api is not None:
                    cluster.api.heartbeat(b)                     # no event for this...
                cluster.set_annotations(b, {PREFIX + "backend-data":
                                            '{"VNI":1,"VtepMAC":"%s"}' % MAC_A})
                (ev,) = await next_batch(watch)                  # ...only for this
                assert (ev.kind, ev.lease.vtep_mac) == (EventKind.ADDED, MAC_A)
                cluster.set_annotations(a, {PREFIX + "kube-subnet-manager": None})
                (ev,) = await next_batch(watch)
                assert (ev.kind, str(ev.lease.subnet)) == (EventKind.REMOVED, "10.250.1.0/24")
                cluster.delete_node(b)
                (ev,) = await next_batch(watch)
                assert (ev.kind, str(ev.lease.subnet), ev.lease.public_ip) == \
                    (EventKind.REMOVED, "10.250.2.0/24", "10.99.0.2")
    run(go(), timeout=30)


@pytest.mark.parametrize("gone_as", ["event", "http"])
def test_410_gone_lists_again_and_loses_no_change(run, cluster: Cluster, gone_as: str) -> None:
    api = cluster.standin()
    api.gone_as = gone_as
    api.add_node("a", "10.250.1.0/24", annotations=flanneld_annotations("10.99.0.1", MAC_A))
    api.add_node("b", "10.250.2.0/24", annotations=flanneld_annotations("10.99.0.2", MAC_B))

    async def go():
        async with store_for(cluster, None) as store:
            _, cursor = await store.list_leases()
            # while nobody watches: b goes, c comes, and the history is compacted away
            api.delete_node("b")
            api.add_node("c", "10.250.3.0/24", annotations=flanneld_annotations("10.99.0.3", MAC_B))
            api.force_gone()
            async with contextlib.aclosing(store.watch_leases(cursor)) as watch:
                batch = await next_batch(watch)
                assert [(e.kind, str(e.lease.subnet)) for e in batch] == \
                    [(EventKind.REMOVED, "10.250.2.0/24"), (EventKind.ADDED, "10.250.3.0/24")]
                lists = [r for r in api.requests if r.path.startswith("/api/v1/nodes?limit=")]
                assert len(lists) == 2                           # the cursor's, and the re-list
                # and the watch goes on from the new list's version
                api.delete_node("a")
                (ev,) = await next_batch(watch)
                assert (ev.kind, str(ev.lease.subnet)) == (EventKind.REMOVED, "10.250.1.0/24")
            # a live watch told 410 in its stream re-lists too
            _, cursor = await store.list_leases()
            async with contextlib.aclosing(store.watch_leases(cursor)) as watch:
                pending = asyncio.ensure_future(next_batch(watch))   # the watch is open...
                await asyncio.sleep(0.5)
                served = api.watches_served
                api.force_gone()                                    # ...when this comes
                await asyncio.sleep(0.5)
                api.add_node("d", "10.250.4.0/24",
                             annotations=flanneld_annotations("10.99.0.4", MAC_A))
                (ev,) = await pending
                assert api.watches_served == served + 1
                assert (ev.kind, str(ev.lease.subnet)) == (EventKind.ADDED, "10.250.4.0/24")
    run(go(), timeout=30)


def test_dropped_connection_and_outage_raise_store_unavailable(run, cluster: Cluster) -> None:
    api = cluster.standin()
    api.add_node("a", "10.250.1.0/24", annotations=flanneld_annotations("10.99.0.1", MAC_A))

    async def go():
        async with store_for(cluster, None) as store:
            _, cursor = await store.list_leases()
            async with contextlib.aclosing(store.watch_leases(cursor)) as watch:
                pending = asyncio.ensure_future(next_batch(watch))
                await asyncio.sleep(0.5)
                assert api.watches_served == 1
                api.drop_connections()
                with pytest.raises(StoreUnavailable, match="watch"):
                    await pending
            api.down()
            try:
                with pytest.raises(StoreUnavailable):
                    await store.list_leases()
                async with contextlib.aclosing(store.watch_leases(cursor)) as watch:
                    with pytest.raises(StoreUnavailable):
                        await next_batch(watch, 15)
            finally:
                api.up()
            # back: list and watch again, and changes flow
            leases, cursor = await store.list_leases()
            assert [str(l.subnet) for l in leases] == ["10.250.1.0/24"]
            async with contextlib.aclosing(store.watch_leases(cursor)) as watch:
                api.delete_node("a")
                (ev,) = await next_batch(watch, 15)
                assert ev.kind == EventKind.REMOVED
    run(go(), timeout=40)


def test_watch_reopens_after_server_timeout_from_the_bookmark(run, cluster: Cluster,
                                                              monkeypatch) -> None:
    api = cluster.standin()
    api.bookmark_interval = 0.2
    monkeypatch.setattr(kube_store, "WATCH_TIMEOUT", (1, 1))
    api.add_node("a", "10.250.1.0/24", annotations=flanneld_annotations("10.99.0.1", MAC_A))

    async def go():
        async with store_for(cluster, None) as store:
            _, cursor = await store.list_leases()
            api.add_pod("ns", "p", "a")              # moves resourceVersion, no Node event
            async with contextlib.aclosing(store.watch_leases(cursor)) as watch:
                pending = asyncio.ensure_future(next_batch(watch, 10))
                await asyncio.sleep(2.5)             # two server timeouts
                api.delete_node("a")
                (ev,) = await pending
                assert ev.kind == EventKind.REMOVED
        watches = [r.path for r in api.requests if "watch=1" in r.path]
        assert len(watches) >= 2
        assert all("allowWatchBookmarks=true" in w for w in watches)
        first, second = (re.search(r"resourceVersion=(\d+)", w).group(1) for w in watches[:2])
        assert int(second) > int(first)             # resumed from the bookmark's version
    run(go(), timeout=30)


# -- configuration and errors ----------------------------------------------------------------

def test_wrong_token_is_a_clear_error(run, cluster: Cluster, tmp_path) -> None:
    api = cluster.standin()
    from tests.kube.cluster import write_kubeconfig
    bad = write_kubeconfig(tmp_path / "bad", api.url, "wrong")

    async def go():
        async with KubeStore(kubeconfig=str(bad), env={"NODE_NAME": "n"}) as store:
            with pytest.raises(StoreError, match=r"401 Unauthorized.*not accepted") as err:
                await store.list_leases()
            assert not isinstance(err.value, StoreUnavailable)
    run(go())


def test_closed_store_refuses_work(run, cluster: Cluster) -> None:
    async def go():
        store = store_for(cluster, "n1")
        _, cursor = await store.list_leases()
        await store.close()
        with pytest.raises(StoreError, match="closed"):
            await store.list_leases()
        with pytest.raises(StoreError, match="closed"):
            await store.get_network_config()
        with pytest.raises(TypeError, match="cursor"):
            await store_for(cluster, "n1").watch_leases(object()).__anext__()
    run(go())


def test_network_config_comes_from_the_file(run, cluster: Cluster, tmp_path) -> None:
    async def go():
        cfg = await store_for(cluster, "n1").get_network_config()
        assert (str(cfg.network), cfg.backend_type) == ("10.250.0.0/16", "vxlan")
        missing = KubeStore(net_config_path=str(tmp_path / "nope.json"))
        with pytest.raises(ValueError, match="nope.json: no network config.*--net-config-path"):
            await missing.get_network_config()
    run(go())


def test_annotation_prefixes_as_flannel_forms_them() -> None:
    assert Annotations.for_prefix("flannel.alpha.coreos.com").public_ip == \
        "flannel.alpha.coreos.com/public-ip"
    assert Annotations.for_prefix("example.com/net").kube_managed == \
        "example.com/net-kube-subnet-manager"
    assert Annotations.for_prefix("example.com/net-").backend_type == \
        "example.com/net-backend-type"
    for bad in ("a/b/c", "nodots", "x.y/UPPER"):
        with pytest.raises(ValueError, match="--kube-annotation-prefix"):
            Annotations.for_prefix(bad)


def test_custom_prefix_is_used_for_reading_and_writing(run, cluster: Cluster) -> None:
    n1, n2 = cluster.name("n1"), cluster.name("n2")
    cluster.add_node(n1, "10.250.1.0/24")
    other = {k.replace(PREFIX, "example.com/"): v
             for k, v in flanneld_annotations("10.99.0.2", MAC_B).items()}
    cluster.add_node(n2, "10.250.2.0/24", other)

    async def go():
        async with store_for(cluster, n1, annotation_prefix="example.com") as store:
            await store.acquire_lease(vxlan("10.99.0.1"))
            return (await store.list_leases())[0]
    leases = [l for l in run(go()) if l.subnet.subnet_of(net("10.250.0.0/16"))]
    assert [str(l.subnet) for l in leases] == ["10.250.1.0/24", "10.250.2.0/24"]
    assert cluster.node(n1)["metadata"]["annotations"]["example.com/public-ip"] == "10.99.0.1"


def test_list_in_pages_is_one_snapshot(run, cluster: Cluster, monkeypatch) -> None:
    api = cluster.standin()
    monkeypatch.setattr(kube_store, "LIST_PAGE", 3)
    for i in range(1, 8):
        api.add_node(f"n{i}", f"10.250.{i}.0/24",
                     annotations=flanneld_annotations(f"10.99.0.{i}", MAC_A))

    async def go():
        async with store_for(cluster, None) as store:
            leases, cursor = await store.list_leases()
            pages = [r.path for r in api.requests if r.path.startswith("/api/v1/nodes?limit")]
            assert len(pages) == 3 and all("limit=3" in p for p in pages)
            assert len(leases) == 7
            # a continue token that expired (a compaction between pages): listed again
            api.requests.clear()
            real_get = store._http().get
            calls = []

            async def get(path, params=None):
                calls.append(dict(params or {}))
                if len(calls) == 2:
                    api.force_gone()                 # the snapshot's token expires
                return await real_get(path, params)
            monkeypatch.setattr(store._http(), "get", get)
            again, _ = await store.list_leases()
            assert again == leases
            assert [("continue" in c) for c in calls] == [False, True, False, True, True]
            return cursor
    run(go())


def test_a_silent_watch_is_reopened_quietly(run, cluster: Cluster, monkeypatch) -> None:
    api = cluster.standin()
    api.bookmark_interval = 3600                  # a server that sends no bookmarks
    monkeypatch.setattr(kube_store, "IDLE_TIMEOUT", 0.5)
    api.add_node("a", "10.250.1.0/24", annotations=flanneld_annotations("10.99.0.1", MAC_A))

    async def go():
        async with store_for(cluster, None) as store:
            _, cursor = await store.list_leases()
            async with contextlib.aclosing(store.watch_leases(cursor)) as watch:
                pending = asyncio.ensure_future(next_batch(watch, 10))
                await asyncio.sleep(1.8)
                assert api.watches_served >= 3            # re-opened, no error raised
                api.delete_node("a")
                (ev,) = await pending
                assert ev.kind == EventKind.REMOVED
    run(go(), timeout=20)


# kube-flannel.yml's ClusterRole, rule for rule
FLANNEL_RBAC = {("pods", "get"), ("nodes", "get"), ("nodes", "list"), ("nodes", "watch"),
                ("nodes/status", "patch")}


def test_flannel_s_cluster_role_is_all_it_needs(run, cluster: Cluster) -> None:
    api = cluster.standin()
    api.add_node("n1", "10.250.1.0/24")
    api.add_pod("kube-flannel", "ds-1", "n1")
    api.rbac = set(FLANNEL_RBAC)

    async def go():
        env = {"POD_NAME": "ds-1", "POD_NAMESPACE": "kube-flannel"}
        async with store_for(cluster, None, env=env) as store:
            assert await store.node_public_ip() is None
            await store.acquire_lease(vxlan("10.99.0.1"))
            await store.node_ready()
            leases, cursor = await store.list_leases()
            async with contextlib.aclosing(store.watch_leases(cursor)) as watch:
                api.add_node("n2", "10.250.2.0/24",
                             annotations=flanneld_annotations("10.99.0.2", MAC_B))
                (ev,) = await next_batch(watch)
                assert ev.kind == EventKind.ADDED
        # and without nodes/status patch, the lease cannot be published: a clear error
        api.rbac = FLANNEL_RBAC - {("nodes/status", "patch")}
        async with store_for(cluster, "n2") as store:
            with pytest.raises(StoreError, match='403.*cannot patch resource "nodes/status"'):
                await store.acquire_lease(vxlan("10.99.0.2", MAC_A))
    run(go())
    assert not [r for r in api.requests if r.method == "PATCH" and "/status" not in r.path]
