"""Bucketing perf samples for the "where the CPU goes" table, on perf report text."""

from __future__ import annotations

import pytest

from bench.profile import BUCKETS, Row, bucket, parse_report, summarize

REPORT = """\
# To display the perf.data header info, please use --header/--header-only options.
#
 30.00%| 30|   1200:iperf3|[kernel.kallsyms]|[k] copy_user_enhanced_fast_string
 10.00%| 10|   1300:python3|_dpc.cpython-311-x86_64-linux-gnu.so|[.] dp_drain_tun
  5.00%| 5|   1301:python3|libpython3.11.so.1.0|[.] _PyEval_EvalFrameDefault
  8.00%| 8|   1200:iperf3|[kernel.kallsyms]|[k] try_to_wake_up
  7.00%| 7|   1300:python3|[kernel.kallsyms]|[k] entry_SYSCALL_64
  6.00%| 6|     14:ksoftirqd/0|[kernel.kallsyms]|[k] tcp_v4_rcv
  4.00%| 4|   1300:python3|[unknown]|[.] 0x00007f00deadbeef
 20.00%| 20|      0:swapper|[kernel.kallsyms]|[k] default_idle
 10.00%| 10|   9999:etcd|etcd|[.] runtime.mallocgc
"""


def test_parse_report_reads_samples_threads_and_symbols():
    rows = parse_report(REPORT)
    assert len(rows) == 9
    assert rows[0] == Row(30, 1200, "iperf3", "[kernel.kallsyms]",
                          "[k] copy_user_enhanced_fast_string")
    assert rows[5].comm == "ksoftirqd/0"


@pytest.mark.parametrize("dso,sym,expected", [
    ("[kernel.kallsyms]", "[k] copy_user_generic_string", "copies"),
    ("libc.so.6", "[.] __memmove_avx_unaligned_erms", "copies"),
    ("[kernel.kallsyms]", "[k] skb_copy_datagram_iter", "copies"),
    ("[kernel.kallsyms]", "[k] __schedule", "wakeups and context switches"),
    ("[kernel.kallsyms]", "[k] __switch_to_asm", "wakeups and context switches"),
    ("[kernel.kallsyms]", "[k] syscall_exit_to_user_mode", "syscall entry/exit"),
    ("/x/_dpc.cpython-311-x86_64-linux-gnu.so", "[.] dp_fold", "our C"),
    ("/usr/bin/python3.11", "[.] PyObject_Call", "Python"),
    ("[kernel.kallsyms]", "[k] veth_xmit", "kernel network stack"),
    ("[kernel.kallsyms]", "[k] vxlan_rcv", "kernel network stack"),
    ("[kernel.kallsyms]", "[k] kmem_cache_alloc", "other kernel"),
    ("libc.so.6", "[.] malloc", "other user space"),
    ("[unknown]", "[.] 0x0000000000401000", "unresolved"),
    ("libfoo.so", "[.] 0x0000000000001234", "unresolved"),
])
def test_bucket(dso, sym, expected):
    assert bucket(dso, sym) == expected


def test_summarize_keeps_this_tests_threads_and_leaves_out_idle_and_others():
    p = summarize(parse_report(REPORT), tids={1200, 1300, 1301})
    assert p["samples"] == 70 and p["idle_samples"] == 20
    assert p["other_process_samples"] == 10
    assert p["other_process_share"] == pytest.approx(10 / 80)
    shares = p["shares"]
    assert set(shares) == set(BUCKETS)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["copies"] == pytest.approx(30 / 70)
    assert shares["our C"] == pytest.approx(10 / 70)
    assert shares["Python"] == pytest.approx(5 / 70)
    assert shares["kernel network stack"] == pytest.approx(6 / 70)   # ksoftirqd counted
    assert p["unresolved_share"] == pytest.approx(4 / 70)


def test_summarize_of_nothing_has_no_shares():
    p = summarize([], set())
    assert p["samples"] == 0 and p["unresolved_share"] is None
    assert all(v is None for v in p["shares"].values())


def test_request_response_is_profiled_for_busy_poll_rungs_their_twin_and_the_baseline():
    from bench import ladder
    from bench.runner import rr_profiled

    rungs = {dp.name: dp for dp in ladder.LADDER}
    every = list(rungs.values())
    assert [dp.name for dp in rr_profiled(every)] == [
        "kernel-vxlan", "vxlan/c+offload", "vxlan/c+offload+busypoll"]
    without = [dp for dp in every if "+busypoll" not in dp.name]
    assert rr_profiled(without) == []                       # nothing to compare


def test_an_unknown_profile_test_is_refused():
    from bench import profile

    with pytest.raises(ValueError, match="'udp_rr': one of tcp, tcp_rr"):
        profile.record(None, 1.0, "udp_rr")  # type: ignore[arg-type]


def test_report_shows_the_request_response_profile_apart():
    from bench import report

    shares = dict.fromkeys(BUCKETS, 0.0) | {"wakeups and context switches": 0.4, "our C": 0.6}
    one = {"samples": 10, "shares": shares, "other_process_share": 0.0}
    prof = {"seconds": 2, "frequency_hz": 999, "dataplanes": {"vxlan/c": one}, "errors": {},
            "tcp_rr": {"dataplanes": {"vxlan/c+busypoll": one}, "errors": {"x": "boom"}}}
    text = "\n".join(report.profile_section({"profile": prof}))
    first, rr = text.split("During TCP request/response")
    assert "| vxlan/c | " in first and "busypoll" not in first
    assert "| vxlan/c+busypoll | 0% | 40% |" in rr and "- no profile of x: boom" in rr


def test_the_request_response_client_counts_though_its_pid_is_unknown():
    text = REPORT + " 12.00%| 12|   4242:sockperf|[kernel.kallsyms]|[k] tcp_sendmsg\n"
    p = summarize(parse_report(text), tids={1200, 1300, 1301})
    assert p["samples"] == 82 and p["other_process_samples"] == 10
    assert p["shares"]["kernel network stack"] == pytest.approx(18 / 82)
