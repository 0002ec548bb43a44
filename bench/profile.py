"""Where the CPU goes: a `perf record -a` of the machine during one unpinned TCP stream per
dataplane (and TCP request/response for the busy-poll comparison), its samples bucketed for
the teaching view (copies, wakeups, syscalls, our C, Python, the kernel's network stack).

Samples are attributed by the function they were taken in (self time, no call graphs: the
bucket of a copy is the copy, whoever called it). Only the threads of this test count: the
iperf3 client and server, our daemons' threads and the kernel's softirq threads (which
carry network work for every process); what other processes of this shared machine ran is
left out and its share said (an iperf3 of another process would be counted: the
client's pid is not known before perf starts it). Idle samples are left out too. Symbols
perf could not resolve
(a bare address, [unknown]) are counted as unresolved, not guessed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass

from bench import traffic
from bench.topology import Topology

FREQ = 999            # samples per second per CPU: odd, off the timer tick
BUCKETS = ("copies", "wakeups and context switches", "syscall entry/exit", "our C", "Python",
           "kernel network stack", "other kernel", "other user space", "unresolved")

# Prefixes of kernel and libc functions, in the order they are tried.
_COPIES = ("copy_user", "_copy_to_user", "_copy_from_user", "copy_to_user", "copy_from_user",
           "memcpy", "__memcpy", "memmove", "__memmove", "skb_copy", "copy_page",
           "rep_movs", "csum_partial_copy", "copyout", "copyin", "_copy_to_iter",
           "_copy_from_iter", "copy_mc", "__memcpy_avx", "__memmove_avx")
_WAKEUPS = ("schedule", "__schedule", "try_to_wake_up", "__switch_to", "finish_task_switch",
            "ttwu_", "wake_up", "__wake_up", "pick_next_", "enqueue_task", "dequeue_task",
            "update_curr", "update_load_avg", "psi_", "native_send_call_func",
            "smp_call_function", "x2apic_send_IPI", "default_send_IPI", "sysvec_call_function",
            "sysvec_reschedule", "flush_smp_call_function", "select_task_rq", "set_next_entity",
            "put_prev_", "ep_poll", "ep_poll_callback", "do_epoll_wait", "sock_def_readable",
            "__x64_sys_epoll", "do_sys_poll", "do_poll", "poll_schedule", "futex_")
_SYSCALLS = ("entry_SYSCALL", "syscall_exit", "syscall_return", "do_syscall_64",
             "exit_to_user_mode", "syscall_enter_from_user", "__x64_sys_", "__fdget", "fput",
             "fdget", "__fget", "x64_sys_call", "__entry_text")
_NETWORK = ("tcp_", "udp", "__udp", "ip_", "__ip_", "ipv4_", "inet_", "sock_", "__sock_",
            "sk_", "__sk_", "skb_", "__skb_", "kfree_skb", "consume_skb", "alloc_skb",
            "__alloc_skb", "__kfree_skb", "netif_", "__netif_", "net_rx", "net_tx",
            "napi_", "__napi_", "dev_", "__dev_", "veth_", "tun_", "vxlan_", "br_", "nf_",
            "ipt_", "nft_", "fib_", "__fib", "dst_", "neigh_", "eth_", "gro_", "dev_gro",
            "inet_gro", "udp_gro", "tcp_gro", "__tcp", "csum_", "__csum", "do_csum",
            "process_backlog", "__netdev", "netdev_", "validate_xmit", "sch_direct",
            "__qdisc", "qdisc_", "pfifo_", "rt_", "raw_", "icmp", "iptunnel", "gso_",
            "skb_segment", "__dev_queue_xmit", "ip_finish", "ipv6_", "tpacket", "packet_",
            "__napi", "__sys_sendmsg", "__sys_recvmsg", "____sys_", "sock_sendmsg",
            "sock_recvmsg", "sock_write_iter", "sock_read_iter", "sendmsg", "recvmsg")


def bucket(dso: str, sym: str) -> str:
    """One sample's bucket, from its shared object and function name as `perf report`
    prints them (`[k] name` kernel, `[.] name` user space)."""
    name = sym.split("] ", 1)[1] if "] " in sym else sym
    name = name.strip()
    kernel = sym.startswith("[k]") or dso.startswith("[kernel")
    if not name or name.startswith("0x") or dso in ("[unknown]", ""):
        return "unresolved"
    if name.startswith(_COPIES):
        return "copies"
    if name.startswith(_WAKEUPS):
        return "wakeups and context switches"
    if kernel and name.startswith(_SYSCALLS):
        return "syscall entry/exit"
    base = os.path.basename(dso)
    if base.startswith("_dpc"):
        return "our C"
    if "libpython" in base or base.startswith("python"):
        return "Python"
    if kernel:
        return "kernel network stack" if name.startswith(_NETWORK) else "other kernel"
    return "other user space"


IDLE = ("default_idle", "native_safe_halt", "cpuidle_", "intel_idle", "acpi_idle", "do_idle",
        "poll_idle", "mwait_idle", "cpu_idle", "arch_cpu_idle", "pv_native_safe_halt",
        "default_idle_call", "cpu_startup_entry")


# Threads that count whatever their id: the kernel's softirq threads (network work of every
# process) and the traffic tools, iperf3 and sockperf (the client runs under perf, its pid
# unknown beforehand).
OURS = ("ksoftirqd", "iperf3", "sockperf")


@dataclass(frozen=True)
class Row:
    samples: int
    tid: int
    comm: str
    dso: str
    sym: str


def parse_report(text: str) -> list[Row]:
    """`perf report --field-separator='|' -F overhead,sample,pid,dso,sym` lines; others are
    skipped."""
    rows = []
    for line in text.splitlines():
        if line.startswith("#") or line.count("|") < 4:
            continue
        _, samples, who, dso, sym = (f.strip() for f in line.split("|", 4))
        tid, _, comm = who.partition(":")
        try:
            rows.append(Row(int(samples), int(tid), comm, dso, sym))
        except ValueError:
            continue
    return rows


def _is_idle(row: Row) -> bool:
    name = row.sym.split("] ", 1)[-1]
    return row.tid == 0 or row.comm.startswith("swapper") or name.startswith(IDLE)


def summarize(rows: Iterable[Row], tids: set[int]) -> dict:
    """Shares of this test's non-idle samples by bucket (fractions summing to 1), and what was
    left out: idle samples, and the other processes' share of all non-idle samples."""
    counts = dict.fromkeys(BUCKETS, 0)
    idle = others = 0
    for r in rows:
        if _is_idle(r):
            idle += r.samples
        elif r.tid in tids or r.comm.startswith(OURS):
            counts[bucket(r.dso, r.sym)] += r.samples
        else:
            others += r.samples
    ours = sum(counts.values())
    return {"samples": ours, "idle_samples": idle, "other_process_samples": others,
            "other_process_share": others / (ours + others) if ours + others else None,
            "unresolved_share": counts["unresolved"] / ours if ours else None,
            "shares": {b: (c / ours if ours else None) for b, c in counts.items()}}


