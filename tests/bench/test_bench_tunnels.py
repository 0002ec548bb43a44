"""The tunnel rungs: each tool's configuration from fake nodes (no root), the ladder and CLI
wiring, and (netns) each tunnel really carrying pod-to-pod traffic between two lab nodes."""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from bench import command, ladder, tunnels
from bench.tunnels import fastd, openvpn, tinc, wireguard_go
from bench.tunnels.base import TunnelError, TunnelNode
from bench.tunnels.command import CommandTunnel, ask_overhead, check_path, script_argv
from dataplane.cli import CommandError

EXAMPLE = Path(__file__).resolve().parents[2] / "dataplane" / "deploy" / "bench-tunnel-vxlan.sh"


def fake_nodes(tmp_path: Path, tag: str = "x1") -> list[TunnelNode]:
    a = TunnelNode(1, "ns1", IPv4Address("10.0.0.1"), IPv4Network("10.244.1.0/24"),
                   IPv4Address("10.0.0.2"), IPv4Network("10.244.2.0/24"), tmp_path / "1", tag)
    b = TunnelNode(2, "ns2", IPv4Address("10.0.0.2"), IPv4Network("10.244.2.0/24"),
                   IPv4Address("10.0.0.1"), IPv4Network("10.244.1.0/24"), tmp_path / "2", tag)
    return [a, b]


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    command.configure(p)
    return p.parse_args(list(argv))


# --- configuration from fakes ----------------------------------------------------------------

def test_fastd_config_is_null_method_tun_mode_with_the_peer(tmp_path):
    a, _ = fake_nodes(tmp_path)
    text = fastd.config(a, "s" * 64, "p" * 64, 1471)
    lines = [ln.strip() for ln in text.splitlines()]
    assert 'method "null";' in lines and "mode tun;" in lines and "mtu 1471;" in lines
    assert "bind 10.0.0.1:10000;" in lines and "remote 10.0.0.2:10000;" in lines
    assert f'secret "{"s" * 64}";' in lines and f'key "{"p" * 64}";' in lines
    assert text.count("{") == text.count("}") == 1


def test_fastd_key_output_parsing():
    assert fastd.parse_key_output("Secret: aa\nPublic: bb\n") == ("aa", "bb")
    with pytest.raises(TunnelError, match="no key pair"):
        fastd.parse_key_output("Secret: aa\n")


def test_openvpn_argv_has_no_crypto_fast_io_udp_tun(tmp_path):
    a, _ = fake_nodes(tmp_path)
    argv = openvpn.argv(a, 1472)
    pairs = {flag: argv[i + 1] for i, flag in enumerate(argv[:-1])
             if flag.startswith("--") and not argv[i + 1].startswith("--")}
    assert argv[0] == "openvpn" and "--fast-io" in argv
    assert pairs["--cipher"] == pairs["--data-ciphers"] == pairs["--auth"] == "none"
    assert pairs["--proto"] == "udp" and pairs["--dev-type"] == "tun"
    assert pairs["--local"] == "10.0.0.1" and pairs["--remote"] == "10.0.0.2"
    assert pairs["--tun-mtu"] == "1472"
    assert "--secret" not in argv and "--tls-client" not in argv


def test_tinc_files_router_mode_without_cipher(tmp_path):
    a, b = fake_nodes(tmp_path)
    conf_a, conf_b = tinc.tinc_conf(a), tinc.tinc_conf(b)
    assert "Mode = router" in conf_a and "Name = node1" in conf_a
    assert "ConnectTo = node2" in conf_a and "ConnectTo" not in conf_b
    host = tinc.host_file("10.0.0.2", "10.244.2.0/24", "\n-----BEGIN RSA PUBLIC KEY-----\nK\n")
    assert host.startswith("Address = 10.0.0.2 655\nSubnet = 10.244.2.0/24\n")
    assert "Cipher = none\n" in host and "Digest = none\n" in host
    assert host.endswith("-----BEGIN RSA PUBLIC KEY-----\nK\n")


