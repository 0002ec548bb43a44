"""TLS for the etcd client: flanneld's --etcd-cafile/--etcd-certfile/--etcd-keyfile as an
ssl.SSLContext, reloaded when the files change, and what went wrong in words.

Certificates are renewed in place (cert-manager, a cron job): the context is rebuilt when one
of its files has changed since it was built, so a daemon that was refused with an expired
certificate connects once a fresh one is on disk, without a restart.

etcd (Go's crypto/tls) answers every client certificate it does not accept (none, expired, from
another CA) with the same "bad certificate" alert; the client can still tell the cases apart on
its own side: no certificate configured, or one whose validity dates exclude now. For that the
certificate's notBefore/notAfter are read from its DER (x509 is a handful of nested SEQUENCEs;
the ssl module offers no public parser and this is not worth a dependency).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import ssl
from datetime import datetime, UTC

log = logging.getLogger(__name__)


class TLSFiles:
    """The client's TLS settings; context() is the current SSLContext. ValueError names the
    file and flag at fault at construction (missing, unreadable, not PEM, key mismatch)."""

    def __init__(self, cafile: str | None = None, certfile: str | None = None,
                 keyfile: str | None = None) -> None:
        if keyfile and not certfile:
            raise ValueError("--etcd-keyfile needs --etcd-certfile (the certificate it "
                             "belongs to)")
        self.cafile, self.certfile, self.keyfile = cafile or None, certfile or None, \
            keyfile or None
        self._stamp = self._files_stamp()
        self._context = self._build()

    def context(self) -> ssl.SSLContext:
        stamp = self._files_stamp()
        if stamp != self._stamp:
            try:
                self._context = self._build()
                self._stamp = stamp
                log.info("etcd TLS files changed: reloaded them")
            except ValueError as exc:       # half-written during a renewal: keep the old one
                log.warning("etcd TLS files changed but cannot be loaded (%s); keeping the "
                            "previous ones", exc)
        return self._context

    def client_cert_problem(self, now: datetime | None = None) -> str | None:
        """Why the server would refuse our certificate, as far as we can see: outside its
        validity dates; None if it looks fine, cannot be read, or there is none."""
        if not self.certfile:
            return None
        try:
            with open(self.certfile, "rb") as f:
                not_before, not_after = certificate_validity(f.read())
        except (OSError, ValueError):
            return None
        now = now or datetime.now(UTC)
        if now > not_after:
            return (f"--etcd-certfile {self.certfile} expired on "
                    f"{not_after:%Y-%m-%d %H:%M} UTC")
        if now < not_before:
            return (f"--etcd-certfile {self.certfile} is not valid before "
                    f"{not_before:%Y-%m-%d %H:%M} UTC")
        return None

    def _files_stamp(self) -> tuple[tuple[int, int, int] | str | None, ...]:
        stamp: list[tuple[int, int, int] | str | None] = []
        for path in (self.cafile, self.certfile, self.keyfile):
            try:
                st = os.stat(path) if path else None
                stamp.append((st.st_mtime_ns, st.st_size, st.st_ino) if st else None)
            except OSError:
                stamp.append("missing")
        return tuple(stamp)

    def _build(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=self.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"--etcd-cafile {self.cafile}: {_file_problem(exc)}") from None
        if self.certfile:
            try:
                context.load_cert_chain(self.certfile, self.keyfile)
            except (OSError, ssl.SSLError) as exc:
                files = self.certfile + (f", --etcd-keyfile {self.keyfile}"
                                         if self.keyfile else "")
                raise ValueError(f"--etcd-certfile {files}: {_file_problem(exc)}") from None
        return context


def _file_problem(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if "KEY_VALUES_MISMATCH" in reason:
            return "the key does not belong to the certificate"
        if reason in ("PEM_LIB", "NO_START_LINE", "NO_CERTIFICATE_OR_CRL_FOUND") or \
                "PEM lib" in str(exc):
            return "not a PEM certificate (and key)"
        return f"cannot load it ({exc.reason or exc})"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc)


# OpenSSL's reason codes for the server's alerts about our certificate, and for talking TLS to
# something that does not.
_REJECTED = {"TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_HANDSHAKE_FAILURE",
             "SSLV3_ALERT_BAD_CERTIFICATE", "SSLV3_ALERT_CERTIFICATE_EXPIRED",
             "SSLV3_ALERT_CERTIFICATE_UNKNOWN", "TLSV1_ALERT_UNKNOWN_CA",
             "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE"}
_NOT_TLS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
            "HTTP_REQUEST", "UNEXPECTED_EOF_WHILE_READING", "HANDSHAKE_CUT_SHORT"}


class HandshakeCutShort(ssl.SSLError):
    """The server hung up during the handshake: a plain HTTP server answering our
    ClientHello with an HTTP error, typically."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"connection closed during the TLS handshake ({cause!r})")
        self.reason = "HANDSHAKE_CUT_SHORT"


