"""/run/flannel/subnet.env as flanneld writes it, and read back."""

from __future__ import annotations

import os
import stat
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from dataplane import subnetenv

FLANNEL = ("FLANNEL_NETWORK=10.244.0.0/16\n"
           "FLANNEL_SUBNET=10.244.1.1/24\n"
           "FLANNEL_MTU=1450\n"
           "FLANNEL_IPMASQ=true\n")


def test_render_is_flanneld_format() -> None:
    assert subnetenv.render(network=IPv4Network("10.244.0.0/16"),
                            subnet=IPv4Network("10.244.1.0/24"), mtu=1450, ipmasq=True) == FLANNEL
    assert subnetenv.render(network=IPv4Network("10.5.0.0/24"),
                            subnet=IPv4Network("10.5.0.64/26"), mtu=1472, ipmasq=False) == (
        "FLANNEL_NETWORK=10.5.0.0/24\nFLANNEL_SUBNET=10.5.0.65/26\n"
        "FLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n")


def test_write_creates_the_directory_and_a_0644_file(tmp_path: Path) -> None:
    path = tmp_path / "run" / "flannel" / "subnet.env"
    subnetenv.write(path, network=IPv4Network("10.244.0.0/16"),
                    subnet=IPv4Network("10.244.1.0/24"), mtu=1450, ipmasq=True)
    assert path.read_text() == FLANNEL
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(path.parent) == ["subnet.env"]           # no temp file left behind


def test_write_replaces_atomically_and_keeps_the_mode(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    path.write_text("old\n")
    path.chmod(0o600)
    inode = path.stat().st_ino
    subnetenv.write(path, network=IPv4Network("10.244.0.0/16"),
                    subnet=IPv4Network("10.244.1.0/24"), mtu=1450, ipmasq=True)
    assert path.read_text() == FLANNEL
    assert path.stat().st_ino != inode                          # renamed into place
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_read_returns_the_pairs(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    path.write_text(FLANNEL)
    assert subnetenv.read(path) == {"FLANNEL_NETWORK": "10.244.0.0/16",
                                    "FLANNEL_SUBNET": "10.244.1.1/24", "FLANNEL_MTU": "1450",
                                    "FLANNEL_IPMASQ": "true"}


def test_read_accepts_env_file_syntax(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    path.write_text('# written by hand\n\nexport FLANNEL_SUBNET="10.244.9.1/24"\n'
                    "FLANNEL_MTU=1400 # comment\nFLANNEL_IPMASQ='false'\nnonsense\n")
    assert subnetenv.read(path) == {"FLANNEL_SUBNET": "10.244.9.1/24", "FLANNEL_MTU": "1400",
                                    "FLANNEL_IPMASQ": "false"}


def test_read_of_a_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        subnetenv.read(tmp_path / "none.env")


def test_previous_subnet(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    assert subnetenv.previous_subnet(path) is None
    path.write_text(FLANNEL)
    assert subnetenv.previous_subnet(path) == IPv4Network("10.244.1.0/24")
    path.write_text("FLANNEL_SUBNET=nonsense\n")
    assert subnetenv.previous_subnet(path) is None
    path.write_text("FLANNEL_NETWORK=10.244.0.0/16\n")
    assert subnetenv.previous_subnet(path) is None
