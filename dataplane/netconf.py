"""flannel's network config (`net-conf.json`, etcd key `<prefix>/config`), parsed and checked.

    {"Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": 1}}

The rules are flannel's (pkg/subnet/config.go, CheckNetworkConfig), restated:
- `Network` is required, an IPv4 CIDR. Host bits are dropped, as Go's net.ParseCIDR does.
- `SubnetLen` 0 or missing means: 24 when the network is a /22 or larger, else prefix + 2
  (a /28 at most). Otherwise it must be <= 30 and leave room for at least four subnets.
- `SubnetMin` defaults to the subnet after the network address's own (10.244.0.0/24 is never
  handed out: its .0 would be the network address), `SubnetMax` to the last subnet. Both must lie
  in the network and on a SubnetLen boundary; we also refuse Min > Max, which flannel accepts and
  then never allocates anything.
- A missing `Backend` means udp. `Backend.Type` must be one we implement: udp or vxlan.
Keys match case-insensitively, as Go's encoding/json matches them; the last match wins.

Every error is a ConfigError naming the field and the line where it stands, never a traceback.
"""

from __future__ import annotations

import ipaddress
import json
import json.decoder
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

BACKEND_TYPES = ("udp", "vxlan")
DEFAULT_PORTS = {"udp": 8285, "vxlan": 8472}
DEFAULT_VNI = 1
MAX_VNI = (1 << 24) - 1


class ConfigError(ValueError):
    """An invalid network config. str() is the whole message, with the source and line."""

    def __init__(self, problem: str, *, field: str | None = None, line: int | None = None,
                 column: int | None = None, source: str | None = None) -> None:
        self.problem = problem
        self.field = field
        self.line = line
        self.column = column
        self.source = source
        what = f"{field}: {problem}" if field else problem
        if source is None and line is None:
            super().__init__(what)           # the problem says where (e.g. a missing path)
            return
        where = source or "network config"
        if line is not None:
            where += f", line {line}"
            if column is not None:
                where += f" column {column}"
        super().__init__(f"{where}: {what}")


@dataclass(frozen=True)
class NetworkConfig:
    network: IPv4Network
    subnet_len: int
    subnet_min: IPv4Address
    subnet_max: IPv4Address
    backend_type: str          # "udp" | "vxlan"
    port: int                  # Backend.Port: the UDP port every node uses (not in the lease)
    vni: int                   # Backend.VNI
    backend: dict[str, Any]    # the raw Backend object, for options we do not model
    enable_nftables: bool = False   # EnableNFTables: flanneld's rules through nftables

    @property
    def subnet_size(self) -> int:
        return 1 << (32 - self.subnet_len)

    def to_json(self) -> str:
        """net-conf.json for this config (explicit defaults included), for tools and tests."""
        return json.dumps({
            "Network": str(self.network),
            "SubnetLen": self.subnet_len,
            "SubnetMin": str(self.subnet_min),
            "SubnetMax": str(self.subnet_max),
            "Backend": self.backend or {"Type": self.backend_type},
            **({"EnableNFTables": True} if self.enable_nftables else {}),
        }, indent=2)


