"""The store flags and `dataplane leases` against etcd: table, --json, user errors."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dataplane.errors import CommandError
from dataplane.lease import LeaseAttrs
from dataplane.store import command
from dataplane.store.directory import DirectoryStore
from dataplane.store.etcd import DEFAULT_PREFIX, EtcdStore
from dataplane.store.options import DEFAULT_ETCD_PREFIX, add_store_arguments, open_store
from tests.etcd.etcd_helpers import EtcdKind, net

ROOT = str(Path(__file__).resolve().parents[2])


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dataplane leases")
    command.configure(parser)
    return parser.parse_args(list(argv))


def leases(*argv: str) -> int:
    return command.main(parse(*argv))


def test_the_directory_store_does_not_load_the_etcd_modules() -> None:
    code = ("import sys, argparse; from dataplane.store import options; "
            "p = argparse.ArgumentParser(); options.add_store_arguments(p); "
            "options.open_store(p.parse_args(['--store-dir', '/nonexistent'])); "
            "print(sorted(m for m in sys.modules if 'etcd' in m))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": ROOT}).stdout
    assert out.strip() == "[]"
    assert DEFAULT_ETCD_PREFIX == DEFAULT_PREFIX


def test_flags_choose_the_store(tmp_path) -> None:
    store = open_store(parse("--etcd-endpoints", "http://10.0.0.1:2379,http://10.0.0.2:2379",
                             "--etcd-prefix", "/my/net/"))
    assert isinstance(store, EtcdStore)
    assert store.location == "etcd http://10.0.0.1:2379,http://10.0.0.2:2379 (prefix /my/net)"
    store = open_store(parse("--etcd-endpoints", "http://10.0.0.1:2379"))
    assert store.prefix == "/coreos.com/network"
    assert isinstance(open_store(parse("--store-dir", str(tmp_path))), DirectoryStore)
    with pytest.raises(CommandError, match="--etcd-prefix applies to the etcd store"):
        open_store(parse("--etcd-prefix", "/x"))


@pytest.mark.parametrize("argv, error", [
    (["--store-dir", "/tmp/s", "--etcd-endpoints", "http://a:2379"], "not allowed with"),
    (["--etcd-endpoints", "10.0.0.1:2379"], "expected a URL such as http://127.0.0.1:2379"),
    (["--etcd-endpoints", "http://a:2379", "--etcd-prefix", "relative"], "absolute key path"),
])
def test_bad_flags_are_usage_errors(argv: list[str], error: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="dataplane run")
    add_store_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(argv)
    assert error in capsys.readouterr().err


def seed(kind: EtcdKind) -> None:
    async def go() -> None:
        async with kind.new_store() as store:
            await store.acquire_lease(LeaseAttrs("10.99.0.2"), requested=net("10.244.2.0/24"))
            await store.acquire_lease(
                LeaseAttrs("10.99.0.1", "vxlan", {"VNI": 1, "VtepMAC": "0a:00:00:00:00:01"}),
                requested=net("10.244.1.0/24"), ttl=90)
    asyncio.run(go())


def test_table(etcd_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    kind = EtcdKind(etcd_url)
    seed(kind)
    assert leases("--etcd-endpoints", etcd_url, "--etcd-prefix", kind.prefix) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [re.split(r"\s{2,}", line) for line in lines]
    assert rows[0] == ["SUBNET", "PUBLIC IP", "BACKEND", "VTEP MAC", "EXPIRES IN"]
    assert rows[1][:4] == ["10.244.1.0/24", "10.99.0.1", "vxlan", "0a:00:00:00:00:01"]
    assert re.fullmatch(r"1m[23]\ds", rows[1][4])
    assert rows[2][:4] == ["10.244.2.0/24", "10.99.0.2", "udp", "-"]
    assert re.fullmatch(r"23h5\dm", rows[2][4])
    assert len(rows) == 3


def test_json(etcd_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    kind = EtcdKind(etcd_url)
    seed(kind)
    assert leases("--etcd-endpoints", etcd_url, "--etcd-prefix", kind.prefix, "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["subnet"] for d in doc] == ["10.244.1.0/24", "10.244.2.0/24"]
    assert doc[0]["key"] == "10.244.1.0-24" and 80 <= doc[0]["expires_in"] <= 90
    assert doc[1]["value"] == {"PublicIP": "10.99.0.2", "PublicIPv6": None}


def test_user_errors(etcd_url: str) -> None:
    with pytest.raises(CommandError, match="http://127.0.0.1:1: connection refused"):
        leases("--etcd-endpoints", "http://127.0.0.1:1")
    with pytest.raises(CommandError, match="--all applies to the directory store only"):
        leases("--etcd-endpoints", etcd_url, "--all")


def test_an_empty_prefix_has_no_leases(etcd_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    kind = EtcdKind(etcd_url, config=None)
    assert leases("--etcd-endpoints", etcd_url, "--etcd-prefix", kind.prefix) == 0
    assert capsys.readouterr().out == "no leases\n"
