"""An unleased flood against a leased transfer (issue 9, item 2): how much of its rate does a
leased peer keep while an address holding no lease floods us with UDP_GRO runs?

    python3 -m bench.flood [--rounds 5] [--mbytes 64] [--prefix flood]

Three daemons (a, b, c) on a bridge, as in tests/daemon/test_hostile_underlay.py; b sends to
a, verified, in rounds that alternate quiet and flooded (10.99.0.9 on c sending runs of 128
segments of 100 bytes to a's tunnel port, as fast as one Python sender goes, or --flood-rate
runs a second). Prints one JSON
line: the median rate of each kind and their ratio (target: flooded >= 0.9 x quiet), with
a's unknown-peer and oversize drop counts. Needs root. Everything is torn down at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dataplane.backends import VXLAN
from dataplane.daemon.metrics import parse_metrics
from dataplane.lab import netns

SIDES = {"a": 1, "b": 2, "c": 3}
FLOOD = """
import socket, struct, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.99.0.9", 0))
run, cmsg = b"\\x45" * (100 * 128), [(17, 103, struct.pack("H", 100))]
rate = RATE
print("FLOODING", flush=True)
start, sent = time.monotonic(), 0
while True:
    s.sendmsg([run], cmsg, 0, ("10.99.0.1", PORT))
    sent += 1
    if rate and sent % 20 == 0:
        time.sleep(max(0.0, start + sent / rate - time.monotonic()))
"""


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def in_ns(ns: str, *argv: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, *argv], env=netns.python_env(),
                            text=True, **kw)


def metrics(ns: str, port: int) -> dict[str, float]:
    code = (f"import urllib.request;print(urllib.request.urlopen("
            f"'http://127.0.0.1:{port}/metrics', timeout=5).read().decode())")
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                         capture_output=True, text=True, check=True).stdout
    return parse_metrics(out)


def setup(p: str, store: Path, tmp: Path) -> tuple[dict[str, str], list[subprocess.Popen]]:
    names = {side: f"{p}-{side}" for side in (*SIDES, "sw")}
    for name in names.values():
        netns.add(name)
    sh("ip", "-n", names["sw"], "link", "add", f"{p}br", "type", "bridge")
    sh("ip", "-n", names["sw"], "link", "set", f"{p}br", "up")
    for side, n in SIDES.items():
        sh("ip", "link", "add", f"{p}{side}", "netns", names[side], "type", "veth", "peer",
           "name", f"{p}{side}s", "netns", names["sw"])
        sh("ip", "-n", names["sw"], "link", "set", f"{p}{side}s", "master", f"{p}br", "up")
        sh("ip", "-n", names[side], "addr", "add", f"10.99.0.{n}/24", "dev", f"{p}{side}")
        sh("ip", "-n", names[side], "link", "set", f"{p}{side}", "up")
    sh("ip", "-n", names["c"], "addr", "add", "10.99.0.9/24", "dev", f"{p}c")
    (store / "config").write_text('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}')
    procs = [in_ns(names[side], sys.executable, "-m", "dataplane", "run", "--store-dir",
                   str(store), "--public-ip", f"10.99.0.{n}", "--subnet", f"10.244.{n}.0/24",
                   "--subnet-file", str(tmp / f"{side}.env"), "--healthz-port", str(9300 + n),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for side, n in SIDES.items()]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if all(metrics(names[s], 9300 + n)["dataplane_peers"] == 2 for s, n in SIDES.items()):
                return names, procs
        except (subprocess.CalledProcessError, KeyError):
            pass
        time.sleep(0.3)
    raise SystemExit("the three daemons did not come up")


def transfer(names: dict[str, str], nbytes: int) -> float:
    server = in_ns(names["a"], sys.executable, "-m", "dataplane.lab.probe", "tcp-serve",
                   "10.244.1.0", "7001", "--timeout", "120", stdout=subprocess.PIPE)
    try:
        assert server.stdout.readline().strip() == "LISTENING"
        sent = in_ns(names["b"], sys.executable, "-m", "dataplane.lab.probe", "tcp-send",
                     "10.244.1.0", "7001", str(nbytes), "--timeout", "120",
                     stdout=subprocess.PIPE)
        out = json.loads(sent.communicate(timeout=150)[0])
        got = json.loads(server.communicate(timeout=150)[0].splitlines()[-1])
        if got["sha256"] != out["sha256"]:
            raise SystemExit("the transfer arrived corrupted")
        return nbytes * 8 / out["seconds"] / 1e9
    finally:
        server.kill()
        server.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench.flood", description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="quiet/flooded pairs (default 5)")
    ap.add_argument("--mbytes", type=int, default=64, help="MiB per transfer (default 64)")
    ap.add_argument("--prefix", default="flood", help="namespace and link name prefix")
    ap.add_argument("--flood-rate", type=int, default=0, metavar="RUNS",
                    help="runs of 128 segments a second (default 0: as fast as one sender goes)")
    args = ap.parse_args(argv)
    rates: dict[str, list[float]] = {"quiet": [], "flooded": []}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "store").mkdir()
        names, procs = {}, []
        try:
            names, procs = setup(args.prefix, tmp / "store", tmp)
            for _ in range(args.rounds):
                for kind in ("quiet", "flooded"):
                    flood = None
                    if kind == "flooded":
                        flood = in_ns(names["c"], sys.executable, "-c",
                                      FLOOD.replace("RATE", str(args.flood_rate))
                                      .replace("PORT", str(VXLAN.port)),
                                      stdout=subprocess.PIPE)
                        assert flood.stdout.readline().strip() == "FLOODING"
                        time.sleep(0.5)
                    try:
                        rates[kind].append(transfer(names, args.mbytes << 20))
                    finally:
                        if flood is not None:
                            flood.kill()
                            flood.wait()
            m = metrics(names["a"], 9301)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=15)
            for name in names.values():
                for pid in netns.pids_in(name):
                    subprocess.run(["kill", "-9", str(pid)], check=False)
                netns.delete(name)
    quiet, flooded = statistics.median(rates["quiet"]), statistics.median(rates["flooded"])
    print(json.dumps({
        "gbit_s": {"quiet": round(quiet, 3), "flooded": round(flooded, 3)},
        "ratio": round(flooded / quiet, 3), "target": 0.9, "flood_rate": args.flood_rate,
        "rounds": {k: [round(v, 3) for v in vs] for k, vs in rates.items()},
        "a_drops_ingress": {
            r: m.get(f'dataplane_drops_total{{direction="ingress",reason="{r}"}}', 0)
            for r in ("unknown-peer", "oversize")},
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
