"""A small asyncio client for etcd v3, through its JSON gateway over HTTP/1.1.

Why not a gRPC client: aetcd (on grpcio) adds about 23 MB of RSS to a daemon whose whole budget
is 64 MB. Every etcd v3 member also serves its API as JSON over plain HTTP (the gRPC gateway:
POST /v3/kv/range, /v3/kv/txn, /v3/watch, ...): h11 frames the HTTP/1.1 (sans-I/O, pure
Python, +0.4 MiB of RSS), asyncio streams carry it. The subnet store needs only a handful
of calls.

The gateway's JSON: keys and values are base64, int64 fields are JSON strings, fields at their
zero value are left out, enums are names ("DELETE"). Errors come back as a non-200 status and
{"error", "code" (a gRPC status code), "message"}.

Unary calls: one POST with a Content-Length body on a kept-alive connection, taken from a small
per-endpoint pool (at most `max_connections` in use at once). A pooled connection the server
has closed meanwhile is replaced once, transparently.

Failover: calls go to the endpoint that last answered; on a connection error, a timeout, or an
answer meaning "not now" (gRPC Unavailable, DeadlineExceeded or ResourceExhausted: no leader,
leader changed, request timed out...) the next endpoint is tried. When every endpoint merely
refused the connection the call fails at once (nothing is listening); otherwise it goes round
again with a short backoff until its deadline. EtcdUnavailable then names every endpoint with
what went wrong there. A retried write may have been applied once already: callers make their
writes conditional (transactions) or idempotent.

Timeouts: every call has a deadline (`timeout`, 5 s by default); each try on one endpoint gets
at most `attempt_timeout` of it, and connecting at most `connect_timeout`, so that a member that
hangs cannot use up the whole deadline.

Watch: a long-lived POST to /v3/watch. The gateway answers 200 with a chunked body in which
each WatchResponse is one JSON object ({"result": {...}}) followed by a newline; the reader
buffers the de-chunked body as it arrives and splits it at newlines, so messages and chunks need
not line up. The request carries gRPC metadata `hasleader: true` (header Grpc-Metadata-Hasleader),
as flannel's WithRequireLeader, so a member that loses its leader cancels the watch instead of
going quiet. A watch with nothing to say sends nothing: after `idle_check` seconds of silence
the reader asks the same member for its status, and a member that does not answer, or has no
leader, ends the watch with EtcdUnavailable, as does the stream closing.

TLS: https:// endpoints are dialled with the SSLContext of a TLSFiles (etcd_tls.py: flanneld's
--etcd-cafile, --etcd-certfile, --etcd-keyfile, reloaded when they change); the same HTTP/1.1
runs inside. A handshake that fails (the server's certificate does not verify, or the server
refuses ours) is a definitive failure, like a refused connection: the call fails at once, with
the cause in words (etcd_tls.describe_tls_error).

Authentication (etcd's `auth enable` users): with a username the client first POSTs
/v3/auth/authenticate and sends the token it gets in the Authorization header of every call,
the watch stream included. A token etcd no longer takes (simple tokens expire after
--auth-token-ttl of disuse; any auth change makes old ones stale) is replaced once, and the call
repeated. A bad password, a missing user name and a permission etcd denies raise EtcdAuthError:
an EtcdUnavailable, so that callers retry it like an outage while the operator fixes it.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import os
import socket
import ssl
from dataclasses import dataclass
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import h11

from dataplane.store.etcd_tls import HandshakeCutShort, TLSFiles, describe_tls_error

__all__ = ["Endpoint", "EtcdClient", "EtcdError", "EtcdUnavailable", "EtcdRequestError",
           "EtcdAuthError", "TLSFiles", "Watch", "parse_endpoints", "b64", "unb64",
           "prefix_end", "compare_create", "compare_mod", "op_put", "op_delete", "op_range"]

DEFAULT_TIMEOUT = 5.0
DEFAULT_ATTEMPT_TIMEOUT = 3.0
DEFAULT_CONNECT_TIMEOUT = 1.0
DEFAULT_IDLE_CHECK = 15.0
MAX_BODY = 64 << 20               # a sanity bound: the subnet store's data is kilobytes
# gRPC Canceled (a member shutting down: its JSON gateway answers "grpc: the client connection
# is closing"), DeadlineExceeded, ResourceExhausted, Unavailable: another member, or this one
# later, may answer.
RETRYABLE_CODES = {1, 4, 8, 14}
GRPC_NOT_FOUND = 5
GRPC_PERMISSION_DENIED, GRPC_FAILED_PRECONDITION, GRPC_UNAUTHENTICATED = 7, 9, 16
# etcd's answers about tokens (etcdserver/api/v3rpc/rpctypes): the token is to be replaced.
STALE_TOKEN = ("invalid auth token", "revision of auth store is old", "auth token")


class EtcdError(Exception):
    """Base of this client's errors."""


