"""Labs with `--store etcd`: a real etcd in the underlay namespace, our daemons on it.

Forwarding with two and three nodes of each backend, flannel's keys and bytes in etcd, the
daemons' metrics during traffic and after forged input, and the command line's up, status
and down, also after `up` was killed."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import pytest
from etcd_lab_helpers import (DAEMON_ARGS, ETCD_MISSING, PREFIX, etcd_kvs, granted_ttl,
                              lease_key, metrics, wait_for, wait_peers)
from lab_helpers import lab_cli, leftovers

from dataplane.daemon.node import vtep_mac
from dataplane.fastpath.types import format_mac
from dataplane.lab import Lab, netns
from dataplane.lab.lab import FAILPOINT_ENV, STATE_ROOT
from dataplane.lab.nsthread import call_in_netns

pytestmark = [pytest.mark.netns, pytest.mark.skipif(ETCD_MISSING is not None,
                                                    reason=ETCD_MISSING or "")]


def daemon_nodes(lab: Lab) -> list:
    return [n for n in lab.nodes if n.runs_daemon]


@pytest.mark.parametrize("backend,nodes", [("udp", 3), ("vxlan", 3)])   # every pair of three
def test_nodes_find_each_other_through_etcd_and_forward(prefix: str, backend: str,
                                                        nodes: int) -> None:
    with Lab(prefix, nodes=nodes, pods=1, backend=backend, store="etcd",
             daemon_args=DAEMON_ARGS) as lab:
        for node in lab.nodes:
            command = node.log_file.read_text().splitlines()[0]
            assert "--etcd-endpoints http://10.99.0.254:2379 " in command
            assert "--store-dir" not in command
        wait_peers(lab.nodes, nodes - 1)
        matrix = lab.reachability()
        assert [pair for pair, ok in matrix.items() if not ok] == []
        first, last = lab.pods[0], lab.pods[-1]
        for src, dst in [(first, last), (last, first)]:
            result = lab.tcp_check(src, dst, nbytes=4 << 20)
            assert result.ok, result


def test_keys_and_values_in_etcd_are_flannels_byte_for_byte(prefix: str) -> None:
    """A vxlan lab with a kernel node: two leases our daemons wrote, one the lab wrote for the
    kernel node as flanneld would, and the network config, read back with etcdctl."""
    with Lab(prefix, nodes=3, pods=1, backend="vxlan", kernel_nodes=1, store="etcd") as lab:
        n1, n2, n3 = lab.nodes
        link = lab.exec(n3, ["ip", "-o", "link", "show", "flannel.1"]).stdout
        kernel_mac = link.split("link/ether ")[1].split()[0]

        def vxlan_lease(ip: str, mac: str) -> bytes:
            return (b'{"PublicIP":"' + ip.encode() + b'","PublicIPv6":null,"BackendType":'
                    b'"vxlan","BackendData":{"VNI":1,"VtepMAC":"' + mac.encode() + b'"}}')

        kvs = etcd_kvs(lab)
        assert {k: v["value"] for k, v in kvs.items()} == {
            f"{PREFIX}/config": b'{"Network":"10.244.0.0/16","SubnetLen":24,'
                                b'"Backend":{"Type":"vxlan","VNI":1,"Port":8472}}',
            f"{PREFIX}/subnets/10.244.1.0-24":
                vxlan_lease("10.99.0.1", format_mac(vtep_mac("10.99.0.1", 1))),
            f"{PREFIX}/subnets/10.244.2.0-24":
                vxlan_lease("10.99.0.2", format_mac(vtep_mac("10.99.0.2", 1))),
            f"{PREFIX}/subnets/10.244.3.0-24": vxlan_lease("10.99.0.3", kernel_mac),
        }
        # The config is the operator's (no etcd lease); every subnet is bound to an etcd
        # lease of flannel's 24 h, so a node that vanishes vanishes from etcd too.
        assert kvs[f"{PREFIX}/config"]["lease"] == 0
        for node in (n1, n2, n3):
            assert granted_ttl(lab, kvs[lease_key(node)]["lease"]) == 24 * 3600
        # The kernel node learnt our daemons from etcd; traffic through it proves it.
        matrix = lab.reachability()
        assert [pair for pair, ok in matrix.items() if not ok] == []


def test_a_udp_lease_in_etcd_is_flannels(prefix: str) -> None:
    with Lab(prefix, nodes=2, pods=0, backend="udp", store="etcd") as lab:
        kvs = etcd_kvs(lab)
        assert kvs[f"{PREFIX}/config"]["value"] == \
            b'{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"udp","Port":8285}}'
        for node in lab.nodes:
            assert kvs[lease_key(node)]["value"] == \
                b'{"PublicIP":"' + str(node.underlay_ip).encode() + b'","PublicIPv6":null}'
        assert len(kvs) == 3


def _send_udp(lab: Lab, src_ns: str, src_ip: str, dst: str, port: int, payload: bytes) -> None:
    """One datagram from an address of the lab's underlay (a forger on the wire)."""
    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((src_ip, 0))
            s.sendto(payload, (dst, port))
    call_in_netns(src_ns, send)


