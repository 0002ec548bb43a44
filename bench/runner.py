"""A whole run: every lab up side by side, rounds interleaved across the dataplanes, an
optional capture pass, everything torn down at the end whatever happened.

    up:      one lab per dataplane (own namespaces, own underlay bridge: isolated), daemons
             pinned, their RSS before any traffic
    rounds:  round 1: A B C ..., round 2: A B C ..., each visit runs every test once
    capture: (--pcap) a short unmeasured pass per dataplane with tcpdump on its underlay
    down:    every lab, also on an error or Ctrl-C

Labs stay up between rounds: building one takes seconds, and idle daemons cost nothing
measurable, while keeping them lets the daemons' memory be followed across the whole run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, UTC

from bench import capacity, measure, pcap, profile
from bench.ladder import BASELINE, Dataplane
from bench.measure import Settings
from bench.progress import Progress
from bench.stats import schedule
from bench.summary import MIB
from bench.topology import Topology, prefixes, remove_stale_labs

log = logging.getLogger(__name__)

SETUP_SECONDS = 0.8        # a test's own start-up: servers, `ss` polls, counters
LAB_UP_SECONDS = 1.5        # measured: 0.4 s for a kernel lab, 1.6-1.9 s with daemons
PROFILE_OVERHEAD_SECONDS = 3.0   # perf record's start and stop, perf report


class BaselineUnavailable(RuntimeError):
    pass


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclasses.dataclass
class Test:
    name: str
    label: str
    planned: Callable[[Settings], float]
    run: Callable[[Topology, Settings, dict], None]     # fills the sample in place
    pinned: bool | None = None     # the view it belongs to; None: no traffic, either will do


def _tcp(streams_of: Callable[[Settings], int], key: str, pinned: bool = True):
    def run(topo: Topology, s: Settings, sample: dict) -> None:
        metrics, raw = measure.tcp(topo, s, streams_of(s), pinned)
        sample["metrics"].update(metrics)
        sample["raw"][key] = raw
    return run


def _udp(topo: Topology, s: Settings, sample: dict) -> None:
    metrics, points = measure.udp_sweep(topo, s)
    sample["metrics"].update(metrics)
    sample["sweep"] = points


def _capacity(topo: Topology, s: Settings, sample: dict) -> None:
    found = capacity.measure(topo, s.capacity_seconds, s.capacity_trials, None)
    sample["metrics"].update({"capacity_pps": found.pps,
                              "sender_rx_pps": found.sender_rx_pps,
                              "sender_loss_pct": found.sender_loss_pct})
    sample["raw"]["capacity"] = found.as_dict()


def _latency(topo: Topology, s: Settings, sample: dict) -> None:
    metrics, raw, hist = measure.latency(topo, s)
    sample["metrics"].update(metrics)
    sample["raw"]["latency"] = raw
    sample["hist"]["rtt"] = hist.counts


def _rr(tcp: bool):
    key = "rr_tcp" if tcp else "rr_udp"

    def run(topo: Topology, s: Settings, sample: dict) -> None:
        metrics, raw, hist = measure.request_response(topo, s, tcp)
        sample["metrics"].update(metrics)
        sample["raw"][key] = raw
        sample["hist"][key] = hist.counts
    return run


def _echo(pinned: bool):
    key = "ping" if pinned else "ping_unpinned"

    def run(topo: Topology, s: Settings, sample: dict) -> None:
        metrics, raw, hist = measure.echo(topo, s, pinned)
        sample["metrics"].update(metrics)
        sample["raw"]["echo" if pinned else "echo_unpinned"] = raw
        sample["hist"][key] = hist.counts
    return run


def _background(topo: Topology, s: Settings, sample: dict) -> None:
    machine, daemons = measure.background(topo)
    sample["raw"]["background_cpu_per_s"] = round(machine, 3)
    if daemons is not None:
        sample["metrics"]["daemon_idle_cpu_per_s"] = daemons


def _test_seconds(s: Settings) -> float:
    return s.duration + SETUP_SECONDS


# The unpinned view first (what users feel, the primary figures), then the pinned one.
TESTS = (
    Test("idle", "background load", lambda s: measure.IDLE_SECONDS + 0.1, _background),
    Test("tcp1_unpinned", "TCP, 1 stream, unpinned", _test_seconds,
         _tcp(lambda s: 1, "tcp1_unpinned", False), False),
    Test("tcpN_unpinned", "TCP, N streams, unpinned", _test_seconds,
         _tcp(lambda s: s.streams, "tcpN_unpinned", False), False),
    Test("rr_udp", "UDP request/response", _test_seconds, _rr(False), False),
    Test("rr_tcp", "TCP request/response", _test_seconds, _rr(True), False),
    Test("echo_unpinned", "ICMP echo, unpinned",
         lambda s: s.echo_count * s.echo_interval + SETUP_SECONDS, _echo(False), False),
    Test("capacity", "64 B capacity search",
         lambda s: s.capacity_trials * (s.capacity_seconds + 0.5) + SETUP_SECONDS, _capacity,
         False),
    Test("tcp1", "TCP, 1 stream", _test_seconds, _tcp(lambda s: 1, "tcp1"), True),
    Test("tcpN", "TCP, N streams", _test_seconds, _tcp(lambda s: s.streams, "tcpN"), True),
    Test("udp", "UDP by payload size", lambda s: len(s.udp_payloads) * _test_seconds(s),
         _udp, True),
    Test("latency", "sockperf ping-pong", _test_seconds, _latency, True),
    Test("echo", "ICMP echo", lambda s: s.echo_count * s.echo_interval + SETUP_SECONDS,
         _echo(True), True),
)


def tests_of(s: Settings) -> tuple[Test, ...]:
    """The tests a round runs: without pinning (--no-pin, one CPU) only the unpinned view."""
    return tuple(t for t in TESTS if s.pin or t.pinned is not True)


def planned_round(s: Settings) -> float:
    return sum(t.planned(s) for t in tests_of(s))


@dataclasses.dataclass
class Plan:
    dataplanes: list[Dataplane]
    rounds: int
    settings: Settings
    pcap_path: str | None = None
    pcap_packets: int = 1000          # per test and dataplane
    rss_limit_mb: int = 64
    profile: bool = True              # the perf pass after the rounds (bench.profile)

    def planned_seconds(self) -> float:
        total = len(self.dataplanes) * (LAB_UP_SECONDS + self.rounds * planned_round(self.settings))
        if self.pcap_path:
            total += len(self.dataplanes) * planned_round(capture_settings(self.settings))
        if self.profile:
            total += (len(self.dataplanes) + len(rr_profiled(list(self.dataplanes)))) * (
                self.settings.duration + PROFILE_OVERHEAD_SECONDS)
        return total


def capture_settings(s: Settings) -> Settings:
    return dataclasses.replace(s, duration=1, udp_payloads=s.udp_payloads[:1], echo_count=20)


def execute(plan: Plan, progress: Progress) -> dict:
    """Run the plan; returns the results document (see bench.results for its schema)."""
    results = {
        "started": now(), "finished": None,
        "method": {"rounds": plan.rounds, **dataclasses.asdict(plan.settings),
                   "order": [dp.name for dp in plan.dataplanes], "baseline": BASELINE,
                   "rss_limit_mb": plan.rss_limit_mb,
                   "client_cpus": sorted(plan.settings.client_cpus or []),
                   "server_cpus": sorted(plan.settings.server_cpus or [])},
        "dataplanes": [], "skipped": [], "samples": [], "rss_before": {}, "pcap": None,
        "profile": None,
    }
    topos: dict[str, Topology] = {}
    owner = os.getpid()
    try:
        for prefix in remove_stale_labs():
            progress.note(f"removed lab {prefix} left by an earlier run")
        _bring_up(plan, progress, topos, results)
        running = [dp for dp in plan.dataplanes if dp.name in topos]
        results["method"]["order"] = [dp.name for dp in running]
        for seq, (rnd, name) in enumerate(schedule([dp.name for dp in running], plan.rounds)):
            topo = topos[name]
            sample = _one_round(topo, plan.settings, rnd, plan.rounds, progress)
            sample["seq"] = seq
            results["samples"].append(sample)
            progress.note(_one_line(sample))
        if plan.profile:
            results["profile"] = _profile_pass(plan, running, topos, progress)
        if plan.pcap_path:
            results["pcap"] = _capture_pass(plan, running, topos, progress)
    finally:
        if os.getpid() != owner:      # a forked helper (pyroute2's) unwinding: not ours to undo
            os._exit(1)
        progress.close()
        for name, topo in topos.items():
            try:
                topo.down()
            except Exception as exc:          # keep tearing the others down
                log.error("tearing down the %s lab (%s) failed: %s", name, topo.prefix, exc)
    results["finished"] = now()
    return results


def _bring_up(plan: Plan, progress: Progress, topos: dict, results: dict) -> None:
    for dp, prefix in zip(plan.dataplanes, prefixes(len(plan.dataplanes))):
        progress.status(f"lab {dp.name}", f"building {prefix} (2 nodes, 1 pod each)")
        topo = Topology(dp, prefix)
        topos[dp.name] = topo               # before up(): whatever up() leaves, down() removes
        try:
            topo.up()
        except Exception as exc:
            if dp.name == BASELINE:
                raise BaselineUnavailable(f"the {BASELINE} lab did not come up: {exc}") from exc
            reason = f"lab did not come up: {_gist(exc)}"
            results["skipped"].append({"name": dp.name, "reason": reason})
            progress.note(f"skipping {dp.name}: {reason}")
            topo.down()
            del topos[dp.name]
            continue
        finally:
            progress.advance(LAB_UP_SECONDS)
        pids = topo.daemon_pids()
        if pids:
            results["rss_before"][dp.name] = measure.daemon_rss(topo)
        results["dataplanes"].append({
            "name": dp.name, "backend": dp.backend, "encap": dp.encap, "fastpath": dp.fastpath,
            "daemon_args": list(dp.daemon_args), "overhead_bytes": dp.overhead,
            "underlay_mtu": topo.underlay_mtu, "pod_mtu": topo.pod_mtu, "lab": topo.prefix,
            "daemons": len(pids), "daemons_pinned": bool(pids) and plan.settings.pin
            and dp.pin_daemons, "note": dp.note,
            "tunnel_method": dp.tunnel.method if dp.tunnel is not None else None,
            "encrypts": dp.tunnel is not None and dp.tunnel.encrypts})


def _gist(exc: Exception) -> str:
    """An error in one line: the lab quotes whole daemon logs, whose last line says why."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(exc).__name__
    return f"{lines[0]} ... {lines[-1]}"


