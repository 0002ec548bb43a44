"""The etcd store over TLS and with etcd's users, against real etcd: a server certificate only,
client-certificate auth (--client-cert-auth), and `etcdctl auth enable`. Every failure the
operator can cause (wrong CA, expired certificates, no client certificate, a bad password, no
user, a missing permission) is a one-line StoreUnavailable naming the cause, raised without
waiting out the call's deadline, and the same store works once the cause is fixed."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dataplane.errors import CommandError
from dataplane.lease import LeaseAttrs
from dataplane.store.base import StoreUnavailable
from dataplane.store.etcd import EtcdStore
from dataplane.store.etcd_client import parse_endpoints
from dataplane.store.etcd_server import EtcdServer, ServerTLS
from dataplane.store.etcd_tls import TLSFiles, certificate_validity
from dataplane.store.options import add_store_arguments, open_store
from tests.etcd.conftest import _Servers, _need_etcd
from tests.etcd.etcd_helpers import ETCDCTL, NET_CONF, etcdctl, net
from tests.etcd.test_store_contract import next_batch
from tests.etcd.tls_certs import CA, Issued

PREFIX = "/coreos.com/network"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("pki")
    ca, other = CA(d, "ca"), CA(d, "other")
    return {"dir": d, "ca": ca, "other": other,
            "server": ca.issue("server", server=True),
            "expired_server": ca.issue("old-server", server=True, expired=True),
            "client": ca.issue("client"), "expired_client": ca.issue("old-client", expired=True),
            "foreign_client": other.issue("client")}


class Etcd:
    """One etcd of this module's, with etcdctl that speaks its TLS and auth."""

    def __init__(self, server: EtcdServer, ctl: list[str]) -> None:
        self.server = server
        self.url = server.client_url
        self.ctl = ctl

    def etcdctl(self, *args: str, check: bool = True) -> str:
        return etcdctl(self.url, *self.ctl, *args, check=check)

    def passwd(self, user: str, password: str) -> None:
        subprocess.run([ETCDCTL, "--endpoints", self.url, *self.ctl, "user", "passwd", user,
                        "--interactive=false"], input=password + "\n", text=True, check=True,
                       capture_output=True, env={**os.environ, "ETCDCTL_API": "3"}, timeout=20)


def _start(pki: dict[str, Any], tls: ServerTLS | None, ctl: list[str],
           extra: tuple[str, ...] = ()) -> Iterator[Etcd]:
    _need_etcd()
    servers = _Servers()
    try:
        etcd = Etcd(servers.one(tls=tls, extra_args=list(extra)), ctl)
        etcd.etcdctl("put", f"{PREFIX}/config", NET_CONF)
        yield etcd
    finally:
        servers.stop_all()


@pytest.fixture(scope="module")
def server_tls(pki: dict[str, Any]) -> Iterator[Etcd]:
    """https with a server certificate; any client may connect."""
    s = pki["server"]
    yield from _start(pki, ServerTLS(str(s.cert), str(s.key), str(pki["ca"].path)),
                      ["--cacert", str(pki["ca"].path)])


@pytest.fixture(scope="module")
def client_cert_auth(pki: dict[str, Any]) -> Iterator[Etcd]:
    """https, and a client certificate signed by our CA required (--client-cert-auth)."""
    s, c = pki["server"], pki["client"]
    yield from _start(pki, ServerTLS(str(s.cert), str(s.key), str(pki["ca"].path), True),
                      ["--cacert", str(pki["ca"].path), "--cert", str(c.cert), "--key",
                       str(c.key)])


