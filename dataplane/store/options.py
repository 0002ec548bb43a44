"""Command-line flags that choose a subnet store, for `dataplane run` and `dataplane leases`.

--store-dir DIR            the directory store (one machine); the default
--etcd-endpoints URLS      flannel's etcd store (a cluster), with --etcd-prefix (flanneld's flags)
                           and, for https:// endpoints and etcd's users, --etcd-cafile,
                           --etcd-certfile, --etcd-keyfile, --etcd-username, --etcd-password
"""

from __future__ import annotations

import argparse

from typing import Any

from dataplane.store.base import SubnetStore
from dataplane.store.directory import DEFAULT_STORE_DIR, DirectoryStore

# etcd.DEFAULT_PREFIX, spelt out so that a directory store's daemon never loads the etcd modules
# (tests/etcd checks they agree).
DEFAULT_ETCD_PREFIX = "/coreos.com/network"


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("subnet store", "a directory (one machine) or etcd "
                                      "(a cluster, flannel's layout); not both")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--store-dir", metavar="DIR",
                       help="directory store shared by the nodes of one machine: DIR/config "
                            f"and DIR/subnets/, flannel's layout (default {DEFAULT_STORE_DIR})")
    where.add_argument("--etcd-endpoints", metavar="URLS", type=_endpoints,
                       help="etcd v3 client URLs, comma-separated (e.g. "
                            "http://10.0.0.1:2379,http://10.0.0.2:2379): use the etcd store "
                            "flanneld uses")
    group.add_argument("--etcd-prefix", metavar="PATH", type=_prefix,
                       help=f"etcd key prefix (default {DEFAULT_ETCD_PREFIX}): the network "
                            "config is PATH/config, leases PATH/subnets/")
    add_etcd_security_arguments(group)


def add_etcd_security_arguments(group: Any) -> None:
    """flanneld's TLS and authentication flags for etcd."""
    group.add_argument("--etcd-cafile", metavar="FILE",
                       help="PEM CA bundle that signs the https:// endpoints' certificates "
                            "(default: the system's CAs)")
    group.add_argument("--etcd-certfile", metavar="FILE",
                       help="PEM client certificate, for etcd started with --client-cert-auth")
    group.add_argument("--etcd-keyfile", metavar="FILE",
                       help="PEM private key of --etcd-certfile")
    group.add_argument("--etcd-username", metavar="NAME",
                       help="etcd user, when etcd's authentication is enabled")
    group.add_argument("--etcd-password", metavar="PASSWORD",
                       help="password of --etcd-username (better passed as "
                            "FLANNELD_ETCD_PASSWORD in an environment file than on the "
                            "command line)")


def open_store(args: argparse.Namespace) -> SubnetStore:
    """The store the parsed flags name. Opening touches nothing; the first call reports errors."""
    endpoints = getattr(args, "etcd_endpoints", None)
    prefix = getattr(args, "etcd_prefix", None)
    security = {name: getattr(args, f"etcd_{name}", None)
                for name in ("cafile", "certfile", "keyfile", "username", "password")}
    if endpoints:
        from dataplane.store.etcd import EtcdStore
        return EtcdStore(endpoints, prefix=prefix or DEFAULT_ETCD_PREFIX,
                         tls=_tls(endpoints, security), username=security["username"],
                         password=security["password"])
    etcd_only = [f"--etcd-{name}" for name, value in security.items() if value]
    if prefix or etcd_only:
        from dataplane.cli import CommandError
        raise CommandError(f"{(['--etcd-prefix'] if prefix else etcd_only)[0]} applies to the "
                           "etcd store: give --etcd-endpoints too")
    return DirectoryStore(args.store_dir or DEFAULT_STORE_DIR)


def _tls(endpoints: list[Any], security: dict[str, str | None]) -> Any:
    """The ssl context for https:// endpoints; CommandError for a bad file, or TLS files
    given for plain http:// endpoints (they would be silently unused)."""
    from dataplane.cli import CommandError
    files = {name: security[name] for name in ("cafile", "certfile", "keyfile")}
    if not any(e.tls for e in endpoints):
        given = [f"--etcd-{name}" for name, value in files.items() if value]
        if given:
            raise CommandError(f"{given[0]} applies to https:// etcd endpoints; "
                               "--etcd-endpoints has only http:// ones")
        return None
    from dataplane.store.etcd_tls import TLSFiles
    try:
        return TLSFiles(**files)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _endpoints(value: str) -> list[Any]:
    from dataplane.store.etcd_client import parse_endpoints
    try:
        return parse_endpoints(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _prefix(value: str) -> str:
    from dataplane.store.etcd import normalize_prefix
    try:
        return normalize_prefix(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
