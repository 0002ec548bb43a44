"""The etcd lab's pure parts: addresses, plans, options, state, status text. No root."""

from __future__ import annotations

import argparse
import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from dataplane.lab import command, naming
from dataplane.lab.errors import LabError
from dataplane.lab.lab import Lab
from dataplane.lab.labetcd import LabEtcd
from dataplane.lab.state import EtcdMember, LabState
from dataplane.lab.status import render
from dataplane.lab.traffic import FlowResult


def test_members_sit_at_the_top_of_the_underlay(tmp_path: Path) -> None:
    assert [naming.etcd_ip(k) for k in range(3)] == \
        [IPv4Address("10.99.0.254"), IPv4Address("10.99.0.253"), IPv4Address("10.99.0.252")]
    with pytest.raises(LabError):
        naming.etcd_ip(naming.MAX_ETCD_MEMBERS)
    etcd = LabEtcd("ab-ul", LabEtcd.plan(tmp_path / "etcd", 3))
    assert etcd.endpoints == \
        "http://10.99.0.254:2379,http://10.99.0.253:2379,http://10.99.0.252:2379"
    assert etcd.initial_cluster == \
        "m0=http://10.99.0.254:2380,m1=http://10.99.0.253:2380,m2=http://10.99.0.252:2380"
    assert etcd.member("m1") is etcd.member(1)
    assert etcd.members[2].data_dir == tmp_path / "etcd" / "m2"
    assert etcd.members[2].log_file == tmp_path / "etcd" / "m2.log"
    for bad in (0, 6):
        with pytest.raises(LabError, match="--etcd-members"):
            LabEtcd.plan(tmp_path, bad)


def test_an_etcd_lab_points_its_daemons_at_etcd(tmp_path: Path) -> None:
    lab = Lab("ab", nodes=2, backend="udp", store="etcd", etcd_members=3, state_root=tmp_path)
    assert lab.store.daemon_args() == ["--etcd-endpoints", lab.etcd.endpoints]
    assert lab.store.location == f"etcd {lab.etcd.endpoints}"
    assert Lab("ab", state_root=tmp_path).etcd is None
    assert list(tmp_path.iterdir()) == []        # planning touches nothing


@pytest.mark.parametrize("kwargs,error", [
    ({"store": "zookeeper"}, "unknown store"),
    ({"etcd_members": 3}, "--etcd-members applies to --store etcd"),
    ({"store": "etcd", "backend": "host-gw"}, "uses no subnet store"),
    # 254 underlay addresses, less the outside host's 6 (naming.MAX_NODES 248), less 3 members
    ({"store": "etcd", "etcd_members": 3, "nodes": 246}, "between 1 and 245"),
    ({"store": "etcd", "etcd_members": 7}, "--etcd-members"),
])
def test_bad_store_options(tmp_path: Path, kwargs: dict, error: str) -> None:
    with pytest.raises(LabError, match=error):
        Lab("ab", state_root=tmp_path, **kwargs)


def test_state_keeps_the_members_and_a_lab_reloads_them(tmp_path: Path) -> None:
    lab = Lab("ab", nodes=1, backend="vxlan", store="etcd", state_root=tmp_path)
    lab.dir.mkdir()
    lab.etcd.members[0].pid, lab.etcd.members[0].pid_start = 4321, 99
    lab._save()
    state = LabState.load(lab.dir / "state.json")
    assert state.etcd == [EtcdMember("m0", IPv4Address("10.99.0.254"),
                                     tmp_path / "ab" / "etcd" / "m0", 4321, 99)]
    again = Lab.load("ab", state_root=tmp_path)
    assert again.etcd is not None and again.etcd.members == state.etcd
    assert again.store.daemon_args() == ["--etcd-endpoints", "http://10.99.0.254:2379"]


def test_state_of_a_lab_from_before_etcd_still_loads(tmp_path: Path) -> None:
    doc = json.loads(LabState(prefix="ab", options={}).to_json())
    del doc["etcd"]
    assert LabState.from_json(json.dumps(doc)).etcd == []


def test_cli_takes_the_store() -> None:
    parser = argparse.ArgumentParser()
    command.configure(parser)
    args = parser.parse_args(["up", "--store", "etcd", "--etcd-members", "3"])
    assert (args.store, args.etcd_members) == ("etcd", 3)
    assert parser.parse_args(["up"]).store == "directory"
    with pytest.raises(SystemExit):
        parser.parse_args(["up", "--store", "consul"])


def test_status_shows_the_members() -> None:
    status = {"prefix": "ab", "backend": "udp", "phase": "ready", "network": "10.244.0.0/16",
              "state_dir": "/run/dataplane-lab/ab", "underlay_ns": "ab-ul", "nodes": [],
              "pods": [],
              "store": {"kind": "etcd", "location": "etcd http://10.99.0.254:2379,…",
                        "etcdctl": "ip netns exec ab-ul etcdctl …",
                        "members": [
                            {"name": "m0", "client_url": "http://10.99.0.254:2379", "pid": 7,
                             "alive": True, "healthy": True, "leader": True},
                            {"name": "m1", "client_url": "http://10.99.0.253:2379", "pid": None,
                             "alive": None, "healthy": False, "leader": False}]}}
    text = render(status)
    assert "store etcd http://10.99.0.254:2379" in text
    assert "m0    http://10.99.0.254:2379  pid 7 alive  leader" in text
    assert "m1    http://10.99.0.253:2379  stopped      UNHEALTHY" in text
    assert "read it: ip netns exec ab-ul etcdctl" in text


def test_flow_gaps() -> None:
    assert FlowResult(100, 100, 0.01, ()).longest_gap == 0
    lost = (0.2, 0.21, 0.22, 0.5, 0.9, 0.91)
    assert FlowResult(100, 94, 0.01, lost).longest_gap == 0.03
