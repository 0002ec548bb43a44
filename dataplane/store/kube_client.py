"""A thin asyncio client of the Kubernetes API: the few Node and Pod calls the kube subnet
manager makes, over httpx (HTTP/1.1, TLS), and the configuration flanneld finds.

Why not a Kubernetes client library: measured in the daemon's process (Python 3.11, uvloop,
cffi, pyroute2 and the daemon's modules loaded, 36.5 MiB), importing the client and doing one
list and one watch of 50 Nodes adds 49.9 MiB of RSS with kubernetes-asyncio, 23.3 MiB with
kr8s, 14.4 MiB with lightkube, and 6.5 MiB with this module over httpx (3.5 MiB of it httpx's
import). The daemon's budget is 64 MB. lightkube, the lightest, also restarts a watch from
"now" on 410 Gone (losing the deletions in between, where client-go's reflector lists again)
and never asks for bookmarks. The calls are four: list, watch, get, patch.

Where the configuration comes from (client-go's BuildConfigFromFlags, as flanneld calls it):
- neither --kube-api-url nor --kubeconfig-file: in-cluster, i.e. https://$KUBERNETES_SERVICE_HOST:
  $KUBERNETES_SERVICE_PORT with the service account's token and CA from
  /var/run/secrets/kubernetes.io/serviceaccount (DATAPLANE_KUBE_SERVICEACCOUNT_DIR moves it, for
  tests). The token file is read again every minute: bound tokens rotate.
- --kubeconfig-file: its current-context's cluster (server, certificate-authority[-data],
  insecure-skip-tls-verify) and user (token, tokenFile, client-certificate[-data] +
  client-key[-data]); relative paths are relative to the file. --kube-api-url, if also given,
  replaces the server.
- --kube-api-url alone: that server, no credentials, also in a pod (client-go's
  BuildConfigFromFlags with a master URL and no kubeconfig does not fall back to in-cluster
  credentials); a cluster that needs them takes --kubeconfig-file too.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_ACCOUNT_ENV = "DATAPLANE_KUBE_SERVICEACCOUNT_DIR"
TOKEN_REREAD = 60.0
REQUEST_TIMEOUT = 10.0
USER_AGENT = "dataplane-kube-subnet-mgr"


class KubeError(Exception):
    """Base of this client's errors."""


class KubeConfigError(KubeError):
    """No usable configuration: a missing or unreadable kubeconfig, not in a cluster, ..."""


class KubeUnavailable(KubeError):
    """The API server cannot be reached or answered "not now" (5xx, 429); retry later."""


class KubeIdle(KubeUnavailable):
    """A watch stream said nothing, not even a bookmark, for its idle timeout."""


class KubeRequestError(KubeError):
    """The API server refused the request (4xx other than 410 and 429)."""

    def __init__(self, code: int, reason: str, message: str, what: str) -> None:
        self.code, self.reason, self.message = code, reason, message
        super().__init__(f"{what}: {code} {reason}: {message}")


class KubeGone(KubeRequestError):
    """410 Gone: the resourceVersion is older than the API server's history."""


@dataclass
class KubeConfig:
    server: str
    source: str                        # for messages: where this configuration came from
    token: str | None = None
    token_file: str | None = None
    ca_file: str | None = None
    ca_data: bytes | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None
    insecure: bool = False
    _token_read: float = field(default=0.0, repr=False)

    def bearer(self) -> str | None:
        if self.token_file and time.monotonic() - self._token_read > TOKEN_REREAD:
            try:
                self.token = Path(self.token_file).read_text().strip()
                self._token_read = time.monotonic()
            except OSError as exc:
                if self.token is None:
                    raise KubeConfigError(f"cannot read the token {self.token_file}: "
                                          f"{exc.strerror}") from None
        return self.token

    def ssl_context(self) -> ssl.SSLContext | None:
        if urlsplit(self.server).scheme != "https":
            return None
        ctx = ssl.create_default_context()
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_file or self.ca_data:
            try:
                ctx = ssl.create_default_context(
                    cafile=self.ca_file,
                    cadata=self.ca_data.decode("ascii") if self.ca_data else None)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise KubeConfigError(f"{self.source}: cannot load the cluster's CA "
                                      f"{self.ca_file or '(certificate-authority-data)'}: "
                                      f"{exc}") from None
        if self.cert_file or self.cert_data:
            _load_client_cert(ctx, self)
        return ctx


