"""`dataplane` command line: one subcommand per module.

Each command module defines HELP (one line), configure(parser) and main(args) -> exit code, so
the code of a command lives beside what it drives and this file only lists them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> module implementing it
COMMANDS = {
    "run": "dataplane.daemon.command",
    "lab": "dataplane.lab.command",
    "leases": "dataplane.store.command",
    "explain": "dataplane.explain",
    "bench": "bench.command",
}


class CommandError(Exception):
    """An error for the user: printed as one line, exit status 1, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dataplane",
        description="A userspace overlay dataplane for pod networks: flannel's udp backend and "
                    "kernel-compatible VXLAN, with a lab and a benchmark harness.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue     # a command whose module is not part of this build
            raise
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(p)
        p.set_defaults(_main=module.main)
    return parser


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity + 1, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args._main(args) or 0)
    except CommandError as exc:
        print(f"dataplane {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
