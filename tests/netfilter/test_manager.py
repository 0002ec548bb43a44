"""TrafficManager, remove_rules and the flags, on fake backends and fake tools (no root):
what start does in what order, which failures stop the daemon, how the resync behaves."""

from __future__ import annotations

import argparse
import asyncio
import logging
import stat
from ipaddress import IPv4Network

import pytest

import dataplane.netfilter as nf
from dataplane.netconf import ConfigError, parse_network_config
from dataplane.netfilter import rules as R
from dataplane.netfilter.iptables import IptablesBackend
from dataplane.netfilter.options import add_netfilter_arguments, netfilter_options
from dataplane.netfilter.runner import NetfilterError, Runner

N = IPv4Network("10.244.0.0/16")
S = IPv4Network("10.244.3.0/24")


class FakeBackend:
    def __init__(self, name: str, *, available: bool = True, fail_install: set[str] = (),
                 random_fully: bool = True) -> None:
        self.name = name
        self._available = available
        self.fail_install = set(fail_install)
        self._random_fully = random_fully
        self.installed: dict[str, R.RuleSet] = {}
        self.calls: list[str] = []

    def available(self) -> bool:
        return self._available

    def random_fully(self) -> bool:
        return self._random_fully

    def install(self, ruleset: R.RuleSet) -> None:
        self.calls.append(f"install {ruleset.part}")
        if ruleset.part in self.fail_install:
            raise NetfilterError("iptables-restore: line 2 failed")
        self.installed[ruleset.part] = ruleset

    def in_sync(self, ruleset: R.RuleSet) -> bool:
        return self.installed.get(ruleset.part) == ruleset

    def remove(self) -> list[str]:
        self.calls.append("remove")
        gone = sorted(self.installed)
        self.installed.clear()
        return gone


def manager(ip_masq: bool = True, *, primary: FakeBackend | None = None,
            other: FakeBackend | None = None, **options) -> nf.TrafficManager:
    m = nf.TrafficManager(N, S, ip_masq=ip_masq, options=nf.NetfilterOptions(**options))
    m.backend = primary or FakeBackend("iptables")
    m.other = other or FakeBackend("nftables")
    return m


def test_start_cleans_the_other_backend_then_installs_masq_and_forward() -> None:
    other = FakeBackend("nftables")
    other.installed = {"masq": R.masq_rules(N, S, random_fully=True)}
    m = manager(other=other)
    m.setup()
    assert other.calls == ["remove"] and other.installed == {}
    assert m.backend.calls == ["install masq", "install forward"]
    assert m.backend.installed["masq"] == R.masq_rules(N, S, random_fully=True)
    assert m.backend.installed["forward"] == R.forward_rules(N)


def test_without_ip_masq_only_forward_and_without_forward_nothing() -> None:
    m = manager(ip_masq=False)
    m.setup()
    assert list(m.backend.installed) == ["forward"]
    m = manager(ip_masq=False, forward_rules=False)
    m.setup()
    assert m.backend.installed == {} and m.parts == []


def test_random_fully_off_when_unsupported_or_disabled() -> None:
    m = manager(primary=FakeBackend("iptables", random_fully=False))
    m.setup()
    assert not any(r.random_fully for r in m.backend.installed["masq"].rules)
    m = manager(random_fully=False)
    m.setup()
    assert not any(r.random_fully for r in m.backend.installed["masq"].rules)


def test_a_refused_masquerade_stops_the_start_with_one_line() -> None:
    m = manager(primary=FakeBackend("iptables", fail_install={"masq"}))
    with pytest.raises(NetfilterError) as err:
        m.setup()
    message = str(err.value)
    assert message.startswith("--ip-masq: cannot install the masquerade rules with iptables")
    assert "line 2 failed" in message and "\n" not in message


def test_a_refused_forward_rule_is_a_warning_and_retried(caplog) -> None:
    primary = FakeBackend("iptables", fail_install={"forward"})
    m = manager(ip_masq=False, primary=primary)
    with caplog.at_level(logging.WARNING):
        m.setup()
    assert "--iptables-forward-rules=false" in caplog.text
    primary.fail_install.clear()
    assert m.ensure() == ["forward"] and "forward" in primary.installed


def test_ensure_reinstalls_only_what_changed() -> None:
    m = manager()
    m.setup()
    assert m.ensure() == []
    del m.backend.installed["masq"]
    assert m.ensure() == ["masq"]
    assert m.ensure() == []


def test_keep_resyncs_and_logs_a_failure_once(caplog) -> None:
    m = manager(resync=0.01)
    m.setup()
    calls = {"n": 0}

    def broken() -> list[str]:
        calls["n"] += 1
        raise NetfilterError("iptables-save failed: locked")

    m.ensure = broken

    async def run() -> None:
        task = asyncio.create_task(m.keep())
        while calls["n"] < 5:
            await asyncio.sleep(0.01)
        task.cancel()

    with caplog.at_level(logging.WARNING):
        asyncio.run(run())
    assert caplog.text.count("netfilter resync failed") == 1


