"""A stand-in for `dataplane run` that does only what the lab can observe: it takes the
daemon's arguments, writes its lease (with a VtepMAC for vxlan) and then subnet.env, and runs
until SIGTERM. It forwards nothing. `--behave exit|hang` makes it fail the two ways a real
daemon can. Standalone on purpose: it must not depend on the code under test."""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from pathlib import Path


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["run"])
    p.add_argument("--store-dir", type=Path, required=True)
    p.add_argument("--public-ip", required=True)
    p.add_argument("--subnet", required=True)
    p.add_argument("--subnet-file", type=Path, required=True)
    p.add_argument("--ip-masq", action="store_true")
    p.add_argument("--fastpath")
    p.add_argument("--healthz-ip")
    p.add_argument("--healthz-port")       # the real daemon serves metrics there; we do not
    p.add_argument("--behave", choices=["ok", "exit", "hang"], default="ok")
    args = p.parse_args()
    print(f"fake daemon {os.getpid()} for {args.subnet}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.behave == "exit":
        print("fake daemon: cannot open /dev/net/tun (simulated failure)", flush=True)
        return 3
    if args.behave == "ok":
        conf = json.loads((args.store_dir / "config").read_text())
        kind = conf["Backend"]["Type"]
        seen = sorted(f.name for f in (args.store_dir / "subnets").glob("[0-9]*"))
        print(f"leases at start: {' '.join(seen)}", flush=True)
        attrs: dict[str, object] = {"PublicIP": args.public_ip, "PublicIPv6": None}
        if kind == "vxlan":
            mac = "0e:fa:" + ":".join(f"{random.randrange(256):02x}" for _ in range(4))
            attrs |= {"BackendType": "vxlan", "BackendData": {"VNI": 1, "VtepMAC": mac}}
        key = args.subnet.replace("/", "-")
        write(args.store_dir / "subnets" / key, json.dumps(attrs, separators=(",", ":")))
        gateway = args.subnet.rsplit(".", 1)[0] + ".1/" + args.subnet.rsplit("/", 1)[1]
        mtu = 1500 - {"udp": 28, "vxlan": 50}[kind]
        write(args.subnet_file, f"FLANNEL_NETWORK={conf['Network']}\nFLANNEL_SUBNET={gateway}\n"
                                f"FLANNEL_MTU={mtu}\n"
                                f"FLANNEL_IPMASQ={'true' if args.ip_masq else 'false'}\n")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    raise SystemExit(main())
