"""The benchmark harness: every dataplane side by side, pod to pod across two lab nodes.

    dataplane bench                  the full ladder, interleaved rounds, medians and ratios
    dataplane bench --quick          one short round (CI)

Modules, in the order a run uses them: ladder (which dataplanes), topology (their labs),
traffic and probes (the tools, run in pod namespaces), parsers, procstat (CPU and memory),
measure (one round of one dataplane), runner (the interleaved rounds), stats and summary
(medians and ratios), report, plots, pcap, progress.
"""
