"""`dataplane` command line: one subcommand per module.

Each command module defines HELP (one line), configure(parser) and main(args) -> exit code, so
the code of a command lives beside what it drives and this file only lists them. Only the
module of the command being run is imported: the node daemon must not carry the benchmark's
plotting libraries in its 64 MB, nor fail to start because another command is broken.

A module may also define ENV_PREFIX (`run` has "FLANNELD", as flanneld): then every long flag
of that command, whoever added it, can come from the environment variable PREFIX_FLAG_NAME
(--subnet-file: FLANNELD_SUBNET_FILE), as flanneld's flagutil.SetFlagsFromEnv does; a flag
given on the command line wins. See apply_env.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Mapping

from dataplane import __version__
from dataplane.errors import CommandError

# name -> (module implementing it, one line of help; the module's HELP says the same)
COMMANDS = {
    "run": ("dataplane.daemon.command",
            "run the node daemon: lease a subnet, bring up the TUN device and forward pod "
            "traffic"),
    "lab": ("dataplane.lab.command",
            "build, inspect and remove a cluster of nodes and pods in network namespaces"),
    "leases": ("dataplane.store.command",
               "list the subnet leases in the store (subnet, public IP, backend, VtepMAC, "
               "expiry), or release one"),
    "explain": ("dataplane.explain",
                "print one encapsulated packet layer by layer, with the overhead and MTU it "
                "forces"),
    "manifest": ("dataplane.manifest",
                 "print deployment files: a Kubernetes DaemonSet manifest, the systemd unit"),
    "bench": ("bench.command",
              "benchmark every dataplane side by side: throughput, packet rate, latency, CPU, "
              "memory"),
}


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
    parser.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    parser.add_argument("--version", action="version", version=f"dataplane {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = _chosen(sys.argv[1:] if argv is None else argv)
    parser.set_defaults(_env_prefix=None)
    for name, (module_name, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        # -v after the command too (`dataplane run -v`); counted apart, then added up
        p.add_argument("-v", "--verbose", action="count", default=0, dest="sub_verbose",
                       help=VERBOSE_HELP)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.configure(p)
            p.set_defaults(_main=module.main, _env_prefix=getattr(module, "ENV_PREFIX", None))
            # for apply_env; argparse has no slot for it
            parser._chosen_parser = p  # type: ignore[attr-defined]
    return parser


VERBOSE_HELP = "debug logging (-vv: also pyroute2's netlink messages)"

# Libraries whose debug and info output is noise unless asked for twice (-vv): pyroute2's
# netlink messages (it resets its logger's level when imported, so a filter on our handler
# keeps them out, not a level), asyncio's selector lines.
CHATTY_LOGGERS = ("pyroute2", "asyncio")


class QuietLibraries(logging.Filter):
    """Drops records below WARNING from CHATTY_LOGGERS and their children."""

    def __init__(self, names: tuple[str, ...] = CHATTY_LOGGERS) -> None:
        super().__init__()
        self.names = names

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return not any(record.name == n or record.name.startswith(n + ".") for n in self.names)


def setup_logging(verbosity: int) -> None:
    """-v: our debug lines; -vv: also the libraries' (pyroute2's netlink chatter)."""
    level = logging.DEBUG if verbosity >= 1 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if verbosity < 2:
        for handler in logging.getLogger().handlers:
            if not any(isinstance(f, QuietLibraries) for f in handler.filters):
                handler.addFilter(QuietLibraries())


# Go's strconv.ParseBool, which flanneld's boolean flags and FLANNELD_* values go through
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def go_bool(value: str) -> bool:
    """An argparse type for flanneld's boolean flags (`--iptables-forward-rules=false`)."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{value!r}: true or false")


def env_name(prefix: str, action: argparse.Action) -> str | None:
    """FLANNELD_SUBNET_FILE for --subnet-file; None for flags that take no environment
    (help, version, and those with only a short form)."""
    if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
        return None
    long = next((o for o in action.option_strings if o.startswith("--")), None)
    if long is None:
        return None
    return f"{prefix}_{long[2:].upper().replace('-', '_')}"


def _given_on_command_line(parser: argparse.ArgumentParser, sub: argparse.ArgumentParser,
                           argv: list[str] | None) -> set[str]:
    """The dests of `sub` that the command line sets (parsed again with no defaults)."""
    saved = [(a, a.default) for a in sub._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in saved:
            action.default = default


def apply_env(parser: argparse.ArgumentParser, args: argparse.Namespace,
              argv: list[str] | None, environ: Mapping[str, str] = os.environ) -> None:
    """Fill in the chosen command's flags from PREFIX_* variables where the command line set
    none, as flanneld does: the value is parsed as that flag's argument would be (a boolean
    flag takes Go's true/false/1/0), a repeatable flag takes one value, and of flags that
    exclude each other the command line's choice wins. A bad value is a usage error naming
    the variable."""
    prefix = getattr(args, "_env_prefix", None)
    sub = getattr(parser, "_chosen_parser", None)
    if not prefix or sub is None or not any(k.startswith(prefix + "_") for k in environ):
        return
    given = _given_on_command_line(parser, sub, argv)
    excluded = set()
    for group in sub._mutually_exclusive_groups:
        members = {a.dest for a in group._group_actions}
        if members & given:
            excluded |= members
    from_env: dict[str, str] = {}
    for action in sub._actions:
        name = env_name(prefix, action)
        if name is None or name not in environ or action.dest in given:
            continue
        if action.dest in excluded:
            continue                    # the command line chose another of its group
        text = environ[name]
        option = next(o for o in action.option_strings if o.startswith("--"))
        try:
            _set_from_env(sub, args, action, option, text)
        except (argparse.ArgumentError, ValueError) as exc:
            message = exc.message if isinstance(exc, argparse.ArgumentError) else str(exc)
            sub.error(f"{name}={text!r}: {message}")
        for group in sub._mutually_exclusive_groups:
            if action in group._group_actions:
                for other in group._group_actions:
                    if other.dest in from_env:
                        sub.error(f"{name} and {from_env[other.dest]}: not both")
        from_env[action.dest] = name
    args._from_env = sorted(from_env.values())


def _set_from_env(sub: argparse.ArgumentParser, args: argparse.Namespace,
                  action: argparse.Action, option: str, text: str) -> None:
    if action.nargs == 0:                       # a switch
        if isinstance(action, argparse._CountAction):
            setattr(args, action.dest, int(text))
            return
        if text not in _TRUE | _FALSE:
            raise ValueError("expected true or false")
        on = text in _TRUE
        if isinstance(action, argparse.BooleanOptionalAction):
            setattr(args, action.dest, on)
        elif on:
            action(sub, args, [], option)
        return
    action(sub, args, sub._get_values(action, [text]), option)


def main(argv: list[str] | None = None, **extra: object) -> int:
    """`extra`: keyword arguments for the command's main (tests: `host=` for `run`)."""
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    apply_env(parser, args, argv)
    setup_logging(args.verbose + getattr(args, "sub_verbose", 0))
    if getattr(args, "_from_env", None):      # names only: values may be secrets
        logging.getLogger("dataplane.cli").info("flags from the environment: %s",
                                                ", ".join(args._from_env))
    try:
        return int(args._main(args, **extra) or 0)
    except CommandError as exc:
        print(f"dataplane {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
