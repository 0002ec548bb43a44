"""`dataplane run` refuses bad situations with one clear line, and touches nothing first."""

from __future__ import annotations

import sys
import subprocess

import pytest

from tests import netns


def refused(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


def test_invalid_config_names_field_and_line(host):
    host.config('{\n  "SubnetLen": 24,\n  "Network": "10.244.0.0/33"\n}\n')
    refused(host.run(), "Network", "line 3")
    assert host.leases() == {}


def test_config_syntax_error_has_line(host):
    host.config('{\n  "Network": "10.244.0.0/16",\n  "Backend": {"Type": "vxlan",}\n}\n')
    refused(host.run(), "line 3")


def test_unknown_backend_is_refused(host):
    host.config('{"Network": "10.244.0.0/16", "Backend": {"Type": "wireguard"}}')
    refused(host.run(), "wireguard")


def test_subnet_outside_network(host):
    refused(host.run("--subnet", "10.10.1.0/24"), "10.10.1.0/24")
    assert host.leases() == {}


def test_subnet_taken_names_holder(host):
    (host.store / "subnets").mkdir()
    (host.store / "subnets" / "10.244.7.0-24").write_text(
        '{"PublicIP":"10.99.0.2","PublicIPv6":null}')
    refused(host.run("--subnet", "10.244.7.0/24"), "10.244.7.0/24", "10.99.0.2")
    assert list(host.leases()) == ["10.244.7.0-24"]


def test_port_in_use(host):
    holder = subprocess.Popen(
        ["ip", "netns", "exec", host.ns, sys.executable, "-c",
         "import socket,sys,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
         "s.bind(('10.99.0.1', 8285)); print('bound', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "bound"
        refused(host.run(), "port", "in use")
        assert host.leases() == {}, "a refused start must not keep a lease"
    finally:
        holder.kill()
        holder.wait()


def test_public_ip_not_ours(host):
    result = subprocess.run(
        ["ip", "netns", "exec", host.ns, *netns.dataplane_cmd(
            "run", "--store-dir", str(host.store), "--public-ip", "10.99.0.9")],
        capture_output=True, text=True, env=netns.env(), timeout=30)
    refused(result, "10.99.0.9")


def test_missing_store(host, tmp_path):
    result = subprocess.run(
        ["ip", "netns", "exec", host.ns, *netns.dataplane_cmd(
            "run", "--store-dir", str(tmp_path / "nowhere"), "--public-ip", host.ip)],
        capture_output=True, text=True, env=netns.env(), timeout=30)
    refused(result, str(tmp_path / "nowhere"))


def test_not_root_is_refused():
    """Refused without CAP_NET_ADMIN. Root with that capability dropped from its bounding set
    stands in for an unprivileged user: such a user could not even read a clone under a
    mode-700 home directory such as /root."""
    netns.require_root()
    result = subprocess.run(["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin",
                             *netns.dataplane_cmd("run")],
                            capture_output=True, text=True, env=netns.env(), timeout=30)
    refused(result, "root")


@pytest.mark.parametrize("flag", [["--lease-ttl", "0"], ["--subnet", "10.244.1.1/24"],
                                  ["--fastpath", "rust"]])
def test_bad_flags(flag):
    result = subprocess.run(netns.dataplane_cmd("run", *flag), capture_output=True, text=True,
                            env=netns.env(), timeout=30)
    assert result.returncode == 2 and flag[0] in result.stderr


def test_busy_metrics_port_names_itself_not_the_tunnel(host):
    holder = subprocess.Popen(
        ["ip", "netns", "exec", host.ns, sys.executable, "-c",
         "import socket,time; s=socket.socket(); s.bind(('0.0.0.0', 9100)); s.listen(); "
         "print('bound', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "bound"
        err = refused(host.run("--healthz-port", "9100"), "0.0.0.0:9100", "/healthz", "in use")
        assert "tunnel" not in err
        assert host.leases() == {}, "a refused start must not keep a lease"
    finally:
        holder.kill()
        holder.wait()


def test_healthz_ip_not_on_this_host_names_itself(host):
    err = refused(host.run("--healthz-ip", "10.99.0.77", "--healthz-port", "9100"),
                  "10.99.0.77:9100", "not an address of this host")
    assert "tunnel" not in err
    assert host.leases() == {}


def test_tunnel_port_in_use_names_its_address_and_port(host):
    holder = subprocess.Popen(
        ["ip", "netns", "exec", host.ns, sys.executable, "-c",
         "import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
         "s.bind(('10.99.0.1', 8285)); print('bound', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "bound"
        refused(host.run("--healthz-port", "9100"), "tunnel port", "10.99.0.1:8285", "in use")
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("flag", [["--subnet-lease-renew-margin", "1440"],
                                  ["--lease-ttl", "600", "--subnet-lease-renew-margin", "20"]])
def test_renew_margin_out_of_range_is_refused_before_anything(host, flag):
    refused(host.run(*flag), "--subnet-lease-renew-margin")
    assert host.leases() == {}


def test_bad_flanneld_variable_is_a_usage_error():
    result = subprocess.run(netns.dataplane_cmd("run"), capture_output=True, text=True,
                            env={**netns.env(), "FLANNELD_HEALTHZ_PORT": "ninety"}, timeout=30)
    assert result.returncode == 2 and "FLANNELD_HEALTHZ_PORT='ninety'" in result.stderr
