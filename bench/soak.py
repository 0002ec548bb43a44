"""`dataplane bench --soak SECONDS`: hours of ordinary life, watched for leaks and loss.

One lab: three vxlan nodes of ours, a pod on each, a 3-member etcd. First the capacity of pod 1
-> pod 2 is measured (one TCP stream, then 64-byte UDP unthrottled, 3 s each); then for SECONDS:

  traffic   pod 1 -> pod 2: TCP paced at a quarter of the TCP capacity, 64-byte UDP at a
            quarter of the small-packet rate received (each capacity is measured with the
            machine to itself, so two halves would saturate it: together they are about half),
            and an ICMP echo every 10 ms (for loss over time)
  churn     node 3 leaves (daemon stopped, its lease released) and joins again, in turn,
            every CHURN seconds; an etcd member (each in turn) is restarted every ETCD seconds
  samples   every 10 s: RSS and open descriptors of the daemons of nodes 1 and 2 (the ones
            that stay), their drop counters by reason, echoes lost in the last 10 s

RSS growth is taken after a warm-up (the first fifth of the run, at least 20 s): the last
sample against the first after it. Targets: growth under 2 MB, descriptors flat, no loss
beyond what the churn explains (none on the pod 1 -> pod 2 path: node 3 is not on it), no crash.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, UTC
from typing import Any

from bench import procstat, results, topology
from bench.progress import Progress

SCHEMA = "dataplane-bench-soak/1"
# Each flow's share of what it carries alone: TCP and UDP together at about half capacity.
SHARE = 0.25
SAMPLE_EVERY = 10.0
FLOW_INTERVAL = 0.01
FLOW_MAX = 30000               # the echo probe numbers at most 0x7fff requests in a flow
TCP_PORT, UDP_PORT = 5301, 5302
RSS_GROWTH_MB = 2.0
# Open descriptors move by a few as etcd connections are pooled, dropped and made again (an etcd
# member restarting, a watch resumed); a leak grows without end. Flat: the last sample at most
# this many above the first after warm-up.
FD_SLACK = 2


@dataclass
class SoakSettings:
    seconds: float = 3600.0
    churn_every: float = 60.0
    etcd_every: float = 600.0
    capacity_seconds: int = 3

    @classmethod
    def for_duration(cls, seconds: float) -> SoakSettings:
        """Short runs (CI's minute) keep every event in: churn and an etcd restart happen."""
        if seconds >= 1200:
            return cls(seconds=seconds)
        return cls(seconds=seconds, churn_every=max(seconds / 3, 10.0),
                   etcd_every=max(seconds / 2, 15.0), capacity_seconds=2)


def flow_interval(seconds: float) -> float:
    """Echoes every 10 ms, or further apart so that the whole run is covered."""
    return max(FLOW_INTERVAL, round(seconds / FLOW_MAX, 3))


def warmup(seconds: float) -> float:
    return max(seconds / 5, 20.0)


def _iperf_json(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        raise RuntimeError(f"iperf3 printed no JSON: {err.strip() or out[:200]}") from None


def _metrics(netns_name: str) -> dict[str, float]:
    import urllib.request

    from dataplane.daemon.metrics import parse_metrics
    from dataplane.lab import daemon as lab_daemon
    from dataplane.lab.nsthread import call_in_netns

    def fetch() -> dict[str, float]:
        url = f"http://127.0.0.1:{lab_daemon.METRICS_PORT}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return parse_metrics(resp.read().decode())
        except OSError:
            return {}
    return call_in_netns(netns_name, fetch)


def drops_by_reason(metrics: dict[str, float]) -> dict[str, float]:
    """{'direction/reason': count} of the nonzero drop counters."""
    out = {}
    for key, value in metrics.items():
        if key.startswith("dataplane_drops_total{") and value:
            labels = dict(part.split("=", 1) for part in key[key.index("{") + 1:-1].split(","))
            out[f"{labels['direction'].strip(chr(34))}/{labels['reason'].strip(chr(34))}"] = value
    return out


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None


def capacity(lab, src, dst, seconds: int) -> tuple[float, float]:
    """(TCP bit/s, 64-byte UDP packets/s received) from pod src to pod dst."""
    results = []
    for udp in (False, True):
        server = lab.popen(dst, ["iperf3", "-s", "-1", "-B", str(dst.ip), "-p", str(TCP_PORT)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        argv = ["iperf3", "-c", str(dst.ip), "-p", str(TCP_PORT), "-t", str(seconds), "-J"]
        if udp:
            argv += ["-u", "-l", "64", "-b", "0"]
        doc = _iperf_json(lab.popen(src, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True), seconds + 20)
        server.wait(timeout=10)
        end = doc.get("end", {})
        if udp:
            s = end.get("sum", {})
            got = (s.get("packets", 0) - s.get("lost_packets", 0)) / max(s.get("seconds", 1), 1e-9)
        else:
            got = end.get("sum_received", {}).get("bits_per_second", 0.0)
        results.append(float(got))
    return results[0], results[1]


def execute(s: SoakSettings, progress: Progress) -> dict[str, Any]:
    import dataplane.lab as lab_mod

    topology.remove_stale_labs()
    (prefix,) = topology.prefixes(1)
    lab = lab_mod.Lab(prefix, nodes=3, pods=1, backend="vxlan", store="etcd",
                      etcd_members=3, state_root=topology.STATE_ROOT, daemon_timeout=60.0)
    started = datetime.now(UTC)
    doc: dict[str, Any] = {"schema": SCHEMA, "started": started.isoformat(timespec="seconds"),
                           "settings": vars(s) | {"sample_every": SAMPLE_EVERY,
                                                  "flow_interval": flow_interval(s.seconds)},
                           "samples": [], "events": [], "errors": []}
    procs: list[subprocess.Popen[Any]] = []
    try:
        progress.status("soak", "lab up")
        lab.up()
        src, dst = lab.pod(1, 1), lab.pod(2, 1)
        progress.status("soak", "capacity")
        tcp_bps, udp_pps = capacity(lab, src, dst, s.capacity_seconds)
        doc["capacity"] = {"tcp_bps": tcp_bps, "udp64_pps": udp_pps}
        doc["offered"] = {"tcp_bps": tcp_bps * SHARE, "udp64_pps": udp_pps * SHARE}
        run_s = int(s.seconds)
        servers = [lab.popen(dst, ["iperf3", "-s", "-1", "-B", str(dst.ip), "-p", str(port),
                                   "-J", "-i", str(int(SAMPLE_EVERY))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for port in (TCP_PORT, UDP_PORT)]
        procs += servers
        time.sleep(0.3)
        clients = [
            lab.popen(src, ["iperf3", "-c", str(dst.ip), "-p", str(TCP_PORT), "-t", str(run_s),
                            "-b", str(int(tcp_bps * SHARE)), "-J"],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
            lab.popen(src, ["iperf3", "-c", str(dst.ip), "-p", str(UDP_PORT), "-t", str(run_s),
                            "-u", "-l", "64", "-b", str(int(udp_pps * SHARE * 64 * 8)),
                            "-J"],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
        procs += clients
        flow = lab.flow(src, dst, duration=run_s, interval=flow_interval(run_s))
        watched = {n.name: lab.daemon_pids()[n.name] for n in lab.nodes[:2]}
        t0 = time.monotonic()
        next_sample, next_churn, next_etcd = SAMPLE_EVERY, s.churn_every, s.etcd_every
        node3, member, joined = lab.node(3), 0, True
        while (now := time.monotonic() - t0) < run_s:
            if now >= next_churn:
                next_churn += s.churn_every
                if joined:
                    lab.stop_daemon(node3)
                    lab.store.release(node3.subnet)
                    doc["events"].append({"t": round(now, 1), "event": "node 3 left"})
                else:
                    lab.start_daemon(node3)
                    doc["events"].append({"t": round(now, 1), "event": "node 3 joined"})
                joined = not joined
            if now >= next_etcd:
                next_etcd += s.etcd_every
                name = lab.etcd.members[member % len(lab.etcd.members)].name
                lab.etcd.stop_member(name)
                lab.etcd.start_member(name)
                doc["events"].append({"t": round(now, 1), "event": f"etcd {name} restarted"})
                member += 1
            if now >= next_sample:
                next_sample += SAMPLE_EVERY
                progress.advance(SAMPLE_EVERY)
                sample: dict[str, Any] = {"t": round(now, 1), "daemons": {}}
                for name, pid in watched.items():
                    rss = procstat.rss_bytes(pid)
                    sample["daemons"][name] = {
                        "alive": rss is not None, "rss_bytes": rss, "fds": fd_count(pid),
                        "drops": drops_by_reason(_metrics(name))}
                doc["samples"].append(sample)
                progress.status("soak", f"{now:.0f} of {run_s} s; RSS "
                                + ", ".join(f"{(d['rss_bytes'] or 0) / 2**20:.1f}"
                                            for d in sample["daemons"].values()) + " MiB")
            time.sleep(0.2)
        result = flow.result(timeout=30)
        doc["flow"] = {"sent": result.sent, "received": result.received,
                       "lost_at": list(result.lost)}
        tcp = _iperf_json(clients[0], 60)
        udp_server = _iperf_json(servers[1], 60)
        doc["tcp"] = {"bits_per_second": tcp.get("end", {}).get("sum_received", {})
                      .get("bits_per_second"),
                      "retransmits": tcp.get("end", {}).get("sum_sent", {}).get("retransmits")}
        doc["udp"] = {"intervals": [
            {"t": round(iv["sum"]["end"], 1), "packets": iv["sum"].get("packets"),
             "lost": iv["sum"].get("lost_packets")}
            for iv in udp_server.get("intervals", [])],
            "total": {k: udp_server.get("end", {}).get("sum", {}).get(k)
                      for k in ("packets", "lost_packets", "lost_percent")}}
        for proc in (clients[1], servers[0]):
            proc.communicate(timeout=60)
    except Exception as exc:
        doc["errors"].append(f"{type(exc).__name__}: {exc}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        progress.status("soak", "lab down")
        lab.down()
    doc["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    doc["verdict"] = verdict(doc)
    return doc


def verdict(doc: dict[str, Any]) -> dict[str, Any]:
    """Growth after warm-up per daemon, crashes, loss; what the targets ask."""
    samples = doc["samples"]
    seconds = doc["settings"]["seconds"]
    after = [x for x in samples if x["t"] >= warmup(seconds)] or samples[-1:]
    out: dict[str, Any] = {"daemons": {}}
    for name in (samples[0]["daemons"] if samples else {}):
        series = [x["daemons"][name] for x in after]
        rss = [d["rss_bytes"] for d in series if d["rss_bytes"]]
        fds = [d["fds"] for d in series if d["fds"] is not None]
        out["daemons"][name] = {
            "crashed": not all(x["daemons"][name]["alive"] for x in samples),
            "rss_first_mb": round(rss[0] / 2**20, 2) if rss else None,
            "rss_last_mb": round(rss[-1] / 2**20, 2) if rss else None,
            "rss_growth_mb": round((rss[-1] - rss[0]) / 2**20, 2) if rss else None,
            "rss_max_mb": round(max(rss) / 2**20, 2) if rss else None,
            "fds_first": fds[0] if fds else None, "fds_last": fds[-1] if fds else None,
            "fds_max": max(fds) if fds else None}
    flow = doc.get("flow") or {}
    out["echo_lost"] = (flow.get("sent", 0) - flow.get("received", 0)) if flow else None
    out["udp_lost_pct"] = (doc.get("udp") or {}).get("total", {}).get("lost_percent")
    out["met"] = bool(out["daemons"]) and all(
        not d["crashed"] and d["rss_growth_mb"] is not None
        and d["rss_growth_mb"] < RSS_GROWTH_MB and d["fds_last"] <= d["fds_first"] + FD_SLACK
        for d in out["daemons"].values()) and out["echo_lost"] == 0 and not doc["errors"]
    return out


# ---- report and plots --------------------------------------------------------------------------

def render_report(doc: dict[str, Any]) -> str:
    s, v = doc["settings"], doc["verdict"]
    cap, off = doc.get("capacity", {}), doc.get("offered", {})

    def share(key: str) -> str:         # as offered by the run (earlier runs: half)
        return f"{off[key] / cap[key]:.0%}" if cap.get(key) and key in off else "-"
    lines = ["# dataplane soak", "",
             f"{doc['started']} to {doc['finished']}: {s['seconds']:g} s. Three vxlan nodes of "
             f"ours and a 3-member etcd; pod 1 -> pod 2 carries TCP paced at {share('tcp_bps')} "
             f"of its measured capacity ({off.get('tcp_bps', 0) / 1e9:.2f} of "
             f"{cap.get('tcp_bps', 0) / 1e9:.2f} Gbit/s), 64-byte UDP at {share('udp64_pps')} "
             f"of its ({off.get('udp64_pps', 0) / 1e3:.0f} of "
             f"{cap.get('udp64_pps', 0) / 1e3:.0f} kpps) and an echo every "
             f"{s['flow_interval'] * 1000:g} ms. Node 3 leaves or joins every "
             f"{s['churn_every']:g} s; an etcd member restarts every {s['etcd_every']:g} s. "
             f"Samples every {s['sample_every']:g} s; growth is counted after a warm-up of "
             f"{warmup(s['seconds']):g} s.", "",
             "| daemon | crashed | RSS after warm-up → end MiB | growth MiB | max MiB "
             "| open fds first → last (max) |", "|---|---|---|---|---|---|"]
    for name, d in v["daemons"].items():
        lines.append(f"| {name} | {'yes' if d['crashed'] else 'no'} | {d['rss_first_mb']} → "
                     f"{d['rss_last_mb']} | {d['rss_growth_mb']} | {d['rss_max_mb']} | "
                     f"{d['fds_first']} → {d['fds_last']} ({d['fds_max']}) |")
    udp = (doc.get("udp") or {}).get("total", {})
    tcp = doc.get("tcp") or {}
    lines += ["", f"- echoes lost: {v['echo_lost']} of {(doc.get('flow') or {}).get('sent')}",
              f"- 64-byte UDP: {udp.get('lost_packets')} of {udp.get('packets')} lost "
              f"({udp.get('lost_percent') or 0:.2f}%)",
              f"- TCP: {(tcp.get('bits_per_second') or 0) / 1e9:.2f} Gbit/s received, "
              f"{tcp.get('retransmits')} retransmits",
              f"- events: {len(doc['events'])} ("
              + ", ".join(f"{e['event']} at {e['t']:g} s" for e in doc["events"][:12])
              + (", …" if len(doc["events"]) > 12 else "") + ")",
              f"- targets (growth < {RSS_GROWTH_MB:g} MB, fds flat (at most {FD_SLACK} above the "
              f"first after warm-up), no echo lost, no crash): "
              f"{'met' if v['met'] else 'NOT met'}"]
    drops: dict[str, float] = {}
    for x in doc["samples"][-1:]:
        for d in x["daemons"].values():
            for k, n in d["drops"].items():
                drops[k] = drops.get(k, 0) + n
    lines.append("- drops at the end (both daemons): "
                 + (", ".join(f"{k} {n:.0f}" for k, n in sorted(drops.items())) or "none"))
    if doc["errors"]:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in doc["errors"]]
    if doc.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{t}](plots/{n}.png)" for n, t in doc["plots"].items()]
    return "\n".join(lines) + "\n"


def write_plots(doc: dict[str, Any], out_dir: str) -> dict[str, str]:
    from bench import plots       # matplotlib only here (it chooses the Agg backend first)
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    samples = doc["samples"]
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    for name in (samples[0]["daemons"] if samples else {}):
        t = [x["t"] for x in samples]
        axes[0].plot(t, [(x["daemons"][name]["rss_bytes"] or 0) / 2**20 for x in samples],
                     label=name)
        axes[1].plot(t, [x["daemons"][name]["fds"] or 0 for x in samples], label=name)
        axes[2].plot(t, [sum(x["daemons"][name]["drops"].values()) for x in samples],
                     label=f"{name} drops (all reasons)")
    lost = (doc.get("flow") or {}).get("lost_at") or []
    if lost:
        axes[2].plot(lost, [0] * len(lost), "rx", label="echo lost")
    for e in doc["events"]:
        for ax in axes:
            ax.axvline(e["t"], color="grey", lw=0.5, ls=":")
    axes[0].set(ylabel="RSS MiB", title="daemons of nodes 1 and 2 (dotted: churn events)")
    axes[1].set(ylabel="open fds")
    axes[2].set(ylabel="count", xlabel="seconds")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    plots.save(fig, out_dir, "soak")
    return {"soak": "RSS, open descriptors and drops over the run"}


def write_outputs(doc: dict[str, Any], out_dir: str) -> str:
    return results.write_run(doc, out_dir, write_plots, render_report)
