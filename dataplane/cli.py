"""`dataplane` command line: one subcommand per module.

Each command module defines HELP (one line), configure(parser) and main(args) -> exit code, so
the code of a command lives beside what it drives and this file only lists them. Only the
module of the command being run is imported: the node daemon must not carry the benchmark's
plotting libraries in its 64 MB, nor fail to start because another command is broken.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> (module implementing it, one line of help; the module's HELP says the same)
COMMANDS = {
    "run": ("dataplane.daemon.command",
            "run the node daemon: lease a subnet, bring up the TUN device and forward pod "
            "traffic"),
    "lab": ("dataplane.lab.command",
            "build, inspect and remove a cluster of nodes and pods in network namespaces"),
    "leases": ("dataplane.store.command",
               "list the subnet leases in the store: subnet, public IP, backend, VtepMAC, "
               "expiry"),
    "explain": ("dataplane.explain",
                "print one encapsulated packet layer by layer, with the overhead and MTU it "
                "forces"),
    "manifest": ("dataplane.manifest",
                 "print deployment files: a Kubernetes DaemonSet manifest, the systemd unit"),
    "bench": ("bench.command",
              "benchmark every dataplane side by side: throughput, packet rate, latency, CPU, "
              "memory"),
}


class CommandError(Exception):
    """An error for the user: printed as one line, exit status 1, no traceback."""


def _chosen(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option)."""
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dataplane",
        description="A userspace overlay dataplane for pod networks: flannel's udp backend and "
                    "kernel-compatible VXLAN, with a lab and a benchmark harness.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = _chosen(sys.argv[1:] if argv is None else argv)
    for name, (module_name, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.configure(p)
            p.set_defaults(_main=module.main)
    return parser


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity + 1, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args._main(args) or 0)
    except CommandError as exc:
        print(f"dataplane {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
