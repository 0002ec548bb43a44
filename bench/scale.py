"""`dataplane bench --scale`: the control plane with thousands of peers.

For each store (a real etcd in the lab's underlay, then the directory store) one lab of two
vxlan nodes of ours with a pod each. Filler leases (flannel's lease JSON, each with a public IP
and VtepMAC of its own; in etcd each bound to an etcd lease of its own, as every flanneld binds
its lease) are written beside the nodes' own, up to each step's count, and at each step:

  cold start  node 1's daemon is restarted: seconds until it is ready (subnet.env written),
              until its peer table holds every other lease (dataplane_peers), its CPU and RSS
  churn       leases are added, changed (new public IP and VtepMAC) and removed at RATE per
              second for SECONDS; a change's latency is from just before it is written to when
              the daemon logs it applied to its forwarder (the C peer table: node.py logs
              after the call); also the daemon's CPU share and RSS over the churn
  traffic     pod 1 pings pod 2 every 10 ms throughout the churn: echoes lost

Filler public IPs are in 10.98.0.0/16, an address range no namespace holds: nothing is ever
sent to them (no pod addresses their subnets), and if something were, it would have no route
out of the node's namespace.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, UTC
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from bench import procstat, results, topology
from bench.progress import Progress
from dataplane.backends import VNI_KEY, VTEP_MAC_KEY, VXLAN

SCHEMA = "dataplane-bench-scale/1"
NETWORK = IPv4Network("10.128.0.0/10")        # 16,384 /24 subnets: room for 5,000 and churn
FILLER_IPS = IPv4Network("10.98.0.0/16")
FLOW_INTERVAL = 0.01
APPLY_TIMEOUT = 10.0          # after the last write, how long a change may take to show up
TARGETS = {"cold_start_s": 5.0, "latency_p99_s": 1.0, "rss_mb": 64.0, "churn_cpu_pct": 10.0}

# node.py's log lines for a peer it put into (or took out of) its forwarders
_PEER_AT = re.compile(r"^(\S+ \S+) INFO \S+: peer (\S+) at (\S+)")
_PEER_LEFT = re.compile(r"^(\S+ \S+) INFO \S+: peer (\S+) \((\S+)\) left")


@dataclass
class ScaleSettings:
    etcd_counts: tuple[int, ...] = (1000, 2500, 5000)
    directory_counts: tuple[int, ...] = (250, 500, 1000)
    churn_rate: float = 50.0
    churn_seconds: float = 20.0
    seed: int = 1


QUICK = ScaleSettings(etcd_counts=(100, 300), directory_counts=(100,), churn_rate=50.0,
                      churn_seconds=3.0)


# ---- the plan of writes (pure: tested without root) --------------------------------------------

@dataclass(frozen=True)
class Op:
    at: float                  # seconds into the churn
    kind: str                  # "add" | "change" | "remove"
    subnet: IPv4Network
    public_ip: str             # the lease's public IP after the op (before it, for a remove)

    @property
    def key(self) -> tuple[str, str, str]:
        """What the daemon's log line for this op carries."""
        return ("left" if self.kind == "remove" else "at", str(self.subnet), self.public_ip)


class Addresses:
    """Unique filler public IPs and the subnets not yet leased, handed out in order."""

    def __init__(self, reserved: set[IPv4Network]) -> None:
        self._ip = iter(FILLER_IPS.hosts())
        self._subnets = (s for s in NETWORK.subnets(new_prefix=24)
                         if s not in reserved and s.network_address != NETWORK.network_address)

    def ip(self) -> str:
        return str(next(self._ip))

    def subnet(self) -> IPv4Network:
        return next(self._subnets)


def vtep_mac(public_ip: str) -> str:
    digest = bytearray(hashlib.sha256(f"scale/{public_ip}".encode()).digest()[:6])
    digest[0] = (digest[0] | 0x02) & 0xFE
    return ":".join(f"{b:02x}" for b in digest)