def test_metrics_move_during_traffic_and_count_forged_input(prefix: str) -> None:
    with Lab(prefix, nodes=2, pods=1, backend="vxlan", store="etcd",
             daemon_args=DAEMON_ARGS) as lab:
        n1, n2 = lab.nodes
        wait_peers(lab.nodes, 1)
        flow = lab.flow(lab.pod(1, 1), lab.pod(2, 1), duration=2.0, interval=0.01)
        during = []
        for _ in range(3):
            during.append(metrics(n1))
            time.sleep(0.4)
        assert flow.result().received > 0
        for direction in ("egress", "ingress"):
            packets = [m[f'dataplane_packets_total{{direction="{direction}"}}'] for m in during]
            octets = [m[f'dataplane_bytes_total{{direction="{direction}"}}'] for m in during]
            assert packets == sorted(packets) and packets[0] < packets[-1], packets
            assert octets[0] < octets[-1], octets
        # The source check comes first: from etcd's address on the underlay, which holds no
        # lease, any payload is unknown-peer; from a peer, an empty one is truncated.
        unknown = 'dataplane_drops_total{direction="ingress",reason="unknown-peer"}'
        truncated = 'dataplane_drops_total{direction="ingress",reason="truncated"}'
        before = metrics(n1)
        _send_udp(lab, lab.underlay_ns, "10.99.0.254", str(n1.underlay_ip), 8472,
                  bytes.fromhex("0800000000000100") + bytes(64))
        _send_udp(lab, n2.netns, str(n2.underlay_ip), str(n1.underlay_ip), 8472, b"")
        wait_for(lambda: metrics(n1).get(unknown, 0) == before.get(unknown, 0) + 1, 5,
                 "the forged datagram counted as unknown-peer")
        wait_for(lambda: metrics(n1).get(truncated, 0) == before.get(truncated, 0) + 1, 5,
                 "the empty datagram counted as truncated")
        assert lab.ping(lab.pod(2, 1), lab.pod(1, 1))        # and it still forwards


def test_cli_up_status_down_with_etcd(prefix: str) -> None:
    up = lab_cli("up", "--prefix", prefix, "--nodes", "2", "--pods", "1", "--backend", "udp",
                 "--store", "etcd", "--etcd-members", "3")
    assert "store etcd http://10.99.0.254:2379,http://10.99.0.253:2379,http://10.99.0.252:2379" \
        in up.stdout, up.stdout
    status = json.loads(lab_cli("status", "--prefix", prefix, "--json").stdout)
    members = status["store"]["members"]
    assert [m["name"] for m in members] == ["m0", "m1", "m2"]
    assert all(m["alive"] and m["healthy"] for m in members), members
    assert sum(m["leader"] for m in members) == 1
    assert all(r["ok"] for r in status["reachability"])
    text = lab_cli("status", "--prefix", prefix, "--no-ping").stdout
    assert f"ip netns exec {prefix}-ul etcdctl --endpoints" in text
    assert text.count(" alive") == 5, text          # three members, two daemons
    pids = [m["pid"] for m in members]
    data = [m["data_dir"] for m in members]

    assert "removed" in lab_cli("down", "--prefix", prefix).stdout
    assert not any(netns.alive(pid) for pid in pids)
    assert leftovers(prefix) == [] and not any(Path(d).exists() for d in data)


def test_down_stops_etcd_after_up_was_killed(prefix: str) -> None:
    crashed = lab_cli("up", "--prefix", prefix, "--nodes", "2", "--pods", "1", "--backend",
                      "vxlan", "--store", "etcd", env={FAILPOINT_ENV: "daemons"}, check=False)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    state = json.loads((STATE_ROOT / prefix / "state.json").read_text())
    [member] = state["etcd"]
    assert netns.alive(member["pid"], member["pid_start"])     # etcd outlived its lab's `up`
    assert Path(member["data_dir"]).exists()

    assert "removed" in lab_cli("down", "--prefix", prefix).stdout
    assert not netns.alive(member["pid"], member["pid_start"])
    assert leftovers(prefix) == [] and not Path(member["data_dir"]).exists()


def test_a_thread_in_a_namespace_leaves_the_process_where_it_was(prefix: str) -> None:
    ns = f"{prefix}-n1"
    netns.add(ns)
    try:
        inside = call_in_netns(ns, lambda: [name for _, name in socket.if_nameindex()])
        assert inside == ["lo"]
        assert [name for _, name in socket.if_nameindex()] != ["lo"]
        with pytest.raises(ZeroDivisionError):              # its exceptions come back
            call_in_netns(ns, lambda: 1 // 0)
    finally:
        netns.delete(ns)
    with pytest.raises(Exception, match="does not exist"):
        call_in_netns(ns, lambda: None)
