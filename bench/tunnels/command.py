"""`cmd:PATH`: any program that brings up a layer-3 tunnel in a node, as a rung.

The contract (also in `dataplane bench --help`), PATH being run as root:

    PATH overhead                          on the host, before any lab exists: print one
                                           integer, the bytes each pod packet gains on the
                                           underlay; the pods' MTU is 1500 minus it
    PATH up   NODE LOCAL PEER LSUB PSUB    in node NODE's network namespace (NODE is 1 or 2,
    PATH down NODE LOCAL PEER LSUB PSUB    LOCAL/PEER the two nodes' underlay IPv4 addresses
                                           on eth0, LSUB/PSUB their pod subnets)

`up` must return (exit 0) once PSUB is routed through its tunnel; it may leave daemons
running in the namespace (they are measured as the rung's daemons: CPU, RSS, pinning).
The host-gw route to PSUB is deleted before `up`, so a script that routes nothing gets no
path. `down` runs at teardown, also after a failed `up`; whatever still runs in the node's
namespace afterwards is killed and its state directory removed. Both get the environment:

    DATAPLANE_TUNNEL_DIR   a private directory for config, keys, pid files and logs
    DATAPLANE_UNDERLAY_DEV the node's underlay device (eth0)
    DATAPLANE_UNDERLAY_MTU its MTU (1500)
    DATAPLANE_TUNNEL_TAG   a short string unique to this lab, for names that are shared
                           between namespaces (sockets, files outside the directory)
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.tunnels.base import Tunnel, TunnelError, TunnelNode, log_tail, ns_run

PREFIX = "cmd:"
UNDERLAY_DEV = "eth0"
UNDERLAY_MTU = 1500
STEP_TIMEOUT = 60.0


def script_argv(path: str, action: str, node: TunnelNode) -> list[str]:
    return [path, action, str(node.index), str(node.underlay_ip), str(node.peer_ip),
            str(node.subnet), str(node.peer_subnet)]


def script_env(node: TunnelNode) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(DATAPLANE_TUNNEL_DIR=str(node.workdir), DATAPLANE_UNDERLAY_DEV=UNDERLAY_DEV,
               DATAPLANE_UNDERLAY_MTU=str(UNDERLAY_MTU), DATAPLANE_TUNNEL_TAG=node.tag)
    return env


def check_path(path: str) -> str | None:
    """Why PATH cannot be a rung, or None."""
    if not path:
        return "cmd: needs a path (cmd:/path/to/program)"
    if not os.path.isfile(path):
        return f"{path}: no such file"
    if not os.access(path, os.X_OK):
        return f"{path}: not executable (chmod +x)"
    return None


def ask_overhead(path: str) -> int:
    """`PATH overhead`, checked: the bytes each pod packet gains."""
    try:
        proc = subprocess.run([path, "overhead"], capture_output=True, text=True, timeout=20,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise TunnelError(f"`{path} overhead` did not run: {exc}") from None
    text = proc.stdout.strip()
    if proc.returncode != 0 or not text.isdigit() or not 0 <= int(text) <= UNDERLAY_MTU - 576:
        raise TunnelError(f"`{path} overhead` must print the bytes its tunnel adds per packet "
                          f"(0..{UNDERLAY_MTU - 576}) and exit 0; it exited {proc.returncode}"
                          f" printing {(text or proc.stderr.strip())[:80]!r}")
    return int(text)


class CommandTunnel(Tunnel):
    package = ""
    routes_itself = True
    slug = "command"

    def __init__(self, path: str, overhead: int) -> None:
        self.path = path
        self.name = PREFIX + path
        self.program = path
        self.overhead = overhead
        self.mtu = UNDERLAY_MTU - overhead
        self.note = f"your dataplane: {path} up/down in each node"
        self.method = (f"`{path} up|down NODE LOCAL PEER LSUB PSUB` in each node's "
                       f"namespace; it declares {overhead} bytes of overhead (pod MTU "
                       f"{self.mtu})")

    def available(self) -> str | None:
        return check_path(self.path)

    def start(self, node: TunnelNode, lab: Any, logfile: Path) -> subprocess.Popen[bytes] | None:
        self._step(node, "up", logfile)
        return None

    def stop(self, node: TunnelNode) -> None:
        self._step(node, "down", node.workdir / "command.down.log")

    def _step(self, node: TunnelNode, action: str, logfile: Path) -> None:
        # Its output to a file, not a pipe: daemons it leaves behind would hold a pipe open.
        with open(logfile, "ab") as out:
            try:
                proc = subprocess.run(["ip", "netns", "exec", node.netns,
                                       *script_argv(self.path, action, node)],
                                      stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=script_env(node),
                                      timeout=STEP_TIMEOUT, check=False)
            except subprocess.TimeoutExpired:
                raise TunnelError(f"`{self.path} {action}` on {node.name} took more than "
                                  f"{STEP_TIMEOUT:g} s") from None
        if proc.returncode != 0:
            raise TunnelError(f"`{self.path} {action}` on {node.name} exited "
                              f"{proc.returncode}: {log_tail(logfile)}")

    def daemon_pids(self, nodes: Sequence[TunnelNode]) -> list[int]:
        pids = []
        for node in nodes:
            out = ns_run(node.netns, ["true"], check=False)    # the namespace still exists
            if out.returncode != 0:
                continue
            listed = subprocess.run(["ip", "netns", "pids", node.netns], capture_output=True,
                                    text=True, check=False).stdout.split()
            pids += sorted(int(p) for p in listed if p.isdigit())[:1]
        return pids