def describe_tls_error(exc: ssl.SSLError, files: TLSFiles | None) -> str:
    """One line naming the cause of a failed handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason or "verification failed"
        unknown_ca = any(words in why.lower() for words in ("issuer", "self-signed", "self signed"))
        hint = "; check --etcd-cafile" if unknown_ca else ""
        return f"TLS: the server's certificate is not trusted ({why}{hint})"
    reason = (exc.reason or "").upper()
    if reason in _REJECTED:
        return "TLS: " + rejected_because(files)
    if reason in _NOT_TLS:
        return "TLS: no TLS server there (is it a plain http:// endpoint?)"
    return f"TLS: handshake failed ({exc.reason or exc})"


def rejected_because(files: TLSFiles | None) -> str:
    if files is None or not files.certfile:
        return ("the server requires a client certificate (give --etcd-certfile and "
                "--etcd-keyfile)")
    problem = files.client_cert_problem()
    if problem:
        return f"the server rejected our client certificate: {problem}"
    return (f"the server rejected our client certificate (--etcd-certfile {files.certfile}): "
            "not signed by a CA it trusts, or not for client authentication")


# -- x509 validity dates from DER ------------------------------------------------------------

def certificate_validity(pem: bytes) -> tuple[datetime, datetime]:
    """(notBefore, notAfter) of the first certificate in a PEM file; ValueError if none."""
    match = re.search(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", pem,
                      re.S)
    if not match:
        raise ValueError("no PEM certificate")
    der = base64.b64decode(b"".join(match.group(1).split()))
    cert, _ = _tlv(der, 0, 0x30)
    tbs, _ = _tlv(der, cert, 0x30)
    pos = tbs
    if der[pos] == 0xA0:                       # [0] version
        pos = _skip(der, pos)
    for _ in range(3):                         # serialNumber, signature, issuer
        pos = _skip(der, pos)
    validity, _ = _tlv(der, pos, 0x30)
    not_before, end = _time(der, validity)
    not_after, _ = _time(der, end)
    return not_before, not_after


def _header(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, length) of the element at pos."""
    if pos + 2 > len(der):
        raise ValueError("truncated DER")
    tag, length, pos = der[pos], der[pos + 1], pos + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or pos + count > len(der):
            raise ValueError("bad DER length")
        length, pos = int.from_bytes(der[pos:pos + count], "big"), pos + count
    if pos + length > len(der):
        raise ValueError("truncated DER")
    return tag, pos, length


def _tlv(der: bytes, pos: int, tag: int) -> tuple[int, int]:
    found, start, length = _header(der, pos)
    if found != tag:
        raise ValueError(f"DER tag {found:#x}, expected {tag:#x}")
    return start, start + length


def _skip(der: bytes, pos: int) -> int:
    _, start, length = _header(der, pos)
    return start + length


def _time(der: bytes, pos: int) -> tuple[datetime, int]:
    tag, start, length = _header(der, pos)
    text = der[start:start + length].decode("ascii")
    if tag == 0x17:                            # UTCTime YYMMDDHHMMSSZ (years 1950-2049)
        when = datetime.strptime(text, "%y%m%d%H%M%SZ")
    elif tag == 0x18:                          # GeneralizedTime YYYYMMDDHHMMSSZ
        when = datetime.strptime(text, "%Y%m%d%H%M%SZ")
    else:
        raise ValueError(f"DER tag {tag:#x} is not a time")
    return when.replace(tzinfo=UTC), start + length
