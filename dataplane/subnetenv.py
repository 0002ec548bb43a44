"""`/run/flannel/subnet.env`, written as flanneld writes it and read back.

flannel's CNI plugin reads this file to configure pods (the bridge plugin's subnet, gateway,
MTU), and flanneld reads FLANNEL_SUBNET from it at startup to ask for its previous subnet again.
flanneld writes, in this order, one KEY=VALUE per line, no quoting:

    FLANNEL_NETWORK=10.244.0.0/16
    FLANNEL_SUBNET=10.244.1.1/24          (the subnet's first address: the bridge gateway)
    FLANNEL_MTU=1472
    FLANNEL_IPMASQ=false                  (Go's %v of a bool)

Atomically: a temp file in the same directory, fsynced, renamed over the old one, so a CNI
plugin running meanwhile sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from ipaddress import IPv4Network
from pathlib import Path

DEFAULT_PATH = "/run/flannel/subnet.env"


def render(*, network: IPv4Network, subnet: IPv4Network, mtu: int, ipmasq: bool) -> str:
    gateway = subnet.network_address + 1
    return (f"FLANNEL_NETWORK={network}\n"
            f"FLANNEL_SUBNET={gateway}/{subnet.prefixlen}\n"
            f"FLANNEL_MTU={mtu}\n"
            f"FLANNEL_IPMASQ={'true' if ipmasq else 'false'}\n")


def write(path: str | os.PathLike[str] = DEFAULT_PATH, *,
          network: IPv4Network, subnet: IPv4Network, mtu: int, ipmasq: bool) -> None:
    """Write the file atomically, creating its directory (0755); keeps an existing file's mode."""
    text = render(network=network, subnet=subnet, mtu=mtu, ipmasq=ipmasq)
    path = Path(path)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)          # mkstemp makes 0600; the CNI plugin reads it
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)                          # make the rename itself durable
    finally:
        os.close(dir_fd)


def read(path: str | os.PathLike[str] = DEFAULT_PATH) -> dict[str, str]:
    """KEY=VALUE pairs of an env file (as godotenv reads it: comments, `export`, quotes).

    Raises FileNotFoundError if there is no file.
    """
    values: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[len("export "):].lstrip()
            key, eq, value = line.partition("=")
            if not eq:
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            elif " #" in value:
                value = value.split(" #", 1)[0].rstrip()
            values[key.strip()] = value
    return values


def previous_subnet(path: str | os.PathLike[str] = DEFAULT_PATH) -> IPv4Network | None:
    """The subnet FLANNEL_SUBNET names (10.244.1.1/24 -> 10.244.1.0/24), as flanneld reads it
    at startup to ask for the same subnet again; None if the file or a valid entry is missing."""
    try:
        value = read(path).get("FLANNEL_SUBNET")
    except (OSError, UnicodeDecodeError):
        return None
    if not value:
        return None
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None
    return net if isinstance(net, IPv4Network) else None