def _one_round(topo: Topology, s: Settings, rnd: int, rounds: int, progress: Progress) -> dict:
    sample = {"dataplane": topo.dp.name, "round": rnd, "started": now(), "seconds": None,
              "metrics": {}, "raw": {}, "sweep": [], "hist": {}, "errors": {}}
    start = time.monotonic()
    where = f"round {rnd}/{rounds} {topo.dp.name}"
    view: bool | None = None
    for test in tests_of(s):
        if test.pinned is not None and test.pinned != view:
            measure.pin_daemons(topo, s, test.pinned)
            view = test.pinned
        progress.status(where, test.label)
        try:
            test.run(topo, s, sample)
        except Exception as exc:              # a failed test leaves its figures out
            sample["errors"][test.name] = f"{type(exc).__name__}: {exc}"
            progress.note(f"{where}: {test.label} failed: {exc}")
        progress.advance(test.planned(s))
    rss = measure.daemon_rss(topo)
    if rss:
        sample["raw"]["rss_bytes"] = rss
        known = [v for v in rss if v]
        sample["metrics"]["daemon_rss_mb"] = max(known) / MIB if known else None
    sample["seconds"] = round(time.monotonic() - start, 2)
    return sample


def _one_line(sample: dict) -> str:
    m = sample["metrics"]

    def f(key: str, fmt: str, scale: float = 1.0) -> str:
        v = m.get(key)
        return "-" if v is None else format(v * scale, fmt)

    errors = f", {len(sample['errors'])} failed" if sample["errors"] else ""
    bg = sample["raw"].get("background_cpu_per_s")
    errors = (f", background {bg:.2f} CPU" if bg is not None else "") + errors
    return (f"round {sample['round']} {sample['dataplane']:<14} "
            f"tcp1 {f('tcp1_unpinned_gbps', '.2f')} Gbit/s, "
            f"tcpN {f('tcpN_unpinned_gbps', '.2f')}, "
            f"64B capacity {f('capacity_pps', '.0f', 1e-3)} kpps, "
            f"ping {f('ping_unpinned_median_us', '.0f')} µs, "
            f"rr/udp {f('rr_udp_tps', '.0f')}/s{errors}")