def _load_client_cert(ctx: ssl.SSLContext, cfg: KubeConfig) -> None:
    """ssl loads a certificate chain only from files: in-memory data goes through private
    temporary files, removed at once."""
    made: list[str] = []
    try:
        paths: list[str | None] = []
        for path, data in ((cfg.cert_file, cfg.cert_data), (cfg.key_file, cfg.key_data)):
            if data is not None:
                fd, path = tempfile.mkstemp(prefix="dataplane-kube-")
                made.append(path)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            paths.append(path)
        certfile, keyfile = paths
        assert certfile is not None       # the caller comes here only with a certificate
        ctx.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise KubeConfigError(f"{cfg.source}: cannot load the client certificate and key: "
                              f"{exc}") from None
    finally:
        for path in made:
            os.unlink(path)


def load_config(api_url: str | None = None, kubeconfig: str | None = None,
                env: Mapping[str, str] | None = None) -> KubeConfig:
    """The configuration flanneld would use with these flags (module docstring)."""
    env = os.environ if env is None else env
    if kubeconfig:
        cfg = _from_kubeconfig(kubeconfig)
        if api_url:
            cfg.server = _check_url(api_url, "--kube-api-url")
        return cfg
    if api_url:
        return KubeConfig(server=_check_url(api_url, "--kube-api-url"), source="--kube-api-url")
    return _in_cluster(env)


