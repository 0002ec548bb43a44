"""Our daemons with --kube-subnet-mgr in lab namespaces, against the stand-in API server on
the lab's underlay (kube_lab.py): nodes find each other through Node annotations and forward
pod to pod, a Node added or deleted in the API reaches the C peer table, a flanneld (kernel
vxlan) node shares the cluster, and an API outage, 410 Gone and dropped watches lose no
forwarding."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator

import pytest

from dataplane.lab import naming, netns
from dataplane.lab.lab import teardown
from tests.kube.cluster import PREFIX, REAL_ENV, flanneld_annotations
from tests.netns import require_root
from tests.kube.kube_lab import KubeLab, metrics, wait_peers

pytestmark = [pytest.mark.netns, pytest.mark.skipif(
    bool(os.environ.get(REAL_ENV)),
    reason="the lab's daemons live in namespaces that reach only the stand-in on the lab's "
           "underlay, and their Nodes' podCIDRs are the lab's: not run against a real cluster")]


@pytest.fixture
def prefix() -> Iterator[str]:
    require_root()
    name = "k" + secrets.token_hex(4)
    try:
        yield name
    finally:
        teardown(name)
        assert [n for n in netns.list_netns() if n.startswith(name + "-")] == []


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def network_unavailable(lab: KubeLab, name: str) -> dict | None:
    for cond in lab.api.node(name)["status"]["conditions"]:
        if cond["type"] == "NetworkUnavailable":
            return cond
    return None


@pytest.mark.parametrize("nodes", [2, 3])
def test_nodes_find_each_other_through_annotations(prefix: str, nodes: int) -> None:
    with KubeLab(prefix, nodes=nodes, pods=1, backend="vxlan") as lab:
        matrix = lab.reachability()
        assert matrix and all(matrix.values()), matrix
        leases = lab.store.leases()
        for node in lab.nodes:
            lease = leases[node.subnet]
            ann = lab.api.node(node.name)["metadata"]["annotations"]
            assert {k: v for k, v in ann.items() if k.startswith(PREFIX)} == \
                flanneld_annotations(str(node.underlay_ip), lease.vtep_mac)
            cond = wait_for(lambda: network_unavailable(lab, node.name), 10,
                            f"{node.name}'s NetworkUnavailable condition")
            assert (cond["status"], cond["reason"]) == ("False", "FlannelIsUp")
        # every node's /metrics counts the others, from the annotations alone
        assert [metrics(n)["dataplane_peers"] for n in lab.nodes] == [nodes - 1] * nodes


def test_udp_nodes(prefix: str) -> None:
    with KubeLab(prefix, nodes=2, pods=1, backend="udp") as lab:
        assert lab.ping(lab.pod(1, 1), lab.pod(2, 1))
        ann = lab.api.node(lab.nodes[0].name)["metadata"]["annotations"]
        assert (ann[PREFIX + "backend-type"], ann[PREFIX + "backend-data"]) == ("", "null")


def test_a_flanneld_node_is_a_peer_and_reads_ours(prefix: str) -> None:
    """A kernel-vxlan node annotated as flanneld annotates: our daemons forward to it; the
    lab programs it (as flanneld would) from our Nodes' annotations only."""
    with KubeLab(prefix, nodes=3, pods=1, backend="vxlan", kernel_nodes=1) as lab:
        matrix = lab.reachability()
        assert matrix and all(matrix.values()), matrix
        kernel = lab.nodes[2]
        assert not kernel.runs_daemon
        assert lab.api.node(kernel.name)["metadata"]["annotations"][PREFIX + "backend-data"] \
            == '{"VNI":1,"VtepMAC":"%s"}' % kernel.vtep_mac


