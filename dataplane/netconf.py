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
- A missing `Backend` means udp. `Backend.Type` must be one we implement: udp or vxlan,
  matched case-insensitively as flannel's backend manager does ("VXLAN" is vxlan).
- Backend options are those of flannel's udp (`Port`) and vxlan backends (`Port`, `VNI`, `MTU`,
  `DirectRouting`, `GBP`, `Learning`, and `MacPrefix`, which flannel reads on Windows only).
  Each is implemented or refused by name; a vxlan option under udp is refused. A key flannel
  does not know is ignored by flannel and warned about here (NetworkConfig.warnings).
- IPv4 only: EnableIPv4 false, EnableIPv6 true and any IPv6 setting are refused until IPv6
  lands; EnableNFTables is accepted (the NAT rules read it).
Keys match case-insensitively, as Go's encoding/json matches them; the last match wins.

Every error is a ConfigError naming the field and the line where it stands, never a traceback.
"""

from __future__ import annotations

import ipaddress
import json
import json.decoder
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from dataplane.backends import BACKENDS, VXLAN

BACKEND_TYPES = tuple(BACKENDS)
DEFAULT_VNI = 1
MAX_VNI = (1 << 24) - 1
MIN_MTU = 68 + VXLAN.overhead      # Backend.MTU: room for the smallest IPv4 packet inside
MAX_MTU = 65535

# flannel's Config (pkg/subnet/config.go): every top-level key it decodes.
TOP_LEVEL_KEYS = ("EnableIPv4", "EnableIPv6", "EnableNFTables", "Network", "IPv6Network",
                  "SubnetMin", "SubnetMax", "IPv6SubnetMin", "IPv6SubnetMax", "SubnetLen",
                  "IPv6SubnetLen", "Backend")
# What flannel's backends decode from Backend: udp (pkg/backend/udp) takes only Port; vxlan
# (pkg/backend/vxlan) the rest; Name and MacPrefix only on Windows.
UDP_KEYS = ("Type", "Port")
VXLAN_KEYS = ("Type", "Port", "VNI", "MTU", "DirectRouting", "GBP", "Learning", "MacPrefix",
              "Name")
# Options refused when true, and why (false, their default, is accepted).
REFUSED_WHEN_TRUE = {
    "GBP": "the group policy ID carries the packet mark (skb->mark), which a TUN device does "
           "not pass to userspace",
    "Learning": "peers come from leases only, as flannel's permanent FDB entries (which "
                "learning never overrides); there is no forwarding database to learn into",
}


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
    # appended: other code builds NetworkConfig positionally up to `backend`
    direct_routing: bool = False   # vxlan DirectRouting: same-subnet peers routed, not tunnelled
    mtu: int | None = None         # vxlan MTU: the underlay MTU to assume (None: the interface's)
    mac_prefix: bytes | None = None   # MacPrefix: the first two octets of our VtepMAC
    # flannel ignores keys it does not know; we say so, one line each, for the daemon's log
    warnings: tuple[str, ...] = field(default=(), compare=False)
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
        self.warnings: list[str] = []

    def fail(self, path: tuple[str, ...], problem: str) -> ConfigError:
        line = self.key_lines.get(path, self.top_line)
        return ConfigError(problem, field=".".join(path), line=line, source=self.source)

    def warn(self, path: tuple[str, ...], problem: str) -> None:
        self.warnings.append(str(self.fail(path, problem)))

    def unknown_keys(self, obj: dict[str, Any], known: tuple[str, ...], parent: tuple[str, ...],
                     what: str) -> None:
        names = {k.lower() for k in known}
        for key in obj:
            if key.lower() not in names:
                self.warn((*parent, key), f"unknown option, ignored (as flannel ignores it): "
                                          f"{what} takes {', '.join(known)}")

    def families(self, doc: dict[str, Any]) -> None:
        """IPv4 only, until IPv6 lands: refuse every setting that asks for IPv6."""
        key, value = _lookup(doc, "EnableIPv4")
        if key is not None and self.boolean((key,), value) is False:
            raise self.fail((key,), "false is not supported: this dataplane carries IPv4 "
                                    "only (IPv6-only networks are not implemented yet)")
        key, value = _lookup(doc, "EnableIPv6")
        if key is not None and self.boolean((key,), value):
            raise self.fail((key,), "true is not supported: this dataplane is IPv4 only "
                                    "(IPv6 is not implemented yet)")
        for name in ("IPv6Network", "IPv6SubnetMin", "IPv6SubnetMax"):
            key, value = _lookup(doc, name)
            if key is None or value in (None, ""):
                continue
            if not isinstance(value, str):
                raise self.fail((key,), f"must be a string, got {_json_type(value)}")
            raise self.fail((key,), f"{value!r} is not supported: this dataplane is IPv4 only "
                                    "(IPv6 is not implemented yet)")
        key, value = _lookup(doc, "IPv6SubnetLen")
        if key is not None and value is not None and self.integer((key,), value):
            raise self.fail((key,), f"{value} is not supported: this dataplane is IPv4 only "
                                    "(IPv6 is not implemented yet)")

    def check(self, doc: dict[str, Any]) -> NetworkConfig:
        self.unknown_keys(doc, TOP_LEVEL_KEYS, (), "flannel's network config")
        self.families(doc)

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
            raise self.fail((key or "SubnetLen",), f"{subnet_len} is too large: at most 30 "
                            "(each node needs room for a gateway and pods)")
        elif subnet_len < network.prefixlen + 2:
            raise self.fail((key or "SubnetLen",), f"{subnet_len} is too small for {network}: "
                            f"at least {network.prefixlen + 2}, so the network holds four "
                            "subnets")
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

        backend, btype, port, vni, options = self.backend(doc)
        key, nft = _lookup(doc, "EnableNFTables")
        if nft is not None and not isinstance(nft, bool):
            raise self.fail((key or "EnableNFTables",),
                            f"must be true or false, got {_json_type(nft)} "
                            f"{json.dumps(nft)}")
        return NetworkConfig(network=network, subnet_len=subnet_len, subnet_min=subnet_min,
                             subnet_max=subnet_max, backend_type=btype, port=port, vni=vni,
                             backend=backend, **options, warnings=tuple(self.warnings),
                             enable_nftables=bool(nft))

    def backend(self, doc: dict[str, Any]
                ) -> tuple[dict[str, Any], str, int, int, dict[str, Any]]:
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
        if not isinstance(btype, str):
            raise self.fail((bkey, key), f"must be a string (\"udp\" or \"vxlan\"), got "
                                         f"{_json_type(btype)}")
        if btype.lower() not in BACKEND_TYPES:    # flannel lower-cases it too
            raise self.fail((bkey, key), f"unknown backend type {btype!r}: this dataplane "
                                         f"implements {' and '.join(BACKEND_TYPES)}")
        btype = btype.lower()
        if btype == "udp":
            vxlan_only = {k.lower() for k in VXLAN_KEYS} - {k.lower() for k in UDP_KEYS}
            for key in backend:
                if key.lower() in vxlan_only:
                    raise self.fail((bkey, key), "a vxlan option: flannel's udp backend takes "
                                                 "only Port")
        self.unknown_keys(backend, VXLAN_KEYS if btype == "vxlan" else UDP_KEYS, (bkey,),
                          f"the {btype} backend")

        key, port = _lookup(backend, "Port")
        if key is None or port is None:
            port = BACKENDS[btype].port
        else:
            port = self.integer((bkey, key), port)
            if port == 0 and btype == "vxlan":
                port = VXLAN.port        # flannel leaves 0 to the kernel: 8472
            elif not 1 <= port <= 65535:
                raise self.fail((bkey, key), f"{port} is not a UDP port (1-65535)")
        options: dict[str, Any] = {}
        vni = DEFAULT_VNI
        if btype == "vxlan":
            key, value = _lookup(backend, "VNI")
            if key is not None and value is not None:
                vni = self.integer((bkey, key), value)
                if not 0 <= vni <= MAX_VNI:
                    raise self.fail((bkey, key), f"{vni} is not a VXLAN VNI (0-{MAX_VNI})")
            options = self.vxlan_options(bkey, backend)
        return backend, btype, port, vni, options

    def vxlan_options(self, bkey: str, backend: dict[str, Any]) -> dict[str, Any]:
        options: dict[str, Any] = {}
        key, value = _lookup(backend, "DirectRouting")
        options["direct_routing"] = key is not None and bool(self.boolean((bkey, key), value))
        for name, why in REFUSED_WHEN_TRUE.items():
            key, value = _lookup(backend, name)
            if key is not None and self.boolean((bkey, key), value):
                raise self.fail((bkey, key), f"true is not supported: {why} (false is accepted)")
        key, value = _lookup(backend, "MTU")
        if key is not None and value is not None:
            mtu = self.integer((bkey, key), value)
            if not MIN_MTU <= mtu <= MAX_MTU:
                raise self.fail((bkey, key), f"{mtu} is not a usable underlay MTU "
                                             f"({MIN_MTU}-{MAX_MTU}: it carries {VXLAN.overhead}"
                                             " bytes of VXLAN and at least 68 of IPv4 inside)")
            options["mtu"] = mtu
        key, value = _lookup(backend, "MacPrefix")
        if key is not None and value is not None:
            options["mac_prefix"] = self.mac_prefix((bkey, key), value)
        key, value = _lookup(backend, "Name")
        if key is not None:
            self.warn((bkey, key), "ignored: flannel names the VXLAN device only on Windows "
                                   "(here it is flannel.<VNI>, or --tun-name)")
        return options

    def mac_prefix(self, path: tuple[str, ...], value: Any) -> bytes:
        """flannel's format (Windows): two octets in hex, "0E-2A"."""
        hexdigits = "0123456789abcdefABCDEF"
        if (not isinstance(value, str) or len(value) != 5 or value[2] != "-"
                or not all(c in hexdigits for c in value[:2] + value[3:])):
            shown = json.dumps(value) if not isinstance(value, (dict, list)) else _json_type(value)
            raise self.fail(path, f"{shown} is not a MAC prefix: two hex octets as \"0E-2A\"")
        prefix = bytes.fromhex(value[:2] + value[3:])
        if prefix[0] & 0x01:
            raise self.fail(path, f"{value!r} has the multicast bit set (first octet odd): a "
                                  "VtepMAC must be unicast")
        return prefix

    def boolean(self, path: tuple[str, ...], value: Any) -> bool | None:
        """true, false or null (null: as absent, as Go leaves the field alone)."""
        if value is not None and not isinstance(value, bool):
            raise self.fail(path, f"must be true or false, got {_json_type(value)} "
                                  f"{json.dumps(value)}")
        return value

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
            # json's own string scanner: in the module since 2.6, absent from typeshed
            s, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
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

