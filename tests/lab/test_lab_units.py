"""The lab's pure parts: naming, flannel's files, the CNI config, the state file. No root."""

from __future__ import annotations

import argparse
import json
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from dataplane import subnetenv
from dataplane.lab import cni, command, naming
from dataplane.lab.errors import LabError
from dataplane.lab.flannel import SubnetEnv, config_json, lease_attrs, net_conf
from dataplane.lab.labstore import LabStore
from dataplane.lab.lab import Lab, plan_backends
from dataplane.lab.probe import _checksum, _echo_request
from dataplane.lab.state import LabState, LabNode, Pod


def test_names_and_addresses() -> None:
    assert naming.underlay_ns("dpl") == "dpl-ul"
    assert naming.node_ns("dpl", 3) == "dpl-n3"
    assert naming.pod_ns("dpl", 3, 2) == "dpl-n3-p2"
    assert naming.underlay_ip(7) == IPv4Address("10.99.0.7")
    net = IPv4Network("10.244.0.0/16")
    assert naming.node_subnet(net, 1) == IPv4Network("10.244.1.0/24")
    assert naming.node_subnet(IPv4Network("10.50.0.0/20"), 15) == IPv4Network("10.50.15.0/24")
    with pytest.raises(LabError):
        naming.node_subnet(IPv4Network("10.50.0.0/20"), 16)
    with pytest.raises(LabError):
        naming.node_subnet(IPv4Network("10.50.0.0/24"), 1)
    assert len(naming.vxlan_device(1)) < 16


@pytest.mark.parametrize("name", ["Dpl", "d-p", "", "1ab", "abcdefghijklm"])
def test_bad_prefixes(name: str) -> None:
    with pytest.raises(LabError):
        naming.check_prefix(name)


def test_owned_namespaces_never_match_another_prefix() -> None:
    own = ["ab-ul", "ab-n1", "ab-n12-p3", "ab-out"]
    assert all(naming.owned_namespace("ab", n) for n in own)
    for other in ["abc-ul", "ab-n1-x", "ab-", "xab-n1", "ab-n1-p", "ab-ulx", "ab-outx",
                  "abc-out"]:
        assert not naming.owned_namespace("ab", other), other
    assert sorted(own, key=naming.namespace_order) == ["ab-n12-p3", "ab-n1", "ab-out",
                                                       "ab-ul"]


def test_backend_plans() -> None:
    assert plan_backends("udp", 2) == ["udp", "udp"]
    assert plan_backends("vxlan", 3, kernel_nodes=1) == ["vxlan", "vxlan", "kernel-vxlan"]
    assert plan_backends("vxlan", 2, node_backends=["kernel-vxlan", "vxlan"]) == \
        ["kernel-vxlan", "vxlan"]
    for bad in [("udp", 2, 1, None), ("vxlan", 2, 3, None), ("nope", 1, 0, None),
                ("vxlan", 2, 0, ["udp", "kernel-vxlan"]), ("vxlan", 2, 0, ["vxlan"])]:
        with pytest.raises(LabError):
            plan_backends(*bad)


def test_flannel_wire_formats() -> None:
    net = IPv4Network("10.244.0.0/16")
    assert config_json(net_conf(net, "vxlan")) == \
        '{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1,"Port":8472}}'
    assert config_json(net_conf(net, "udp")).endswith('"Backend":{"Type":"udp","Port":8285}}')
    assert config_json(net_conf(net, "host-gw")).endswith('"Backend":{"Type":"host-gw"}}')
    ip = IPv4Address("10.99.0.1")
    assert lease_attrs(ip, "udp").to_json() == b'{"PublicIP":"10.99.0.1","PublicIPv6":null}'
    assert lease_attrs(ip, "vxlan", vtep_mac="0e:00:00:00:00:01").to_json() == (
        b'{"PublicIP":"10.99.0.1","PublicIPv6":null,"BackendType":"vxlan",'
        b'"BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}}')
    assert lease_attrs(ip, "host-gw").to_json().endswith(b',"BackendType":"host-gw"}')


def test_subnet_env_as_flannels_cni_plugin_reads_it() -> None:
    text = subnetenv.render(network=IPv4Network("10.244.0.0/16"),
                            subnet=IPv4Network("10.244.3.0/24"), mtu=1450, ipmasq=True)
    assert SubnetEnv.parse(text) == SubnetEnv(IPv4Network("10.244.0.0/16"),
                                              IPv4Interface("10.244.3.1/24"), 1450, True)
    assert not SubnetEnv.parse(text.replace("=true", "=True")).ipmasq   # only "true" is true
    with pytest.raises(LabError, match="FLANNEL_MTU"):
        SubnetEnv.parse(text.replace("FLANNEL_MTU=1450\n", ""))


