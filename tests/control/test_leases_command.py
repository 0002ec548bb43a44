"""`dataplane leases`: the table, --json, --all and user errors, through the module cli.py loads."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from conftest import make_store_dir
from dataplane.errors import CommandError
from dataplane.lease import LeaseAttrs
from dataplane.store import command
from dataplane.store.directory import DirectoryStore


def leases(*argv: str) -> int:
    """As cli.py runs a command: parse with the module's configure(), then call main()."""
    parser = argparse.ArgumentParser(prog="dataplane leases")
    command.configure(parser)
    return command.main(parser.parse_args(list(argv)))


def seed(store_dir: Path) -> None:
    async def go() -> None:
        store = DirectoryStore(store_dir)
        await store.acquire_lease(LeaseAttrs("10.99.0.2"), requested=IPv4Network("10.244.2.0/24"))
        await store.acquire_lease(
            LeaseAttrs("10.99.0.1", "vxlan", {"VNI": 1, "VtepMAC": "0a:00:00:00:00:01"}),
            requested=IPv4Network("10.244.1.0/24"), ttl=90)
        await store.acquire_lease(LeaseAttrs("10.99.0.3"), requested=IPv4Network("10.244.3.0/24"))
    asyncio.run(go())
    two_days_ago = time.time() - 2 * 86400        # expired, whichever way mtime is read
    os.utime(store_dir / "subnets" / "10.244.3.0-24", (two_days_ago, two_days_ago))


def test_module_contract() -> None:
    assert isinstance(command.HELP, str) and "\n" not in command.HELP


def test_table(store_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed(store_dir)
    assert leases("--store-dir", str(store_dir)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["SUBNET", "PUBLIC IP", "BACKEND", "VTEP MAC",
                                             "EXPIRES IN"]
    rows = [re.split(r"\s{2,}", line) for line in lines[1:]]
    assert rows[0][:4] == ["10.244.1.0/24", "10.99.0.1", "vxlan", "0a:00:00:00:00:01"]
    assert re.fullmatch(r"1m[23]\ds", rows[0][4])
    assert rows[1][:4] == ["10.244.2.0/24", "10.99.0.2", "udp", "-"]
    assert re.fullmatch(r"23h5\dm", rows[1][4])
    assert len(rows) == 2                                       # the expired one is not listed


def test_all_includes_expired(store_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed(store_dir)
    assert leases("--store-dir", str(store_dir), "--all") == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert re.split(r"\s{2,}", last) == ["10.244.3.0/24", "10.99.0.3", "udp", "-", "expired"]


def test_json(store_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed(store_dir)
    assert leases("--store-dir", str(store_dir), "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["subnet"] for d in doc] == ["10.244.1.0/24", "10.244.2.0/24"]
    first = doc[0]
    assert first["key"] == "10.244.1.0-24" and first["vtep_mac"] == "0a:00:00:00:00:01"
    assert first["backend_type"] == "vxlan" and 80 <= first["expires_in"] <= 90
    assert first["value"] == {"PublicIP": "10.99.0.1", "PublicIPv6": None, "BackendType": "vxlan",
                              "BackendData": {"VNI": 1, "VtepMAC": "0a:00:00:00:00:01"}}
    assert doc[1]["backend_type"] is None and doc[1]["expired"] is False


def test_empty_store(store_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert leases("--store-dir", str(store_dir)) == 0
    assert capsys.readouterr().out == "no leases\n"
    assert leases("--store-dir", str(store_dir), "--json") == 0
    assert json.loads(capsys.readouterr().out) == []


def test_missing_store_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=f"{tmp_path / 'nope'}: no such store directory"):
        leases("--store-dir", str(tmp_path / "nope"))


def test_leases_need_no_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_store_dir(tmp_path / "s", config=None)
    assert leases("--store-dir", str(d)) == 0
    assert capsys.readouterr().out == "no leases\n"
