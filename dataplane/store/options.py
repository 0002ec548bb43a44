"""Command-line flags that choose a subnet store, for `dataplane run` and `dataplane leases`."""

from __future__ import annotations

import argparse

from dataplane.store.base import SubnetStore
from dataplane.store.directory import DEFAULT_STORE_DIR, DirectoryStore


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("subnet store")
    group.add_argument("--store-dir", metavar="DIR",
                       help="directory store shared by the nodes of one machine: DIR/config "
                            f"and DIR/subnets/, flannel's layout (default {DEFAULT_STORE_DIR})")
    # The etcd store adds --etcd-endpoints and --etcd-prefix (default /coreos.com/network)
    # here, mutually exclusive with --store-dir, and open_store() picks it when they are given.


def open_store(args: argparse.Namespace) -> SubnetStore:
    """The store the parsed flags name. Opening touches nothing; the first call reports errors."""
    return DirectoryStore(args.store_dir or DEFAULT_STORE_DIR)