@pytest.fixture(scope="module")
def auth_etcd(pki: dict[str, Any]) -> Iterator[Etcd]:
    """https and etcd's authentication: root, and user flannel (role flannel: readwrite on
    PREFIX/). Simple tokens expire after 2 s of disuse, so the tests see them expire."""
    s = pki["server"]
    ca = ["--cacert", str(pki["ca"].path)]
    for etcd in _start(pki, ServerTLS(str(s.cert), str(s.key), str(pki["ca"].path)), ca,
                       ("--auth-token", "simple", "--auth-token-ttl", "2")):
        etcd.etcdctl("user", "add", "root:rootpw")
        etcd.etcdctl("role", "add", "flannel")
        etcd.etcdctl("role", "grant-permission", "flannel", "--prefix=true", "readwrite",
                     f"{PREFIX}/")
        etcd.etcdctl("user", "add", "flannel:secret")
        etcd.etcdctl("user", "grant-role", "flannel", "flannel")
        etcd.etcdctl("auth", "enable")
        etcd.ctl = ca + ["--user", "root:rootpw"]
        yield etcd


def tls(pki: dict[str, Any], ca: str = "ca", cert: str | None = None) -> TLSFiles:
    issued: Issued | None = pki[cert] if cert else None
    return TLSFiles(str(pki[ca].path), str(issued.cert) if issued else None,
                    str(issued.key) if issued else None)


def store(url: str, **kwargs: Any) -> EtcdStore:
    return EtcdStore(url, prefix=PREFIX, **kwargs)


async def refused(s: EtcdStore, quick: bool = True) -> str:
    """The one-line StoreUnavailable a call meets, checked to come before the deadline
    (quick: a definitive refusal, not retried within the call)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        with pytest.raises(StoreUnavailable) as info:
            await s.get_network_config()
    finally:
        await s.close()
    message = str(info.value)
    assert "\n" not in message
    if quick:
        assert loop.time() - start < s.client.timeout, "a definitive refusal waited it out"
    return message


# -- TLS ---------------------------------------------------------------------------------------

def test_leases_over_tls(run: Callable[..., Any], pki: dict[str, Any],
                         client_cert_auth: Etcd) -> None:
    """The store's whole cycle with client-certificate auth, watch included."""
    async def go() -> None:
        a = store(client_cert_auth.url, tls=tls(pki, cert="client"))
        b = store(client_cert_auth.url, tls=tls(pki, cert="client"))
        try:
            assert (await a.get_network_config()).network == net("10.244.0.0/16")
            leases, cursor = await a.list_leases()
            watch = a.watch_leases(cursor)
            lease = await b.acquire_lease(LeaseAttrs("10.99.7.1"), ttl=60)
            batch = await next_batch(watch)
            assert batch == [("added", str(lease.subnet), "")]
            renewed = await b.renew_lease(lease, ttl=90)
            assert renewed.expiration > lease.expiration
            await b.release_lease(lease.subnet)
            assert await next_batch(watch) == [("removed", str(lease.subnet), "")]
            await watch.aclose()
        finally:
            await a.close()
            await b.close()
    run(go(), timeout=30)
    keys = client_cert_auth.etcdctl("get", "--prefix", "--keys-only", f"{PREFIX}/subnets/")
    assert keys.strip() == ""


def test_server_tls_without_client_certificate(run: Callable[..., Any], pki: dict[str, Any],
                                               server_tls: Etcd) -> None:
    async def go() -> None:
        s = store(server_tls.url, tls=tls(pki))
        try:
            assert (await s.get_network_config()).network == net("10.244.0.0/16")
        finally:
            await s.close()
    run(go())


@pytest.mark.parametrize("ca, cert, cause", [
    ("other", "client", "the server's certificate is not trusted (unable to get local issuer "
                        "certificate; check --etcd-cafile)"),
    ("ca", None, "the server requires a client certificate (give --etcd-certfile and "
                 "--etcd-keyfile)"),
    ("ca", "expired_client", "the server rejected our client certificate: --etcd-certfile "),
    ("ca", "foreign_client", "the server rejected our client certificate (--etcd-certfile "),
])
def test_tls_refusals_name_their_cause(run: Callable[..., Any], pki: dict[str, Any],
                                       client_cert_auth: Etcd, ca: str, cert: str | None,
                                       cause: str) -> None:
    message = run(refused(store(client_cert_auth.url, tls=tls(pki, ca, cert))))
    assert message.startswith(f"etcd unavailable ({client_cert_auth.url}: TLS: {cause}")
    if cert == "expired_client":
        assert "old-client.crt expired on " in message
    if cert == "foreign_client":
        assert "not signed by a CA it trusts" in message