def load_network_config(path: str) -> NetworkConfig:
    """Read and parse a net-conf.json file; a missing or unreadable file is a ConfigError."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError("no such file (write flannel's net-conf.json there)",
                          source=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=path) from None
    return parse_network_config(text, source=path)


def parse_network_config(text: str, *, source: str = "network config") -> NetworkConfig:
    if not text.strip():
        raise ConfigError("empty config (expected a JSON object with at least \"Network\")",
                          source=source)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc.msg}", line=exc.lineno, column=exc.colno,
                          source=source) from None
    if not isinstance(doc, dict):
        raise ConfigError(f"expected a JSON object, got {_json_type(doc)}", line=1, source=source)
    return _Checker(text, source).check(doc)


class _Checker:
    """Validates a decoded config; knows the line of every key for the error messages."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.key_lines = _key_lines(text)
        self.top_line = text[:len(text) - len(text.lstrip())].count("\n") + 1

    def fail(self, path: tuple[str, ...], problem: str) -> ConfigError:
        line = self.key_lines.get(path, self.top_line)
        return ConfigError(problem, field=".".join(path), line=line, source=self.source)

    def check(self, doc: dict[str, Any]) -> NetworkConfig:
        for name, ok in (("EnableIPv4", True), ("EnableIPv6", False)):
            key, value = _lookup(doc, name)
            if key is not None and value not in (ok, None):
                raise self.fail((key,), f"{value!r} is not supported: this dataplane is IPv4 only")

        key, value = _lookup(doc, "Network")
        if key is None:
            raise ConfigError("required (an IPv4 CIDR such as \"10.244.0.0/16\")",
                              field="Network", line=self.top_line, source=self.source)
        network = self.cidr((key,), value)

        key, value = _lookup(doc, "SubnetLen")
        subnet_len = 0 if key is None or value is None else self.integer((key,), value)
        if subnet_len == 0:
            if network.prefixlen > 28:
                raise self.fail((key or "Network",),
                                f"{network} is too small: flannel needs at least a /28 network")
            subnet_len = 24 if network.prefixlen <= 22 else network.prefixlen + 2
        elif subnet_len > 30:
            raise self.fail((key,), f"{subnet_len} is too large: at most 30 (each node needs "
                                    "room for a gateway and pods)")
        elif subnet_len < network.prefixlen + 2:
            raise self.fail((key,), f"{subnet_len} is too small for {network}: at least "
                                    f"{network.prefixlen + 2}, so the network holds four subnets")
        size = 1 << (32 - subnet_len)
        net_first = int(network.network_address)
        net_last = net_first + network.num_addresses - size

        bounds = []
        for name, default in (("SubnetMin", net_first + size), ("SubnetMax", net_last)):
            key, value = _lookup(doc, name)
            if key is None or value is None:
                bounds.append(IPv4Address(default))
                continue
            addr = self.address((key,), value)
            if addr not in network:
                raise self.fail((key,), f"{addr} is not in the network {network}")
            if int(addr) % size:
                raise self.fail((key,), f"{addr} is not on a /{subnet_len} boundary (SubnetLen)")
            bounds.append(addr)
        subnet_min, subnet_max = bounds
        if subnet_min > subnet_max:
            key, _ = _lookup(doc, "SubnetMin")
            raise self.fail((key or "SubnetMin",),
                            f"{subnet_min} is above SubnetMax {subnet_max}: no subnet to hand out")

        backend, btype, port, vni = self.backend(doc)
        key, nft = _lookup(doc, "EnableNFTables")
        if nft is not None and not isinstance(nft, bool):
            raise self.fail((key,), f"must be true or false, got {_json_type(nft)} "
                                    f"{json.dumps(nft)}")
        return NetworkConfig(network=network, subnet_len=subnet_len, subnet_min=subnet_min,
                             subnet_max=subnet_max, backend_type=btype, port=port, vni=vni,
                             backend=backend, enable_nftables=bool(nft))

    def backend(self, doc: dict[str, Any]) -> tuple[dict[str, Any], str, int, int]:
        bkey, backend = _lookup(doc, "Backend")
        if bkey is None:
            backend = {"Type": "udp"}      # flannel: no Backend means udp
            bkey = "Backend"
        elif not isinstance(backend, dict):
            raise self.fail((bkey,), f"must be an object such as {{\"Type\": \"vxlan\"}}, "
                                     f"got {_json_type(backend)}")
        key, btype = _lookup(backend, "Type")
        if key is None:
            raise self.fail((bkey,), "Type is required (\"udp\" or \"vxlan\")")
        if btype not in BACKEND_TYPES:
            raise self.fail((bkey, key), f"unknown backend type {btype!r}: this dataplane "
                                         f"implements {' and '.join(BACKEND_TYPES)}")
        key, port = _lookup(backend, "Port")
        if key is None or port is None:
            port = DEFAULT_PORTS[btype]
        else:
            port = self.integer((bkey, key), port)
            if not 1 <= port <= 65535:
                raise self.fail((bkey, key), f"{port} is not a UDP port (1-65535)")
        key, vni = _lookup(backend, "VNI")
        if key is None or vni is None:
            vni = DEFAULT_VNI
        else:
            vni = self.integer((bkey, key), vni)
            if not 0 <= vni <= MAX_VNI:
                raise self.fail((bkey, key), f"{vni} is not a VXLAN VNI (0-{MAX_VNI})")
        return backend, btype, port, vni

    def cidr(self, path: tuple[str, ...], value: Any) -> IPv4Network:
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string such as \"10.244.0.0/16\", "
                                  f"got {_json_type(value)}")
        addr, slash, plen = value.partition("/")
        if not slash:
            raise self.fail(path, f"{value!r} is not a CIDR: the prefix length (/16) is missing")
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            raise self.fail(path, f"{value!r}: {addr!r} is not an IPv4 address") from None
        if ip.version != 4:
            raise self.fail(path, f"{value!r} is IPv6: this dataplane is IPv4 only")
        if not plen.isdigit() or int(plen) > 32:
            raise self.fail(path, f"{value!r}: the prefix length must be 0-32, not {plen!r}")
        # Host bits are dropped, as Go's net.ParseCIDR does for flannel.
        return IPv4Network((ip, int(plen)), strict=False)

    def address(self, path: tuple[str, ...], value: Any) -> IPv4Address:
        if not isinstance(value, str):
            raise self.fail(path, f"must be a string such as \"10.244.1.0\", "
                                  f"got {_json_type(value)}")
        try:
            return IPv4Address(value)
        except ValueError:
            raise self.fail(path, f"{value!r} is not an IPv4 address") from None

    def integer(self, path: tuple[str, ...], value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"must be a whole number, got {_json_type(value)} "
                                  f"{json.dumps(value)}")
        if value < 0:
            raise self.fail(path, f"{value} is negative")
        return value


def _lookup(obj: dict[str, Any], name: str) -> tuple[str | None, Any]:
    """(key as written, value) for `name`, matched as Go does: exact first, else any case."""
    if name in obj:
        return name, obj[name]
    found: tuple[str | None, Any] = (None, None)
    for key, value in obj.items():
        if key.lower() == name.lower():
            found = (key, value)
    return found


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line of every object key, by path ("Backend", "Type"); arrays count as "[]".

    Only called on text json.loads accepted, so this walk need not validate anything.
    """
    lines: dict[tuple[str, ...], int] = {}
    stack: list[list[Any]] = []          # [kind "{" or "[", current key]
    expect_key = False
    line = 1
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        elif c == '"':
            s, i = json.decoder.scanstring(text, i + 1)
            if expect_key:
                stack[-1][1] = s
                lines[tuple(e[1] if e[0] == "{" else "[]" for e in stack)] = line
                expect_key = False
            continue
        elif c == "{":
            stack.append(["{", None])
            expect_key = True
        elif c == "[":
            stack.append(["[", None])
        elif c in "}]":
            stack.pop()
            expect_key = False
        elif c == ",":
            expect_key = bool(stack) and stack[-1][0] == "{"
        i += 1
    return lines

