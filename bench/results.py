"""The results directory of a run, and the schema of its results.json.

    <out>/results.json   every raw sample and the summary computed from them
    <out>/report.md      the report (bench.report)
    <out>/plots/*.png    the figures, also as *.svg (bench.plots)

results.json (schema "dataplane-bench/1"):
    schema, command, started, finished        strings (UTC ISO 8601)
    machine        {cpu_model, cpus, kernel, machine, python, iperf3, sockperf, tcpdump,
                    tcp_congestion_control}
    method         {rounds, duration, streams, udp_payloads, latency_mps, echo_count,
                    echo_interval, capacity_trials, capacity_seconds, pin, client_cpus,
                    server_cpus, order, baseline, rss_limit_mb}
    dataplanes     [{name, backend, encap, fastpath, daemon_args, overhead_bytes, underlay_mtu,
                     pod_mtu, lab, daemons, daemons_pinned, note}]   in run order
    skipped        [{name, reason}]                          asked for but not run
    rss_before     {dataplane: [bytes per daemon]}           before any traffic
    samples        one per (round, dataplane), in the order they ran:
        {dataplane, round, seq, started, seconds,
         metrics: {key: number | null}                       see bench.summary.METRICS
         raw: {tcp1|tcpN: {streams, bytes_received, seconds, retransmits, machine_cpu_s,
                           steal_s, daemon_cpu_s},
               latency: {messages, valid_seconds, dropped, sockperf_percentiles_one_way_us},
               tcp1_unpinned|tcpN_unpinned: as tcp1, unpinned view,
               rr_udp|rr_tcp: {messages, valid_seconds, dropped},
               capacity: {pps, sender_limited, sender_rx_pps, sender_loss_pct,
                          trials: [{offered_pps (null: unlimited), sent, lost, seconds,
                                    loss_pct}]},
               echo|echo_unpinned: {sent, answered}, rss_bytes: [per daemon],
               background_cpu_per_s: machine CPU-s/s while the lab idled 1 s first},
         sweep: [{payload, inner_size, packets_sent, packets_lost, seconds, rx_pps, loss_pct,
                  goodput_mbps, inner_avg_bytes, outer_avg_bytes (null if coalesced),
                  coalesced, efficiency, cpu_s_per_mpkt,
                  daemon_cpu_s_per_mpkt, machine_cpu_s, steal_s, daemon_cpu_s}],
         hist: {rtt, ping, ping_unpinned, rr_udp, rr_tcp: [counts]}   LogHistogram bins
         errors: {test: message}}
    summary        {baseline, metrics: {dataplane: {key: {median, n, ratio}}},
                    sweep: {dataplane: [{payload, <medians>, goodput_ratio}]},
                    latency_hist: {dataplane: {rtt, ping}},
                    histogram_edges_us: [bin edges]}
    pcap           null | {path, records, snaplen, packets_per_test}
    profile        null (--no-profile) | {unavailable: why} | {seconds, frequency_hz,
                    dataplanes: {name: {samples, idle_samples, other_process_samples,
                    other_process_share, unresolved_share, shares: {bucket: fraction}}},
                    errors: {name: message}}                 bench.profile
    Older runs lack the unpinned, capacity, request/response and profile figures: --render
    shows them as `-` and the older targets.
    plots          {name: title}
"""

from __future__ import annotations

import json
import os
from datetime import datetime, UTC

SCHEMA = "dataplane-bench/1"


def default_out_dir(base: str = os.path.join("bench", "results")) -> str:
    return os.path.join(base, datetime.now(UTC).strftime("%Y%m%d-%H%M%S"))


def write_json(results: dict, out_dir: str) -> str:
    path = os.path.join(out_dir, "results.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1, sort_keys=False, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)
    return path


def write_run(doc: dict, out_dir: str, figures, render) -> str:
    """A run's figures (figures(doc, plots_dir) -> {name: title}) into out_dir/plots, its
    results.json and its report.md (render(doc) -> text); the report's path."""
    doc["plots"] = figures(doc, os.path.join(out_dir, "plots"))
    write_json(doc, out_dir)
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write(render(doc))
    return path


def load(out_dir: str) -> dict:
    with open(os.path.join(out_dir, "results.json")) as f:
        doc = json.load(f)
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{out_dir}/results.json is not a {SCHEMA} document")
    return doc