def test_wireguard_setconf_and_device_names(tmp_path):
    a, b = fake_nodes(tmp_path, tag="b1234567z")
    text = wireguard_go.setconf("PRIV", "PUB", a)
    assert "PrivateKey = PRIV" in text and "PublicKey = PUB" in text
    assert "Endpoint = 10.0.0.2:51820" in text and "AllowedIPs = 10.244.2.0/24" in text
    names = {wireguard_go.device_name(n) for n in (a, b)}
    assert len(names) == 2 and all(len(n) <= 15 for n in names)   # IFNAMSIZ, one socket each


def test_tunnel_mtus_fit_the_underlay():
    for t in tunnels.TOOLS:
        assert t.mtu + t.overhead <= 1500, t.name
        assert t.method and t.note
    assert "ENCRYPTS" in ladder.BY_NAME["wireguard-go"].note
    assert [t.name for t in tunnels.TOOLS if t.encrypts] == ["wireguard-go"]


def test_missing_package_is_unavailable_not_an_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    for t in tunnels.TOOLS:
        assert t.available() == f"{t.package} not installed"


# --- the ladder and the command line --------------------------------------------------------

def test_tunnel_rungs_are_host_gw_labs_with_their_own_mtu():
    for name in ("fastd", "openvpn", "tinc", "wireguard-go"):
        dp = ladder.BY_NAME[name]
        assert dp.backend == "host-gw" and dp.tunnel is not None and not dp.runs_daemon
        assert dp.pod_mtu() == dp.tunnel.mtu and dp.overhead == dp.tunnel.overhead
    assert ladder.BY_NAME["wireguard-go"].pod_mtu() == 1420
    assert ladder.BY_NAME["kernel-vxlan"].pod_mtu() == 1450


def test_cmd_rung_from_the_example(tmp_path):
    (dp,) = [d for d in ladder.select([f"cmd:{EXAMPLE}"]) if d.name.startswith("cmd:")]
    assert dp.overhead == 50 and dp.pod_mtu() == 1450 and dp.backend == "host-gw"
    assert next(d.name for d in ladder.select([f"cmd:{EXAMPLE}"])) == "kernel-vxlan"


