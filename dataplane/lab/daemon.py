"""Starting our node daemon (`dataplane run`) inside a node namespace, and waiting until it is
ready: it writes subnet.env once its lease is held and its device is up, as flanneld does."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence

from dataplane.lab import netns
from dataplane.lab.errors import LabError
from dataplane.lab.state import LabNode

# Every daemon serves /metrics on its node's own loopback at this port (namespaces keep them
# apart): the lab waits on it for the peers to converge, and the benchmark reads counters.
METRICS_PORT = 9100


def default_program() -> list[str]:
    return netns.python_argv("dataplane")


def argv(node: LabNode, store_args: Sequence[str], *, program: Sequence[str] | None = None,
         fastpath: str | None = None, ip_masq: bool = False,
         extra: Sequence[str] = ()) -> list[str]:
    """The daemon's command line (the contract with dataplane.daemon.command); `program`
    replaces `python3 -m dataplane` (a wrapper such as perf, or a stand-in in tests)."""
    args = ["run", *store_args, "--public-ip", str(node.underlay_ip),
            "--subnet", str(node.subnet), "--subnet-file", str(node.subnet_file)]
    if ip_masq:
        args.append("--ip-masq")    # flanneld's flag: FLANNEL_IPMASQ=true, as on kernel nodes
    if fastpath:
        args += ["--fastpath", fastpath]
    # after `extra`: the lab relies on its metrics port, so it has the last word; loopback,
    # since the lab asks from inside the namespace (the daemon's default is every address)
    return [*(program or default_program()), *args, *extra, "--healthz-ip", "127.0.0.1",
            "--healthz-port", str(METRICS_PORT)]


def decommission(node: LabNode, store_args: Sequence[str], timeout: float = 20.0) -> str:
    """Give the node's subnet back as an operator would, once its daemon has stopped (a stop
    keeps the lease and subnet.env): `dataplane leases release --subnet-file` in the node's
    namespace, so clean-up steps that act on the node's network (rules) act on this one.
    Returns what it did; LabError with its message if it failed."""
    command = [*default_program(), "leases", "release", "--subnet-file",
               str(node.subnet_file), *store_args]
    try:
        result = subprocess.run(netns.ns_argv(node.netns, command), capture_output=True,
                                text=True, timeout=timeout, env=netns.python_env(),
                                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LabError(f"decommissioning {node.name} took over {timeout:g} s") from None
    if result.returncode != 0:
        raise LabError(f"decommissioning {node.name}: "
                       f"{(result.stderr.strip().splitlines() or ['failed'])[-1]}")
    return result.stdout.strip()


def start(node: LabNode, command: Sequence[str]) -> subprocess.Popen[bytes]:
    """Spawn the daemon in the node's namespace, in its own session so that it outlives a
    `dataplane lab up` that has returned, with stdout and stderr in the node's log."""
    node.subnet_file.unlink(missing_ok=True)     # readiness is this file appearing
    node.dir.mkdir(parents=True, exist_ok=True)
    with open(node.log_file, "ab") as log:
        log.write(f"# {' '.join(command)}\n".encode())
        log.flush()
        return subprocess.Popen(netns.ns_argv(node.netns, command), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, env=netns.python_env(),
                                start_new_session=True)


def wait_converged(nodes: Sequence[LabNode], peers: int, timeout: float) -> None:
    """Wait until every daemon knows `peers` peers: a node that started before another learns
    of it from the store's watch, a moment after both are ready. Asked of each daemon's
    /metrics on its own loopback, from a thread inside its namespace."""
    from dataplane.lab.nsthread import call_in_netns

    deadline = time.monotonic() + timeout
    late = []
    for node in nodes:
        known = call_in_netns(node.netns, lambda: _poll_peers(
            peers, max(0.1, deadline - time.monotonic())))
        if known < peers:
            late.append(f"{node.name} knows {max(known, 0)} of {peers}")
    if late:
        raise LabError("daemons did not learn their peers within "
                       f"{timeout:g} s: {'; '.join(late)}")


def _poll_peers(want: int, timeout: float) -> int:
    """Ask /metrics on this thread's namespace's loopback until the daemon knows `want` peers
    or time runs out; the last count (-1: never answered)."""
    import urllib.request

    from dataplane.daemon.metrics import parse_metrics

    deadline = time.monotonic() + timeout
    known = -1
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics",
                                        timeout=2) as resp:
                known = int(parse_metrics(resp.read().decode()).get("dataplane_peers", -1))
        except OSError:
            pass                 # not serving yet
        if known >= want or time.monotonic() > deadline:
            return known
        time.sleep(0.05)


def log_tail(node: LabNode, lines: int = 20) -> str:
    try:
        text = node.log_file.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:]) or "(empty log)"


def wait_ready(procs: dict[str, tuple[LabNode, subprocess.Popen[bytes]]], timeout: float) -> None:
    """Wait until every daemon has written its subnet.env; fail fast if one exits."""
    deadline = time.monotonic() + timeout
    pending = dict(procs)
    while pending:
        for name, (node, proc) in list(pending.items()):
            if proc.poll() is not None:
                raise LabError(f"daemon on {name} exited with status {proc.returncode} before "
                               f"writing {node.subnet_file}; last lines of {node.log_file}:\n"
                               f"{log_tail(node)}")
            if node.subnet_file.exists():
                del pending[name]
        if not pending:
            return
        if time.monotonic() > deadline:
            node, _ = next(iter(pending.values()))
            raise LabError(f"daemon on {', '.join(pending)} did not write its subnet.env within "
                           f"{timeout:g} s; last lines of {node.log_file}:\n{log_tail(node)}")
        time.sleep(0.05)