def test_remove_rules_skips_backends_without_tools(monkeypatch) -> None:
    made = {"iptables": FakeBackend("iptables", available=False),
            "nftables": FakeBackend("nftables")}
    made["nftables"].installed = {"masq": None}
    monkeypatch.setattr(nf, "backend", lambda name, netns=None: made[name])
    assert nf.remove_rules() == ["nftables: masq"]
    assert made["iptables"].calls == []
    assert nf.remove_rules("iptables") == []


def _fake_tool(directory, name: str, script: str) -> None:
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_iptables_backend_errors_are_one_line(tmp_path, monkeypatch) -> None:
    """A kernel that refuses: iptables-restore fails, and says why on its second line."""
    _fake_tool(tmp_path, "iptables", 'echo "iptables v1.8.9 (nf_tables)"')
    _fake_tool(tmp_path, "iptables-save", "echo '*nat'; echo COMMIT")
    _fake_tool(tmp_path, "iptables-restore",
               "cat >/dev/null; echo 'iptables-restore v1.8.9 (nf_tables): '"
               " >&2; echo 'line 3: RULE_APPEND failed (Operation not supported)' >&2; exit 1")
    monkeypatch.setenv("PATH", str(tmp_path))
    be = IptablesBackend(Runner())
    assert be.random_fully()
    with pytest.raises(NetfilterError) as err:
        be.install(R.masq_rules(N, S, random_fully=True))
    assert "iptables-restore --noflush --wait failed to install FLANNEL-POSTRTG" in str(err.value)
    assert "line 3: RULE_APPEND failed (Operation not supported)" in str(err.value)
    assert "\n" not in str(err.value)


def test_tool_complaints_on_one_line() -> None:
    from dataplane.netfilter.runner import first_error
    assert first_error("internal:0:0-0: Error: Could not process rule: No such file\n"
                       "add rule ip x y accept\n^^^^\n") == \
        "internal:0:0-0: Error: Could not process rule: No such file"
    assert first_error('iptables-restore v1.8.9 (nf_tables): unknown option "--bogus"\n'
                       "Error occurred at line: 2\nTry `iptables-restore -h' for more\n") == \
        'iptables-restore v1.8.9 (nf_tables): unknown option "--bogus"; Error occurred at line: 2'
    assert first_error("") == "no message"


def test_missing_tool_names_the_package(monkeypatch, tmp_path) -> None:
    runner = Runner()
    monkeypatch.setattr(runner, "which", lambda tool: None)
    with pytest.raises(NetfilterError, match=r"nft not found, needed to x \(apt-get install "
                                             r"nftables\)"):
        runner.run("nft", ["-j"], why="to x")


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_netfilter_arguments(p)
    return p.parse_args(argv)


def test_flags_as_flanneld_takes_them() -> None:
    a = _parse()
    assert (a.ip_masq, a.iptables_forward_rules, a.iptables_resync) == (False, True, 5)
    assert netfilter_options(a) == nf.NetfilterOptions(forward_rules=True, resync=5.0,
                                                       random_fully=True)
    a = _parse("--ip-masq", "--iptables-forward-rules=false", "--iptables-resync", "30",
               "--ip-masq-fully-random-disable")
    assert a.ip_masq is True
    assert netfilter_options(a) == nf.NetfilterOptions(forward_rules=False, resync=30.0,
                                                       random_fully=False)
    assert _parse("--ip-masq=false").ip_masq is False


@pytest.mark.parametrize("argv", [["--iptables-resync", "0"], ["--iptables-resync", "x"],
                                  ["--iptables-forward-rules=maybe"]])
def test_bad_flags_are_refused(argv, capsys) -> None:
    with pytest.raises(SystemExit):
        _parse(*argv)
    assert argv[0].split("=")[0] in capsys.readouterr().err


def test_enable_nftables_in_the_network_config() -> None:
    base = '{"Network": "10.244.0.0/16"'
    assert parse_network_config(base + "}").enable_nftables is False
    assert parse_network_config(base + ', "EnableNFTables": true}').enable_nftables is True
    assert parse_network_config(base + ', "enablenftables": false}').enable_nftables is False
    conf = parse_network_config(base + ', "EnableNFTables": true}')
    assert parse_network_config(conf.to_json()).enable_nftables is True
    with pytest.raises(ConfigError) as err:
        parse_network_config('{\n "Network": "10.244.0.0/16",\n "EnableNFTables": "true"\n}')
    assert str(err.value) == ('network config, line 3: EnableNFTables: must be true or false, '
                              'got a string "true"')