def plan_churn(live: dict[IPv4Network, str], addresses: Addresses, *, rate: float,
               seconds: float, rng: random.Random, settle: float = 2.0) -> list[Op]:
    """Adds, changes and removes in turn at `rate` per second. `live` (subnet -> public IP of
    the filler leases) is updated as the ops will leave it. A subnet is touched again only
    `settle` seconds after its last op, so that every op is a state the store shows on its own
    (a polling watch sees states, not writes) and is told apart in the daemon's log by its
    (kind, subnet, public IP); when no subnet is settled, the op becomes an add."""
    ops: list[Op] = []
    touched: dict[IPv4Network, float] = {}
    kinds = ("add", "change", "remove")
    for i in range(int(rate * seconds)):
        at = i / rate
        kind = kinds[i % 3]
        settled = [sn for sn in live if touched.get(sn, -settle) <= at - settle]
        if kind != "add" and not settled:
            kind = "add"
        if kind == "add":
            subnet, ip = addresses.subnet(), addresses.ip()
            live[subnet] = ip
        else:
            subnet = rng.choice(sorted(settled))
            if kind == "change":
                ip = addresses.ip()
                live[subnet] = ip
            else:
                ip = live.pop(subnet)
        touched[subnet] = at
        ops.append(Op(at, kind, subnet, ip))
    return ops


def parse_peer_log(text: str) -> dict[tuple[str, str, str], float]:
    """{(at|left, subnet, public IP): time of the first such line} from a daemon's log (its
    asctime is local time with milliseconds)."""
    seen: dict[tuple[str, str, str], float] = {}
    for line in text.splitlines():
        m = _PEER_AT.match(line)
        kind = "at"
        if m is None:
            m = _PEER_LEFT.match(line)
            kind = "left"
        if m is None:
            continue
        stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        seen.setdefault((kind, m.group(2), m.group(3)), stamp)
    return seen


def latencies(ops: list[Op], written: list[float], seen: dict[tuple[str, str, str], float]
              ) -> tuple[list[float], int]:
    """Seconds from each write to the daemon applying it; and how many never showed up."""
    out, missing = [], 0
    for op, t in zip(ops, written):
        applied = seen.get(op.key)
        if applied is None:
            missing += 1
        else:
            out.append(max(0.0, applied - t))
    return out, missing


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


# ---- writing leases into each store --------------------------------------------------------------

def lease_json(public_ip: str) -> bytes:
    from dataplane.lease import LeaseAttrs
    return LeaseAttrs(public_ip, VXLAN.lease_type,
                      {VNI_KEY: 1, VTEP_MAC_KEY: vtep_mac(public_ip)}).to_json()


class EtcdWriter:
    """Raw puts under flannel's keys, each lease bound to an etcd lease of its own (24 h), run
    on a thread inside the underlay namespace where etcd listens."""

    CONCURRENCY = 32

    def __init__(self, endpoints: str, netns_name: str) -> None:
        self.endpoints, self.netns = endpoints, netns_name
        self.lease_ids: dict[IPv4Network, int] = {}

    def _key(self, subnet: IPv4Network) -> bytes:
        from dataplane.lease import subnet_key
        from dataplane.store.etcd import DEFAULT_PREFIX
        return f"{DEFAULT_PREFIX}/subnets/{subnet_key(subnet)}".encode()

    def _run(self, coro_fn):
        from dataplane.lab.nsthread import call_in_netns
        return call_in_netns(self.netns, lambda: asyncio.run(coro_fn()))

    def fill(self, leases: dict[IPv4Network, str]) -> None:
        async def go() -> None:
            from dataplane.store.etcd_client import EtcdClient
            client = EtcdClient(self.endpoints)
            sem = asyncio.Semaphore(self.CONCURRENCY)

            async def one(subnet: IPv4Network, ip: str) -> None:
                async with sem:
                    lease_id, _ = await client.lease_grant(24 * 3600)
                    await client.put(self._key(subnet), lease_json(ip), lease=lease_id)
                    self.lease_ids[subnet] = lease_id
            try:
                await asyncio.gather(*(one(s, ip) for s, ip in leases.items()))
            finally:
                await client.close()
        self._run(go)

    def churn(self, ops: list[Op]) -> list[float]:
        async def go() -> list[float]:
            from dataplane.store.etcd_client import EtcdClient
            client = EtcdClient(self.endpoints)
            written: list[float] = []
            start = time.monotonic()
            try:
                for op in ops:
                    await asyncio.sleep(max(0.0, start + op.at - time.monotonic()))
                    if op.kind == "add":
                        lease_id, _ = await client.lease_grant(24 * 3600)
                        self.lease_ids[op.subnet] = lease_id
                    written.append(time.time())
                    if op.kind == "remove":
                        await client.delete_range(self._key(op.subnet))
                    else:
                        await client.put(self._key(op.subnet), lease_json(op.public_ip),
                                         lease=self.lease_ids[op.subnet])
            finally:
                await client.close()
            return written
        return self._run(go)


