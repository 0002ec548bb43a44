"""`dataplane run` installs flanneld's NAT and FORWARD rules before subnet.env, keeps them in
step (--iptables-resync), leaves them on stop, rewrites them without duplicates on restart, and
refuses to start with --ip-masq when they cannot be installed."""

from __future__ import annotations

import sys
import signal
import subprocess

import pytest

from tests import netns

pytestmark = pytest.mark.netns

JUMP_NAT = '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG'
JUMP_FWD = '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD'
MASQ_OUT = ('-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment '
            '"flanneld masq" -j MASQUERADE --random-fully')


def flannel_lines(ns: str) -> list[str]:
    out = netns.run("ip", "netns", "exec", ns, "iptables-save").stdout
    return [line for line in out.splitlines() if "FLANNEL" in line]


def nft_table(ns: str) -> str:
    return netns.run("ip", "netns", "exec", ns, "nft", "list", "table", "ip", "flannel-ipv4",
                     check=False).stdout


@pytest.fixture
def daemon(host):
    procs = []

    def start(*args: str, env_file: str = "a.env") -> subprocess.Popen:
        (host.tmp / env_file).unlink(missing_ok=True)
        proc = host.start("--subnet", "10.244.1.0/24", *args, env_file=env_file)
        procs.append(proc)
        netns.wait_for(lambda: (host.tmp / env_file).exists() or proc.poll() is not None,
                       what="the daemon to be ready")
        assert proc.poll() is None, proc.stdout.read()
        return proc

    def stop(proc: subprocess.Popen) -> str:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, out
        return out

    host.start_daemon, host.stop_daemon = start, stop
    yield host
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_ip_masq_installs_keeps_on_stop_and_restarts_without_duplicates(daemon):
    a = daemon.start_daemon("--ip-masq")
    lines = flannel_lines(daemon.ns)
    assert lines.count(JUMP_NAT) == 1 and lines.count(JUMP_FWD) == 1 and MASQ_OUT in lines
    assert len(lines) == 12, lines            # 2 chains, 2 jumps, 6 + 2 rules
    assert "FLANNEL_IPMASQ=true" in (daemon.tmp / "a.env").read_text()
    out = daemon.stop_daemon(a)
    assert "masquerading pod traffic leaving 10.244.0.0/16" in out
    assert flannel_lines(daemon.ns) == lines, "a stop must keep the rules"
    for _ in range(2):
        daemon.stop_daemon(daemon.start_daemon("--ip-masq"))
        assert flannel_lines(daemon.ns) == lines


@pytest.mark.parametrize("nftables", [False, True], ids=["iptables", "nftables"])
def test_decommissioning_the_node_removes_its_rules(daemon, nftables):
    """A stop keeps the rules; `leases release --subnet-file`, run on the node, removes them
    with the lease and subnet.env, and nothing else of the table."""
    if nftables:
        daemon.config('{"Network": "10.244.0.0/16", "EnableNFTables": true}')
    daemon.stop_daemon(daemon.start_daemon("--ip-masq"))
    assert (nft_table(daemon.ns) if nftables else flannel_lines(daemon.ns))
    ipt = ["ip", "netns", "exec", daemon.ns, "iptables"]
    netns.run(*ipt, "-t", "nat", "-A", "POSTROUTING", "-s", "192.0.2.0/24", "-j", "RETURN")
    out = netns.run("ip", "netns", "exec", daemon.ns, *netns.dataplane_cmd(
        "leases", "release", "--subnet-file", str(daemon.tmp / "a.env"),
        "--store-dir", str(daemon.store)), env=netns.env()).stdout
    assert "released lease 10.244.1.0/24" in out and "removed" in out
    assert flannel_lines(daemon.ns) == [] and nft_table(daemon.ns) == ""
    assert not (daemon.tmp / "a.env").exists()
    assert "-A POSTROUTING -s 192.0.2.0/24 -j RETURN" in netns.run(
        "ip", "netns", "exec", daemon.ns, "iptables-save", "-t", "nat").stdout


def test_resync_restores_a_deleted_rule_and_a_flushed_chain(daemon):
    daemon.start_daemon("--ip-masq", "--iptables-resync", "1")
    lines = flannel_lines(daemon.ns)
    ipt = ["ip", "netns", "exec", daemon.ns, "iptables"]
    netns.run(*ipt, "-t", "nat", "-D", *MASQ_OUT.split()[1:-8], "-m", "comment", "--comment",
              "flanneld masq", "-j", "MASQUERADE", "--random-fully")
    assert MASQ_OUT not in flannel_lines(daemon.ns)
    netns.wait_for(lambda: flannel_lines(daemon.ns) == lines, timeout=10,
                   what="the resync to put the rule back")
    netns.run(*ipt, "-t", "filter", "-F", "FLANNEL-FWD")
    netns.run(*ipt, "-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment",
              "flanneld masq", "-j", "FLANNEL-POSTRTG")        # a duplicate jump
    netns.wait_for(lambda: flannel_lines(daemon.ns) == lines, timeout=10,
                   what="the resync to repair the chains")