def _check_url(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KubeConfigError(f"{what} {url!r}: expected an http:// or https:// URL such as "
                              "https://10.0.0.1:6443")
    return url.rstrip("/")


def _in_cluster(env: Mapping[str, str]) -> KubeConfig:
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    sa = Path(env.get(SERVICE_ACCOUNT_ENV) or SERVICE_ACCOUNT_DIR)
    if not host or not port:
        raise KubeConfigError(
            "no Kubernetes API to talk to: not running in a pod (KUBERNETES_SERVICE_HOST and "
            "KUBERNETES_SERVICE_PORT are unset); give --kubeconfig-file or --kube-api-url")
    token = sa / "token"
    if not token.is_file():
        raise KubeConfigError(f"in-cluster config: no service account token at {token} "
                              "(is automountServiceAccountToken off?)")
    host = f"[{host}]" if ":" in host else host
    ca = sa / "ca.crt"
    cfg = KubeConfig(server=f"https://{host}:{port}", source=f"in-cluster config ({sa})",
                     token_file=str(token), ca_file=str(ca) if ca.is_file() else None)
    cfg.bearer()
    return cfg


def _from_kubeconfig(path: str) -> KubeConfig:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise KubeConfigError(f"--kubeconfig-file {path}: {exc.strerror}") from None
    doc = _parse_yaml(text, path)
    base = Path(path).resolve().parent
    name = doc.get("current-context")
    if not name:
        raise KubeConfigError(f"{path}: no current-context")
    context = _named(doc, "contexts", name, path).get("context") or {}
    cluster = _named(doc, "clusters", context.get("cluster"), path).get("cluster") or {}
    user = (_named(doc, "users", context.get("user"), path).get("user") or {}
            if context.get("user") else {})
    if not cluster.get("server"):
        raise KubeConfigError(f"{path}: cluster {context.get('cluster')!r} has no server")
    src = f"kubeconfig {path} (context {name})"

    def rel(key: str, section: dict[str, Any]) -> str | None:
        value = section.get(key)
        return str(base / value) if value else None

    def data(key: str, section: dict[str, Any]) -> bytes | None:
        value = section.get(key)
        if not value:
            return None
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise KubeConfigError(f"{path}: {key} is not base64") from None

    unsupported = [k for k in ("exec", "auth-provider", "username") if user.get(k)]
    if unsupported:
        raise KubeConfigError(f"{path}: user {context.get('user')!r} authenticates with "
                              f"{unsupported[0]!r}, which is not supported: use a token or a "
                              "client certificate")
    return KubeConfig(
        server=_check_url(cluster["server"], f"{path}: server"), source=src,
        token=user.get("token"), token_file=rel("tokenFile", user),
        ca_file=rel("certificate-authority", cluster),
        ca_data=data("certificate-authority-data", cluster),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        cert_file=rel("client-certificate", user), key_file=rel("client-key", user),
        cert_data=data("client-certificate-data", user), key_data=data("client-key-data", user))


def _parse_yaml(text: str, path: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)                 # JSON is YAML, and needs no parser
    except ValueError:
        import yaml                            # only for a kubeconfig file written in YAML
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise KubeConfigError(f"{path}: not a kubeconfig: {exc}".splitlines()[0]) from None
    if not isinstance(doc, dict):
        raise KubeConfigError(f"{path}: not a kubeconfig (expected a mapping)")
    return doc


def _named(doc: dict[str, Any], section: str, name: str | None, path: str) -> dict[str, Any]:
    for entry in doc.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    raise KubeConfigError(f"{path}: no {section[:-1]} named {name!r}")


class KubeClient:
    """GET, PATCH and watch on one API server. Opening touches nothing."""

    def __init__(self, config: KubeConfig, timeout: float = REQUEST_TIMEOUT) -> None:
        import httpx                   # here, so that a daemon on another store never loads it

        # httpx logs every request at INFO: a watch reconnecting is logged by the store instead
        logging.getLogger("httpx").setLevel(max(logging.WARNING,
                                                logging.getLogger("httpx").level))
        self.config = config
        self._httpx = httpx
        # plain http: no TLS context at all (httpx would load every system CA for nothing)
        verify: Any = config.ssl_context() or False
        self._http = httpx.AsyncClient(
            base_url=config.server, verify=verify, trust_env=False,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"})

    @property
    def server(self) -> str:
        return self.config.server

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        token = self.config.bearer()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return await self._request("GET", path, params=params)

    async def patch(self, path: str, body: bytes, content_type: str) -> Any:
        return await self._request("PATCH", path, content=body,
                                   headers={"Content-Type": content_type})

    async def _request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                       content: bytes | None = None,
                       headers: Mapping[str, str] | None = None) -> Any:
        what = f"{method} {self.server}{path}"
        try:
            resp = await self._http.request(method, path, params=params, content=content,
                                            headers=self._headers(headers))
        except self._httpx.HTTPError as exc:
            raise KubeUnavailable(f"{what}: {_describe(exc)}") from None
        if resp.status_code >= 300:
            raise _status_error(resp.status_code, resp.content, what)
        try:
            return resp.json()
        except ValueError:
            raise KubeUnavailable(f"{what}: the answer is not JSON") from None

    async def watch(self, path: str, params: Mapping[str, str],
                    idle_timeout: float) -> AsyncIterator[dict[str, Any]]:
        """The watch events of one long GET, as dicts ({"type", "object"}), until the server
        ends the stream. A stream silent for `idle_timeout` seconds counts as broken (the
        subnet manager asks for bookmarks, so a live one is never that quiet)."""
        what = f"watch {self.server}{path}"
        httpx = self._httpx
        timeout = httpx.Timeout(self._http.timeout.connect, read=idle_timeout)
        try:
            async with self._http.stream("GET", path, params=params, headers=self._headers(),
                                         timeout=timeout) as resp:
                if resp.status_code >= 300:
                    raise _status_error(resp.status_code, await resp.aread(), what)
                async for line in resp.aiter_lines():
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line)
                    except ValueError:
                        raise KubeUnavailable(f"{what}: a watch event is not JSON") from None
                    if isinstance(event, dict):
                        yield event
        except httpx.ReadTimeout:
            raise KubeIdle(f"{what}: silent for {idle_timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise KubeUnavailable(f"{what}: {_describe(exc)}") from None

    async def close(self) -> None:
        await self._http.aclose()


def _describe(exc: Exception) -> str:
    """httpx errors often carry the interesting part one level down."""
    text = str(exc) or type(exc).__name__
    cause = exc.__context__ or exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" ({cause})"
    return text


def _status_error(code: int, body: bytes, what: str) -> KubeError:
    reason, message = "", body.decode("utf-8", "replace")[:200]
    try:
        doc = json.loads(body)
        if isinstance(doc, dict):
            reason, message = doc.get("reason") or "", doc.get("message") or message
    except ValueError:
        pass
    if code == 410:
        return KubeGone(code, reason or "Gone", message, what)
    if code == 429 or code >= 500:
        return KubeUnavailable(f"{what}: {code} {reason}: {message}".replace(":  ", ": "))
    return KubeRequestError(code, reason or "Error", message, what)