def test_nodes_added_and_deleted_in_the_api_reach_the_peer_table(prefix: str) -> None:
    with KubeLab(prefix, nodes=2, pods=1, backend="vxlan") as lab:
        ours = lab.nodes
        wait_peers(ours, 1)
        lab.api.add_node("ghost", "10.244.77.0/24",
                         annotations=flanneld_annotations("10.99.0.77", "0a:00:00:00:00:77"))
        wait_peers(ours, 2)
        lab.api.heartbeat("ghost")
        lab.api.set_annotations("ghost", {PREFIX + "kube-subnet-manager": None})
        wait_peers(ours, 1)                      # no longer a kube-subnet-manager node
        lab.api.set_annotations("ghost", {PREFIX + "kube-subnet-manager": "true"})
        wait_peers(ours, 2)
        lab.api.delete_node("ghost")
        wait_peers(ours, 1)
        assert lab.ping(lab.pod(1, 1), lab.pod(2, 1))


def test_outage_410_and_dropped_watches_lose_no_forwarding(prefix: str) -> None:
    with KubeLab(prefix, nodes=2, pods=1, backend="vxlan") as lab:
        n1, n2 = lab.nodes
        wait_peers(lab.nodes, 1)
        errors = [metrics(n)["dataplane_store_errors_total"] for n in lab.nodes]
        flow = lab.flow(lab.pod(1, 1), lab.pod(2, 1), duration=14, interval=0.01)
        time.sleep(1)
        lab.api.down()                            # the API server is unreachable
        time.sleep(4)
        grown = [metrics(n)["dataplane_store_errors_total"] for n in lab.nodes]
        lab.api.up()
        time.sleep(3)                             # the daemons list and watch again
        lab.api.force_gone()                      # their watches' versions are too old now
        time.sleep(2)
        lab.api.drop_connections()                # and their connections are cut
        time.sleep(2)
        result = flow.result()
        assert (result.sent, result.lost) == (result.received, ()), result
        assert all(after > before for before, after in zip(errors, grown)), (errors, grown)
        # the watches resumed: a node added now is learnt by both
        lab.api.add_node("late", "10.244.88.0/24",
                         annotations=flanneld_annotations("10.99.0.88", "0a:00:00:00:00:88"))
        wait_peers(lab.nodes, 2)
        assert lab.ping(lab.pod(2, 1), lab.pod(1, 1))


def test_a_daemon_waits_for_its_pod_cidr(prefix: str) -> None:
    """A Node without spec.podCIDR yet (the controller-manager has not got to it): the daemon
    says so, waits, and starts forwarding once the podCIDR appears."""
    with KubeLab(prefix, nodes=2, pods=1, backend="vxlan") as lab:
        n1, n2 = lab.nodes
        lab.stop_daemon(n2)
        lab.api.set_pod_cidr(n2.name, None)
        wait_peers([n1], 0)                     # a Node without podCIDR is no peer
        lab.start_daemon(n2, wait=False)
        wait_for(lambda: "no spec.podCIDR yet" in n2.log_file.read_text(), 20,
                 "the daemon to say it waits for a podCIDR")
        assert not n2.subnet_file.exists()
        lab.api.set_pod_cidr(n2.name, str(n2.subnet))
        wait_for(n2.subnet_file.exists, 30, "subnet.env once the podCIDR is there")
        wait_peers(lab.nodes, 1)
        assert lab.ping(lab.pod(1, 1), lab.pod(2, 1))


def test_node_public_ip_annotation_moves_the_node(prefix: str) -> None:
    """An operator's node-public-ip annotation replaces --public-ip, as in flanneld's main.go:
    the daemon binds there and publishes it, and its peers follow."""
    with KubeLab(prefix, nodes=2, pods=1, backend="vxlan") as lab:
        n1, n2 = lab.nodes
        lab.stop_daemon(n2)
        netns.run(["ip", "-n", n2.netns, "addr", "add", "10.99.0.101/24", "dev",
                   naming.NODE_UPLINK])
        lab.api.set_annotations(n2.name, {PREFIX + "node-public-ip": "10.99.0.101"})
        lab.start_daemon(n2)
        ann = lab.api.node(n2.name)["metadata"]["annotations"]
        assert ann[PREFIX + "public-ip"] == "10.99.0.101"
        wait_for(lambda: f"peer {n2.subnet} at 10.99.0.101" in n1.log_file.read_text(), 20,
                 f"{n1.name} to follow {n2.name} to its new address")
        assert lab.ping(lab.pod(1, 1), lab.pod(2, 1)) and lab.ping(lab.pod(2, 1), lab.pod(1, 1))
