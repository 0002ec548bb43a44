"""The tools' output, read on fixed inputs shaped like iperf3 3.12, sockperf 3.7 and iproute2
print them."""

from __future__ import annotations

import json

import pytest

from bench import parsers, procstat

TCP_JSON = json.dumps({
    "start": {"test_start": {"protocol": "TCP", "num_streams": 2, "blksize": 131072}},
    "end": {
        "streams": [{"sender": {}, "receiver": {}}, {"sender": {}, "receiver": {}}],
        "sum_sent": {"seconds": 1.001444, "bytes": 1838022656,
                     "bits_per_second": 14682979026.3, "retransmits": 203, "sender": True},
        "sum_received": {"seconds": 1.002042, "bytes": 1838022656,
                         "bits_per_second": 14674216497.9, "sender": True},
    }})

UDP_JSON = json.dumps({
    "start": {"test_start": {"protocol": "UDP", "num_streams": 1, "blksize": 64}},
    "end": {
        "sum_sent": {"seconds": 1.000107, "bytes": 11197440, "packets": 174960,
                     "lost_packets": 0},
        "sum_received": {"seconds": 1.0, "bytes": 6457664, "packets": 174960,
                         "lost_packets": 74059, "lost_percent": 42.33},
    }})

SOCKPERF_OUT = """\
sockperf: \x1b[2;35m== version #3.7-no.git == \x1b[0m
sockperf: Test end (interrupted by timer)
sockperf: [Total Run] RunTime=1.000 sec; Warm up time=400 msec; SentMessages=5003; ReceivedMessages=5003
sockperf: ========= Printing statistics for Server No: 0
sockperf: [Valid Duration] RunTime=0.550 sec; SentMessages=2751; ReceivedMessages=2751
sockperf: \x1b[2;35m====> avg-latency=38.943 (std-dev=23.359)\x1b[0m
sockperf: # dropped messages = 3; # duplicated messages = 0; # out-of-order messages = 0
sockperf: Summary: Latency is 38.943 usec
sockperf: \x1b[2;35mTotal 2751 observations\x1b[0m; each percentile contains 27.51 observations
sockperf: ---> <MAX> observation =  999.822
sockperf: ---> percentile 99.999 =  999.822
sockperf: ---> percentile 99.000 =   60.859
sockperf: ---> percentile 50.000 =   36.719
sockperf: ---> <MIN> observation =   17.350
"""

FULL_LOG = """\
------------------------------
sockperf: [Valid Duration] RunTime=0.550 sec; SentMessages=2751; ReceivedMessages=2751
------------------------------
packet, txTime(sec), rxTime(sec), latency(usec)
0, 2.401195088, 2.401342856, 73.884
1, 2.401395084, 2.401466960, 35.938
2, 2.401595099, 0.000000000, 0.000
------------------------------
""".splitlines()


def test_iperf3_tcp():
    r = parsers.iperf3_tcp(TCP_JSON)
    assert r.bytes_received == 1838022656
    assert r.gbps == pytest.approx(14.6742, abs=1e-4)
    assert r.retransmits == 203 and r.streams == 2
    assert r.seconds == pytest.approx(1.002042)


def test_iperf3_udp_counts_delivered_packets():
    r = parsers.iperf3_udp(UDP_JSON)
    assert r.payload == 64
    assert (r.packets_sent, r.packets_lost) == (174960, 74059)
    assert r.rx_pps == pytest.approx(174960 - 74059)
    assert r.loss_pct == pytest.approx(100 * 74059 / 174960)
    assert r.goodput_mbps == pytest.approx((174960 - 74059) * 64 * 8 / 1e6)


@pytest.mark.parametrize("text,message", [
    ('{"start": {}, "error": "unable to connect to server: Connection refused"}',
     "Connection refused"),
    ("iperf3: error - unable to send control message", "not JSON"),
    ('{"start": {}}', "no 'end'"),
])
def test_iperf3_errors(text, message):
    with pytest.raises(parsers.ParseError, match=message):
        parsers.iperf3_tcp(text)


def test_sockperf_summary_strips_colours():
    s = parsers.sockperf_summary(SOCKPERF_OUT)
    assert (s.seconds, s.sent, s.received, s.dropped) == (0.55, 2751, 2751, 3)
    assert s.percentiles == {"max": 999.822, "99.999": 999.822, "99.000": 60.859,
                             "50.000": 36.719, "min": 17.35}
    with pytest.raises(parsers.ParseError):
        parsers.sockperf_summary("sockperf: ERROR: connection refused")


def test_sockperf_full_log_round_trips():
    rtts = parsers.sockperf_full_log_rtts(FULL_LOG)
    assert rtts == pytest.approx([147.768, 71.876], abs=1e-3)   # the lost reply is left out
    with pytest.raises(parsers.ParseError):
        parsers.sockperf_full_log_rtts(["no table here"])


def test_ip_link_stats():
    text = json.dumps([{"ifname": "eth0", "stats64": {
        "rx": {"bytes": 10, "packets": 1}, "tx": {"bytes": 2000, "packets": 20}}}])
    c = parsers.ip_link_stats(text)
    assert (c.tx_bytes, c.tx_packets, c.rx_bytes, c.rx_packets) == (2000, 20, 10, 1)
    with pytest.raises(parsers.ParseError):
        parsers.ip_link_stats("[]")


def test_proc_stat_and_pid_stat():
    hz = procstat.HZ
    cpu = procstat.parse_proc_stat("cpu  100 5 50 1000 20 3 7 9 0 0\ncpu0 1 2 3 4\n")
    assert cpu.busy == pytest.approx((100 + 5 + 50 + 3 + 7) / hz)
    assert cpu.idle == pytest.approx(1020 / hz) and cpu.steal == pytest.approx(9 / hz)
    # A command name with spaces and a parenthesis must not shift the fields.
    stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 3 0 555 0 0"
    assert procstat.parse_pid_stat(stat) == pytest.approx(380 / hz)