def test_enable_nftables_uses_flannels_table_and_cleans_iptables(daemon):
    daemon.stop_daemon(daemon.start_daemon("--ip-masq"))
    assert flannel_lines(daemon.ns)
    daemon.config('{"Network": "10.244.0.0/16", "EnableNFTables": true}')
    proc = daemon.start_daemon("--ip-masq", "--iptables-resync", "1")
    assert flannel_lines(daemon.ns) == [], "switching to nftables removes the iptables rules"
    table = nft_table(daemon.ns)
    assert "chain postrtg" in table and "masquerade fully-random" in table
    assert "chain forward" in table
    netns.run("ip", "netns", "exec", daemon.ns, "nft", "delete", "table", "ip", "flannel-ipv4")
    netns.wait_for(lambda: nft_table(daemon.ns) == table, timeout=10,
                   what="the resync to recreate the table")
    daemon.stop_daemon(proc)
    assert nft_table(daemon.ns) == table


def test_without_ip_masq_only_forward_rules_and_they_can_be_turned_off(daemon):
    proc = daemon.start_daemon()
    assert "FLANNEL_IPMASQ=false" in (daemon.tmp / "a.env").read_text()
    daemon.stop_daemon(proc)
    assert flannel_lines(daemon.ns) == [
        ":FLANNEL-FWD - [0:0]", JUMP_FWD,
        '-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
        '-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT']
    netns.run(sys.executable, "-m", "dataplane.netfilter", "remove", "--netns", daemon.ns,
              env=netns.env())
    daemon.stop_daemon(daemon.start_daemon("--iptables-forward-rules=false"))
    assert flannel_lines(daemon.ns) == []


def test_ip_masq_refused_by_the_kernel_is_a_startup_error(daemon, tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool, script in (("iptables", 'echo "iptables v1.8.9 (nf_tables)"'),
                         ("iptables-save", "echo '*nat'; echo COMMIT"),
                         ("iptables-restore", "cat >/dev/null; echo 'iptables-restore: line 3 "
                                              "failed: Operation not supported' >&2; exit 1")):
        (fake / tool).write_text(f"#!/bin/sh\n{script}\n")
        (fake / tool).chmod(0o755)
    argv = ["ip", "netns", "exec", daemon.ns, *netns.dataplane_cmd(
        "run", "--store-dir", str(daemon.store), "--public-ip", daemon.ip,
        "--subnet-file", str(daemon.tmp / "a.env"), "--ip-masq")]
    env = netns.env()
    env["PATH"] = f"{fake}:{env['PATH']}"        # our tools first, python3 still found
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("dataplane run:")]
    assert len(errors) == 1, result.stderr
    assert "--ip-masq: cannot install the masquerade rules with iptables" in errors[0]
    assert "line 3 failed: Operation not supported" in errors[0]
    assert not (daemon.tmp / "a.env").exists()


def blackholes(ns: str) -> str:
    out = netns.run("ip", "-n", ns, "route", "show", "type", "blackhole").stdout
    return " ".join(out.replace("proto static ", "").split())


def test_ip_blackhole_route_is_kept_and_goes_with_the_node(daemon):
    """flanneld's --ip-blackhole-route: set, put back when removed, kept by a stop, removed by
    decommissioning; without the flag there is none."""
    daemon.stop_daemon(daemon.start_daemon())
    assert blackholes(daemon.ns) == ""
    proc = daemon.start_daemon("--ip-blackhole-route", "--iptables-resync", "1")
    netns.wait_for(lambda: blackholes(daemon.ns) == "blackhole 10.244.1.0/24 metric 4096",
                   what="the blackhole route")
    netns.run("ip", "-n", daemon.ns, "route", "del", "blackhole", "10.244.1.0/24",
              "metric", "4096")
    netns.wait_for(lambda: blackholes(daemon.ns) != "", what="the blackhole route back")
    daemon.stop_daemon(proc)
    assert blackholes(daemon.ns) == "blackhole 10.244.1.0/24 metric 4096"
    out = netns.run("ip", "netns", "exec", daemon.ns, *netns.dataplane_cmd(
        "leases", "release", "--subnet-file", str(daemon.tmp / "a.env"),
        "--store-dir", str(daemon.store)), env=netns.env()).stdout
    assert "removed the blackhole route to 10.244.1.0/24" in out
    assert blackholes(daemon.ns) == ""