class EtcdUnavailable(EtcdError):
    """No endpoint could serve the call (down, unreachable, no leader, too slow)."""


class EtcdRequestError(EtcdError):
    """etcd answered with an error that retrying elsewhere would not cure."""

    def __init__(self, endpoint: str, path: str, code: int, message: str) -> None:
        self.endpoint = endpoint
        self.path = path
        self.code = code
        self.message = message
        super().__init__(f"{endpoint}{path}: {message} (gRPC code {code})")


class EtcdAuthError(EtcdUnavailable):
    """etcd refused who we are (bad password, no user name, permission denied): retryable,
    since an operator can fix it while we wait."""


class _ProtocolError(Exception):
    """The peer does not speak the HTTP we expect."""


# -- endpoints ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    url: str          # as given, without a trailing slash: what messages name
    host: str
    port: int
    tls: bool = False  # https://


    def __str__(self) -> str:
        return self.url


def parse_endpoints(urls: str | Iterable[str | Endpoint]) -> list[Endpoint]:
    """Endpoints from "http://a:2379,https://b:2379" or a list; ValueError names a bad one."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    endpoints = []
    for item in items:
        if isinstance(item, Endpoint):
            endpoints.append(item)
            continue
        item = item.strip()
        if not item:
            continue
        try:
            parts = urlsplit(item)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"etcd endpoint {item!r}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"etcd endpoint {item!r}: expected a URL such as "
                             "http://127.0.0.1:2379 or https://127.0.0.1:2379")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"etcd endpoint {item!r}: a client URL has no path")
        endpoints.append(Endpoint(item.rstrip("/"), parts.hostname, port or 2379,
                                  parts.scheme == "https"))
    if not endpoints:
        raise ValueError("no etcd endpoint given")
    if len(set(endpoints)) != len(endpoints):
        raise ValueError(f"etcd endpoints repeat: {','.join(e.url for e in endpoints)}")
    return endpoints


# -- the gateway's JSON ------------------------------------------------------------------------

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that makes a range or watch cover every key starting with prefix."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"                 # every key


def compare_create(key: bytes, revision: int) -> dict[str, Any]:
    """Compare: the key's create_revision equals revision (0: the key does not exist)."""
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL",
            "create_revision": str(revision)}