def unavailable() -> str | None:
    """Why this machine cannot profile, or None."""
    if not shutil.which("perf"):
        return "perf is not installed (Debian: linux-perf; `make bench` installs it)"
    probe = subprocess.run(["perf", "stat", "-e", "task-clock", "-x,", "true"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"perf does not run here: {probe.stderr.strip().splitlines()[-1:]}"
    return None


def _threads(pids: Iterable[int]) -> set[int]:
    tids = set()
    for pid in pids:
        try:
            tids |= {int(t) for t in os.listdir(f"/proc/{pid}/task")}
        except FileNotFoundError:
            tids.add(pid)
    return tids


# What a profile can run: one TCP stream (iperf3), or TCP request/response back to back
# (sockperf ping-pong, one 64-byte message in flight), where wakeups rather than bytes cost.
TESTS = ("tcp", "tcp_rr")


def record(topo: Topology, seconds: float, test: str = "tcp") -> dict:
    """One unpinned test (TESTS) under `perf record -a`; the bucketed profile. perf runs the
    client itself, so that recording has begun (perf first walks every process's maps, which
    takes a while on a busy machine) before the first byte is sent, and ends with it."""
    from dataplane.lab import netns

    if test not in TESTS:
        raise ValueError(f"profile test {test!r}: one of {', '.join(TESTS)}")
    scratch = tempfile.mkdtemp(prefix="bench-perf-")
    data = os.path.join(scratch, "perf.data")
    ip = topo.server.ip
    tids = _threads(topo.daemon_pids())
    if test == "tcp":
        serve, port = traffic.iperf3_server(ip), traffic.IPERF_PORT
        run = traffic.iperf3_tcp(ip, seconds, 1)
    else:
        serve, port = traffic.sockperf_server(ip, tcp=True), traffic.SOCKPERF_PORT
        run = traffic.sockperf_ping_pong(ip, seconds, None, os.path.join(scratch, "rr.log"),
                                         tcp=True)
    try:
        with traffic.server(topo, serve, "tcp", port, None) as server:
            tids.add(server.pid)
            client = netns.ns_argv(topo.client.netns, run)
            rec = subprocess.run(["perf", "record", "-a", "-F", str(FREQ), "-q", "-o", data,
                                  "--", *client], capture_output=True, text=True,
                                 timeout=seconds + 120, check=False)
        if rec.returncode != 0 or not os.path.exists(data):
            raise RuntimeError(f"perf record failed: {rec.stderr.strip()[-300:]}")
        out = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                              "--sort", "pid,dso,sym", "-F", "overhead,sample,pid,dso,sym",
                              "--field-separator=|"],
                             capture_output=True, text=True, timeout=120, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"perf report failed: {out.stderr.strip()[-300:]}")
        return summarize(parse_report(out.stdout), tids)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
