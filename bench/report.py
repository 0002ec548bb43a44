"""The Markdown report: what each encapsulation costs on paper, then what it cost here.

Every table cell is `median (ratio×)`, the ratio taken to the baseline's median of the same
run; `-` where a figure does not apply (daemon CPU of a kernel dataplane) or was not measured.
"""

from __future__ import annotations

from bench import overhead, profile, targets
from bench.stats import median
from bench.summary import SCALE, TABLES, our_rungs, rss_overview
from dataplane.backends import UDP, VXLAN

ENCAP_TITLES = {None: "host-gw (routing)", "udp": "udp (flannel)", "vxlan": "VXLAN"}
UDP_SMALL = 64
BUSY_CPUS = 0.2      # background above this (CPU-seconds per second) earns a warning


def _num(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def cell(value: float | None, ratio: float | None, digits: int) -> str:
    if value is None:
        return "-"
    text = _num(value, digits)
    return f"{text} ({ratio:.2f}×)" if ratio is not None else text


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def overlay_section(underlay_mtu: int) -> list[str]:
    lines = [
        "## 1. Overlay or routing: what each mode costs on paper", "",
        "A **routing** backend (host-gw) hands the pod's packet to the underlay as it is: each "
        "node routes the other nodes' pod subnets via their underlay addresses. It needs every "
        "node on one layer-2 segment, and costs no byte. An **overlay** wraps the pod's packet "
        "in a new outer IPv4/UDP packet between the nodes, so it crosses any IP underlay, and "
        "pays for it in header bytes on every packet and in a smaller pod MTU (the wrapped packet "
        "must still fit the underlay's MTU). The headers below are read off a packet built by "
        "`dataplane explain --backend udp|vxlan`.", "",
    ]
    sizes = (UDP_SMALL + overhead.IP_UDP, underlay_mtu)
    header = ["mode", "headers in front of the pod's packet", "bytes",
              f"pod MTU (underlay {underlay_mtu})", f"share for the pod packet at {sizes[0]} B",
              f"at a full {underlay_mtu} B underlay packet"]
    rows = []
    for encap in (None, "udp", "vxlan"):
        hs = overhead.headers(encap, underlay_mtu)
        mtu = overhead.pod_mtu(encap, underlay_mtu)
        stack = " + ".join(f"{name} {size}" for name, size in hs) or "none"
        rows.append([ENCAP_TITLES[encap], stack, str(overhead.overhead(encap)), str(mtu),
                     f"{100 * overhead.efficiency(sizes[0], encap):.1f}%",
                     f"{100 * overhead.efficiency(mtu, encap):.1f}%"])
    lines += _table(header, rows)
    vx = overhead.overhead("vxlan")
    lines += ["", f"A {UDP_SMALL}-byte UDP payload is a {sizes[0]}-byte pod packet; VXLAN sends "
              f"{sizes[0] + vx} bytes of IP for it. Small packets pay the most; full-size "
              "packets lose 2-3% of the bytes, and TCP segments shrink by the same number of "
              "bytes as the MTU. What the header costs in CPU is the next section's subject: "
              "per-packet work, not bytes, is what limits a userspace dataplane.", ""]
    return lines


def results_section(results: dict) -> list[str]:
    summary = results["summary"]
    names = [dp["name"] for dp in results["dataplanes"]]
    base = summary["baseline"]
    m = results["method"]
    lines = [f"## 2. Measured: medians of {m['rounds']} round(s), ratio to {base} of this run", "",
             f"Pod to pod across two nodes; ratio = this dataplane's median / {base}'s median. "
             f"TCP N streams uses {m['streams']} streams. CPU-s/GB: CPU-seconds per 10^9 bytes "
             "received; machine = all CPUs from /proc/stat, daemons = our two node daemons "
             "from /proc/<pid>/stat.", ""]
    for title, metrics in TABLES:
        if all(summary["metrics"][n].get(k.key, {}).get("median") is None
               for n in names for k in metrics):
            continue
        streams = f"{m['streams']} streams"
        header = ["dataplane"] + [f"{k.label.replace('N streams', streams)} ({k.unit})"
                                  for k in metrics]
        rows = []
        for n in names:
            row = [_label(results, n)]
            for k in metrics:
                f = summary["metrics"][n].get(k.key, {"median": None, "ratio": None})
                scale = SCALE.get(k.key, 1.0)
                value = None if f["median"] is None else f["median"] * scale
                row.append(cell(value, f["ratio"], k.digits))
            rows.append(row)
        lines += [f"### {title}", ""] + _table(header, rows) + [""]
    return lines


def _label(results: dict, name: str) -> str:
    """A row's name; a rung that encrypts (wireguard-go) says so beside the unencrypted."""
    enc = any(d["name"] == name and d.get("encrypts") for d in results["dataplanes"])
    return f"{name} (encrypts)" if enc else name


def efficiency_section(results: dict) -> list[str]:
    sweep = results["summary"]["sweep"]
    dps = results["dataplanes"]
    payloads = sorted({p["payload"] for points in sweep.values() for p in points})
    if not payloads:
        return []
    lines = ["## 3. Goodput efficiency by packet size", "",
             "Inner IP bytes per underlay IP byte. Theory: inner / (inner + header bytes). "
             "Measured: average packet sizes on the sending side while iperf3 sent UDP as fast "
             "as it could, from interface counters (pod eth0 for the inner packets, node 1's "
             "underlay link for the outer ones); Mbit/s is the payload the receiver got. "
             "`-`: the daemon sent the packets coalesced (UDP GSO) and the counters, which "
             "count buffers, cannot tell one packet's size.", ""]
    header = ["dataplane", "headers (B)"]
    for p in payloads:
        header += [f"{p + overhead.IP_UDP} B: theory", "measured", "Mbit/s"]
    rows = []
    for dp in dps:
        row = [_label(results, dp["name"]), str(dp["overhead_bytes"])]
        for p in payloads:
            fig = next((f for f in sweep.get(dp["name"], []) if f["payload"] == p), {})
            inner = p + overhead.IP_UDP       # theory from the rung's own header bytes
            row += [f"{inner / (inner + dp['overhead_bytes']):.3f}",
                    _num(fig.get("efficiency"), 3),
                    cell(fig.get("goodput_mbps"), fig.get("goodput_ratio"), 0)]
        rows.append(row)
    return lines + _table(header, rows) + [""]


# The offload issue's targets: (figure, at least / at most, bound, what it means)
TARGETS = (
    ("tcp1_gbps", ">=", 1.0, "one TCP stream"),
    ("tcp1_cpu_s_per_gb", "<=", 1.5, "whole-machine CPU per GB, one stream"),
    ("udp_small_rx_pps", ">=", 1.0, "64-byte UDP packets received per second"),
    ("rtt_median_us", "<=", 3.0, "UDP round trip under light load (median)"),
)

WHY_MISSED = (
    "Why a target is missed: a userspace tunnel adds four kernel crossings to every byte (TUN "
    "read, UDP send, UDP receive, TUN write: copies and stack traversals kernel VXLAN does not "
    "make, as its GSO packets cross veth unsegmented), and every wakeup of a daemon is a "
    "context switch the kernel path does not have. Small packets pay one TUN read per packet, "
    "and a TUN cannot slow a sender down: it drops when its queue is full. Where the CPU goes, "
    "below, gives this run's own profile of each rung: copies, wakeups, our C and Python.")


def targets_section(results: dict) -> list[str]:
    """Each target against the best offload rung of each encapsulation in this run."""
    metrics = results["summary"]["metrics"]
    rungs = [dp for dp in results["dataplanes"] if "+offload" in dp["name"]
             and dp["name"] in metrics]
    if not rungs:
        return []
    base = results["summary"]["baseline"]
    lines = ["## Targets of the offload rungs", "",
             f"Ratios to {base} in this run; for each target the better offload rung of each "
             "wire format (for the packet rate, among rungs that lost at most 1%).", ""]
    rows = []
    for key, sense, bound, what in TARGETS:
        for encap in sorted({dp["encap"] for dp in rungs}):
            best = None
            for dp in (d for d in rungs if d["encap"] == encap):
                entry = metrics[dp["name"]].get(key, {})
                ratio = entry.get("ratio")
                loss = metrics[dp["name"]].get("udp_small_loss_pct", {}).get("median")
                if ratio is None or (key == "udp_small_rx_pps" and (loss or 0) > 1.0):
                    continue        # a rate bought with loss meets no target
                better = best is None or (ratio > best[1] if sense == ">=" else ratio < best[1])
                if better:
                    best = (dp["name"], ratio)
            if best is None:
                continue
            met = best[1] >= bound if sense == ">=" else best[1] <= bound
            rows.append([what, f"{sense} {bound:g}×", best[0], f"{best[1]:.2f}×",
                         "reached" if met else f"**missed** by {abs(best[1] - bound):.2f}×"])
    lines += _table(["target", "bound", "rung", "measured", ""], rows) + [""]
    if any("missed" in r[-1] for r in rows):
        lines += [WHY_MISSED, ""]
    return lines


def issue_targets_section(results: dict) -> list[str]:
    """The busy-poll/DirectRouting issue's targets (bench.targets), met or missed and by how
    much; the best rung each target applies to."""
    rows = targets.evaluate(results)
    if all(r["met"] is None for r in rows[:-1]):       # an older run: none of its figures
        return []
    base = results["summary"]["baseline"]
    lines = ["## Targets", "",
             f"Ratios to {base} of this run (medians of interleaved rounds); each target "
             "against the best rung it applies to: our daemon's rungs (DirectRouting and "
             "busy-poll rungs only for their own targets).", ""]
    table = [[r["what"], r["bound"], r["rung"] or "-", r["measured"] or "-", targets.verdict(r)]
             for r in rows]
    lines += _table(["target", "bound", "rung", "measured", ""], table) + [""]
    if any(r["met"] is False for r in rows):
        lines += [WHY_MISSED, ""]
    return lines


def busy_poll_section(results: dict) -> list[str]:
    """What polling costs: each busy-poll rung beside the same rung without it, idle and
    under one stream."""
    metrics = results["summary"]["metrics"]
    rows = []
    for dp in results["dataplanes"]:
        if "+busypoll" not in dp["name"] or dp["name"] not in metrics:
            continue
        plain = dp["name"].replace("+busypoll", "")
        for name in (plain, dp["name"]):
            m = metrics.get(name)
            if m is None:
                continue
            med = {k: m.get(k, {}).get("median") for k in (
                "daemon_idle_cpu_per_s", "tcp1_unpinned_daemon_cpu_s_per_gb",
                "ping_unpinned_median_us", "rr_udp_tps")}
            rows.append([name, _num(med["daemon_idle_cpu_per_s"], 3),
                         _num(med["tcp1_unpinned_daemon_cpu_s_per_gb"], 3),
                         _num(med["ping_unpinned_median_us"], 1), _num(med["rr_udp_tps"], 0)])
    if not rows:
        return []
    lines = ["## What busy-polling costs", "",
             "Our two daemons' CPU while the lab idles (CPU-seconds per second, measured 2 s "
             "before each visit) and per GB of one unpinned TCP stream, beside the latency it "
             "buys.", ""]
    return lines + _table(["dataplane", "daemons idle (CPU-s/s)", "daemons, 1 stream "
                           "(CPU-s/GB)", "ICMP RTT median (µs)", "UDP request/response "
                           "(trans/s)"], rows) + [""]


def profile_section(results: dict) -> list[str]:
    prof = results.get("profile")
    if not prof:
        return []
    lines = ["## Where the CPU goes", ""]
    if "unavailable" in prof:
        return lines + [f"No profile in this run: {prof['unavailable']}.", ""]
    lines += [f"`perf record -a -F {prof['frequency_hz']}` of the whole machine during one "
              f"unpinned TCP stream of {prof['seconds']:g} s per dataplane, after the rounds; "
              "each sample in the function it was taken in (self time). Shares of this "
              "test's non-idle samples (iperf3 client and server, our daemons' threads, "
              "ksoftirqd); other processes' share of the machine is given apart and left out.",
              ""]
    lines += _profile_table(prof)
    rr = prof.get("tcp_rr")
    if rr:
        lines += [f"During TCP request/response instead (sockperf ping-pong over TCP, one "
                  f"64-byte message in flight, back to back, {prof['seconds']:g} s): the "
                  "busy-poll rung beside the same rung without polling and the baseline. "
                  "Shares as above, of the sockperf client and server, our daemons and "
                  "ksoftirqd.", ""]
        lines += _profile_table(rr)
    return lines + [""]


def _profile_table(prof: dict) -> list[str]:
    header = ["dataplane", *profile.BUCKETS, "samples", "other processes"]
    rows = []
    for name, p in prof.get("dataplanes", {}).items():
        shares = p["shares"]
        rows.append([name, *[("-" if shares[b] is None else f"{100 * shares[b]:.0f}%")
                             for b in profile.BUCKETS], str(p["samples"]),
                     "-" if p["other_process_share"] is None
                     else f"{100 * p['other_process_share']:.0f}%"])
    lines = _table(header, rows) + [""]
    for name, err in prof.get("errors", {}).items():
        lines.append(f"- no profile of {name}: {err}")
    return lines


def memory_section(results: dict) -> list[str]:
    rss = rss_overview(results)
    if not rss:
        return []
    limit = results["method"]["rss_limit_mb"]
    lines = ["## 4. Daemon memory", "",
             f"Largest VmRSS of the two node daemons, before any traffic and after each round "
             f"of sustained traffic. A node daemon should stay within {limit} MiB and flat: "
             "the first round's traffic allocates what forwarding needs (warm-up), later "
             "rounds should add nothing (growth).", ""]

    def mb(v: float | None, sign: str = "") -> str:
        return "-" if v is None else f"{v:{sign}.1f}"
    ours = our_rungs(results)

    def within(n: str, r: dict) -> str:       # the limit is our node daemon's, not a tunnel's
        return "-" if n not in ours else "yes" if r["within_limit"] else "**no**"
    rows = [[n, mb(r["before_mb"]), mb(r["first_mb"]), mb(r["after_mb"]), mb(r["peak_mb"]),
             mb(r["warmup_mb"], "+"), mb(r["growth_mb"], "+"), within(n, r)]
            for n, r in rss.items()]
    return lines + _table(["dataplane", "before (MiB)", "after round 1", "after last round",
                           "peak", "warm-up", "growth after round 1", f"within {limit} MiB"],
                          rows) + [""]


def method_section(results: dict) -> list[str]:
    m = results["method"]
    cpus = (",".join(map(str, m["client_cpus"])), ",".join(map(str, m["server_cpus"])))
    pin = (f"client pod's tools and node 1's daemon on CPU {cpus[0]}, server pod's "
           f"tools and node 2's daemon on CPU {cpus[1]} (iperf3, sockperf and the echo "
           "probe through taskset, daemons' threads with sched_setaffinity): each node gets "
           "one core, as if the two nodes were one-core machines"
           if m["pin"] else "nothing pinned (--no-pin)")
    payloads = ", ".join(str(p) for p in m["udp_payloads"])
    lines = [
        "## 5. Method", "",
        "- One lab per dataplane, all built before the first round and kept up side by side "
        "(each has its own namespaces and underlay bridge, so they are isolated; an idle lab "
        "costs nothing measurable). Two nodes, one pod each, 1500-byte underlay, traffic from "
        "the pod on node 1 to the pod on node 2.",
        f"- {m['rounds']} round(s); every round visits the dataplanes in the same order "
        f"({' → '.join(m['order'])}), so drift of this noisy machine spreads over all of them. "
        "Figures are medians over the rounds; ratios are median / baseline median.",
        "- Each visit runs two views. **Unpinned** (the primary figures: processes and "
        "daemons free on every CPU, as on a node): iperf3 TCP for "
        f"{m['duration']:g} s with 1 stream and with {m['streams']} streams; request/response "
        "with sockperf ping-pong over UDP and over TCP (64-byte messages, one in flight, the "
        f"next sent as soon as the answer is in, {m['duration']:g} s: transactions per second "
        "and the round trips' p50/p99 from its full log); "
        f"{m.get('echo_count', 100)} ICMP echoes {m.get('echo_interval', 0.01) * 1000:g} ms "
        "apart (bench.echo: what ping measures, RTT from just before sending to the kernel's "
        "receive timestamp; with the CPUs idle between echoes, waking them is part of each "
        "round trip); the 64 B capacity search (below). **Pinned** (the second view, "
        "pinning as below): TCP 1 and N streams again; iperf3 UDP at `-b 0 -w 4M` (as fast as "
        f"one sender goes, 4 MB socket buffers) for {m['duration']:g} s at each payload size "
        f"({payloads} bytes; the first is the one-sender small-packet figure); sockperf UDP "
        f"ping-pong at {m['latency_mps']} messages per second; the ICMP echoes again.",
        f"- 64 B capacity (RFC 2544 style): {m.get('capacity_trials', '-')} trials of "
        f"{m.get('capacity_seconds', 1)} s against one iperf3 server; the first as fast as one "
        "sender goes (if that loses at most 0.1%, its rate is the figure, and the sender, not "
        "the dataplane, set it), then a binary search over the offered rate between 0 and "
        "that sender's rate; the figure is the received rate of the best trial with at most "
        "0.1% lost, `-` if none passed.",
        "- Idle: before each visit the lab idles 2 s: the machine's busy CPUs over that "
        "window (as /proc/stat measured it) and our daemons' CPU-seconds per second (the "
        "idle cost of a polling daemon).",
        "- Profile: after the rounds, one unpinned TCP stream per dataplane under `perf record "
        "-a` (section Where the CPU goes).",
        "- CPU: /proc/stat busy time (user+nice+system+irq+softirq, all CPUs; steal and idle "
        "left out) and our daemons' utime+stime, over the client's whole run, divided by "
        "the bytes (or packets) the receiver got. The machine figure includes whatever else "
        f"the machine ran: {_background_text(results)}.",
        f"- Pinning: {pin}{_unpinned_daemons(results)}.",
        "- Daemon memory: VmRSS of each daemon after its lab came up and after each round.",
    ]
    tunnels = [d for d in results["dataplanes"] if d.get("tunnel_method")]
    if tunnels:         # bench.tunnels: host-gw labs whose pod routes go through the tool
        lines.append("- Userspace tunnels (their processes count as the rung's daemons): a "
                     "host-gw lab whose routes to the peer's pod subnet go through the "
                     "tool's tun device instead, the pods at the device's MTU:")
        lines += [f"  - {d['tunnel_method']}" for d in tunnels]
    if results.get("pcap"):
        p = results["pcap"]
        lines.append(f"- Capture: after the rounds, an unmeasured 1 s pass of each test per "
                     f"dataplane with tcpdump on the lab's underlay bridge (at most "
                     f"{p['packets_per_test']} packets per test, {p['snaplen']}-byte snap "
                     f"length): {p['records']} packets in `{p['path']}` (in Wireshark, "
                     f"Decode As… VXLAN for UDP port {VXLAN.port}; flannel's udp backend on "
                     f"{UDP.port} "
                     "carries the pod's IPv4 packet bare).")
    return lines + [""]


def _unpinned_daemons(results: dict) -> str:
    names = [d["name"] for d in results["dataplanes"]
             if d.get("daemons") and not d.get("daemons_pinned", True)]
    if not names or not results["method"]["pin"]:
        return ""
    return f"; the daemons of {', '.join(names)} are left free to use every core"


def _backgrounds(results: dict) -> list[float]:
    return sorted(s["raw"]["background_cpu_per_s"] for s in results["samples"]
                  if s.get("raw", {}).get("background_cpu_per_s") is not None)


def _background_median(results: dict) -> float | None:
    return median(_backgrounds(results))


def _background_text(results: dict) -> str:
    values = _backgrounds(results)
    if not values:
        return "the background was not measured"
    return (f"measured idle for {len(values)} s, one second before each visit, it used "
            f"{median(values):.2f} CPU-seconds per second (median; {values[0]:.2f} to "
            f"{values[-1]:.2f}) of the {results['machine']['cpus']} CPUs")


def machine_section(results: dict) -> list[str]:
    mc = results["machine"]
    return ["## 6. Machine and command", "",
            f"- CPU: {mc['cpu_model']}, {mc['cpus']} CPUs ({mc['machine']})",
            f"- Kernel: {mc['kernel']}",
            f"- Tools: {mc['iperf3']}; {mc['sockperf']}; Python {mc['python']}; "
            f"TCP congestion control {mc['tcp_congestion_control']}",
            f"- Date: {results['started']} to {results['finished']} (UTC)",
            f"- Command: `{results['command']}`", ""]


def render(results: dict) -> str:
    base = results["summary"]["baseline"]
    names = ", ".join(dp["name"] for dp in results["dataplanes"])
    lines = ["# What each encapsulation costs: dataplane benchmark", "",
             f"Dataplanes: {names}. Baseline for ratios: {base}. Raw samples: `results.json`.",
             ""]
    for s in results.get("skipped", []):
        lines.append(f"- not run: **{s['name']}**: {s['reason']}")
    errors = [(s["dataplane"], s["round"], t, e) for s in results["samples"]
              for t, e in s.get("errors", {}).items()]
    for dp, rnd, test, err in errors:
        lines.append(f"- failed: {dp}, round {rnd}, {test}: {err}")
    busy = _background_median(results)
    if busy is not None and busy > BUSY_CPUS:
        lines.append(f"- **the machine was not idle**: other work used {busy:.2f} CPU-seconds "
                     "per second (median of the idle checks before each visit). It competes "
                     "with every test and is counted in the machine CPU figures; compare "
                     "dataplanes only within this run.")
    if results.get("skipped") or errors or (busy is not None and busy > BUSY_CPUS):
        lines.append("")
    underlay = results["dataplanes"][0]["underlay_mtu"] if results["dataplanes"] else 1500
    lines += overlay_section(underlay)
    lines += results_section(results)
    new_targets = issue_targets_section(results)
    lines += new_targets or targets_section(results)   # an older run: the offload targets
    lines += busy_poll_section(results)
    lines += profile_section(results)
    lines += efficiency_section(results)
    lines += memory_section(results)
    lines += ["## Plots", ""]
    for name, title in results.get("plots", {}).items():
        lines.append(f"![{title}](plots/{name}.png) ([SVG](plots/{name}.svg))")
    lines.append("")
    lines += method_section(results)
    lines += machine_section(results)
    return "\n".join(lines)