class DirectoryWriter:
    """Lease files in flannel's layout, as the directory store documents them: content the
    lease JSON, mtime its expiry; written whole and renamed into place."""

    def __init__(self, root: Path) -> None:
        self.subnets = root / "subnets"

    def _put(self, subnet: IPv4Network, ip: str) -> None:
        from dataplane.lease import subnet_key
        path = self.subnets / subnet_key(subnet)
        tmp = path.with_name(f".{path.name}.scale.tmp")
        tmp.write_bytes(lease_json(ip))
        expiry = time.time() + 24 * 3600
        os.utime(tmp, (expiry, expiry))
        os.replace(tmp, path)

    def fill(self, leases: dict[IPv4Network, str]) -> None:
        self.subnets.mkdir(parents=True, exist_ok=True)
        for subnet, ip in leases.items():
            self._put(subnet, ip)

    def churn(self, ops: list[Op]) -> list[float]:
        from dataplane.lease import subnet_key
        written: list[float] = []
        start = time.monotonic()
        for op in ops:
            time.sleep(max(0.0, start + op.at - time.monotonic()))
            written.append(time.time())
            if op.kind == "remove":
                (self.subnets / subnet_key(op.subnet)).unlink(missing_ok=True)
            else:
                self._put(op.subnet, op.public_ip)
        return written


# ---- one store, every step -----------------------------------------------------------------------

@dataclass
class Step:
    leases: int
    ready_s: float | None = None
    cold_start_s: float | None = None
    cold_start_cpu_s: float | None = None
    rss_mb: float | None = None
    churn_ops: int = 0
    churn_missing: int = 0
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    latency_max_s: float | None = None
    churn_cpu_pct: float | None = None
    idle_cpu_pct: float | None = None  # the same flow for as long, without churn: forwarding
    churn_rss_mb: float | None = None
    flow_sent: int = 0
    flow_lost: int = 0
    load_avg: float | None = None      # the machine's 1-minute load average at the step's end
    errors: list[str] = field(default_factory=list)


def _peers_now(port: int) -> int:
    import urllib.request

    from dataplane.daemon.metrics import parse_metrics
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return int(parse_metrics(resp.read().decode()).get("dataplane_peers", -1))
    except OSError:
        return -1


