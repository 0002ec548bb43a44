"""`python3 -m dataplane.netfilter show|remove`: the NAT and FORWARD rules of this node (or of
a named namespace), listed or removed, for decommissioning by hand, tests and the lab."""

from __future__ import annotations

import argparse
import sys

from dataplane.netfilter import BACKENDS, NetfilterError, backend, remove_rules


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m dataplane.netfilter",
        description="Show or remove flanneld's rules (nat/FLANNEL-POSTRTG, filter/FLANNEL-FWD, "
                    "nftables table ip flannel-ipv4) as the daemon installs them.")
    parser.add_argument("action", choices=("show", "remove"))
    parser.add_argument("--backend", choices=BACKENDS,
                        help="only this backend (default: both)")
    parser.add_argument("--netns", metavar="NAME",
                        help="inside this named network namespace (default: this one)")
    args = parser.parse_args(argv)
    try:
        if args.action == "remove":
            removed = remove_rules(args.backend, args.netns)
            print("\n".join(f"removed {what}" for what in removed) or "nothing to remove")
        else:
            for name in (args.backend,) if args.backend else BACKENDS:
                be = backend(name, args.netns)
                print(f"## {name}")
                print(be.show() if be.available() else f"# {name}: tools not installed")
    except NetfilterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