def test_cni_delegate_is_what_flannels_plugin_derives(tmp_path: Path) -> None:
    env = SubnetEnv(IPv4Network("10.244.0.0/16"), IPv4Interface("10.244.2.1/24"), 1450, False)
    delegate = cni.derive_delegate(cni.flannel_netconf(tmp_path), env)
    assert delegate == {
        "hairpinMode": True, "isDefaultGateway": True, "name": "cbr0", "type": "bridge",
        "ipMasq": True,          # flanneld does not masquerade, so the bridge does
        "mtu": 1450, "isGateway": True, "cniVersion": "1.0.0",
        "ipam": {"dataDir": str(tmp_path), "type": "host-local",
                 "ranges": [[{"subnet": "10.244.2.0/24"}]],
                 "routes": [{"dst": "10.244.0.0/16"}]},
    }
    masq = SubnetEnv(env.network, env.subnet, env.mtu, True)
    assert cni.derive_delegate(cni.flannel_netconf(tmp_path), masq)["ipMasq"] is False


def test_state_roundtrip(tmp_path: Path) -> None:
    state = LabState(prefix="ab", options={"nodes": 1}, phase="pods", namespaces=["ab-ul"],
                     nodes=[LabNode("ab-n1", 1, "kernel-vxlan", IPv4Address("10.99.0.1"),
                                 IPv4Network("10.244.1.0/24"), tmp_path / "ab-n1",
                                 vtep_mac="0e:00:00:00:00:01", pid=12, pid_start=34)],
                     pods=[Pod("ab-n1-p1", "ab-n1", 1, IPv4Address("10.244.1.2")),
                           Pod("ab-n1-p2", "ab-n1", 2)])
    state.save(tmp_path / "state.json")
    assert LabState.load(tmp_path / "state.json") == state


def test_lab_store_takes_leases_like_a_daemon(tmp_path: Path) -> None:
    store = LabStore(tmp_path)
    store.write_config(config_json(net_conf(IPv4Network("10.244.0.0/16"), "vxlan")))
    attrs = lease_attrs(IPv4Address("10.99.0.2"), "vxlan", vtep_mac="0e:00:00:00:00:02")
    store.acquire(IPv4Network("10.244.2.0/24"), attrs)
    assert (tmp_path / "subnets" / "10.244.2.0-24").read_bytes() == attrs.to_json()
    leases = store.leases()
    assert list(leases) == [IPv4Network("10.244.2.0/24")]
    assert leases[IPv4Network("10.244.2.0/24")].vtep_mac == "0e:00:00:00:00:02"
    assert store.daemon_args() == ["--store-dir", str(tmp_path)]
    with pytest.raises(LabError, match="10.244.2.0"):      # held by another node
        store.acquire(IPv4Network("10.244.2.0/24"), lease_attrs(IPv4Address("10.99.0.3"), "udp"))


def test_icmp_echo_checksum() -> None:
    packet = _echo_request(0x1234, 1, b"abcdefghijklmnop")
    assert _checksum(packet) == 0     # a valid checksum sums to zero


def test_cli_parses_and_documents_the_scheme() -> None:
    parser = argparse.ArgumentParser()
    command.configure(parser)
    args = parser.parse_args(["up", "--nodes", "3", "--backend", "vxlan", "--kernel-nodes", "1",
                              "--fastpath", "python"])
    assert (args.nodes, args.backend, args.kernel_nodes, args.fastpath) == \
        (3, "vxlan", 1, "python")
    assert args.prefix == naming.DEFAULT_PREFIX and args.ip_masq is True
    assert parser.parse_args(["down", "--prefix", "x1"]).lab_command == "down"
    assert "10.99.0.<i>/24" in parser.format_help()
    json.dumps(vars(parser.parse_args(["status", "--json", "--no-ping"])))


def test_preflight_says_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(LabError, match="needs root"):
        Lab("x1", state_root=tmp_path).up()
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(cni, "PLUGIN_DIR", tmp_path / "no-cni")
    with pytest.raises(LabError, match="apt-get install containernetworking-plugins"):
        Lab("x1", state_root=tmp_path).up()
    assert list(tmp_path.iterdir()) == []      # nothing was created


def test_the_outside_host_never_meets_a_node_or_an_etcd_member() -> None:
    nodes = {naming.underlay_ip(i) for i in range(1, naming.MAX_NODES + 1)}
    etcd = {naming.etcd_ip(k) for k in range(naming.MAX_ETCD_MEMBERS)}
    assert naming.OUTSIDE_IP not in nodes | etcd and not nodes & etcd
    assert naming.OUTSIDE_IP in naming.UNDERLAY_NETWORK
    with pytest.raises(LabError):
        naming.underlay_ip(naming.MAX_NODES + 1)
