"""TLS material for the gateway: the local CA, the certificates it issues, user certificates,
and the server `ssl.SSLContext`s that pick a certificate by SNI.

Theory of operation
-------------------
* `LocalCA` owns `<data dir>/tls/`: `ca.pem` (0644, what users trust, `portway ca` prints it) and
  `ca.key` (0600). It is created on first use and reused ever after. Every file is written to a
  temporary sibling and renamed into place, key first, so a crash leaves either the old pair,
  a lone new key (which `LocalCA` replaces, since no client can trust a CA whose certificate was
  never published), or the whole new pair; never a torn file.
* `LocalCA.issue(names)` returns a leaf (ECDSA P-256, serverAuth, ~397 days) and keeps it under
  `certs/`, reissuing when it is within 30 days of expiry, names changed, or the CA changed.
* `CertificateStore.build(custom_fqdns)` turns the platform wildcard (`*.<domain>`, the
  default), certificates for custom FQDNs (user-provided, else issued by the CA) into an
  immutable `ServerContexts`. Each `ssl.SSLContext` costs milliseconds to build, so contexts are
  cached by the certificate they hold and reused by every later build that holds it.
* `SniRouter` owns the one context a listener is created with. Its `sni_callback` looks the
  requested name up in the *current* `ServerContexts` (exact FQDN, then a one-label wildcard,
  see `select`) and switches the connection to that context. `swap()` installs a new set
  without a new listener; handshakes already done keep the certificate they were given.

Handshake deadlines
-------------------
A client that connects and never finishes its handshake (T21: 1,000 half-open handshakes) must
not hold a connection for long. Every TLS listener runs `tlsconn.TLSServerProtocol`, given
`HANDSHAKE_TIMEOUT_S` (it aborts the connection when the handshake is not done by then) and
`SHUTDOWN_TIMEOUT_S` (how long the close_notify exchange may take).

Everything that decides (names, selection, freshness, validation) is a pure function of its
inputs with the time passed in; only `LocalCA` and the context loader touch files.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import itertools
import os
import re
import secrets
import socket
import ssl
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, NamedTuple, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..model.errors import Invalid, PortwayError

# A client gets this long to finish its handshake; T21 requires ≤10 s.
HANDSHAKE_TIMEOUT_S: Final[float] = 10
# How long to wait for the peer's close_notify before dropping the connection anyway.
SHUTDOWN_TIMEOUT_S: Final[float] = 5

HTTP_ALPN: Final[tuple[str, ...]] = ("http/1.1",)

CA_VALIDITY: Final = timedelta(days=3650)
# 397 days: the longest validity Apple and Chrome accept for a server certificate, so a
# leaf keeps working if someone trusts the CA on those platforms.
LEAF_VALIDITY: Final = timedelta(days=397)
REISSUE_BEFORE: Final = timedelta(days=30)
# Certificates start an hour in the past so a client whose clock runs a little behind
# does not see a certificate from the future.
BACKDATE: Final = timedelta(hours=1)

CA_CERT_FILE: Final = "ca.pem"
CA_KEY_FILE: Final = "ca.key"
LEAF_DIR: Final = "certs"
TLS_DIR: Final = "tls"

# Mozilla's "intermediate" TLS 1.2 suites without DHE (no DH parameters are loaded): forward
# secrecy and AEAD only. TLS 1.3 suites are configured separately by OpenSSL and are all modern.
TLS12_CIPHERS: Final = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)

T = TypeVar("T")
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- errors ---------------------------------------------------------------------------------------


class TLSError(PortwayError):
    """TLS material cannot be used as it is."""


class CAUnusable(TLSError):
    """The CA files exist but cannot be read or used; the message names the file."""


class CertificateRejected(Invalid):
    """A user-provided certificate or key is unusable; answered as HTTP 400 naming the field."""


# --- names ----------------------------------------------------------------------------------------

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def normalize_name(name: str) -> str:
    """The canonical form of a certificate name: an IP address, or a lower-case DNS name whose
    first label may be `*`. Raises `Invalid` saying what is wrong."""
    text = name.strip().lower().removesuffix(".")
    if _looks_like_ip(text):
        with contextlib.suppress(ValueError):
            return ipaddress.ip_address(text).compressed
    if not text.isascii():
        raise Invalid("names", f"{name!r} is not ASCII; use its IDNA form (xn--...)")
    if len(text) > 253:
        raise Invalid("names", f"{name!r} is longer than 253 characters")
    labels = text.split(".")
    if labels[0] == "*":
        # `*.localhost` or `*.com` would cover a whole top-level domain: no client accepts it.
        if len(labels) < 3:
            raise Invalid("names", f"{name!r}: a wildcard needs at least two labels after '*'")
        labels = labels[1:]
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise Invalid("names", f"{name!r}: {label!r} is not a valid DNS label")
    return text


def normalize_names(names: Iterable[str]) -> tuple[str, ...]:
    """Normalized, duplicates removed, first occurrence first (the first name labels the file)."""
    result = tuple(dict.fromkeys(normalize_name(n) for n in names))
    if not result:
        raise Invalid("names", "at least one name is required")
    return result


def select(server_name: str | None, exact: Mapping[str, T], wildcard: Mapping[str, T]) -> T | None:
    """The entry for a requested server name: an exact FQDN first, then a wildcard covering
    exactly one label (`*.portway.localhost` covers `b.portway.localhost`, not
    `a.b.portway.localhost`, as RFC 6125 and every browser have it), else None.

    `exact` is keyed by normalized FQDN, `wildcard` by pattern (`*.portway.localhost`).
    """
    if not server_name:
        return None
    name = server_name.lower().removesuffix(".")
    if "*" in name:  # a client asking for a wildcard is asking for nothing real
        return None
    if name in exact:
        return exact[name]
    label, dot, parent = name.partition(".")
    if not (label and dot and parent):
        return None
    return wildcard.get("*." + parent)


def _looks_like_ip(name: str) -> bool:
    # Spares DNS names a failed ip_address parse, repeated for every FQDN on every build:
    # a top-level domain is never all digits (RFC 3696 §2), and DNS names hold no `:`.
    return ":" in name or name.rpartition(".")[2].isdigit()


def _is_ip(name: str) -> bool:
    if not _looks_like_ip(name):
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def certificate_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The names a certificate is valid for: its SAN entries, or its CN when it has no SAN
    (RFC 6125 and OpenSSL ignore the CN as soon as a SAN is present)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return tuple(str(a.value).lower() for a in cns)
    dns = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    ips = [ip.compressed for ip in san.get_values_for_type(x509.IPAddress)]
    return (*dns, *ips)


def covers(cert: x509.Certificate, fqdn: str) -> bool:
    """True when a client asking for `fqdn` accepts `cert` by name."""
    names = certificate_names(cert)
    exact = {n: True for n in names if not n.startswith("*.")}
    wildcard = {n: True for n in names if n.startswith("*.") and not _is_ip(fqdn)}
    return select(fqdn, exact, wildcard) is not None


# --- certificates (pure: keys, time and names in, certificates out) -------------------------------


class CertifiedKey(NamedTuple):
    """A PEM certificate chain (leaf first) and the PEM private key of its leaf."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def fingerprint(self) -> str:
        """Identifies this exact material: the cache key of the context built from it."""
        return hashlib.sha256(self.cert_pem + b"\0" + self.key_pem).hexdigest()