def test_cmd_path_errors_are_one_line_user_errors(tmp_path):
    assert check_path("") is not None
    assert "no such file" in check_path(str(tmp_path / "nope"))
    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\necho 1\n")
    assert "not executable" in check_path(str(plain))
    liar = tmp_path / "liar"
    liar.write_text("#!/bin/sh\necho lots\n")
    liar.chmod(liar.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(TunnelError, match="must print the bytes"):
        ask_overhead(str(liar))
    with pytest.raises(CommandError, match="--dataplane cmd:PATH: .*no such file"):
        command.choose(parse("--dataplane", f"cmd:{tmp_path / 'nope'}"))
    with pytest.raises(CommandError, match="--dataplane cmd:PATH: .*must print"):
        command.choose(parse("--dataplanes", f"kernel-vxlan,cmd:{liar}"))


def test_dataplane_flag_adds_to_the_selection():
    chosen, _ = command.choose(parse("--dataplanes", "host-gw", "--dataplane", f"cmd:{EXAMPLE}"))
    assert [dp.name for dp in chosen] == ["host-gw", "kernel-vxlan", f"cmd:{EXAMPLE}"]
    s = command.settings_from(parse("--quick"), chosen)
    assert max(s.udp_payloads) == 1450 - 28


def test_script_arguments(tmp_path):
    a, _ = fake_nodes(tmp_path)
    assert script_argv("/x", "up", a) == ["/x", "up", "1", "10.0.0.1", "10.0.0.2",
                                          "10.244.1.0/24", "10.244.2.0/24"]


def test_help_documents_the_cmd_contract():
    text = argparse.ArgumentParser()
    command.configure(text)
    helptext = text.format_help()
    for word in ("cmd:PATH", "PATH overhead", "PATH up", "PATH down", "DATAPLANE_TUNNEL_DIR",
                 "bench-tunnel-vxlan.sh"):
        assert word in helptext


def test_list_names_the_tunnels(capsys, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert command.main(parse("--list")) == 0
    out = capsys.readouterr().out
    for t in tunnels.TOOLS:
        assert f"unavailable: {t.package} not installed" in out


# --- for real, in namespaces -----------------------------------------------------------------

def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces")


def _lab_transfer(dp: ladder.Dataplane) -> None:
    from bench.topology import Topology
    from tests.netns import prefix

    topo = Topology(dp, prefix())
    try:
        topo.up()
        lab = topo.lab
        a, b = lab.pod(1, 1), lab.pod(2, 1)
        assert lab.ping(a, b) and lab.ping(b, a)
        route = topo.run(lab.node(1).netns, ["ip", "-o", "route", "get", str(b.ip)]).stdout
        assert " dev eth0 " not in route, route            # through the tunnel, not host-gw
        mtu = topo.run(a.netns, ["cat", "/sys/class/net/eth0/mtu"]).stdout.strip()
        assert int(mtu) == dp.pod_mtu()
        result = lab.tcp_check(a, b, 2 << 20)
        assert result.ok, result
        pids = topo.daemon_pids()
        if dp.tunnel.routes_itself:
            assert pids == []                            # the vxlan example runs no daemon
        else:
            assert len(pids) == 2
    finally:
        topo.down()
        procs = subprocess.run(["pgrep", "-f", topo.prefix], capture_output=True, text=True,
                               check=False)
        assert procs.stdout.strip() == ""
    assert not (Path(topology_root()) / topo.prefix).exists()
    if dp.tunnel is not None and not dp.tunnel.routes_itself:
        for pid in pids:
            assert not os.path.exists(f"/proc/{pid}")


def topology_root() -> str:
    from bench.topology import STATE_ROOT
    return STATE_ROOT


@pytest.mark.netns
@pytest.mark.parametrize("name", ["fastd", "openvpn", "tinc", "wireguard-go"])
def test_tunnel_carries_pod_traffic(name):
    _require_root()
    dp = ladder.BY_NAME[name]
    reason = dp.tunnel.available()
    if reason is not None:
        pytest.skip(f"{reason}: bench-only package, `make test` does not install it "
                    "(`make bench` does: BENCH_APT_PACKAGES)")
    _lab_transfer(dp)


@pytest.mark.netns
def test_cmd_rung_with_the_vxlan_example():
    _require_root()
    (dp,) = [d for d in ladder.select([f"cmd:{EXAMPLE}"]) if d.name.startswith("cmd:")]
    _lab_transfer(dp)


@pytest.mark.netns
def test_failed_cmd_up_still_runs_down_and_leaves_nothing(tmp_path):
    _require_root()
    from bench.topology import Topology
    from tests.netns import prefix

    marker = tmp_path / "downs"
    script = tmp_path / "broken"
    script.write_text(f"#!/bin/sh\n[ \"$1\" = overhead ] && {{ echo 0; exit 0; }}\n"
                      f"[ \"$1\" = down ] && {{ echo \"$2\" >> {marker}; exit 0; }}\n"
                      "sleep 300 &\necho nope >&2\nexit 3\n")
    script.chmod(0o755)
    dp = ladder.command_rung(f"cmd:{script}")
    assert isinstance(dp.tunnel, CommandTunnel)
    topo = Topology(dp, prefix())
    with pytest.raises(TunnelError, match="exited 3: nope"):
        try:
            topo.up()
        finally:
            topo.down()
    assert marker.read_text().split() == ["1"]          # node 1's up failed: its down ran
    assert subprocess.run(["ip", "netns", "list"], capture_output=True,
                          text=True, check=False).stdout.count(topo.prefix) == 0
