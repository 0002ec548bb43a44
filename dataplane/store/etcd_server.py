"""Run etcd for a lab or a test: one member (or a small cluster) on given addresses, waited for.

    with EtcdServer("/var/lib/dataplane-lab/etcd", host="10.99.0.254", client_port=2379) as srv:
        ... srv.client_url ...            # http://10.99.0.254:2379

A member is /usr/bin/etcd (Debian: apt-get install etcd-server) with its own data directory,
logging to `<data_dir>.log` beside it (or `log_path`). start() returns once /health answers
{"health":"true"}; stop() sends SIGTERM, then SIGKILL after a few seconds, and leaves the data
directory to its owner. Ports left at 0 are picked free on `host` when first started and kept,
so a member restarts where it was. `fast=True` shortens the heartbeat and election timeout
(and with them etcd's minimum lease TTL, to 1 s) for tests on one machine.

`tls=ServerTLS(cert, key, ca, client_cert_auth)` serves clients over https (peers stay on
http); with client_cert_auth etcd demands a client certificate signed by `ca` (`ca` is what
clients trust either way). etcd's own JSON
gateway then dials the member with the server's certificate as a client one, so that
certificate needs both the serverAuth and the clientAuth extended key usages (our health probe
presents it too).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence

ETCD = "/usr/bin/etcd"
INSTALL_HINT = "apt-get install etcd-server"


class EtcdServerError(RuntimeError):
    """etcd is missing, would not start, or did not become healthy."""


def find_etcd() -> str | None:
    """The etcd binary, or None when it is not installed."""
    if os.access(ETCD, os.X_OK):
        return ETCD
    return shutil.which("etcd")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class ServerTLS:
    cert_file: str
    key_file: str
    trusted_ca_file: str
    client_cert_auth: bool = False

    def argv(self) -> list[str]:
        args = ["--cert-file", self.cert_file, "--key-file", self.key_file]
        if self.client_cert_auth:     # etcd demands client certificates once it has a CA
            args += ["--client-cert-auth", "--trusted-ca-file", self.trusted_ca_file]
        return args

    def probe_context(self) -> ssl.SSLContext:
        """For the health probe, which asks whether etcd is up, not whether it is trusted
        (tests serve expired certificates on purpose)."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if self.client_cert_auth:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


class EtcdServer:
    def __init__(self, data_dir: str | os.PathLike[str], *, host: str = "127.0.0.1",
                 client_port: int = 0, peer_port: int = 0, name: str = "default",
                 initial_cluster: str | None = None, fast: bool = False,
                 log_path: str | os.PathLike[str] | None = None,
                 extra_args: Sequence[str] = (), tls: ServerTLS | None = None) -> None:
        """initial_cluster: "a=http://h:p,b=http://h:q" for a member of a cluster (see
        start_cluster); None for a single-member cluster of its own."""
        self.data_dir = Path(data_dir)
        self.host = host
        self.client_port = client_port
        self.peer_port = peer_port
        self.name = name
        self.initial_cluster = initial_cluster
        self.fast = fast
        self.log_path = Path(log_path) if log_path else self.data_dir.with_name(
            self.data_dir.name + ".log")
        self.extra_args = list(extra_args)
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    def assign_ports(self) -> None:
        """Pick free ports for those left at 0 (start() does it; clusters need them earlier)."""
        if not self.client_port:
            self.client_port = free_port(self.host)
        if not self.peer_port:
            self.peer_port = free_port(self.host)

    def argv(self, etcd: str) -> list[str]:
        self.assign_ports()
        args = [etcd, "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", self.client_url,
                "--advertise-client-urls", self.client_url,
                "--listen-peer-urls", self.peer_url,
                "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", self.initial_cluster or f"{self.name}={self.peer_url}",
                "--initial-cluster-state", "new"]
        if self.fast:
            # etcd's minimum lease TTL is 1.5 election ticks' worth of heartbeats.
            args += ["--heartbeat-interval", "25", "--election-timeout", "250"]
        if self.tls:
            args += self.tls.argv()
        return args + self.extra_args

    def start(self, *, wait: bool = True, timeout: float = 15.0) -> EtcdServer:
        if self.running:
            return self
        etcd = find_etcd()
        if etcd is None:
            raise EtcdServerError(f"etcd is not installed ({INSTALL_HINT})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv(etcd), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_healthy(timeout)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            context = self.tls.probe_context() if self.tls else None
            with urllib.request.urlopen(self.client_url + "/health", timeout=0.5,
                                        context=context) as resp:
                health: object = json.load(resp).get("health")
                return health == "true"
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def wait_healthy(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.proc is not None and self.proc.poll() is not None:
                raise EtcdServerError(f"etcd {self.name} exited with status "
                                      f"{self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise EtcdServerError(f"etcd {self.name} at {self.client_url} not healthy "
                                      f"after {timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited after timeout; nothing if not running."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash, for tests of failover."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_cluster(base_dir: str | os.PathLike[str], size: int = 3, *, host: str = "127.0.0.1",
                  fast: bool = True, timeout: float = 20.0) -> list[EtcdServer]:
    """A cluster of `size` members on one host, data in base_dir/m0, m1, ...; started and
    healthy. Stops what it started if the cluster does not come up."""
    members = [EtcdServer(Path(base_dir) / f"m{i}", host=host, name=f"m{i}", fast=fast)
               for i in range(size)]
    for m in members:
        m.assign_ports()
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    try:
        for m in members:
            m.initial_cluster = initial
            m.start(wait=False)
        for m in members:
            m.wait_healthy(timeout)
    except BaseException:
        for m in members:
            m.stop()
        raise
    return members
