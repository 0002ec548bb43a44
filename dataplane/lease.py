"""Subnet leases: flannel's lease JSON byte for byte, key naming, and subnet allocation rules.

A lease value is what flannel's Go code writes with json.Marshal(LeaseAttrs): compact, keys in
struct order, PublicIPv6 always present (null), the rest omitted when empty:

    udp:   {"PublicIP":"10.99.0.1","PublicIPv6":null}
    vxlan: {"PublicIP":"10.99.0.1","PublicIPv6":null,"BackendType":"vxlan",
            "BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}            (one line)

No trailing newline. Parsing accepts anything flannel's json.Unmarshal accepts for these fields
(any key case, PublicIPv6 absent, extra fields such as BackendV6Data ignored or kept).

Keys: subnet 10.244.1.0/24 <-> "10.244.1.0-24" (etcd `<prefix>/subnets/<key>`, or a file name).
"""

from __future__ import annotations

import ipaddress
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, UTC
from ipaddress import IPv4Network
from collections.abc import Iterable, Iterator
from typing import Any

from dataplane.backends import VTEP_MAC_KEY
from dataplane.netconf import NetworkConfig

# flannel's allocator picks at random among the first this-many free subnets, so that nodes
# starting together rarely race for the same one.
PICK_AMONG = 100


class LeaseFormatError(ValueError):
    """A lease value that is not flannel's lease JSON."""


class InvalidSubnet(ValueError):
    """A subnet that this network config cannot hand out (e.g. a bad --subnet)."""