def _cold_start(lab, node, want_peers: int, timeout: float, step: Step) -> None:
    """Restart node's daemon; time it to ready and to a full peer table."""
    from dataplane.lab import daemon as lab_daemon
    from dataplane.lab.nsthread import call_in_netns

    lab.stop_daemon(node)
    node.log_file.unlink(missing_ok=True)          # this step's log only
    t0 = time.monotonic()
    pid = lab.start_daemon(node, wait=False)
    cpu0 = procstat.process_cpu([pid]) or 0.0
    deadline = t0 + timeout
    while step.ready_s is None and time.monotonic() < deadline:
        if node.subnet_file.exists():
            step.ready_s = time.monotonic() - t0
        else:
            time.sleep(0.02)
    peers = -1
    while time.monotonic() < deadline:
        peers = call_in_netns(node.netns, lambda: _peers_now(lab_daemon.METRICS_PORT))
        if peers >= want_peers:
            step.cold_start_s = time.monotonic() - t0
            break
        time.sleep(0.05)
    cpu1 = procstat.process_cpu([pid])
    step.cold_start_cpu_s = None if cpu1 is None else round(cpu1 - cpu0, 3)
    rss = procstat.rss_bytes(pid)
    step.rss_mb = None if rss is None else round(rss / 2**20, 1)
    if step.cold_start_s is None:
        step.errors.append(f"peer table held {peers} of {want_peers} after {timeout:g} s")


def run_store(store: str, counts: tuple[int, ...], s: ScaleSettings, prefix: str,
              progress: Progress, log_dir: Path | None = None) -> dict[str, Any]:
    import dataplane.lab as lab_mod

    rng = random.Random(s.seed)
    lab = lab_mod.Lab(prefix, nodes=2, pods=1, backend="vxlan", store=store,
                      network=str(NETWORK), state_root=topology.STATE_ROOT,
                      daemon_timeout=60.0)
    steps: list[Step] = []
    try:
        progress.status(store, "lab up")
        lab.up()
        node, pod1, pod2 = lab.node(1), lab.pod(1, 1), lab.pod(2, 1)
        own = {n.subnet for n in lab.nodes}
        addresses = Addresses(own)
        if store == "etcd":
            writer: EtcdWriter | DirectoryWriter = EtcdWriter(lab.etcd.endpoints,
                                                              lab.underlay_ns)
        else:
            writer = DirectoryWriter(lab.dir / "store")
        live: dict[IPv4Network, str] = {}
        for count in counts:
            step = Step(leases=count)
            steps.append(step)
            fillers = count - len(own) - len(live)
            progress.status(store, f"{count} leases: writing {max(fillers, 0)}")
            batch = {addresses.subnet(): addresses.ip() for _ in range(max(fillers, 0))}
            writer.fill(batch)
            live.update(batch)
            progress.status(store, f"{count} leases: cold start")
            _cold_start(lab, node, count - 1, 60.0, step)
            if step.cold_start_s is None:
                progress.advance(2 * s.churn_seconds + 10)
                continue
            ops = plan_churn(live, addresses, rate=s.churn_rate, seconds=s.churn_seconds,
                             rng=rng)
            progress.status(store, f"{count} leases: churn, {len(ops)} changes")
            pid = lab.daemon_pids()[node.name]
            # what the daemon spends forwarding the flow alone, for as long as the churn lasts
            flow = lab.flow(pod1, pod2, duration=s.churn_seconds, interval=FLOW_INTERVAL)
            cpu0, t0 = procstat.process_cpu([pid]) or 0.0, time.monotonic()
            flow.result()
            cpu1, wall = procstat.process_cpu([pid]), time.monotonic() - t0
            if cpu1 is not None and wall > 0:
                step.idle_cpu_pct = round(100 * (cpu1 - cpu0) / wall, 1)
            flow = lab.flow(pod1, pod2, duration=s.churn_seconds + 1, interval=FLOW_INTERVAL)
            cpu0, t0 = procstat.process_cpu([pid]) or 0.0, time.monotonic()
            written = writer.churn(ops)
            wall = time.monotonic() - t0
            cpu1 = procstat.process_cpu([pid])
            if cpu1 is not None and wall > 0:
                step.churn_cpu_pct = round(100 * (cpu1 - cpu0) / wall, 1)
            rss = procstat.rss_bytes(pid)
            step.churn_rss_mb = None if rss is None else round(rss / 2**20, 1)
            lost = flow.result()
            step.flow_sent, step.flow_lost = lost.sent, lost.sent - lost.received
            deadline = time.monotonic() + APPLY_TIMEOUT
            while True:
                seen = parse_peer_log(node.log_file.read_text(errors="replace"))
                lat, missing = latencies(ops, written, seen)
                if not missing or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            step.churn_ops, step.churn_missing = len(ops), missing
            step.latency_p50_s = _round(percentile(lat, 50))
            step.latency_p99_s = _round(percentile(lat, 99))
            step.latency_max_s = _round(max(lat) if lat else None)
            if missing:
                step.errors.append(f"{missing} of {len(ops)} changes never reached the "
                                   f"daemon's table within {APPLY_TIMEOUT:g} s")
            step.load_avg = round(os.getloadavg()[0], 2)
            progress.advance(2 * s.churn_seconds + 10)
            if log_dir is not None:              # node 1's log of this step, for a profile
                log_dir.mkdir(parents=True, exist_ok=True)
                (log_dir / f"{store}-{count}.log").write_bytes(node.log_file.read_bytes())
    except Exception as exc:                 # a failed store is reported, the run goes on
        steps.append(Step(leases=0, errors=[f"{type(exc).__name__}: {exc}"]))
    finally:
        progress.status(store, "lab down")
        lab.down()
    return {"store": store, "steps": [vars(st) for st in steps]}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def execute(s: ScaleSettings, progress: Progress, log_dir: Path | None = None
            ) -> dict[str, Any]:
    topology.remove_stale_labs()
    prefixes = topology.prefixes(2)
    started = datetime.now(UTC)
    stores = [run_store("etcd", s.etcd_counts, s, prefixes[0], progress, log_dir),
              run_store("directory", s.directory_counts, s, prefixes[1], progress, log_dir)]
    return {"schema": SCHEMA, "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "settings": {"etcd_counts": list(s.etcd_counts),
                         "directory_counts": list(s.directory_counts),
                         "churn_rate": s.churn_rate, "churn_seconds": s.churn_seconds,
                         "flow_interval": FLOW_INTERVAL, "network": str(NETWORK)},
            "targets": TARGETS, "stores": stores}