def new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: every client supports it, and signing is ~20x cheaper than RSA-2048 per handshake.
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),  # the file mode protects it; the daemon starts unattended
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _same_public_key(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)


def ca_common_name(host: str | None = None) -> str:
    """`Portway local CA <short host id>`: the host says where a trusted CA came from; the
    random part keeps a recreated CA from sharing a subject with the one it replaces, which
    trust stores (NSS in particular) treat as a conflict."""
    short_host = (host if host is not None else socket.gethostname()).split(".")[0][:24]
    return f"Portway local CA {short_host or 'host'}-{secrets.token_hex(3)}"


def build_ca(key: ec.EllipticCurvePrivateKey, common_name: str, now: datetime) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Portway"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        # pathlen 0: this CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(name: str) -> x509.GeneralName:
    if _is_ip(name):
        return x509.IPAddress(ipaddress.ip_address(name))
    return x509.DNSName(name)


def build_leaf(
    ca_key: CertificateIssuerPrivateKeyTypes,
    ca_cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    names: Sequence[str],
    now: datetime,
) -> x509.Certificate:
    """A server certificate for normalized `names`, signed by the CA."""
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, names[0])] if len(names[0]) <= 64 else []
    )
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + LEAF_VALIDITY)
        # RFC 5280: with an empty subject the SAN must be critical.
        .add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]),
            critical=len(subject) == 0,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(ca_key, _signature_hash(ca_key))
    )


def issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def leaf_is_fresh(
    material: CertifiedKey, ca_cert: x509.Certificate, names: Sequence[str], now: datetime
) -> bool:
    """Whether a kept leaf can still be served for `names`: it parses, matches its key, was
    signed by the current CA, names exactly `names`, and has more than REISSUE_BEFORE left."""
    try:
        cert = x509.load_pem_x509_certificate(material.cert_pem)
        key = serialization.load_pem_private_key(material.key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return (
        _same_public_key(cert, key)
        and issued_by(cert, ca_cert)
        and set(certificate_names(cert)) == set(names)
        and cert.not_valid_before_utc <= now
        and now + REISSUE_BEFORE < cert.not_valid_after_utc
    )


# --- user-provided certificates -------------------------------------------------------------------


def validate_user_certificate(
    fqdn: str, chain_pem: bytes, private_key_pem: bytes, now: datetime
) -> CertifiedKey:
    """Check a user's certificate before it is served for `fqdn`: the chain parses and is in
    order (leaf first), the key is unencrypted and belongs to the leaf, the leaf is for server
    authentication, names `fqdn` (exactly or by wildcard), and is valid at `now`.
    Raises `CertificateRejected` saying which of these failed."""
    name = normalize_name(fqdn)
    chain = _parse_chain(chain_pem)
    leaf = chain[0]
    key = _parse_user_key(private_key_pem)
    _check_key_matches(chain, key)
    _check_chain_order(chain)
    _check_server_auth(leaf)
    if not covers(leaf, name):
        listed = ", ".join(certificate_names(leaf)) or "no names"
        raise CertificateRejected("certificate", f"the certificate is for {listed}, not {name}")
    _check_validity(leaf, now)
    return CertifiedKey(b"".join(cert_pem(c) for c in chain), key_pem(key))


def _parse_chain(chain_pem: bytes) -> list[x509.Certificate]:
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise CertificateRejected("certificate", f"not a PEM certificate chain ({exc})") from exc
    if not chain:  # pragma: no cover - cryptography raises on an empty input already
        raise CertificateRejected("certificate", "no certificate found")
    return chain


def _parse_user_key(private_key_pem: bytes) -> PrivateKeyTypes:
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except TypeError:  # cryptography's way of saying "this one needs a password"
        raise CertificateRejected(
            "key", "the private key is encrypted; provide it unencrypted"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateRejected("key", f"not a usable PEM private key ({exc})") from exc
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise CertificateRejected("key", f"unsupported key type {type(key).__name__}")
    return key


def _check_key_matches(chain: Sequence[x509.Certificate], key: PrivateKeyTypes) -> None:
    if _same_public_key(chain[0], key):
        return
    if any(_same_public_key(cert, key) for cert in chain[1:]):
        # A chain pasted issuer-first: the key is there, just not at the front.
        raise CertificateRejected(
            "certificate", "the chain must start with the server certificate, then its issuers"
        )
    raise CertificateRejected("key", "the private key does not match the certificate")


def _check_chain_order(chain: Sequence[x509.Certificate]) -> None:
    # A chain in the wrong order is the most common paste mistake; clients reject it late and
    # vaguely, so say it now.
    for position, (child, parent) in enumerate(itertools.pairwise(chain), start=1):
        if child.issuer != parent.subject:
            raise CertificateRejected(
                "certificate",
                f"certificate {position + 1} of the chain did not issue certificate {position};"
                " put the server certificate first, then each issuer in turn",
            )


def _check_server_auth(leaf: x509.Certificate) -> None:
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return  # no EKU means any use, server authentication included
    if ExtendedKeyUsageOID.SERVER_AUTH not in eku:
        raise CertificateRejected(
            "certificate", "the certificate is not for server authentication (no serverAuth)"
        )


def _check_validity(leaf: x509.Certificate, now: datetime) -> None:
    if now < leaf.not_valid_before_utc:
        since = leaf.not_valid_before_utc.isoformat()
        raise CertificateRejected("certificate", f"the certificate is not valid before {since}")
    if now >= leaf.not_valid_after_utc:
        until = leaf.not_valid_after_utc.isoformat()
        raise CertificateRejected("certificate", f"the certificate expired at {until}")


# --- server contexts ------------------------------------------------------------------------------


def server_context(material: CertifiedKey, alpn: Sequence[str] = HTTP_ALPN) -> ssl.SSLContext:
    """A server context serving one certificate: TLS 1.2 and 1.3 only, AEAD suites with
    forward secrecy, no compression (CRIME), no renegotiation (a cheap CPU attack), and ALPN
    `alpn` (HTTP ports offer http/1.1; raw TCP ports offer nothing)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    context.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_SINGLE_ECDH_USE
    )
    context.set_ciphers(TLS12_CIPHERS)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    _load_chain(context, material)
    return context


def _load_chain(context: ssl.SSLContext, material: CertifiedKey) -> None:
    """`load_cert_chain` reads only files. On Linux hand it anonymous memory files, so a key
    never touches a disk it was not already on; elsewhere a private temporary directory."""
    if hasattr(os, "memfd_create"):
        cert_fd = os.memfd_create("portway-cert", os.MFD_CLOEXEC)
        key_fd = os.memfd_create("portway-key", os.MFD_CLOEXEC)
        try:
            _write_all(cert_fd, material.cert_pem)
            _write_all(key_fd, material.key_pem)
            context.load_cert_chain(f"/proc/self/fd/{cert_fd}", f"/proc/self/fd/{key_fd}")
        finally:
            os.close(cert_fd)
            os.close(key_fd)
        return
    with tempfile.TemporaryDirectory(prefix="portway-tls-") as private:  # created 0700
        cert_path, key_path = Path(private, "cert.pem"), Path(private, "key.pem")
        _write_atomic(cert_path, material.cert_pem, 0o600)
        _write_atomic(key_path, material.key_pem, 0o600)
        context.load_cert_chain(cert_path, key_path)


@dataclass(frozen=True)
class ServerContexts:
    """One immutable certificate set: the context for names nobody claimed (the platform
    wildcard), contexts by exact FQDN, and contexts by wildcard pattern."""

    default: ssl.SSLContext
    exact: Mapping[str, ssl.SSLContext]
    wildcard: Mapping[str, ssl.SSLContext]
    alpn: tuple[str, ...]

    def choose(self, server_name: str | None) -> ssl.SSLContext | None:
        return select(server_name, self.exact, self.wildcard)


class SniRouter:
    """The context a listener is created with. Its SNI callback switches each handshake to the
    context `select` picks from the current `ServerContexts`, so new certificates are a `swap()`
    (one reference assignment) and never a new listener.

    Unknown names get the default certificate (the client then fails verification), or with
    `reject_unknown` (a port several groups share) an `unrecognized_name` alert. A client that
    sends no SNI (a bare IP) always gets the default.
    """

    def __init__(self, contexts: ServerContexts, *, reject_unknown: bool = False) -> None:
        self._current = contexts
        self._reject_unknown = reject_unknown
        # The name each handshake asked for, for TCP-mode routing by SNI after the handshake
        # (a server-side SSLObject does not report it).
        self._names: weakref.WeakKeyDictionary[ssl.SSLObject, str] = weakref.WeakKeyDictionary()
        # No certificate of its own: the callback switches every handshake to a context that
        # has one, before OpenSSL picks a certificate.
        self.context = _front_context(contexts)
        self.context.sni_callback = self._on_server_name

    @property
    def current(self) -> ServerContexts:
        return self._current

    def swap(self, contexts: ServerContexts) -> None:
        # ALPN is answered from the context chosen in the callback; one listener speaks one set.
        if contexts.alpn != self._current.alpn:
            raise ValueError(f"ALPN {contexts.alpn} is not this listener's {self._current.alpn}")
        self._current = contexts

    def server_name(self, connection: ssl.SSLObject | None) -> str | None:
        """The SNI name the client sent on `connection` (normalized), if any."""
        return self._names.get(connection) if connection is not None else None

    def _on_server_name(
        self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        if server_name and not _looks_like_ip(server_name):
            # Some clients (wrk, old OpenSSL tools) send an IP literal, which RFC 6066 forbids:
            # it names no host, so it is treated like no SNI at all.
            self._names[connection] = server_name.lower().rstrip(".")
        contexts = self._current  # read once: a concurrent swap must not mix two sets
        chosen = contexts.choose(server_name)
        if chosen is None:
            if server_name and self._reject_unknown:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            chosen = contexts.default
        connection.context = chosen
        return None


def _front_context(contexts: ServerContexts) -> ssl.SSLContext:
    front = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # Protocol versions and options stay with the first context, so set them as every other.
    front.minimum_version = ssl.TLSVersion.TLSv1_2
    front.options |= contexts.default.options
    front.set_ciphers(TLS12_CIPHERS)
    if contexts.alpn:
        front.set_alpn_protocols(list(contexts.alpn))
    return front


# --- files (the only I/O in this module) ----------------------------------------------------------


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Readers see the old file or the whole new one, never a torn one: write a temporary
    sibling created with `mode` (a key is never readable by others, not even for an instant),
    fsync, rename over, fsync the directory so the rename survives a power cut."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(temporary, flags, mode)
    try:
        # Still empty: make the mode exact whatever the umask (ca.pem must stay world-readable).
        os.fchmod(fd, mode)
        _write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(temporary, path)
    _fsync_directory(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # os.write may write less than asked
        view = view[os.write(fd, view) :]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_temporaries(directory: Path) -> None:
    # Left by a crash mid-write; never read, since only renamed files count. Called under the lock.
    for leftover in directory.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """Excludes other processes (the daemon and `portway ca`) while files are created."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CAUnusable(f"cannot read {path}: {exc.strerror or exc}") from exc


def _read_if_exists(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None  # a missing or unreadable leaf is simply reissued


# --- the local CA ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CAMaterial:
    key: CertificateIssuerPrivateKeyTypes
    certificate: x509.Certificate
    pem: bytes


class _KeptLeaf(NamedTuple):
    material: CertifiedKey
    not_after: datetime


class LocalCA:
    """The CA kept in `directory`, created on first use, and the leaves it issues.

    Thread-safe; files are created under a lock file so two processes agree on one CA. The CA
    is read once per instance: a CA replaced on disk takes effect when the daemon restarts.
    """

    def __init__(self, directory: Path, *, clock: Clock = utc_now) -> None:
        self.directory = directory
        self._clock = clock
        self._lock = threading.Lock()
        self._ca: _CAMaterial | None = None
        self._leaves: dict[tuple[str, ...], _KeptLeaf] = {}

    @property
    def cert_path(self) -> Path:
        return self.directory / CA_CERT_FILE

    @property
    def key_path(self) -> Path:
        return self.directory / CA_KEY_FILE

    @property
    def certificate(self) -> x509.Certificate:
        return self._material().certificate

    @property
    def pem(self) -> bytes:
        return self._material().pem

    def issue(self, names: Sequence[str]) -> CertifiedKey:
        """A leaf for `names` (DNS names, `*.` wildcards, IP addresses) as (cert_pem, key_pem):
        the kept one while fresh, else a new one written to `certs/`."""
        wanted = normalize_names(names)
        ca = self._material()
        now = self._clock()
        with self._lock:
            kept = self._leaves.get(wanted)
            # A leaf kept in memory was checked against this CA already; only time can stale
            # it, and comparing a date keeps a rebuild from re-parsing every certificate.
            if kept is None or now + REISSUE_BEFORE >= kept.not_after:
                material = self._load_or_issue_leaf(ca, wanted, now)
                not_after = x509.load_pem_x509_certificate(material.cert_pem).not_valid_after_utc
                kept = self._leaves[wanted] = _KeptLeaf(material, not_after)
            return kept.material

    def _material(self) -> _CAMaterial:
        with self._lock:
            if self._ca is None:
                self._ca = self._load_or_create()
            return self._ca

    def _load_or_create(self) -> _CAMaterial:
        self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        with _directory_lock(self.directory):
            _remove_stale_temporaries(self.directory)
            if self.cert_path.exists():
                return _load_ca(self.cert_path, self.key_path, self._clock())
            # No ca.pem: nobody can trust this CA yet, so a key left alone by a crash between
            # the two renames is simply replaced.
            return self._create()

    def _create(self) -> _CAMaterial:
        key = new_key()
        certificate = build_ca(key, ca_common_name(), self._clock())
        pem = cert_pem(certificate)
        # Key first: ca.pem existing is what says "this CA is complete".
        _write_atomic(self.key_path, key_pem(key), 0o600)
        _write_atomic(self.cert_path, pem, 0o644)
        return _CAMaterial(key, certificate, pem)

    def _load_or_issue_leaf(
        self, ca: _CAMaterial, names: tuple[str, ...], now: datetime
    ) -> CertifiedKey:
        leaf_dir = self.directory / LEAF_DIR
        leaf_dir.mkdir(mode=0o700, exist_ok=True)
        stem = leaf_file_stem(names)
        cert_path, key_path = leaf_dir / f"{stem}.pem", leaf_dir / f"{stem}.key"
        with _directory_lock(leaf_dir):
            on_disk = (_read_if_exists(cert_path), _read_if_exists(key_path))
            if on_disk[0] is not None and on_disk[1] is not None:
                kept = CertifiedKey(on_disk[0], on_disk[1])
                if leaf_is_fresh(kept, ca.certificate, names, now):
                    return kept
            _remove_stale_temporaries(leaf_dir)
            key = new_key()
            leaf = build_leaf(ca.key, ca.certificate, key, names, now)
            issued = CertifiedKey(cert_pem(leaf), key_pem(key))
            # A crash between these leaves a key that does not match the certificate, which
            # `leaf_is_fresh` rejects, so the next start reissues.
            _write_atomic(key_path, issued.key_pem, 0o600)
            _write_atomic(cert_path, issued.cert_pem, 0o644)
            return issued


def leaf_file_stem(names: Sequence[str]) -> str:
    """A file name for a set of normalized names: readable (`_.portway.localhost` for
    `*.portway.localhost`), with a digest when one name cannot stand for the set."""
    first = names[0].replace("*", "_").replace(":", "-")
    if len(names) == 1 and ":" not in names[0] and len(first) <= 100:
        return first  # names hold no `_`, so `_` for `*` cannot collide
    digest = hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:12]
    return f"{first[:100]}+{digest}"


def _load_ca(cert_path: Path, key_path: Path, now: datetime) -> _CAMaterial:
    pem = _read(cert_path)
    if not key_path.exists():
        raise CAUnusable(
            f"{key_path} is missing but {cert_path} exists; restore the key, or move both"
            " away to create a new CA (clients will need to trust the new one)"
        )
    raw_key = _read(key_path)
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CAUnusable(f"{cert_path} is not a PEM certificate ({exc})") from exc
    key = _parse_ca_key(raw_key, key_path)
    if not _same_public_key(certificate, key):
        raise CAUnusable(f"{key_path} is not the key of {cert_path}")
    _check_is_usable_ca(certificate, cert_path, now)
    return _CAMaterial(key, certificate, pem)


def _parse_ca_key(raw: bytes, key_path: Path) -> CertificateIssuerPrivateKeyTypes:
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CAUnusable(f"{key_path} is not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise CAUnusable(f"{key_path} holds a {type(key).__name__}, which cannot sign here")
    return key


def _check_is_usable_ca(certificate: x509.Certificate, cert_path: Path, now: datetime) -> None:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CAUnusable(f"{cert_path} is not a CA certificate (basicConstraints CA:TRUE)")
    if now >= certificate.not_valid_after_utc:
        raise CAUnusable(
            f"{cert_path} expired at {certificate.not_valid_after_utc.isoformat()}; move"
            f" {cert_path.name} and {CA_KEY_FILE} away to create a new CA"
        )


# --- the certificate store ------------------------------------------------------------------------


class CertificateStore:
    """Builds `ServerContexts` for the platform domain and a set of custom FQDNs.

    Every FQDN gets, in order of preference: the user's certificate for it, the platform
    wildcard when it is one label under the platform domain, or a leaf issued by the CA.
    Contexts are cached by certificate and ALPN, so a rebuild after one change builds one
    context; entries no build uses any more are dropped.
    """

    def __init__(self, ca: LocalCA, platform_domain: str, *, clock: Clock = utc_now) -> None:
        self.ca = ca
        self.platform_domain = normalize_name(platform_domain)
        self._clock = clock
        self._lock = threading.Lock()
        self._user: dict[str, CertifiedKey] = {}
        self._contexts: dict[tuple[str, tuple[str, ...]], ssl.SSLContext] = {}
        self._in_use: dict[tuple[str, ...], set[tuple[str, tuple[str, ...]]]] = {}

    @property
    def platform_wildcard(self) -> str:
        return f"*.{self.platform_domain}"

    def add_user_certificate(self, fqdn: str, chain_pem: bytes, private_key_pem: bytes) -> None:
        """Serve the user's certificate for `fqdn` from the next build. Raises
        `CertificateRejected` (an `Invalid`) naming what is wrong."""
        material = validate_user_certificate(fqdn, chain_pem, private_key_pem, self._clock())
        # OpenSSL may still refuse what cryptography accepted (a key too weak for its level).
        try:
            server_context(material, ())
        except ssl.SSLError as exc:
            raise CertificateRejected("certificate", f"OpenSSL refuses it: {exc}") from exc
        with self._lock:
            self._user[normalize_name(fqdn)] = material

    def remove_user_certificate(self, fqdn: str) -> None:
        with self._lock:
            self._user.pop(normalize_name(fqdn), None)

    def build(
        self, custom_fqdns: Iterable[str], *, alpn: Sequence[str] = HTTP_ALPN
    ) -> ServerContexts:
        """The certificate set for the platform and `custom_fqdns`, built from cached contexts
        where possible. May issue certificates (file writes): call it off the event loop."""
        protocols = tuple(alpn)
        platform = {self.platform_wildcard: True}
        with self._lock:
            used: set[tuple[str, tuple[str, ...]]] = set()
            platform_leaf = self.ca.issue([self.platform_wildcard, self.platform_domain])
            default = self._context(platform_leaf, protocols, used)
            exact: dict[str, ssl.SSLContext] = {}
            for fqdn in sorted({normalize_name(f) for f in custom_fqdns}):
                material = self._user.get(fqdn)
                if material is None:
                    if select(fqdn, {}, platform):
                        continue  # the platform wildcard already covers it
                    material = self.ca.issue([fqdn])
                exact[fqdn] = self._context(material, protocols, used)
            self._in_use[protocols] = used
            self._drop_unused()
        return ServerContexts(default, exact, {self.platform_wildcard: default}, protocols)

    def _context(
        self,
        material: CertifiedKey,
        alpn: tuple[str, ...],
        used: set[tuple[str, tuple[str, ...]]],
    ) -> ssl.SSLContext:
        key = (material.fingerprint, alpn)
        used.add(key)
        context = self._contexts.get(key)
        if context is None:
            context = self._contexts[key] = server_context(material, alpn)
        return context

    def _drop_unused(self) -> None:
        live = set().union(*self._in_use.values())
        for key in self._contexts.keys() - live:
            del self._contexts[key]


# --- for `portway ca` -----------------------------------------------------------------------------


def tls_dir(data_dir: Path) -> Path:
    return data_dir / TLS_DIR


def ca_bundle_path(data_dir: Path) -> Path:
    """Where the CA certificate users add to their trust store lives."""
    return tls_dir(data_dir) / CA_CERT_FILE


def ca_pem_text(data_dir: Path) -> str:
    """The CA certificate as PEM text, creating the CA if the daemon has not yet, so the CA
    `portway ca` prints before `portway up` is the one the daemon will use."""
    return LocalCA(tls_dir(data_dir)).pem.decode("ascii")