@dataclass(frozen=True)
class LeaseAttrs:
    """What a node publishes about itself: flannel's LeaseAttrs."""

    public_ip: str
    backend_type: str | None = None             # None: flannel's udp backend writes none
    backend_data: dict[str, Any] | None = None  # vxlan: {"VNI": 1, "VtepMAC": "aa:bb:..."}
    public_ipv6: str | None = None
    backend_v6_data: Any = None                 # kept only so a flannel lease round-trips

    def __post_init__(self) -> None:
        try:
            ip = ipaddress.IPv4Address(self.public_ip)
        except ValueError:
            raise LeaseFormatError(f"PublicIP {self.public_ip!r} is not an IPv4 address") from None
        object.__setattr__(self, "public_ip", str(ip))
        if self.backend_data is not None and not isinstance(self.backend_data, dict):
            raise LeaseFormatError(f"BackendData must be a JSON object, got {self.backend_data!r}")

    def to_json(self) -> bytes:
        """flannel's encoding, byte for byte (json.Marshal of LeaseAttrs)."""
        doc: dict[str, Any] = {"PublicIP": self.public_ip, "PublicIPv6": self.public_ipv6}
        if self.backend_type:                   # `json:",omitempty"`
            doc["BackendType"] = self.backend_type
        if self.backend_data is not None:
            doc["BackendData"] = self.backend_data
        if self.backend_v6_data is not None:
            doc["BackendV6Data"] = self.backend_v6_data
        return go_json(doc)

    @classmethod
    def from_json(cls, data: bytes | str) -> LeaseAttrs:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise LeaseFormatError(f"not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise LeaseFormatError("not a JSON object")
        public_ip = _get(doc, "PublicIP")
        if not isinstance(public_ip, str):
            raise LeaseFormatError("PublicIP missing or not a string")
        backend_type = _get(doc, "BackendType")
        if backend_type is not None and not isinstance(backend_type, str):
            raise LeaseFormatError("BackendType is not a string")
        public_ipv6 = _get(doc, "PublicIPv6")
        if public_ipv6 is not None and not isinstance(public_ipv6, str):
            raise LeaseFormatError("PublicIPv6 is not a string")
        return cls(public_ip=public_ip, backend_type=backend_type or None,
                   backend_data=_get(doc, "BackendData"), public_ipv6=public_ipv6,
                   backend_v6_data=_get(doc, "BackendV6Data"))


@dataclass(frozen=True)
class Lease:
    """One node's lease on one subnet."""

    subnet: IPv4Network
    public_ip: str
    backend_type: str | None = None
    backend_data: dict[str, Any] | None = None
    expiration: datetime | None = None           # aware UTC; None: never expires
    public_ipv6: str | None = None
    backend_v6_data: Any = field(default=None, repr=False)

    @classmethod
    def from_attrs(cls, subnet: IPv4Network, attrs: LeaseAttrs,
                   expiration: datetime | None = None) -> Lease:
        return cls(subnet=subnet, public_ip=attrs.public_ip, backend_type=attrs.backend_type,
                   backend_data=attrs.backend_data, expiration=expiration,
                   public_ipv6=attrs.public_ipv6, backend_v6_data=attrs.backend_v6_data)

    @classmethod
    def from_json(cls, subnet: IPv4Network, data: bytes | str,
                  expiration: datetime | None = None) -> Lease:
        return cls.from_attrs(subnet, LeaseAttrs.from_json(data), expiration)

    @property
    def attrs(self) -> LeaseAttrs:
        return LeaseAttrs(public_ip=self.public_ip, backend_type=self.backend_type,
                          backend_data=self.backend_data, public_ipv6=self.public_ipv6,
                          backend_v6_data=self.backend_v6_data)

    def to_json(self) -> bytes:
        return self.attrs.to_json()

    @property
    def key(self) -> str:
        return subnet_key(self.subnet)

    @property
    def vtep_mac(self) -> str | None:
        """The VXLAN tunnel endpoint MAC a vxlan node publishes, if any."""
        data = self.backend_data or {}
        mac = _get(data, VTEP_MAC_KEY)
        return mac if isinstance(mac, str) else None

    def expired(self, now: datetime | None = None) -> bool:
        if self.expiration is None:
            return False
        return self.expiration <= (now or datetime.now(UTC))


def go_json(value: Any) -> bytes:
    """JSON as Go's json.Marshal writes it: compact, UTF-8, with <, >, & and U+2028/9 escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    # These characters can only occur inside strings, so replacing them everywhere is safe.
    for char, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text.encode("utf-8")


def _get(doc: dict[str, Any], name: str) -> Any:
    """doc[name] matched as Go's encoding/json matches struct fields: exact, else any case."""
    if name in doc:
        return doc[name]
    found = None
    for key, value in doc.items():
        if key.lower() == name.lower():
            found = value
    return found


# -- keys --------------------------------------------------------------------------------------

def subnet_key(subnet: IPv4Network) -> str:
    """10.244.1.0/24 -> "10.244.1.0-24"."""
    return f"{subnet.network_address}-{subnet.prefixlen}"


def parse_subnet_key(key: str) -> IPv4Network | None:
    """"10.244.1.0-24" -> 10.244.1.0/24; None for anything else (temp files, IPv6 keys, ...)."""
    addr, dash, plen = key.partition("-")
    if not dash or not plen.isdigit() or plen != str(int(plen)):
        return None
    try:
        subnet = IPv4Network(f"{addr}/{plen}")    # strict: host bits set is not a key
    except ValueError:
        return None
    return subnet if subnet_key(subnet) == key else None


# -- allocation --------------------------------------------------------------------------------

def candidate_subnets(config: NetworkConfig) -> Iterator[IPv4Network]:
    """Every subnet a node may lease, SubnetMin to SubnetMax inclusive, in order."""
    for first in range(int(config.subnet_min), int(config.subnet_max) + 1, config.subnet_size):
        yield IPv4Network((first, config.subnet_len))


def is_compatible(config: NetworkConfig, subnet: IPv4Network) -> bool:
    """Could this config have handed out `subnet`? (flannel's isSubnetConfigCompat.)"""
    return (subnet.prefixlen == config.subnet_len
            and config.subnet_min <= subnet.network_address <= config.subnet_max)


def parse_subnet(text: str) -> IPv4Network:
    """A subnet as a user writes it ("10.244.7.0/24"), with errors that say what is wrong."""
    addr, slash, plen = text.strip().partition("/")
    if not slash:
        raise InvalidSubnet(f"{text!r} is not a subnet: write it as a CIDR such as 10.244.7.0/24")
    try:
        ip = ipaddress.IPv4Address(addr)
    except ValueError:
        raise InvalidSubnet(f"{text!r}: {addr!r} is not an IPv4 address") from None
    if not plen.isdigit() or int(plen) > 32:
        raise InvalidSubnet(f"{text!r}: the prefix length must be 0-32")
    subnet = IPv4Network((ip, int(plen)), strict=False)
    if subnet.network_address != ip:
        raise InvalidSubnet(f"{text!r} has host bits set: did you mean {subnet}?")
    return subnet


def validate_subnet(config: NetworkConfig, subnet: IPv4Network) -> None:
    """Raise InvalidSubnet unless `subnet` is one this config hands out (a --subnet request)."""
    if subnet.prefixlen != config.subnet_len:
        raise InvalidSubnet(f"{subnet} is a /{subnet.prefixlen}, but the network config hands "
                            f"out /{config.subnet_len} subnets (SubnetLen)")
    if not subnet.subnet_of(config.network):
        raise InvalidSubnet(f"{subnet} is not inside the network {config.network}")
    if int(subnet.network_address) % config.subnet_size:
        raise InvalidSubnet(f"{subnet} is not on a /{config.subnet_len} boundary")
    if not config.subnet_min <= subnet.network_address <= config.subnet_max:
        raise InvalidSubnet(f"{subnet} is outside SubnetMin..SubnetMax "
                            f"({config.subnet_min} .. {config.subnet_max})")


def pick_free_subnet(config: NetworkConfig, taken: Iterable[IPv4Network],
                     rng: random.Random | None = None) -> IPv4Network | None:
    """A free subnet, chosen at random among the first PICK_AMONG free ones; None if full.

    A subnet is free when it overlaps no taken one (taken leases may have another prefix length
    after a config change, so this checks overlap, not just equality).
    """
    same_len: set[IPv4Network] = set()
    other: list[IPv4Network] = []
    for t in taken:
        if t.prefixlen == config.subnet_len:
            same_len.add(t)
        else:
            other.append(t)
    free = []
    for sn in candidate_subnets(config):
        if sn in same_len or any(sn.overlaps(t) for t in other):
            continue
        free.append(sn)
        if len(free) >= PICK_AMONG:
            break
    if not free:
        return None
    return (rng or random).choice(free)
