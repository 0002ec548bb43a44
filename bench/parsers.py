"""Turning the tools' output into numbers: iperf3 -J, sockperf's summary and full log,
`ip -j -s link`. Pure functions over text, tested on fixed inputs."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass


class ParseError(ValueError):
    """Tool output we cannot read; the message quotes what was wrong."""


@dataclass(frozen=True)
class TcpResult:
    bytes_received: int
    seconds: float
    gbps: float            # receiver goodput, 1e9 bit/s
    retransmits: int
    streams: int


@dataclass(frozen=True)
class UdpResult:
    payload: int           # iperf3 -l: UDP payload bytes per datagram
    packets_sent: int
    packets_lost: int
    seconds: float         # receiver's measuring time
    rx_pps: float          # datagrams delivered per second
    loss_pct: float
    goodput_mbps: float    # payload bits delivered per second / 1e6


def _iperf3_doc(text: str) -> dict:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"iperf3 output is not JSON ({exc}): {text[:200]!r}") from None
    if "error" in doc:
        raise ParseError(f"iperf3: {doc['error']}")
    if "end" not in doc:
        raise ParseError("iperf3 JSON has no 'end' section")
    return doc


def iperf3_tcp(text: str) -> TcpResult:
    doc = _iperf3_doc(text)
    end = doc["end"]
    try:
        rx, tx = end["sum_received"], end["sum_sent"]
    except KeyError as exc:
        raise ParseError(f"iperf3 TCP JSON lacks end.{exc.args[0]}") from None
    return TcpResult(bytes_received=int(rx["bytes"]), seconds=float(rx["seconds"]),
                     gbps=float(rx["bits_per_second"]) / 1e9,
                     retransmits=int(tx.get("retransmits", 0)),
                     streams=len(end.get("streams", [])) or 1)


def iperf3_udp(text: str) -> UdpResult:
    doc = _iperf3_doc(text)
    end = doc["end"]
    rx = end.get("sum_received") or end.get("sum")
    if rx is None:
        raise ParseError("iperf3 UDP JSON lacks end.sum_received")
    payload = int(doc["start"]["test_start"]["blksize"])
    sent, lost = int(rx["packets"]), max(int(rx["lost_packets"]), 0)
    seconds = float(rx["seconds"])
    delivered = sent - lost
    return UdpResult(payload=payload, packets_sent=sent, packets_lost=lost, seconds=seconds,
                     rx_pps=delivered / seconds if seconds else 0.0,
                     loss_pct=100.0 * lost / sent if sent else 0.0,
                     goodput_mbps=delivered * payload * 8 / seconds / 1e6 if seconds else 0.0)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SOCKPERF_PCT = re.compile(r"---> (?:percentile ([\d.]+)|<(MAX|MIN)> observation) =\s+([\d.]+)")
_SOCKPERF_VALID = re.compile(r"\[Valid Duration\] RunTime=([\d.]+) sec; "
                             r"SentMessages=(\d+); ReceivedMessages=(\d+)")
_SOCKPERF_DROPPED = re.compile(r"# dropped messages = (\d+)")


@dataclass(frozen=True)
class SockperfSummary:
    seconds: float
    sent: int
    received: int
    dropped: int
    percentiles: dict[str, float]      # "50.000", "99.000", "min", "max" -> microseconds


def sockperf_summary(text: str) -> SockperfSummary:
    """sockperf ping-pong's closing statistics (the last block if it printed two)."""
    text = _ANSI.sub("", text)
    valid = _SOCKPERF_VALID.findall(text)
    if not valid:
        raise ParseError("no '[Valid Duration]' line in sockperf output: "
                         f"{text.strip()[-300:]!r}")
    seconds, sent, received = valid[-1]
    block = text[text.rfind("[Valid Duration]"):]
    pcts = {}
    for pct, extreme, value in _SOCKPERF_PCT.findall(block):
        pcts[pct or extreme.lower()] = float(value)
    dropped = _SOCKPERF_DROPPED.findall(block)
    return SockperfSummary(float(seconds), int(sent), int(received),
                           int(dropped[-1]) if dropped else 0, pcts)


def sockperf_full_log_rtts(lines) -> list[float]:
    """Round-trip times in microseconds from `sockperf --full-log` CSV lines
    (`packet, txTime(sec), rxTime(sec), latency(usec)`): rxTime - txTime, per message."""
    rtts, in_table = [], False
    for line in lines:
        if not in_table:
            in_table = line.startswith("packet,")
            continue
        parts = line.split(",")
        if len(parts) < 3:
            continue            # the closing rule
        try:
            tx, rx = float(parts[1]), float(parts[2])
        except ValueError:
            continue
        if rx > 0:              # a lost reply has rxTime 0
            rtts.append((rx - tx) * 1e6)
    if not in_table:
        raise ParseError("no 'packet, txTime' header in sockperf full log")
    return rtts


@dataclass(frozen=True)
class LinkCounters:
    tx_bytes: int
    tx_packets: int
    rx_bytes: int
    rx_packets: int


def ip_link_stats(text: str) -> LinkCounters:
    """Counters from `ip -j -s link show dev X`."""
    try:
        (link,) = json.loads(text)
        stats = link["stats64"]
        return LinkCounters(int(stats["tx"]["bytes"]), int(stats["tx"]["packets"]),
                            int(stats["rx"]["bytes"]), int(stats["rx"]["packets"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ParseError(f"unexpected `ip -j -s link` output ({exc}): {text[:200]!r}") from None