def compare_mod(key: bytes, revision: int) -> dict[str, Any]:
    """Compare: the key was last modified at revision (it is unchanged since we read it)."""
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def op_put(key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
    put: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        put["lease"] = str(lease)
    return {"request_put": put}


def op_delete(key: bytes, prev_kv: bool = False) -> dict[str, Any]:
    return {"request_delete_range": {"key": b64(key), "prev_kv": prev_kv}}


def op_range(key: bytes) -> dict[str, Any]:
    return {"request_range": {"key": b64(key)}}


def _int(doc: dict[str, Any], name: str) -> int:
    return int(doc.get(name) or 0)


# -- HTTP/1.1 ----------------------------------------------------------------------------------
# h11 frames the messages (request line, headers, Content-Length or chunked bodies, keep-alive);
# the bytes move over our asyncio streams, so TLS, timeouts and cancellation stay ours.

MAX_HEAD = 65536                  # as asyncio's readuntil limit was: a response's headers


@dataclass
class _Head:
    status: int
    headers: dict[str, str]       # lower-case names


class _Connection:
    def __init__(self, endpoint: Endpoint, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter | None) -> None:
        self.endpoint = endpoint
        self.reader = reader
        self.writer = writer
        self.http = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self._received = bytearray()      # the start of this response, for error messages
        self.eof = False
        self._reading_head = False

    @classmethod
    async def open(cls, endpoint: Endpoint, tls: TLSFiles | None = None) -> _Connection:
        if endpoint.tls:
            try:
                reader, writer = await asyncio.open_connection(
                    endpoint.host, endpoint.port, ssl=(tls or _default_tls()).context(),
                    server_hostname=endpoint.host)
            except (ConnectionResetError, ConnectionAbortedError,
                    asyncio.IncompleteReadError) as exc:
                raise HandshakeCutShort(exc) from None
        else:
            reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(endpoint, reader, writer)

    async def send(self, path: str, body: bytes, headers: Sequence[tuple[str, str]] = ()) -> None:
        assert self.writer is not None
        request = h11.Request(method="POST", target=path, headers=[
            ("Host", f"{self.endpoint.host}:{self.endpoint.port}"),
            ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
            *headers])
        self._received.clear()
        self.writer.write(b"".join(self.http.send(event) or b"" for event in
                                   (request, h11.Data(data=body), h11.EndOfMessage())))
        await self.writer.drain()

    async def _next_event(self) -> h11.Event:
        """The next event of the response; asyncio.IncompleteReadError when the server closes
        the connection before the response is complete (partial: what it sent of it)."""
        while True:
            try:
                event = self.http.next_event()
            except h11.RemoteProtocolError as exc:
                if self.eof:
                    raise asyncio.IncompleteReadError(bytes(self._received), None) from None
                raise self._protocol_error(exc) from None
            if event is h11.PAUSED:
                raise _ProtocolError("unexpected data after the response")
            if event is not h11.NEED_DATA:
                assert isinstance(event, h11.Event)
                return event
            data = await self.reader.read(65536)
            if not data:
                self.eof = True
                if self.http.their_state is h11.SEND_RESPONSE:
                    raise asyncio.IncompleteReadError(bytes(self._received), None)
            elif len(self._received) < 200:
                self._received += data[:200]
            self.http.receive_data(data)

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> _ProtocolError:
        if self._reading_head:
            if not self._received.startswith(b"HTTP/1."[:len(self._received)]):
                line = bytes(self._received).split(b"\r\n")[0].decode("latin-1")
                return _ProtocolError(f"not an HTTP response: {line[:60]!r}")
            if exc.error_status_hint == 431:
                return _ProtocolError("response headers too long")
        return _ProtocolError(f"bad HTTP from the server: {exc}")

    async def read_head(self) -> _Head:
        while True:
            self._reading_head = True
            try:
                event = await self._next_event()
            finally:
                self._reading_head = False
            if isinstance(event, h11.Response):
                return _Head(event.status_code,
                             {name.decode("latin-1"): value.decode("latin-1")
                              for name, value in event.headers})
            if not isinstance(event, h11.InformationalResponse):
                raise _ProtocolError(f"unexpected {type(event).__name__} before the response")

    async def read_data(self) -> bytes | None:
        """The next piece of the body (any size, as it arrives); None at its end."""
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                if event.data:
                    return bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return None
            else:
                raise _ProtocolError(f"unexpected {type(event).__name__} in the body")

    async def read_body(self, head: _Head) -> bytes:
        if int(head.headers.get("content-length") or 0) > MAX_BODY:
            raise _ProtocolError("response body too large")
        body = bytearray()
        while (data := await self.read_data()) is not None:
            body += data
            if len(body) > MAX_BODY:
                raise _ProtocolError("response body too large")
        return bytes(body)

    def reusable(self) -> bool:
        """After a complete exchange: ready for the next request (keep-alive, framed body)."""
        if self.http.our_state is h11.DONE and self.http.their_state is h11.DONE:
            self.http.start_next_cycle()
            return True
        return False

    def tls_failure(self) -> ssl.SSLError | None:
        """The TLS alert behind a connection that broke: the server's "bad certificate" can
        reach the reader while the writer only sees the connection go."""
        exc = self.reader.exception()
        return exc if isinstance(exc, ssl.SSLError) else None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()


_DEFAULT_TLS: list[TLSFiles] = []


def _default_tls() -> TLSFiles:
    """https:// without our TLS flags: the system's CAs, no client certificate."""
    if not _DEFAULT_TLS:
        _DEFAULT_TLS.append(TLSFiles())
    return _DEFAULT_TLS[0]


def _describe(exc: BaseException, timeout: float | None = None,
              tls: TLSFiles | None = None) -> str:
    """A short reason for an endpoint's failure, for EtcdUnavailable's message."""
    if isinstance(exc, ssl.SSLError):
        return describe_tls_error(exc, tls)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"no answer within {timeout:g} s" if timeout else "timed out"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed by the server"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


def _definitive(exc: BaseException) -> bool:
    """Trying again soon would meet the same answer: nothing listens, or TLS says no."""
    return _refused(exc) or isinstance(exc, ssl.SSLError)


def _refused(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionRefusedError) or (
        isinstance(exc, OSError) and exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH,
                                                   errno.ENETUNREACH))


