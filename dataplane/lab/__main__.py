"""`python3 -m dataplane.lab up|status|down`: the same as `dataplane lab`, without loading the
other commands (handy while one of them does not import)."""

from __future__ import annotations

import argparse
import sys

from dataplane.cli import setup_logging
from dataplane.errors import CommandError
from dataplane.lab import command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m dataplane.lab", description=command.HELP)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    command.configure(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return command.main(args)
    except CommandError as exc:
        print(f"dataplane lab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