def planned_seconds(s: ScaleSettings) -> float:
    steps = len(s.etcd_counts) + len(s.directory_counts)
    return 2 * 20 + steps * (2 * s.churn_seconds + 10)


def failures(doc: dict[str, Any]) -> list[str]:
    return [f"{st['store']} {step['leases']}: {err}" for st in doc["stores"]
            for step in st["steps"] for err in step["errors"]]



# ---- report and plot ---------------------------------------------------------------------------

def _fmt(x: Any, unit: str = "") -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.3g}{unit}" if abs(x) < 100 else f"{x:.0f}{unit}"
    return f"{x}{unit}"


def _verdict(value: float | None, target: float) -> str:
    if value is None:
        return "not measured"
    return "met" if value <= target else f"missed by {value / target:.2f}×"


def render_report(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    lines = [
        "# dataplane scale benchmark", "",
        f"{doc['started']} to {doc['finished']}. One lab per store: two vxlan nodes of ours, "
        f"a pod on each, pod network {s['network']}; filler leases up to each count (each with "
        "its own public IP and VtepMAC; in etcd each bound to an etcd lease of its own). "
        f"Churn: adds, changes and removes in turn at {s['churn_rate']:g}/s for "
        f"{s['churn_seconds']:g} s; latency from just before a write to the daemon's log line "
        "after it applied the change to its forwarder (the C table). Pod 1 pings pod 2 every "
        f"{s['flow_interval'] * 1000:g} ms during the churn.", "",
        "| store | leases | ready s | cold start s (full table) | cold-start CPU s | RSS MiB "
        "| churn p50 / p99 / max s | CPU % of a core: churn (flow alone) | RSS after churn MiB "
        "| missed "
        "| echoes lost | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for st in doc["stores"]:
        for step in st["steps"]:
            lines.append(
                f"| {st['store']} | {step['leases']} | {_fmt(step['ready_s'])} | "
                f"{_fmt(step['cold_start_s'])} | {_fmt(step['cold_start_cpu_s'])} | "
                f"{_fmt(step['rss_mb'])} | {_fmt(step['latency_p50_s'])} / "
                f"{_fmt(step['latency_p99_s'])} / {_fmt(step['latency_max_s'])} | "
                f"{_fmt(step['churn_cpu_pct'])} ({_fmt(step.get('idle_cpu_pct'))}) | "
                f"{_fmt(step['churn_rss_mb'])} | "
                f"{step['churn_missing']} of {step['churn_ops']} | "
                f"{step['flow_lost']} of {step['flow_sent']} | {_fmt(step.get('load_avg'))} |")
    lines += ["", f"The machine has {os.cpu_count()} CPUs; the load average column says how "
              "busy it was besides (the daemon's own CPU seconds are the figure that does not "
              "depend on it)."]
    lines += ["", "## Against the targets (the largest step of each store)", "",
              "| target | store | measured | |", "|---|---|---|---|"]
    t = doc["targets"]
    for st in doc["stores"]:
        done = [x for x in st["steps"] if x["leases"]]
        if not done:
            continue
        top = max(done, key=lambda x: x["leases"])
        n = top["leases"]
        for label, key, target, unit in (
                (f"cold start < {t['cold_start_s']:g} s", "cold_start_s", t["cold_start_s"], " s"),
                (f"change-to-table p99 < {t['latency_p99_s']:g} s", "latency_p99_s",
                 t["latency_p99_s"], " s"),
                (f"RSS < {t['rss_mb']:g} MB", "churn_rss_mb", t["rss_mb"], " MiB"),
                (f"daemon CPU under churn < {t['churn_cpu_pct']:g}%", "churn_cpu_pct",
                 t["churn_cpu_pct"], "%")):
            lines.append(f"| {label} | {st['store']} at {n} | {_fmt(top[key], unit)} | "
                         f"{_verdict(top[key], target)} |")
        lost = top["flow_lost"]
        lines.append(f"| traffic keeps flowing | {st['store']} at {n} | {lost} of "
                     f"{top['flow_sent']} echoes lost | {'met' if lost == 0 else 'missed'} |")
    errors = failures(doc)
    if errors:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in errors]
    if doc.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{title}](plots/{name}.png)"
                                         for name, title in doc["plots"].items()]
    return "\n".join(lines) + "\n"