class _ServerSaid(Exception):
    """An error answer from one endpoint; retryable tells whether to try another."""

    def __init__(self, error: EtcdRequestError, retryable: bool) -> None:
        self.error = error
        self.retryable = retryable


def _error_from(endpoint: Endpoint, path: str, status: int, body: bytes) -> _ServerSaid:
    try:
        doc = json.loads(body)
        code = int(doc.get("code", 2))
        message = str(doc.get("message") or doc.get("error") or "")
    except (ValueError, AttributeError, TypeError):
        code, message = 2, body[:200].decode("utf-8", "replace").strip()
    message = message or f"HTTP status {status}"
    retryable = code in RETRYABLE_CODES or status in (502, 503, 504)
    return _ServerSaid(EtcdRequestError(endpoint.url, path, code, message), retryable)


_T = TypeVar("_T")
# One try on one endpoint, given how long it may take and the headers to send.
_Attempt = Callable[[Endpoint, float, Sequence[tuple[str, str]]], Awaitable[_T]]


# -- the client --------------------------------------------------------------------------------

class EtcdClient:
    """etcd v3 over its JSON gateway. Create it anywhere; it connects on first use, on the
    running loop, and belongs to that loop from then on."""

    def __init__(self, endpoints: str | Iterable[str | Endpoint], *,
                 timeout: float = DEFAULT_TIMEOUT, attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 idle_check: float = DEFAULT_IDLE_CHECK, max_connections: int = 8,
                 tls: TLSFiles | None = None, username: str | None = None,
                 password: str | None = None) -> None:
        """tls: the certificates for https:// endpoints (default: the system's CAs, no client
        certificate). username/password: etcd's authentication, if it is on."""
        self.endpoints = parse_endpoints(endpoints)
        self.tls = tls
        self.username = username or None
        self.password = password or ""
        self._token: str | None = None            # None: not authenticated yet; "": auth off
        self._auth_lock = asyncio.Lock()
        self.timeout = timeout
        self.attempt_timeout = min(attempt_timeout, timeout)
        self.connect_timeout = connect_timeout
        self.idle_check = idle_check
        self._current = 0                         # the endpoint that last answered
        self._idle: dict[Endpoint, list[_Connection]] = {e: [] for e in self.endpoints}
        self._slots = asyncio.Semaphore(max_connections)
        self._watches: set[Watch] = set()
        self._closed = False

    @property
    def urls(self) -> str:
        return ",".join(e.url for e in self.endpoints)

    # -- the calls the subnet store uses ------------------------------------------------------

    async def range(self, key: bytes, range_end: bytes | None = None, *, revision: int = 0,
                    limit: int = 0, keys_only: bool = False) -> dict[str, Any]:
        """RangeResponse: header.revision, kvs[] (key, value base64; *_revision, lease)."""
        body: dict[str, Any] = {"key": b64(key)}
        if range_end is not None:
            body["range_end"] = b64(range_end)
        if revision:
            body["revision"] = str(revision)
        if limit:
            body["limit"] = str(limit)
        if keys_only:
            body["keys_only"] = True
        return await self.call("/v3/kv/range", body)

    async def put(self, key: bytes, value: bytes, *, lease: int = 0,
                  prev_kv: bool = False) -> dict[str, Any]:
        body = op_put(key, value, lease)["request_put"]
        if prev_kv:
            body["prev_kv"] = True
        return await self.call("/v3/kv/put", body)

    async def delete_range(self, key: bytes, range_end: bytes | None = None, *,
                           prev_kv: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"key": b64(key), "prev_kv": prev_kv}
        if range_end is not None:
            body["range_end"] = b64(range_end)
        return await self.call("/v3/kv/deleterange", body)

    async def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
                  failure: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """TxnResponse: succeeded (absent when false), responses[]."""
        return await self.call("/v3/kv/txn", {"compare": compare, "success": success,
                                              "failure": failure or []})

    async def compact(self, revision: int, physical: bool = True) -> None:
        await self.call("/v3/kv/compaction", {"revision": str(revision), "physical": physical})

    async def lease_grant(self, ttl: int) -> tuple[int, int]:
        """A new etcd lease: (ID, granted TTL in seconds; etcd may raise a short TTL)."""
        doc = await self.call("/v3/lease/grant", {"TTL": str(ttl)})
        return _int(doc, "ID"), _int(doc, "TTL")

    async def lease_revoke(self, lease_id: int) -> bool:
        """Revoke a lease, deleting its keys; False if there was no such lease."""
        try:
            await self.call("/v3/lease/revoke", {"ID": str(lease_id)})
        except EtcdRequestError as exc:
            if exc.code == GRPC_NOT_FOUND:
                return False
            raise
        return True

    async def lease_keepalive(self, lease_id: int) -> int:
        """Renew a lease once; its new TTL, 0 if it no longer exists.

        /v3/lease/keepalive is a stream: we send one request, the body ends, the server
        answers once and closes its side."""
        doc = await self.call("/v3/lease/keepalive", {"ID": str(lease_id)})
        return max(0, _int(doc.get("result") or {}, "TTL"))

    async def lease_time_to_live(self, lease_id: int) -> int:
        """Seconds the lease has left; -1 if it has expired or never existed."""
        doc = await self.call("/v3/lease/timetolive", {"ID": str(lease_id)})
        return _int(doc, "TTL")

    async def lease_keys(self, lease_id: int) -> list[bytes] | None:
        """The keys bound to a lease; None if it has expired or never existed."""
        doc = await self.call("/v3/lease/timetolive", {"ID": str(lease_id), "keys": True})
        if _int(doc, "TTL") < 0:
            return None
        return [unb64(k) for k in doc.get("keys") or []]

    async def status(self, endpoint: Endpoint | None = None) -> dict[str, Any]:
        """One member's status (version, leader, raft term); that member only if given."""
        if endpoint is None:
            return await self.call("/v3/maintenance/status", {})
        timeout = self.attempt_timeout
        try:
            token = await self._ensure_token()
            return await self._attempt(endpoint, "/v3/maintenance/status", b"{}", timeout,
                                       [("Authorization", token)] if token else [])
        except _ServerSaid as said:
            raise EtcdUnavailable(f"{endpoint}: {said.error.message}") from None
        except (TimeoutError, OSError, asyncio.IncompleteReadError, _ProtocolError) as exc:
            raise EtcdUnavailable(f"{endpoint}: {_describe(exc, timeout, self.tls)}") from None

    async def watch(self, key: bytes, range_end: bytes | None = None, *, start_revision: int = 0,
                    prev_kv: bool = False) -> Watch:
        """Open a watch (failing over like a call); iterate it for WatchResponse objects."""
        request: dict[str, Any] = {"key": b64(key), "prev_kv": prev_kv}
        if range_end is not None:
            request["range_end"] = b64(range_end)
        if start_revision:
            request["start_revision"] = str(start_revision)
        payload = json.dumps({"create_request": request}).encode()
        conn, head = await self._authed(
            lambda endpoint, timeout, headers: self._open_stream(endpoint, "/v3/watch", payload,
                                                                 timeout, headers))
        watch = Watch(self, conn, head)
        self._watches.add(watch)
        return watch

    async def close(self) -> None:
        self._closed = True
        for watch in list(self._watches):
            watch.close()
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
            conns.clear()

    # -- machinery ----------------------------------------------------------------------------

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST body to path on the first endpoint that serves it; the decoded answer."""
        payload = json.dumps(body).encode()
        return await self._authed(
            lambda endpoint, timeout, headers: self._attempt(endpoint, path, payload, timeout,
                                                             headers))

    # -- authentication -----------------------------------------------------------------------

    async def _authed(self, attempt: _Attempt[_T]) -> _T:
        """_failover with our token; a token etcd no longer takes is replaced once."""
        for again in (True, False):
            token = await self._ensure_token()
            headers = [("Authorization", token)] if token else []
            try:
                return await self._failover(attempt, headers)
            except EtcdRequestError as exc:
                if again and token and _stale_token(exc):
                    self._forget_token(token)
                    continue
                raise self._auth_error(exc) or exc from None
        raise AssertionError("unreachable")

    async def _ensure_token(self) -> str:
        if self.username is None:
            return ""
        async with self._auth_lock:
            if self._token is None:
                self._token = await self._authenticate()
            return self._token

    def _forget_token(self, token: str) -> None:
        if self._token == token:          # not one another call has just replaced
            self._token = None

    async def _authenticate(self) -> str:
        body = json.dumps({"name": self.username, "password": self.password}).encode()
        try:
            doc = await self._failover(
                lambda endpoint, timeout, headers: self._attempt(
                    endpoint, "/v3/auth/authenticate", body, timeout, headers))
        except EtcdRequestError as exc:
            if exc.code == GRPC_FAILED_PRECONDITION and "not enabled" in exc.message:
                return ""                 # auth is off: etcd takes every call as it is
            raise EtcdAuthError(f"etcd {exc.endpoint}: authentication as {self.username!r} "
                                f"failed ({exc.message}): check --etcd-username and "
                                "--etcd-password") from None
        token = doc.get("token")
        if not isinstance(token, str) or not token:
            raise EtcdAuthError(f"etcd {self.urls}: authentication as {self.username!r} "
                                "returned no token")
        return token

    def _auth_error(self, exc: EtcdRequestError) -> EtcdAuthError | None:
        """etcd's no to who we are, as EtcdAuthError; None for other errors."""
        message = exc.message.lower()
        who = f"user {self.username!r}" if self.username else "no user"
        if exc.code == GRPC_PERMISSION_DENIED or "permission denied" in message:
            return EtcdAuthError(f"etcd {exc.endpoint}: permission denied to {who} for "
                                 f"{exc.path} (grant the user a role with readwrite on the "
                                 "prefix)")
        if "user name is empty" in message or (exc.code == GRPC_UNAUTHENTICATED
                                               and not self.username):
            return EtcdAuthError(f"etcd {exc.endpoint}: authentication is enabled: give "
                                 "--etcd-username and --etcd-password")
        if exc.code == GRPC_UNAUTHENTICATED or _stale_token(exc):
            return EtcdAuthError(f"etcd {exc.endpoint}: {exc.message} (as {who})")
        return None

    # -- machinery, continued -------------------------------------------------------------------

    async def _failover(self, attempt: _Attempt[_T],
                        headers: Sequence[tuple[str, str]] = ()) -> _T:
        """attempt() on each endpoint in turn until one answers, within the call's deadline."""
        if self._closed:
            raise EtcdError("etcd client is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        failures: dict[str, str] = {}
        backoff = 0.05
        n = len(self.endpoints)
        while True:
            refused = 0
            for i in range(n):
                if self._closed:
                    raise EtcdError("etcd client is closed")
                index = (self._current + i) % n
                endpoint = self.endpoints[index]
                left = deadline - loop.time()
                if left <= 0:
                    break
                timeout = min(left, self.attempt_timeout)
                try:
                    result = await attempt(endpoint, timeout, headers)
                except _ServerSaid as said:
                    if not said.retryable:
                        raise said.error from None
                    failures[endpoint.url] = said.error.message
                    continue
                except (TimeoutError, OSError, asyncio.IncompleteReadError, _ProtocolError) as exc:
                    failures[endpoint.url] = _describe(exc, timeout, self.tls)
                    if (not endpoint.tls and isinstance(exc, asyncio.IncompleteReadError)
                            and not exc.partial):
                        failures[endpoint.url] += " before answering (does it serve https://?)"
                    refused += _definitive(exc)
                    continue
                self._current = index
                return result
            left = deadline - loop.time()
            if refused == n or left <= 0:
                where = "; ".join(f"{url}: {why}" for url, why in failures.items())
                raise EtcdUnavailable(f"etcd unavailable ({where or 'no time left'})")
            await asyncio.sleep(min(backoff, left))
            backoff = min(backoff * 2, 1.0)

    async def _attempt(self, endpoint: Endpoint, path: str, payload: bytes, timeout: float,
                       headers: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
        """One try on one endpoint: the decoded 200 answer, or an exception."""
        async with asyncio.timeout(timeout), self._slots:
            idle = self._idle[endpoint]
            while True:
                reused = bool(idle)
                conn = idle.pop() if reused else await self._connect(endpoint)
                try:
                    await conn.send(path, payload, headers)
                    head = await conn.read_head()
                    body = await conn.read_body(head)
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    conn.close()
                    if reused:
                        continue          # the server closed it while it sat in the pool
                    raise conn.tls_failure() or exc from None
                except BaseException:
                    conn.close()
                    raise
                if conn.reusable() and not self._closed:
                    idle.append(conn)
                else:
                    conn.close()
                break
        if head.status != 200:
            raise _error_from(endpoint, path, head.status, body)
        try:
            return _first_json(body)
        except ValueError:
            raise _ProtocolError(f"{path}: not a JSON answer: {body[:80]!r}") from None

    async def _connect(self, endpoint: Endpoint) -> _Connection:
        # asyncio.timeout, not wait_for: before 3.12, wait_for loses a cancellation that
        # arrives as the connection completes (a stop right after start never ended)
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await _Connection.open(endpoint, self.tls)
        except TimeoutError:
            raise OSError(errno.ETIMEDOUT, f"connect timed out after "
                                           f"{self.connect_timeout:g} s") from None

    async def _open_stream(self, endpoint: Endpoint, path: str, payload: bytes,
                           timeout: float, headers: Sequence[tuple[str, str]] = ()
                           ) -> tuple[_Connection, _Head]:
        conn = await self._connect(endpoint)        # a connection of its own, never pooled
        try:
            async with asyncio.timeout(timeout):
                await conn.send(path, payload, [("Grpc-Metadata-Hasleader", "true"),
                                                *headers])
                head = await conn.read_head()
                if head.status != 200:
                    raise _error_from(endpoint, path, head.status, await conn.read_body(head))
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            conn.close()
            raise conn.tls_failure() or exc from None
        except BaseException:
            conn.close()
            raise
        return conn, head


def _stale_token(exc: EtcdRequestError) -> bool:
    message = exc.message.lower()
    return any(words in message for words in STALE_TOKEN)


def _first_json(body: bytes) -> dict[str, Any]:
    """The JSON object in a unary answer (a stream's answer may hold several lines)."""
    text = body.decode("utf-8").strip()
    doc, _ = json.JSONDecoder().raw_decode(text)
    if not isinstance(doc, dict):
        raise ValueError("not an object")
    return doc


class Watch:
    """An open watch stream. `async for response in watch` yields WatchResponse objects
    (header, created, canceled, compact_revision, cancel_reason, events[]); it raises
    EtcdUnavailable when the stream breaks and ends after close()."""

    def __init__(self, client: EtcdClient, conn: _Connection, head: _Head) -> None:
        self.client = client
        self.endpoint = conn.endpoint
        self._conn = conn
        self._buffer = bytearray()
        self._ended = False                   # the body is complete: what is buffered is all
        self._closed = False

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while True:
            if self._closed:
                raise StopAsyncIteration
            line_end = self._buffer.find(b"\n")
            if line_end >= 0:
                line = bytes(self._buffer[:line_end]).strip()
                del self._buffer[:line_end + 1]
                if line:
                    return self._message(line)
                continue
            if self._ended:
                raise self._broken("watch stream ended")
            if len(self._buffer) > MAX_BODY:
                raise self._broken("watch message too large")
            try:
                async with asyncio.timeout(self.client.idle_check):     # see _connect
                    data = await self._conn.read_data()
            except TimeoutError:
                await self._check_member()
                continue
            except asyncio.IncompleteReadError:
                if self._closed:
                    raise StopAsyncIteration from None
                raise self._broken("watch stream closed by the server") from None
            except OSError as exc:
                if self._closed:
                    raise StopAsyncIteration from None
                raise self._broken(_describe(exc, tls=self.client.tls)) from None
            except _ProtocolError as exc:
                raise self._broken(str(exc)) from None
            if data is None:
                if self._conn.eof:            # a body framed by the connection's end
                    raise self._broken("watch stream closed by the server")
                self._ended = True
            else:
                self._buffer += data

    def _message(self, line: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(line)
        except ValueError:
            raise self._broken(f"not a JSON message: {line[:80]!r}") from None
        if isinstance(doc, dict) and isinstance(doc.get("result"), dict):
            result: dict[str, Any] = doc["result"]
            return result
        error = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or error.get("error") or error)
            if any(words in message.lower() for words in STALE_TOKEN):
                self.client._token = None          # the next watch authenticates again
            raise self._broken(message)
        raise self._broken(f"unexpected message: {line[:80]!r}")

    async def _check_member(self) -> None:
        """Silence: make sure the member is alive and still has a leader."""
        try:
            status = await self.client.status(self.endpoint)
        except EtcdUnavailable as exc:
            why = str(exc).removeprefix(f"{self.endpoint}: ")
            raise self._broken(f"watch idle for {self.client.idle_check:g} s and the member "
                               f"does not answer a status request ({why})") from None
        if _int(status, "leader") == 0:
            raise self._broken("member has no leader")

    def _broken(self, why: str) -> EtcdUnavailable:
        self.close()
        return EtcdUnavailable(f"{self.endpoint}: {why}")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()
            self.client._watches.discard(self)

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
