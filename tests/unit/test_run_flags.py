"""`dataplane run`'s flags as flanneld's: FLANNELD_* environment for every flag (the command
line wins), --iface variants, the renew margin, --healthz-ip's default, --version, -v after
the command, and which loggers -v and -vv open. No root needed: parsing only."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys

import pytest

from dataplane import __version__
from dataplane.cli import QuietLibraries, apply_env, build_parser, env_name
from dataplane.daemon.command import renew_margin
from dataplane.errors import CommandError
from tests import netns


def parse(argv: list[str], environ: dict[str, str] | None = None) -> argparse.Namespace:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    apply_env(parser, args, argv, environ or {})
    return args


def test_every_long_flag_of_run_has_its_flanneld_variable():
    parser = build_parser(["run"])
    names = {env_name("FLANNELD", a) for a in parser._chosen_parser._actions} - {None}
    for expected in ("FLANNELD_IFACE", "FLANNELD_IFACE_REGEX", "FLANNELD_IFACE_CAN_REACH",
                     "FLANNELD_PUBLIC_IP", "FLANNELD_SUBNET_FILE", "FLANNELD_IP_MASQ",
                     "FLANNELD_ETCD_ENDPOINTS", "FLANNELD_ETCD_PREFIX", "FLANNELD_HEALTHZ_IP",
                     "FLANNELD_HEALTHZ_PORT", "FLANNELD_SUBNET_LEASE_RENEW_MARGIN",
                     "FLANNELD_STORE_DIR", "FLANNELD_WORKERS", "FLANNELD_LEASE_TTL"):
        assert expected in names
    assert "FLANNELD_HELP" not in names and "FLANNELD_VERSION" not in names


def test_environment_fills_in_what_the_command_line_leaves():
    args = parse(["run"], {"FLANNELD_IFACE": "eth1", "FLANNELD_PUBLIC_IP": "10.0.0.7",
                           "FLANNELD_IP_MASQ": "true", "FLANNELD_HEALTHZ_PORT": "9100",
                           "FLANNELD_SUBNET": "10.244.3.0/24", "FLANNELD_OFFLOAD": "off",
                           "FLANNELD_SUBNET_LEASE_RENEW_MARGIN": "30",
                           "FLANNELD_ETCD_ENDPOINTS": "http://10.0.0.5:2379"})
    assert args.iface == ["eth1"] and args.public_ip == "10.0.0.7" and args.ip_masq is True
    assert args.healthz_port == 9100 and str(args.subnet) == "10.244.3.0/24"
    assert args.offload == "off" and args.subnet_lease_renew_margin == 30
    assert [e.url for e in args.etcd_endpoints] == ["http://10.0.0.5:2379"]


def test_command_line_wins_over_environment():
    env = {"FLANNELD_IFACE": "eth1", "FLANNELD_HEALTHZ_PORT": "9100",
           "FLANNELD_ETCD_ENDPOINTS": "http://10.0.0.5:2379", "FLANNELD_IP_MASQ": "true"}
    args = parse(["run", "--iface", "eth2", "--iface", "eth3", "--healthz-port", "9200",
                  "--store-dir", "/tmp/s"], env)
    assert args.iface == ["eth2", "eth3"]                  # not appended to eth1
    assert args.healthz_port == 9200
    # --store-dir given: the environment's etcd (same exclusive group) is not used
    assert args.store_dir == "/tmp/s" and args.etcd_endpoints is None
    assert args.ip_masq is True                            # not on the command line: env


@pytest.mark.parametrize("value,expected", [("1", True), ("t", True), ("TRUE", True),
                                            ("false", False), ("0", False), ("F", False)])
def test_boolean_variables_read_as_go_does(value, expected):
    assert parse(["run"], {"FLANNELD_IP_MASQ": value}).ip_masq is expected


@pytest.mark.parametrize("env,words", [
    ({"FLANNELD_IP_MASQ": "yes"}, ["FLANNELD_IP_MASQ", "true or false"]),
    ({"FLANNELD_HEALTHZ_PORT": "http"}, ["FLANNELD_HEALTHZ_PORT", "http"]),
    ({"FLANNELD_SUBNET": "10.244.1.1/24"}, ["FLANNELD_SUBNET", "not an IPv4 subnet"]),
    ({"FLANNELD_FASTPATH": "rust"}, ["FLANNELD_FASTPATH", "rust"]),
    ({"FLANNELD_STORE_DIR": "/s", "FLANNELD_ETCD_ENDPOINTS": "http://a:1"},
     ["FLANNELD_STORE_DIR", "FLANNELD_ETCD_ENDPOINTS", "not both"]),
])
def test_bad_variables_are_usage_errors_naming_them(env, words, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(["run"], env)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    for word in words:
        assert word in err, err


def test_a_flag_added_later_by_another_package_gets_its_variable_too(monkeypatch):
    from dataplane.daemon import command

    original = command.configure

    def configure(p):
        original(p)
        extra = p.add_argument_group("extra")
        extra.add_argument("--later-count", type=int, default=5)
        extra.add_argument("--later-switch", action=argparse.BooleanOptionalAction,
                           default=True)
    monkeypatch.setattr(command, "configure", configure)
    args = parse(["run"], {"FLANNELD_LATER_COUNT": "7", "FLANNELD_LATER_SWITCH": "false"})
    assert args.later_count == 7 and args.later_switch is False


def test_the_nat_kube_and_etcd_flags_come_from_the_environment_too():
    args = parse(["run"], {"FLANNELD_IPTABLES_RESYNC": "7",
                           "FLANNELD_IPTABLES_FORWARD_RULES": "false",
                           "FLANNELD_IP_MASQ": "true", "FLANNELD_KUBE_SUBNET_MGR": "1",
                           "FLANNELD_SET_NODE_NETWORK_UNAVAILABLE": "false",
                           "FLANNELD_ETCD_USERNAME": "flannel"})
    assert args.iptables_resync == 7 and args.iptables_forward_rules is False
    assert args.ip_masq is True and args.kube_subnet_mgr is True
    assert args.set_node_network_unavailable is False and args.etcd_username == "flannel"


def test_only_run_reads_the_environment():
    args = parse(["leases"], {"FLANNELD_STORE_DIR": "/tmp/elsewhere"})
    assert args.store_dir is None


def test_iface_flags_repeat_and_are_checked(capsys):
    args = parse(["run", "--iface", "eth0", "--iface", "10.0.0.1", "--iface-regex", "^en",
                  "--iface-regex", r"^10\.1\.", "--iface-can-reach", "10.0.0.254"])
    assert args.iface == ["eth0", "10.0.0.1"] and args.iface_regex == ["^en", r"^10\.1\."]
    assert args.iface_can_reach == "10.0.0.254"
    for bad in (["--iface-regex", "(eth"], ["--iface-can-reach", "gateway"],
                ["--public-ip", "10.0.0"], ["--healthz-ip", "localhost"]):
        with pytest.raises(SystemExit):
            parse(["run", *bad])
        assert bad[0] in capsys.readouterr().err


def test_healthz_ip_defaults_to_every_address_as_flanneld():
    assert parse(["run"]).healthz_ip == "0.0.0.0"
    assert parse(["run", "--healthz-ip", "127.0.0.1"]).healthz_ip == "127.0.0.1"


def _margin(*argv: str) -> float:
    return renew_margin(parse(["run", *argv]))


def test_renew_margin_in_minutes_as_flanneld():
    assert _margin() == 3600                                      # 60 minutes
    assert _margin("--subnet-lease-renew-margin", "90") == 5400
    assert _margin("--lease-ttl", "60") == 30                     # short TTL, default margin
    assert _margin("--lease-ttl", "600", "--subnet-lease-renew-margin", "9") == 540


@pytest.mark.parametrize("argv,words", [
    (["--subnet-lease-renew-margin", "0"], ["1 to 1439"]),
    (["--subnet-lease-renew-margin", "1440"], ["1 to 1439"]),
    (["--lease-ttl", "600", "--subnet-lease-renew-margin", "10"], ["below --lease-ttl 600"]),
])
def test_renew_margin_out_of_range_is_refused(argv, words):
    with pytest.raises(CommandError) as exc:
        _margin(*argv)
    assert all(w in str(exc.value) for w in words) and "--subnet-lease-renew-margin" in \
        str(exc.value)


def test_verbose_after_the_command_counts_too():
    args = parse(["run", "-v"])
    assert args.verbose + args.sub_verbose == 1
    args = parse(["-v", "run", "-v"])
    assert args.verbose + args.sub_verbose == 2
    args = parse(["leases", "-vv"])
    assert args.verbose + args.sub_verbose == 2


def test_library_chatter_is_filtered_below_warning():
    quiet = QuietLibraries()

    def passes(name: str, level: int) -> bool:
        return quiet.filter(logging.LogRecord(name, level, __file__, 1, "m", None, None))
    assert not passes("pyroute2", logging.DEBUG)
    assert not passes("pyroute2.netlink.core", logging.INFO)
    assert not passes("asyncio", logging.DEBUG)
    assert passes("pyroute2.netlink.core", logging.WARNING)
    assert passes("dataplane.daemon.node", logging.DEBUG)
    assert passes("pyroute2x", logging.DEBUG)              # not a child: another library


@pytest.mark.parametrize("argv", [["--version"], ["run", "--version"]])
def test_version(argv):
    out = subprocess.run([sys.executable, "-m", "dataplane", *argv], capture_output=True,
                         text=True, env=netns.env(), timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == f"dataplane {__version__}"


@pytest.mark.parametrize("verbosity,chatter", [(1, False), (2, True)])
def test_debug_is_ours_and_pyroute2s_needs_two_v(verbosity, chatter):
    """In a real process, with pyroute2 imported after logging is set up (it resets its
    logger's level then)."""
    code = ("import logging; from dataplane.cli import setup_logging; "
            f"setup_logging({verbosity}); import pyroute2; "
            "logging.getLogger('pyroute2.netlink').debug('chatter'); "
            "logging.getLogger('pyroute2').info('chatter'); "
            "logging.getLogger('pyroute2').warning('alarm'); "
            "logging.getLogger('dataplane.daemon.node').debug('ours')")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=netns.env(), timeout=30).stderr
    assert "ours" in err and "alarm" in err, err
    assert ("chatter" in err) is chatter, err
