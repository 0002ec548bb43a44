"""`dataplane run` refuses bad situations with one clear line, and touches nothing first.

Through the real command line, in this process, on a FakeHost (no root): config, flag and store
errors, busy ports. What only the kernel can say (an address not on this host's interfaces,
no CAP_NET_ADMIN) runs the daemon in a namespace."""

from __future__ import annotations

import socket
import subprocess

import pytest

from dataplane.testing import FakeNetwork
from tests import netns
from tests.daemon.inprocess import cli_run, leases


class Node:
    """One machine's FakeHost and the store directory its daemon is pointed at."""

    def __init__(self, tmp_path, capsys) -> None:
        self.net = FakeNetwork()
        self.fake = self.net.host()
        self.ip = self.fake.address
        self.store = tmp_path / "store"
        self.store.mkdir()
        (self.store / "config").write_text('{"Network": "10.244.0.0/16"}\n')
        self.capsys = capsys

    def config(self, text: str) -> None:
        (self.store / "config").write_text(text)

    def run(self, *args: str, store=None):
        return cli_run(store or self.store, self.fake, *args, capsys=self.capsys)

    def leases(self) -> dict[str, dict]:
        return leases(self.store)


@pytest.fixture
def node(tmp_path, capsys):
    n = Node(tmp_path, capsys)
    yield n
    n.net.close()


def refused(result, *words: str) -> str:
    """Exit status 1, one line naming the words, no traceback (an unexpected exception would
    have left cli.main and failed the test)."""
    assert result.code == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


def refused_process(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


def test_invalid_config_names_field_and_line(node):
    node.config('{\n  "SubnetLen": 24,\n  "Network": "10.244.0.0/33"\n}\n')
    refused(node.run(), "Network", "line 3")
    assert node.leases() == {}


def test_config_syntax_error_has_line(node):
    node.config('{\n  "Network": "10.244.0.0/16",\n  "Backend": {"Type": "vxlan",}\n}\n')
    refused(node.run(), "line 3")


def test_unknown_backend_is_refused(node):
    node.config('{"Network": "10.244.0.0/16", "Backend": {"Type": "wireguard"}}')
    refused(node.run(), "wireguard")


def test_subnet_outside_network(node):
    refused(node.run("--subnet", "10.10.1.0/24"), "10.10.1.0/24")
    assert node.leases() == {}


def test_subnet_taken_names_holder(node):
    (node.store / "subnets").mkdir()
    (node.store / "subnets" / "10.244.7.0-24").write_text(
        '{"PublicIP":"10.99.0.2","PublicIPv6":null}')
    refused(node.run("--subnet", "10.244.7.0/24"), "10.244.7.0/24", "10.99.0.2")
    assert list(node.leases()) == ["10.244.7.0-24"]


def test_port_in_use(node):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind((node.ip, 8285))
        refused(node.run(), "port", "in use")
        assert node.leases() == {}, "a refused start must not keep a lease"


@pytest.mark.netns
def test_public_ip_not_ours(host):
    """The underlay is chosen from the kernel's interfaces (tests/daemon/test_underlay.py)."""
    result = subprocess.run(
        ["ip", "netns", "exec", host.ns, *netns.dataplane_cmd(
            "run", "--store-dir", str(host.store), "--public-ip", "10.99.0.9")],
        capture_output=True, text=True, env=netns.env(), timeout=30)
    refused_process(result, "10.99.0.9")


def test_missing_store(node, tmp_path):
    refused(node.run(store=tmp_path / "nowhere"), str(tmp_path / "nowhere"))


@pytest.mark.netns
def test_not_root_is_refused():
    """Refused without CAP_NET_ADMIN. Root with that capability dropped from its bounding set
    stands in for an unprivileged user: such a user could not even read a clone under a
    mode-700 home directory such as /root."""
    netns.require_root()
    result = subprocess.run(["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin",
                             *netns.dataplane_cmd("run")],
                            capture_output=True, text=True, env=netns.env(), timeout=30)
    refused_process(result, "root")


@pytest.mark.parametrize("flag", [["--lease-ttl", "0"], ["--subnet", "10.244.1.1/24"],
                                  ["--fastpath", "rust"]])
def test_bad_flags(flag, capsys):
    from dataplane import cli
    with pytest.raises(SystemExit) as exit:
        cli.main(["run", *flag])
    assert exit.value.code == 2 and flag[0] in capsys.readouterr().err


def test_busy_metrics_port_names_itself_not_the_tunnel(node):
    with socket.socket() as holder:             # every address (the default --healthz-ip's)
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        err = refused(node.run("--healthz-port", str(port)), f"0.0.0.0:{port}", "/healthz",
                      "in use")
        assert "tunnel" not in err
        assert node.leases() == {}, "a refused start must not keep a lease"


def test_healthz_ip_not_on_this_host_names_itself(node):
    err = refused(node.run("--healthz-ip", "10.99.0.77", "--healthz-port", "9100"),
                  "10.99.0.77:9100", "not an address of this host")
    assert "tunnel" not in err
    assert node.leases() == {}


def test_tunnel_port_in_use_names_its_address_and_port(node):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder, socket.socket() as free:
        holder.bind((node.ip, 8285))
        free.bind(("127.0.0.1", 0))                 # a metrics port that is free
        port = free.getsockname()[1]
        free.close()
        refused(node.run("--healthz-ip", "127.0.0.1", "--healthz-port", str(port)),
                "tunnel port", f"{node.ip}:8285", "in use")


@pytest.mark.parametrize("flag", [["--subnet-lease-renew-margin", "1440"],
                                  ["--lease-ttl", "600", "--subnet-lease-renew-margin", "20"]])
def test_renew_margin_out_of_range_is_refused_before_anything(node, flag):
    refused(node.run(*flag), "--subnet-lease-renew-margin")
    assert node.leases() == {}


def test_bad_flanneld_variable_is_a_usage_error(monkeypatch, capsys):
    from dataplane import cli
    monkeypatch.setenv("FLANNELD_HEALTHZ_PORT", "ninety")
    with pytest.raises(SystemExit) as exit:
        cli.main(["run"])
    assert exit.value.code == 2 and "FLANNELD_HEALTHZ_PORT='ninety'" in capsys.readouterr().err


@pytest.mark.parametrize("backend, field", [
    ('{"Type": "vxlan",\n  "GBP": true}', "Backend.GBP"),
    ('{"Type": "vxlan",\n  "Learning": true}', "Backend.Learning"),
    ('{"Type": "udp",\n  "DirectRouting": true}', "Backend.DirectRouting"),
])
def test_refused_option_stops_the_daemon_with_one_line(node, backend, field):
    node.config('{"Network": "10.244.0.0/16",\n "Backend": ' + backend + '}\n')
    result = node.run()
    assert result.code == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if field in x]
    assert "line 3" in line
    assert node.leases() == {}