def _profile_pass(plan: Plan, running: list[Dataplane], topos: dict, progress: Progress
                  ) -> dict:
    """One unpinned TCP stream per dataplane under perf, after the rounds (perf's own cost
    stays out of every measured figure)."""
    seconds = plan.settings.duration
    reason = profile.unavailable()
    if reason is not None:
        progress.note(f"no CPU profile: {reason}")
        progress.advance((len(running) + len(rr_profiled(running)))
                         * (seconds + PROFILE_OVERHEAD_SECONDS))
        return {"unavailable": reason}
    out: dict = {"seconds": seconds, "frequency_hz": profile.FREQ, "dataplanes": {},
                 "errors": {}}
    rr: dict = {"dataplanes": {}, "errors": {}}
    passes = [(dp, "tcp", out) for dp in running]
    passes += [(dp, "tcp_rr", rr) for dp in rr_profiled(running)]
    for dp, test, into in passes:
        what = "TCP 1 stream" if test == "tcp" else "TCP request/response"
        progress.status(f"profile {dp.name}", f"perf record -a, {what}")
        measure.pin_daemons(topos[dp.name], plan.settings, False)
        try:
            into["dataplanes"][dp.name] = profile.record(topos[dp.name], seconds, test)
        except Exception as exc:
            into["errors"][dp.name] = f"{type(exc).__name__}: {exc}"
            progress.note(f"profile {dp.name} ({what}) failed: {exc}")
        progress.advance(seconds + PROFILE_OVERHEAD_SECONDS)
    if rr["dataplanes"] or rr["errors"]:
        out["tcp_rr"] = rr
    return out


