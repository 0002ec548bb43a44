"""`dataplane bench`: every dataplane side by side in one run; JSON, report and plots."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import textwrap
from pathlib import Path

from bench import ladder, machine, report, results, runner, topology
from bench.measure import Settings
from bench.overhead import IP_UDP
from bench.progress import Progress, fmt_seconds
from bench.stats import LogHistogram
from bench.summary import summarize
from dataplane.errors import CommandError

HELP = "benchmark every dataplane side by side: throughput, packet rate, latency, CPU, memory"

DEFAULTS = {"rounds": 3, "duration": 2}
QUICK = {"rounds": 1, "duration": 1, "echo_count": 100, "echo_interval": 0.002,
         "capacity_trials": 2}
TOOLS = ("iperf3", "sockperf", "ss", "taskset", "ip")


def configure(p: argparse.ArgumentParser) -> None:
    names = ", ".join(dp.name for dp in ladder.LADDER)
    p.epilog = textwrap.fill(
        f"Dataplanes, in run order: {names}. {ladder.BASELINE} is always run: every figure is "
        "also given as a ratio to it. A tunnel whose Debian package is missing is listed as "
        "unavailable (`--list`). Needs root (network namespaces).", 92) + CMD_HELP
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--dataplanes", metavar="LIST", type=_names,
                   help="comma-separated subset (default: every one this build can run); "
                        "cmd:PATH entries add your own tunnel program (see below)")
    p.add_argument("--dataplane", metavar="cmd:PATH", dest="extra_dataplanes",
                   action="append", default=[],
                   help="add one more dataplane, e.g. cmd:/path/to/your-tunnel (repeatable)")
    p.add_argument("--rounds", type=_positive(int), help=f"rounds (default {DEFAULTS['rounds']})")
    p.add_argument("--duration", type=_positive(int), metavar="SECONDS",
                   help=f"whole seconds per test (iperf3 and sockperf take no fractions; "
                        f"default {DEFAULTS['duration']})")
    p.add_argument("--streams", type=_positive(int), default=4,
                   help="streams in the multi-stream TCP test (default %(default)s)")
    p.add_argument("--udp-sizes", type=_sizes, metavar="LIST",
                   help="UDP payload sizes in bytes, the first being the small-packet test "
                        "(default: 64,512 and the largest that fits every pod MTU)")
    p.add_argument("--latency-rate", type=_positive(int), default=2000, metavar="MPS",
                   help="sockperf ping-pong messages per second (default %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help=f"one round of {QUICK['duration']} s tests, two UDP sizes (CI)")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="leave out the pinned view (tools and daemons pinned to one CPU per "
                        "node); the unpinned view always runs")
    p.add_argument("--capacity-trials", type=_positive(int), metavar="N",
                   help="trials of the 64 B capacity search, 1 s each: the first as fast as "
                        "one sender goes, then a binary search for the highest rate with at "
                        "most 0.1%% loss (default 5)")
    p.add_argument("--no-profile", dest="profile", action="store_false",
                   help="skip the perf pass (where the CPU goes) after the rounds")
    p.add_argument("--out", metavar="DIR",
                   help="results directory (default bench/results/<UTC timestamp>)")
    p.add_argument("--pcap", metavar="FILE",
                   help="also capture the underlay of every dataplane (a short unmeasured pass "
                        "after the rounds) into this pcap file")
    p.add_argument("--pcap-packets", type=_positive(int), default=1000, metavar="N",
                   help="packets captured per test and dataplane (default %(default)s)")
    p.add_argument("--list", action="store_true",
                   help="list the dataplanes and whether this build can run them, then exit")
    scale = p.add_argument_group(
        "scale", "--scale measures the control plane instead: thousands of leases in a real "
        "etcd and in the directory store, cold start and lease churn (bench/scale.py)")
    scale.add_argument("--scale", action="store_true",
                       help="run the scale benchmark (with --quick: small counts, 3 s churn)")
    scale.add_argument("--scale-leases", type=_counts, metavar="LIST",
                       help="etcd lease counts, ascending (default 1000,2500,5000)")
    scale.add_argument("--scale-dir-leases", type=_counts, metavar="LIST",
                       help="directory store lease counts, ascending (default 250,500,1000)")
    scale.add_argument("--churn-rate", type=_positive(float), metavar="PER_S",
                       help="lease changes per second during the churn (default 50)")
    scale.add_argument("--churn-seconds", type=_positive(float), metavar="SECONDS",
                       help="how long the churn lasts at each count (default 20)")
    p.add_argument("--soak", type=_positive(float), metavar="SECONDS",
                   help="run the soak instead: steady TCP and 64 B UDP, each at a quarter of its "
                        "capacity alone (together about half), a peer leaving and joining every "
                        "minute, an etcd member restarted every 10 minutes; "
                        "RSS, descriptors, drops and loss every 10 s (bench/soak.py); runs "
                        "under 20 minutes compress the churn so every event happens")
    p.add_argument("--render", metavar="DIR",
                   help="only redraw the report and plots of an earlier run from the raw "
                        "samples in its results.json, whose summary is computed again and "
                        "rewritten (no root needed)")


CMD_HELP = """