def test_an_expired_server_certificate(run: Callable[..., Any], pki: dict[str, Any]) -> None:
    s = pki["expired_server"]
    for etcd in _start(pki, ServerTLS(str(s.cert), str(s.key), str(pki["ca"].path)),
                       ["--cacert", str(pki["ca"].path), "--insecure-skip-tls-verify"]):
        message = run(refused(store(etcd.url, tls=tls(pki))))
        assert f"{etcd.url}: TLS: the server's certificate is not trusted (certificate has " \
               "expired)" in message


def test_tls_against_plain_http_and_back(run: Callable[..., Any], pki: dict[str, Any],
                                         etcd_url: str, server_tls: Etcd) -> None:
    tls_url = etcd_url.replace("http://", "https://")
    message = run(refused(store(tls_url, tls=tls(pki))))
    assert f"{tls_url}: TLS: no TLS server there (is it a plain http:// endpoint?)" in message
    plain_url = server_tls.url.replace("https://", "http://")
    message = run(refused(store(plain_url), quick=False))     # Go just hangs up
    assert f"{plain_url}: connection closed by the server before answering (does it serve " \
           "https://?)" in message


def test_renewed_files_are_picked_up(run: Callable[..., Any], pki: dict[str, Any],
                                     client_cert_auth: Etcd, tmp_path: Path) -> None:
    """Certificates replaced in place (a renewal): the same store connects, no restart."""
    ca, cert, key = tmp_path / "ca.pem", tmp_path / "client.crt", tmp_path / "client.key"
    shutil.copy(pki["other"].path, ca)
    shutil.copy(pki["expired_client"].cert, cert)
    shutil.copy(pki["expired_client"].key, key)

    async def go() -> None:
        s = store(client_cert_auth.url, tls=TLSFiles(str(ca), str(cert), str(key)))
        try:
            with pytest.raises(StoreUnavailable, match="not trusted"):
                await s.get_network_config()
            shutil.copy(pki["ca"].path, ca)
            with pytest.raises(StoreUnavailable, match="client.crt expired on"):
                await s.get_network_config()
            shutil.copy(pki["client"].cert, cert)
            shutil.copy(pki["client"].key, key)
            assert (await s.get_network_config()).network == net("10.244.0.0/16")
        finally:
            await s.close()
    run(go())


# -- authentication ----------------------------------------------------------------------------

def user(etcd: Etcd, password: str) -> str:
    name = f"u{uuid.uuid4().hex[:8]}"
    etcd.etcdctl("user", "add", f"{name}:{password}")
    etcd.etcdctl("user", "grant-role", name, "flannel")
    return name


def test_users_and_expiring_tokens(run: Callable[..., Any], pki: dict[str, Any],
                                   auth_etcd: Etcd) -> None:
    """A token that expired (2 s unused) or was invalidated (etcd drops a user's tokens when
    the password is set) is replaced: calls and watches go on."""
    name = user(auth_etcd, "secret")

    async def go() -> None:
        s = store(auth_etcd.url, tls=tls(pki), username=name, password="secret")
        try:
            await s.get_network_config()
            first = s.client._token
            assert first
            await asyncio.sleep(3.5)                            # past --auth-token-ttl
            leases, cursor = await s.list_leases()
            second = s.client._token
            assert second and second != first
            await asyncio.to_thread(auth_etcd.passwd, name, "secret")   # same one
            watch = s.watch_leases(cursor)
            lease = await s.acquire_lease(LeaseAttrs("10.99.7.2"), ttl=60)
            assert s.client._token not in (first, second)
            batch = await next_batch(watch)
            assert batch == [("added", str(lease.subnet), "")]
            await s.release_lease(lease.subnet)
            await watch.aclose()
        finally:
            await s.close()
    run(go(), timeout=30)


