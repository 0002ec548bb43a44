"""flanneld's configuration of a real daemon in a namespace: FLANNELD_* variables (FLANNELD_IFACE
chooses the underlay), the command line over the environment, a NATed --public-ip, and
-v's debug lines without pyroute2's."""

from __future__ import annotations

import signal
import subprocess

import pytest

from tests import netns

pytestmark = pytest.mark.netns


def veth(host) -> str:
    return next(name for name in host.links() if name != "lo")


def start(host, *argv: str, env: dict[str, str] | None = None, verbose: str = "-v",
          while_running=None):
    path = host.tmp / "a.env"
    proc = subprocess.Popen(
        ["ip", "netns", "exec", host.ns, *netns.dataplane_cmd(
            "run", verbose, "--store-dir", str(host.store), *argv)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**netns.env(), **(env or {})})
    try:
        netns.wait_for(lambda: path.exists() or proc.poll() is not None, timeout=30,
                       what="the daemon to be ready")
        assert proc.poll() is None, proc.stdout.read()
        if while_running is not None:
            while_running()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    return proc.stdout.read(), path.read_text()


def test_flanneld_iface_chooses_the_underlay(host):
    """No --public-ip, no flags at all: everything from the environment, as in flanneld's
    systemd units (FLANNELD_IFACE by address here, the interface by name below)."""
    log, env_file = start(host, env={"FLANNELD_IFACE": "10.99.0.1",
                                     "FLANNELD_SUBNET_FILE": str(host.tmp / "a.env"),
                                     "FLANNELD_SUBNET": "10.244.5.0/24"})
    assert "FLANNEL_SUBNET=10.244.5.1/24" in env_file
    assert ("flags from the environment: FLANNELD_IFACE, FLANNELD_SUBNET, "
            "FLANNELD_SUBNET_FILE") in log
    assert host.leases()["10.244.5.0-24"]["PublicIP"] == "10.99.0.1"


def test_command_line_wins_over_flanneld_variables(host):
    log, env_file = start(host, "--subnet", "10.244.6.0/24", "--iface", veth(host),
                          env={"FLANNELD_IFACE": "nosuchdev",
                               "FLANNELD_SUBNET_FILE": str(host.tmp / "a.env"),
                               "FLANNELD_SUBNET": "10.244.5.0/24"})
    assert "FLANNEL_SUBNET=10.244.6.1/24" in env_file
    assert list(host.leases()) == ["10.244.6.0-24"]


def test_a_public_ip_behind_nat_is_published_and_we_send_from_the_interface(host):
    bound = []

    def sockets() -> None:
        bound.append(netns.run("ip", "netns", "exec", host.ns, "ss", "-Huln").stdout)
    log, _ = start(host, "--iface", veth(host), "--public-ip", "10.99.0.50",
                   "--subnet-file", str(host.tmp / "a.env"), while_running=sockets)
    (lease,) = host.leases().values()
    assert lease["PublicIP"] == "10.99.0.50"
    assert "10.99.0.1:8285" in bound[0], bound        # the interface's address, not 10.99.0.50
    warning = next(line for line in log.splitlines() if "WARNING" in line)
    assert "10.99.0.50" in warning and "10.99.0.1" in warning and "NAT" in warning


def test_debug_lines_are_ours_not_pyroute2s(host):
    log, _ = start(host, "--public-ip", "10.99.0.1", "--subnet-file", str(host.tmp / "a.env"))
    assert " DEBUG dataplane." in log
    assert " DEBUG pyroute2" not in log
