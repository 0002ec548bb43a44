"""`dataplane run` against a real etcd with TLS or users, in a namespace: a wrong CA, an expired
client certificate or a bad password is logged as one line naming the cause, retried like any
store outage while the daemon keeps running, and the daemon comes up once it is fixed (a file
replaced in place, the password set in etcd)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from dataplane.lab.netns import ns_argv
from dataplane.lab.nsthread import call_in_netns
from dataplane.store.etcd_server import EtcdServer, ServerTLS, find_etcd
from tests import netns
from tests.daemon.conftest import host  # noqa: F401  (the two-namespace fixture)
from tests.etcd.etcd_helpers import ETCDCTL
from tests.etcd.tls_certs import CA

PREFIX = "/coreos.com/network"


class NsEtcd(EtcdServer):
    """An etcd member running inside a namespace (where the daemon can reach it)."""

    def __init__(self, ns: str, data_dir: Path, host_ip: str, tls: ServerTLS,
                 extra: list[str]) -> None:
        super().__init__(data_dir, host=host_ip, client_port=2379, peer_port=2380, fast=True,
                         tls=tls, extra_args=extra)
        self.ns = ns

    def argv(self, etcd: str) -> list[str]:
        return ns_argv(self.ns, super().argv(etcd))

    def healthy(self) -> bool:
        return call_in_netns(self.ns, super().healthy)

    def ctl(self, *args: str, ctl: list[str], stdin: str | None = None) -> str:
        argv = ns_argv(self.ns, [ETCDCTL, "--endpoints", self.client_url, *ctl, *args])
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30,
                                env={**os.environ, "ETCDCTL_API": "3"})
        assert result.returncode == 0, result.stderr
        return result.stdout


@pytest.mark.netns
@pytest.mark.parametrize("case", ["wrong-ca", "expired-client-cert", "bad-password"])
def test_the_daemon_waits_out_a_refusal_and_comes_up_when_fixed(
        host, case: str) -> None:  # noqa: F811
    if find_etcd() is None:
        pytest.skip("etcd is not installed (apt-get install etcd-server)")
    pki = host.tmp / "pki"
    pki.mkdir()
    ca, other = CA(pki, "ca"), CA(pki, "other")
    server = ca.issue("server", server=True, ips=(host.ip,))
    good, expired = ca.issue("client"), ca.issue("old-client", expired=True)
    cafile, certfile = host.tmp / "ca.pem", host.tmp / "client.crt"
    keyfile = host.tmp / "client.key"
    shutil.copy(other.path if case == "wrong-ca" else ca.path, cafile)
    first = expired if case == "expired-client-cert" else good
    shutil.copy(first.cert, certfile)
    shutil.copy(first.key, keyfile)

    client_auth = case == "expired-client-cert"
    tls = ServerTLS(str(server.cert), str(server.key), str(ca.path), client_auth)
    extra = ["--auth-token", "simple"] if case == "bad-password" else []
    etcd = NsEtcd(host.ns, host.tmp / "etcd", host.ip, tls, extra)
    ctl = ["--cacert", str(ca.path)] + (["--cert", str(good.cert), "--key", str(good.key)]
                                        if client_auth else [])
    log_path = host.tmp / "daemon.log"
    env_file = host.tmp / "a.env"
    proc = None
    try:
        etcd.start(timeout=30)
        etcd.ctl("put", f"{PREFIX}/config", json.dumps({"Network": "10.244.0.0/16"}), ctl=ctl)
        flags = ["--etcd-endpoints", etcd.client_url, "--etcd-cafile", str(cafile)]
        if client_auth:
            flags += ["--etcd-certfile", str(certfile), "--etcd-keyfile", str(keyfile)]
        if case == "bad-password":
            etcd.ctl("user", "add", "root:rootpw", ctl=ctl)
            etcd.ctl("user", "add", "flannel:old", ctl=ctl)
            etcd.ctl("role", "add", "flannel", ctl=ctl)
            etcd.ctl("role", "grant-permission", "flannel", "--prefix=true", "readwrite",
                     f"{PREFIX}/", ctl=ctl)
            etcd.ctl("user", "grant-role", "flannel", "flannel", ctl=ctl)
            etcd.ctl("auth", "enable", ctl=ctl)
            ctl = ctl + ["--user", "root:rootpw"]
            flags += ["--etcd-username", "flannel", "--etcd-password", "new"]
        argv = ["ip", "netns", "exec", host.ns, *netns.dataplane_cmd(
            "-v", "run", *flags, "--public-ip", host.ip, "--subnet-file", str(env_file))]
        with open(log_path, "w") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                    env=netns.env())
        cause = {
            "wrong-ca": "TLS: the server's certificate is not trusted (unable to get local "
                        "issuer certificate; check --etcd-cafile)",
            "expired-client-cert": f"TLS: the server rejected our client certificate: "
                                   f"--etcd-certfile {certfile} expired on ",
            "bad-password": "authentication as 'flannel' failed (etcdserver: authentication "
                            "failed, invalid user ID or password): check --etcd-username and "
                            "--etcd-password",
        }[case]

        def retries() -> list[str]:
            return [line for line in log_path.read_text().splitlines()
                    if "cannot read the network config" in line]
        netns.wait_for(lambda: len(retries()) >= 2 or proc.poll() is not None, timeout=30,
                       what="two retries")
        assert proc.poll() is None, log_path.read_text()
        assert cause in retries()[0], log_path.read_text()
        assert "retrying in" in retries()[0]
        assert "Traceback" not in log_path.read_text()
        assert not env_file.exists()

        if case == "wrong-ca":
            shutil.copy(ca.path, cafile)
        elif case == "expired-client-cert":
            shutil.copy(good.cert, certfile)
            shutil.copy(good.key, keyfile)
        else:
            etcd.ctl("user", "passwd", "flannel", "--interactive=false", ctl=ctl, stdin="new\n")
        netns.wait_for(lambda: env_file.exists() or proc.poll() is not None, timeout=40,
                       what="the daemon to come up once fixed")
        assert proc.poll() is None, log_path.read_text()
        leases = etcd.ctl("get", "--prefix", "--keys-only", f"{PREFIX}/subnets/", ctl=ctl)
        assert f"{PREFIX}/subnets/10.244." in leases
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log_path.read_text()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        etcd.stop()