@pytest.mark.parametrize("user, password, prefix, cause", [
    ("flannel", "wrong", PREFIX, "authentication as 'flannel' failed (etcdserver: "
                                 "authentication failed, invalid user ID or password): check "
                                 "--etcd-username and --etcd-password"),
    (None, None, PREFIX, "authentication is enabled: give --etcd-username and --etcd-password"),
    ("flannel", "secret", "/elsewhere/network", "permission denied to user 'flannel' for "
                                                "/v3/kv/range (grant the user a role with "
                                                "readwrite on the prefix)"),
])
def test_auth_refusals_name_their_cause(run: Callable[..., Any], pki: dict[str, Any],
                                        auth_etcd: Etcd, user: str | None,
                                        password: str | None, prefix: str, cause: str) -> None:
    s = EtcdStore(auth_etcd.url, prefix=prefix, tls=tls(pki), username=user, password=password)
    message = run(refused(s))
    assert message == f"etcd {auth_etcd.url}: {cause}"


def test_a_fixed_password_connects(run: Callable[..., Any], pki: dict[str, Any],
                                   auth_etcd: Etcd) -> None:
    name = user(auth_etcd, "first")

    async def go() -> None:
        s = store(auth_etcd.url, tls=tls(pki), username=name, password="second")
        try:
            with pytest.raises(StoreUnavailable, match=f"authentication as '{name}' failed"):
                await s.get_network_config()
            await asyncio.to_thread(auth_etcd.passwd, name, "second")
            await s.get_network_config()
        finally:
            await s.close()
    run(go())


# -- without etcd ------------------------------------------------------------------------------

def test_certificate_validity_matches_cryptography(pki: dict[str, Any]) -> None:
    from cryptography import x509
    for name in ("server", "expired_client", "foreign_client"):
        pem = pki[name].cert.read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
        assert certificate_validity(pem) == (cert.not_valid_before_utc,
                                             cert.not_valid_after_utc)
    with pytest.raises(ValueError, match="no PEM certificate"):
        certificate_validity(b"hello")


def test_bad_tls_files_are_named(pki: dict[str, Any], tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    client, other = pki["client"], pki["foreign_client"]
    cases = [
        (dict(cafile=str(tmp_path / "nope.pem")), "--etcd-cafile .*nope.pem: no such file"),
        (dict(cafile=str(junk)), "--etcd-cafile .*junk.pem: "),
        (dict(certfile=str(client.cert), keyfile=str(other.key)),
         "--etcd-certfile .*: the key does not belong to the certificate"),
        (dict(certfile=str(junk), keyfile=str(client.key)),
         "--etcd-certfile .*junk.pem, --etcd-keyfile .*: not a PEM certificate"),
        (dict(keyfile=str(client.key)), "--etcd-keyfile needs --etcd-certfile"),
    ]
    for kwargs, error in cases:
        with pytest.raises(ValueError, match=error):
            TLSFiles(**kwargs)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dataplane run")
    add_store_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_flags(pki: dict[str, Any]) -> None:
    ca, client = str(pki["ca"].path), pki["client"]
    s = open_store(parse("--etcd-endpoints", "https://127.0.0.1:2379,http://127.0.0.2:2379",
                         "--etcd-cafile", ca, "--etcd-certfile", str(client.cert),
                         "--etcd-keyfile", str(client.key), "--etcd-username", "flannel",
                         "--etcd-password", "secret"))
    assert isinstance(s, EtcdStore)
    assert [e.tls for e in s.client.endpoints] == [True, False]
    assert s.client.tls.cafile == ca and s.client.tls.certfile == str(client.cert)
    assert (s.client.username, s.client.password) == ("flannel", "secret")
    assert parse_endpoints("https://etcd-a")[0].port == 2379
    for argv, error in [
        (["--etcd-endpoints", "http://a:2379", "--etcd-cafile", ca],
         "--etcd-cafile applies to https:// etcd endpoints"),
        (["--etcd-username", "flannel"], "--etcd-username applies to the etcd store"),
        (["--etcd-endpoints", "https://a:2379", "--etcd-cafile", "/nonexistent/ca.pem"],
         "--etcd-cafile /nonexistent/ca.pem: no such file or directory"),
    ]:
        with pytest.raises(CommandError, match=error):
            open_store(parse(*argv))