def write_plots(doc: dict[str, Any], out_dir: str) -> dict[str, str]:
    from bench import plots       # matplotlib only here (it chooses the Agg backend first)
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for st in doc["stores"]:
        steps = [x for x in st["steps"] if x["leases"] and x["latency_p99_s"] is not None]
        n = [x["leases"] for x in steps]
        ax1.plot(n, [x["latency_p50_s"] for x in steps], "o--", label=f"{st['store']} p50")
        ax1.plot(n, [x["latency_p99_s"] for x in steps], "o-", label=f"{st['store']} p99")
        cold = [x for x in st["steps"] if x["leases"] and x["cold_start_s"] is not None]
        ax2.plot([x["leases"] for x in cold], [x["cold_start_s"] for x in cold], "o-",
                 label=st["store"])
    ax1.axhline(doc["targets"]["latency_p99_s"], color="grey", lw=0.8, ls=":",
                label="p99 target")
    ax1.set(xlabel="leases", ylabel="seconds", title="lease change to the C peer table")
    ax2.axhline(doc["targets"]["cold_start_s"], color="grey", lw=0.8, ls=":", label="target")
    ax2.set(xlabel="leases", ylabel="seconds", title="cold start to a full peer table")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_ylim(bottom=0)
    plots.save(fig, out_dir, "scale")
    return {"scale": "latency and cold start against the number of leases"}


def write_outputs(doc: dict[str, Any], out_dir: str) -> str:
    return results.write_run(doc, out_dir, write_plots, render_report)
