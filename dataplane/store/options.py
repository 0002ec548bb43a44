"""Command-line flags that choose a subnet store, for `dataplane run` and `dataplane leases`.

--store-dir DIR            the directory store (one machine); the default
--etcd-endpoints URLS      flannel's etcd store (a cluster), with --etcd-prefix (flanneld's flags)
                           and, for https:// endpoints and etcd's users, --etcd-cafile,
                           --etcd-certfile, --etcd-keyfile, --etcd-username, --etcd-password
--kube-subnet-mgr          the Kubernetes API (Node podCIDRs and annotations), with flanneld's
                           --kube-api-url, --kubeconfig-file, --kube-annotation-prefix,
                           --net-config-path and --set-node-network-unavailable
"""

from __future__ import annotations

import argparse
from typing import Any

from dataplane.cli import go_bool
from dataplane.errors import CommandError
from dataplane.store.base import SubnetStore
from dataplane.store.directory import DEFAULT_STORE_DIR, DirectoryStore

# etcd.DEFAULT_PREFIX, spelt out so that a directory store's daemon never loads the etcd modules
# (tests/etcd checks they agree); the same for the kube store's defaults (tests/kube checks).
DEFAULT_ETCD_PREFIX = "/coreos.com/network"
DEFAULT_KUBE_PREFIX = "flannel.alpha.coreos.com"
DEFAULT_NET_CONF = "/etc/kube-flannel/net-conf.json"
KUBE_ONLY = ("kube_api_url", "kubeconfig_file", "kube_annotation_prefix", "net_config_path",
             "set_node_network_unavailable")


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("subnet store", "a directory (one machine), etcd "
                                      "(a cluster, flannel's layout) or the Kubernetes API; "
                                      "one of them")
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
    where.add_argument("--kube-subnet-mgr", action="store_true",
                       help="use the Kubernetes API as flanneld does: the subnet is this "
                            "Node's spec.podCIDR, peers are the Nodes' annotations; the node "
                            "name comes from NODE_NAME (or the pod POD_NAMESPACE/POD_NAME)")
    kube = parser.add_argument_group("Kubernetes (--kube-subnet-mgr)")
    kube.add_argument("--kube-api-url", metavar="URL",
                      help="API server URL (default: in a pod, the in-cluster service and "
                           "service-account token; with --kubeconfig-file, its server)")
    kube.add_argument("--kubeconfig-file", metavar="PATH",
                      help="kubeconfig file (current-context: server, CA, token or client "
                           "certificate); not needed in a pod")
    kube.add_argument("--kube-annotation-prefix", metavar="PREFIX",
                      help=f"Node annotation prefix (default {DEFAULT_KUBE_PREFIX}); may "
                           "contain a single slash, otherwise one is appended")
    kube.add_argument("--net-config-path", metavar="PATH",
                      help=f"the network config, flannel's net-conf.json (default "
                           f"{DEFAULT_NET_CONF})")
    kube.add_argument("--set-node-network-unavailable", metavar="BOOL", nargs="?",
                      const=True, type=go_bool,
                      help="once ready, set the Node's NetworkUnavailable condition to False "
                           "(reason FlannelIsUp), as flanneld does (default true; "
                           "=false leaves it alone)")
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
    if getattr(args, "kube_subnet_mgr", False):
        etcd_only = [f"--etcd-{name}" for name, value in security.items() if value]
        if etcd_only:
            raise CommandError(f"{etcd_only[0]} applies to the etcd store, not "
                               "--kube-subnet-mgr")
        return _kube_store(args)
    given = [name for name in KUBE_ONLY if getattr(args, name, None) is not None]
    if given:
        raise CommandError(f"--{given[0].replace('_', '-')} applies to the Kubernetes API "
                           "store: give --kube-subnet-mgr too")
    if endpoints:
        from dataplane.store.etcd import EtcdStore
        return EtcdStore(endpoints, prefix=prefix or DEFAULT_ETCD_PREFIX,
                         tls=_tls(endpoints, security), username=security["username"],
                         password=security["password"])
    etcd_only = [f"--etcd-{name}" for name, value in security.items() if value]
    if prefix or etcd_only:
        raise CommandError(f"{(['--etcd-prefix'] if prefix else etcd_only)[0]} applies to the "
                           "etcd store: give --etcd-endpoints too")
    return DirectoryStore(args.store_dir or DEFAULT_STORE_DIR)


def _tls(endpoints: list[Any], security: dict[str, str | None]) -> Any:
    """The ssl context for https:// endpoints; CommandError for a bad file, or TLS files
    given for plain http:// endpoints (they would be silently unused)."""
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


def _kube_store(args: argparse.Namespace) -> SubnetStore:
    from dataplane.store.kube import KubeStore
    if getattr(args, "etcd_prefix", None):
        raise CommandError("--etcd-prefix applies to the etcd store, not --kube-subnet-mgr")
    unavailable = getattr(args, "set_node_network_unavailable", None)
    try:
        return KubeStore(api_url=args.kube_api_url, kubeconfig=args.kubeconfig_file,
                         annotation_prefix=args.kube_annotation_prefix or DEFAULT_KUBE_PREFIX,
                         net_config_path=args.net_config_path or DEFAULT_NET_CONF,
                         set_node_network_unavailable=True if unavailable is None
                         else unavailable)
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