Your own dataplane: --dataplane cmd:PATH (or cmd:PATH in --dataplanes) runs PATH, as root:
  PATH overhead           once, on the host: print the bytes each pod packet gains on the
                          underlay (an integer); the pods' MTU is 1500 minus it
  PATH up   N L P LS PS   in node N's network namespace (N = 1 or 2; L, P: this and the
  PATH down N L P LS PS   peer node's underlay IPv4 on eth0; LS, PS: their pod subnets)
`up` exits 0 once PS is routed through a layer-3 tunnel to the peer (the lab's own route to
PS is deleted first); daemons it leaves running are measured as the rung's daemons. `down`
runs at teardown, also after a failed `up`; anything still running in the namespace is then
killed. Environment: DATAPLANE_TUNNEL_DIR (a private directory, removed afterwards),
DATAPLANE_UNDERLAY_DEV (eth0), DATAPLANE_UNDERLAY_MTU (1500), DATAPLANE_TUNNEL_TAG (unique
per lab, for names shared between namespaces). An example over kernel VXLAN:
dataplane/deploy/bench-tunnel-vxlan.sh."""


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return value
    return parse


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of lease counts: {text!r}") from None
    if not counts or any(c < 3 for c in counts) or list(counts) != sorted(counts):
        raise argparse.ArgumentTypeError("lease counts must be at least 3 (the lab's two "
                                         "nodes and a filler), in ascending order")
    return counts


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of byte counts: {text!r}") from None
    if not sizes or any(s < 16 for s in sizes):
        raise argparse.ArgumentTypeError("UDP payloads must be at least 16 bytes (iperf3's "
                                         "own header)")
    return sizes


def choose(args: argparse.Namespace) -> tuple[list[ladder.Dataplane], list[dict]]:
    """The dataplanes to run and those left out with the reason; explicit requests for one
    this build cannot run are an error, the default list just leaves it out."""
    from bench.tunnels import TunnelError

    requested = (args.dataplanes or []) + list(getattr(args, "extra_dataplanes", []))
    if requested and not args.dataplanes:      # --dataplane alone adds to the whole ladder
        requested = [dp.name for dp in ladder.LADDER] + requested
    try:
        wanted = ladder.select(requested or None)
    except KeyError as exc:
        names = ", ".join(dp.name for dp in ladder.LADDER)
        raise CommandError(f"unknown dataplane {exc.args[0]!r}: choose from {names} "
                           "or cmd:PATH") from None
    except TunnelError as exc:
        raise CommandError(f"--dataplane cmd:PATH: {exc}") from None
    chosen, skipped = [], []
    for dp in wanted:
        reason = topology.available(dp)
        if reason is None:
            chosen.append(dp)
        elif (args.dataplanes and dp.name in args.dataplanes or dp.name == ladder.BASELINE
              or dp.name.startswith("cmd:")):
            raise CommandError(f"{dp.name} cannot run in this build: {reason}")
        else:
            skipped.append({"name": dp.name, "reason": reason})
    return chosen, skipped


def settings_from(args: argparse.Namespace, dataplanes: list[ladder.Dataplane]) -> Settings:
    quick = QUICK if args.quick else {}
    largest = min(dp.pod_mtu() for dp in dataplanes) - IP_UDP
    sizes = args.udp_sizes or (64, largest)
    if max(sizes) > largest:
        raise CommandError(f"UDP payload {max(sizes)} does not fit every pod MTU: at most "
                           f"{largest} bytes")
    extra = {k: v for k, v in quick.items()
             if k in ("echo_count", "echo_interval", "capacity_trials")}
    if getattr(args, "capacity_trials", None):
        extra["capacity_trials"] = args.capacity_trials
    return Settings(duration=args.duration or quick.get("duration", DEFAULTS["duration"]),
                    streams=args.streams, udp_payloads=sizes, latency_mps=args.latency_rate,
                    pin=args.pin and (os.cpu_count() or 1) > 1, **extra)


def command_line(args: argparse.Namespace, rounds: int, s: Settings,
                 dataplanes: list[ladder.Dataplane]) -> str:
    """The run spelled out in full, so that it can be repeated exactly."""
    argv = ["dataplane", "bench", "--dataplanes", ",".join(dp.name for dp in dataplanes),
            "--rounds", str(rounds), "--duration", f"{s.duration:g}", "--streams", str(s.streams),
            "--udp-sizes", ",".join(map(str, s.udp_payloads)),
            "--latency-rate", str(s.latency_mps), "--capacity-trials", str(s.capacity_trials)]
    if args.quick:
        argv.append("--quick")
    if not args.pin:
        argv.append("--no-pin")
    if not getattr(args, "profile", True):
        argv.append("--no-profile")
    if args.pcap:
        argv += ["--pcap", args.pcap, "--pcap-packets", str(args.pcap_packets)]
    return shlex.join(argv)


def write_outputs(doc: dict, out_dir: str) -> tuple[str, str]:
    """Plots, results.json and report.md into out_dir."""
    # matplotlib only here: cli.py imports every command module, the node daemon included,
    # and a daemon must not carry a plotting library in its memory.
    from bench import plots

    doc["plots"] = plots.write_all(doc, os.path.join(out_dir, "plots"))
    json_path = results.write_json(doc, out_dir)
    report_path = os.path.join(out_dir, "report.md")
    with open(report_path, "w") as f:
        f.write(report.render(doc))
    return json_path, report_path


def render(out_dir: str) -> int:

    try:
        doc = results.load(out_dir)
    except (OSError, ValueError) as exc:
        raise CommandError(f"--render {out_dir}: {exc}") from None
    # The summary is derived data: computed again, so an older run gets the current figures'
    # keys (those it did not measure show as `-`).
    names = [dp["name"] for dp in doc["dataplanes"]]
    edges = doc.get("summary", {}).get("histogram_edges_us", LogHistogram.edges())
    doc["summary"] = summarize(doc["samples"], names, doc["method"]["baseline"])
    doc["summary"]["histogram_edges_us"] = edges
    _, report_path = write_outputs(doc, out_dir)
    print(f"report: {report_path}")
    return 0


def _sigterm_handler(owner: int):
    """SIGTERM as Ctrl-C, so the labs are torn down; but only in this process. pyroute2
    forks helpers that inherit the handler, and one that unwound the harness's stack would
    tear down the labs from under the run: those just exit."""
    def handle(signum, frame):
        if os.getpid() != owner:
            os._exit(128 + signum)
        raise KeyboardInterrupt
    return handle


def run_scale(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from bench import scale
    from dataplane.store.etcd_server import find_etcd

    if find_etcd() is None:
        raise CommandError("--scale needs etcd (Debian: etcd-server)")
    s = scale.QUICK if args.quick else scale.ScaleSettings()
    s = replace(s, **{k: v for k, v in (("etcd_counts", args.scale_leases),
                                        ("directory_counts", args.scale_dir_leases),
                                        ("churn_rate", args.churn_rate),
                                        ("churn_seconds", args.churn_seconds)) if v})
    out_dir = args.out or results.default_out_dir()
    os.makedirs(out_dir, exist_ok=True)
    progress = Progress(scale.planned_seconds(s))
    progress.note(f"scale: etcd {list(s.etcd_counts)} leases, directory "
                  f"{list(s.directory_counts)}; churn {s.churn_rate:g}/s for "
                  f"{s.churn_seconds:g} s; results in {out_dir}")
    previous = signal.signal(signal.SIGTERM, _sigterm_handler(os.getpid()))
    try:
        doc = scale.execute(s, progress, Path(out_dir) / "logs")
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.close()
    report_path = scale.write_outputs(doc, out_dir)
    print(f"report: {report_path}")
    errors = scale.failures(doc)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


def run_soak(args: argparse.Namespace) -> int:
    from bench import soak

    s = soak.SoakSettings.for_duration(args.soak)
    out_dir = args.out or results.default_out_dir()
    os.makedirs(out_dir, exist_ok=True)
    progress = Progress(s.seconds)
    progress.note(f"soak: {s.seconds:g} s, churn every {s.churn_every:g} s, etcd restart every "
                  f"{s.etcd_every:g} s; results in {out_dir}")
    previous = signal.signal(signal.SIGTERM, _sigterm_handler(os.getpid()))
    try:
        doc = soak.execute(s, progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.close()
    print(f"report: {soak.write_outputs(doc, out_dir)}")
    for e in doc["errors"]:
        print(f"error: {e}", file=sys.stderr)
    return 0 if doc["verdict"]["met"] else 1


def main(args: argparse.Namespace) -> int:

    if args.list:
        for dp in ladder.LADDER:
            reason = topology.available(dp)
            print(f"{dp.name:<16} {'ok' if reason is None else 'unavailable: ' + reason}"
                  f"{'  (baseline)' if dp.name == ladder.BASELINE else ''}")
        return 0
    if args.render:
        return render(args.render)
    if os.geteuid() != 0:
        raise CommandError("must run as root: the labs are network namespaces")
    missing = [t for t in TOOLS + (("tcpdump",) if args.pcap else ()) if not shutil.which(t)]
    if missing:
        raise CommandError(f"missing tools: {', '.join(missing)} (Debian: iperf3 sockperf "
                           "iproute2 util-linux tcpdump)")
    if topology.lab_module() is None:
        raise CommandError("this build has no dataplane.lab: the benchmark needs the lab")
    if args.scale:
        return run_scale(args)
    if args.soak:
        return run_soak(args)
    dataplanes, skipped = choose(args)
    s = settings_from(args, dataplanes)
    rounds = args.rounds or (QUICK["rounds"] if args.quick else DEFAULTS["rounds"])
    out_dir = args.out or results.default_out_dir()
    os.makedirs(out_dir, exist_ok=True)
    if args.pcap:
        os.makedirs(os.path.dirname(os.path.abspath(args.pcap)), exist_ok=True)

    plan = runner.Plan(dataplanes, rounds, s, pcap_path=args.pcap,
                       pcap_packets=args.pcap_packets, profile=args.profile)
    progress = Progress(plan.planned_seconds())
    progress.note(f"benchmarking {', '.join(dp.name for dp in dataplanes)}: {rounds} round(s), "
                  f"about {fmt_seconds(plan.planned_seconds())}; results in {out_dir}")
    previous = signal.signal(signal.SIGTERM, _sigterm_handler(os.getpid()))
    try:
        doc = runner.execute(plan, progress)
    except runner.BaselineUnavailable as exc:
        raise CommandError(str(exc)) from None
    except KeyboardInterrupt:
        print("interrupted: every lab of this run has been removed", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)

    doc = {"schema": results.SCHEMA, "command": command_line(args, rounds, s, dataplanes),
           "machine": machine.describe(), **doc}
    doc["skipped"] = skipped + doc["skipped"]
    names = [dp["name"] for dp in doc["dataplanes"]]
    doc["summary"] = summarize(doc["samples"], names, ladder.BASELINE)
    doc["summary"]["histogram_edges_us"] = LogHistogram.edges()
    json_path, report_path = write_outputs(doc, out_dir)
    failed = sum(len(smp["errors"]) for smp in doc["samples"])
    print(f"report: {report_path}\nraw samples: {json_path}"
          + (f"\npcap: {doc['pcap']['path']}" if doc.get("pcap") else ""))
    if failed:
        print(f"{failed} test(s) failed; see the report", file=sys.stderr)
        return 1
    return 0