def rr_profiled(running: list[Dataplane]) -> list[Dataplane]:
    """The rungs also profiled under TCP request/response: each busy-poll rung, the same rung
    without polling, and the baseline (what busy-polling buys, in the same buckets)."""
    names = {dp.name for dp in running}
    polled = {n for n in names if "+busypoll" in n}
    if not polled:
        return []
    want = polled | {n.replace("+busypoll", "") for n in polled} | {BASELINE}
    return [dp for dp in running if dp.name in want]


def _capture_pass(plan: Plan, running: list[Dataplane], topos: dict, progress: Progress
                  ) -> dict:
    """Each test once more, briefly and unmeasured, with tcpdump on the underlay bridge."""
    s = capture_settings(plan.settings)
    scratch = tempfile.mkdtemp(prefix="bench-pcap-")
    pieces = []
    try:
        for dp in running:
            topo = topos[dp.name]
            for test in tests_of(s):
                if test.name in ("idle", "tcpN", "tcp1_unpinned", "tcpN_unpinned", "capacity",
                                 "echo_unpinned", "rr_tcp"):
                    continue                  # no traffic; one stream shows the same packets
                progress.status(f"capture {dp.name}", test.label)
                piece = os.path.join(scratch, f"{len(pieces):03d}.pcap")
                try:
                    with pcap.capture(topo, piece, plan.pcap_packets):
                        test.run(topo, s, {"metrics": {}, "raw": {}, "hist": {}})
                    pieces.append(piece)
                except Exception as exc:
                    progress.note(f"capture {dp.name} {test.label} failed: {exc}")
                progress.advance(test.planned(s))
        records = pcap.join(pieces, plan.pcap_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"path": os.path.abspath(plan.pcap_path), "records": records,
            "snaplen": pcap.SNAPLEN, "packets_per_test": plan.pcap_packets}
