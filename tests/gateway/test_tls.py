"""The gateway's TLS material: the local CA on disk, the leaves it issues, user certificates,
and SNI selection, checked with real handshakes over loopback sockets (port 0, every wait
bounded). `pytest -s` prints what building a context and a full handshake cost."""

from __future__ import annotations

import os
import queue
import socket
import ssl
import stat
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from portway.gateway import tls
from portway.gateway.tls import (
    CAUnusable,
    CertificateRejected,
    CertificateStore,
    LocalCA,
    ServerContexts,
    SniRouter,
    ca_bundle_path,
    ca_pem_text,
    certificate_names,
    covers,
    select,
)
from portway.model.errors import Invalid

DOMAIN = "portway.localhost"
IO_TIMEOUT_S = 5.0
NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


# --- helpers --------------------------------------------------------------------------------------


@pytest.fixture
def ca(tmp_path: Path) -> LocalCA:
    return LocalCA(tmp_path / "tls")


@pytest.fixture
def store(ca: LocalCA) -> CertificateStore:
    return CertificateStore(ca, DOMAIN)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@dataclass
class Outcome:
    """What the server saw of one connection."""

    version: str | None = None
    alpn: str | None = None
    error: BaseException | None = None


@dataclass
class Server:
    port: int
    outcomes: queue.Queue[Outcome]

    def next_outcome(self) -> Outcome:
        return self.outcomes.get(timeout=IO_TIMEOUT_S)


@contextmanager
def serving(context: ssl.SSLContext) -> Iterator[Server]:
    """A threaded TLS server on 127.0.0.1:0 that handshakes each connection, answers `ok`,
    closes, and reports what happened."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)  # lets the loop notice `stop` promptly
    outcomes: queue.Queue[Outcome] = queue.Queue()
    stop = threading.Event()

    def handle(raw: socket.socket) -> None:
        raw.settimeout(IO_TIMEOUT_S)
        try:
            with context.wrap_socket(raw, server_side=True) as conn:
                outcomes.put(Outcome(conn.version(), conn.selected_alpn_protocol()))
                conn.sendall(b"ok")
        except (OSError, ssl.SSLError) as exc:
            outcomes.put(Outcome(error=exc))
        finally:
            raw.close()

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            handle(raw)

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield Server(listener.getsockname()[1], outcomes)
    finally:
        stop.set()
        thread.join(IO_TIMEOUT_S)
        listener.close()


@dataclass
class ClientView:
    version: str | None
    alpn: str | None
    certificate: x509.Certificate

    @property
    def names(self) -> tuple[str, ...]:
        return certificate_names(self.certificate)


def connect(port: int, context: ssl.SSLContext, server_name: str | None) -> ClientView:
    """One full client handshake (TCP connect included); returns what the client saw."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
        assert der is not None
        assert conn.recv(2) == b"ok"
        return ClientView(
            conn.version(), conn.selected_alpn_protocol(), x509.load_der_x509_certificate(der)
        )


def trusting(cafile: Path, *, alpn: bool = True) -> ssl.SSLContext:
    """A client context as curl or a browser would have it, trusting `cafile`."""
    context = ssl.create_default_context(cafile=str(cafile))
    if alpn:
        context.set_alpn_protocols(["http/1.1"])
    return context


def not_verifying() -> ssl.SSLContext:
    """A client that accepts any certificate, to look at which one the server chose."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def router_for(store: CertificateStore, *fqdns: str, **kwargs: Any) -> SniRouter:
    return SniRouter(store.build(fqdns), **kwargs)


# Certificates as another CA (a user's, or a public one) would make them.


@dataclass
class OtherCA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str = "Other CA") -> OtherCA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime.now(UTC) - timedelta(days=1))
            .not_valid_after(datetime.now(UTC) + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def leaf(
        self,
        names: list[str],
        *,
        valid_from: timedelta = timedelta(days=-1),
        valid_for: timedelta = timedelta(days=90),
        eku: x509.ObjectIdentifier | None = ExtendedKeyUsageOID.SERVER_AUTH,
        san: bool = True,
    ) -> tuple[bytes, bytes]:
        """(chain PEM: leaf then this CA, key PEM); validity relative to now."""
        key = ec.generate_private_key(ec.SECP256R1())
        start = datetime.now(UTC) + valid_from
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + valid_for)
        )
        if san:
            alt_names = x509.SubjectAlternativeName([x509.DNSName(n) for n in names])
            builder = builder.add_extension(alt_names, critical=False)
        if eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        chain = tls.cert_pem(cert) + tls.cert_pem(self.cert)
        return chain, tls.key_pem(key)

    def write(self, path: Path) -> Path:
        path.write_bytes(tls.cert_pem(self.cert))
        return path


# --- the CA on disk -------------------------------------------------------------------------------


def test_the_ca_is_created_on_first_use_with_safe_modes(ca: LocalCA) -> None:
    assert not ca.directory.exists()  # nothing happens until it is needed

    cert = x509.load_pem_x509_certificate(ca.pem)

    assert mode_of(ca.key_path) == 0o600
    assert mode_of(ca.cert_path) == 0o644
    assert ca.cert_path.read_bytes() == ca.pem
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert str(cn).startswith("Portway local CA ")
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=3650) <= lifetime <= timedelta(days=3651)
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    assert not list(ca.directory.glob(".*.tmp"))


def test_keys_are_created_0600_never_loosened_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[tuple[str, int]] = []
    real_open = os.open

    def spying_open(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            created.append((os.fspath(path), mode))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", spying_open)
    old_umask = os.umask(0o077)  # the public files must stay 0644 even so
    try:
        ca = LocalCA(tmp_path / "tls")
        ca.issue(["web.portway.localhost"])
    finally:
        os.umask(old_umask)

    key_files = [(p, m) for p, m in created if ".key" in Path(p).name]
    assert len(key_files) == 2  # ca.key and the leaf's key, each through a temporary
    assert all(mode == 0o600 for _, mode in key_files)
    assert mode_of(ca.cert_path) == 0o644
    leaf_key = ca.directory / "certs" / "web.portway.localhost.key"
    assert mode_of(leaf_key) == 0o600


def test_a_reload_reuses_the_same_ca_and_leaves(ca: LocalCA) -> None:
    first_pem, first_key = ca.pem, ca.key_path.read_bytes()
    first_leaf = ca.issue([f"*.{DOMAIN}"])

    again = LocalCA(ca.directory)

    assert again.pem == first_pem
    assert again.key_path.read_bytes() == first_key
    assert again.issue([f"*.{DOMAIN}"]) == first_leaf


def test_concurrent_first_uses_agree_on_one_ca(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    pems: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: pems.append(LocalCA(directory).pem)) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(IO_TIMEOUT_S)

    assert len(pems) == 8 and len(set(pems)) == 1


def test_a_crash_before_ca_pem_is_written_leaves_nothing_used(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    directory.mkdir()
    # What a crash can leave: a temporary being written, and a complete key with no certificate.
    (directory / ".ca.key.0badf00d.tmp").write_bytes(b"-----BEGIN PRIVATE KEY-----\nMIG")
    (directory / "ca.key").write_bytes(tls.key_pem(tls.new_key()))
    orphan = (directory / "ca.key").read_bytes()

    ca = LocalCA(directory)
    cert = x509.load_pem_x509_certificate(ca.pem)

    assert ca.key_path.read_bytes() != orphan
    key = serialization.load_pem_private_key(ca.key_path.read_bytes(), password=None)
    assert tls._same_public_key(cert, key)
    assert not list(directory.glob(".*.tmp"))


def _corrupt_key(ca: LocalCA) -> Path:
    ca.key_path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64 at all\n")
    return ca.key_path


def _corrupt_cert(ca: LocalCA) -> Path:
    ca.cert_path.write_bytes(ca.pem[: len(ca.pem) // 2])  # as if truncated by hand
    return ca.cert_path


def _missing_key(ca: LocalCA) -> Path:
    ca.key_path.unlink()
    return ca.key_path


def _someone_elses_key(ca: LocalCA) -> Path:
    ca.key_path.write_bytes(tls.key_pem(tls.new_key()))
    return ca.key_path


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_corrupt_key, "is not an unencrypted PEM private key"),
        (_corrupt_cert, "is not a PEM certificate"),
        (_missing_key, "is missing"),
        (_someone_elses_key, "is not the key of"),
    ],
    ids=["corrupt-key", "corrupt-cert", "missing-key", "mismatched-key"],
)
def test_damaged_ca_files_give_an_error_naming_the_file(
    ca: LocalCA, damage: Callable[[LocalCA], Path], says: str
) -> None:
    ca.pem  # noqa: B018 - creates the CA
    damaged = damage(ca)

    with pytest.raises(CAUnusable) as caught:
        LocalCA(ca.directory).issue(["web.portway.localhost"])

    assert str(damaged) in str(caught.value) and says in str(caught.value)


def test_an_unreadable_ca_key_gives_an_error_naming_the_file(ca: LocalCA) -> None:
    ca.pem  # noqa: B018 - creates the CA
    # A directory where the key should be: unreadable even for root, unlike a 0000 mode.
    ca.key_path.unlink()
    ca.key_path.mkdir()

    with pytest.raises(CAUnusable, match=f"cannot read {ca.key_path}"):
        LocalCA(ca.directory).pem  # noqa: B018


def test_ca_bundle_path_and_pem_text_for_portway_ca(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    text = ca_pem_text(data_dir)

    assert ca_bundle_path(data_dir) == data_dir / "tls" / "ca.pem"
    assert ca_bundle_path(data_dir).read_text() == text
    assert text.startswith("-----BEGIN CERTIFICATE-----")
    assert ca_pem_text(data_dir) == text


# --- leaves ---------------------------------------------------------------------------------------


def test_a_leaf_has_the_requested_names_and_server_properties(ca: LocalCA) -> None:
    cert_pem, key_pem = ca.issue(["*.Portway.Localhost.", "portway.localhost", "127.0.0.1", "::1"])

    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert certificate_names(cert) == (
        "*.portway.localhost",
        "portway.localhost",
        "127.0.0.1",
        "::1",
    )
    assert tls.issued_by(cert, ca.certificate) and tls._same_public_key(cert, key)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=397) <= lifetime <= timedelta(days=398)
    kept = sorted(p.name for p in (ca.directory / "certs").iterdir() if not p.name.startswith("."))
    assert len(kept) == 2 and all(name.startswith("_.portway.localhost+") for name in kept)


@pytest.mark.parametrize(
    ("days_later", "reissued"),
    [(0, False), (300, False), (366, False), (367, True), (400, True)],
)
def test_a_leaf_is_reissued_within_30_days_of_expiry(
    tmp_path: Path, days_later: int, reissued: bool
) -> None:
    # 397 days of validity, backdated one hour: 30 days before the end is day 366 and 23 hours.
    first = LocalCA(tmp_path / "tls", clock=lambda: NOW).issue(["web.portway.localhost"])

    later = LocalCA(tmp_path / "tls", clock=lambda: NOW + timedelta(days=days_later))
    second = later.issue(["web.portway.localhost"])

    assert (second != first) is reissued


def test_a_leaf_kept_in_memory_is_reissued_as_time_passes(tmp_path: Path) -> None:
    now = [NOW]
    ca = LocalCA(tmp_path / "tls", clock=lambda: now[0])
    first = ca.issue(["web.portway.localhost"])
    assert ca.issue(["web.portway.localhost"]) is first

    now[0] = NOW + timedelta(days=380)

    assert ca.issue(["web.portway.localhost"]) != first


def test_a_leaf_is_reissued_when_the_ca_changes(ca: LocalCA) -> None:
    old = ca.issue(["web.portway.localhost"])
    ca.cert_path.unlink()
    ca.key_path.unlink()

    fresh_ca = LocalCA(ca.directory)
    new = fresh_ca.issue(["web.portway.localhost"])

    assert new != old
    assert tls.issued_by(x509.load_pem_x509_certificate(new.cert_pem), fresh_ca.certificate)


def test_a_leaf_whose_key_file_was_replaced_is_reissued(ca: LocalCA) -> None:
    # What a crash between writing the new key and the new certificate leaves behind.
    old = ca.issue(["web.portway.localhost"])
    key_file = ca.directory / "certs" / "web.portway.localhost.key"
    key_file.write_bytes(tls.key_pem(tls.new_key()))

    new = LocalCA(ca.directory).issue(["web.portway.localhost"])

    assert new.cert_pem != old.cert_pem and new.key_pem == key_file.read_bytes()
    assert tls._same_public_key(
        x509.load_pem_x509_certificate(new.cert_pem),
        serialization.load_pem_private_key(new.key_pem, password=None),
    )


@pytest.mark.parametrize(
    "name",
    [
        "",
        "*.localhost",
        "a.*.portway.localhost",
        "under_score.example.com",
        "-a.example.com",
        "bücher.example",
        "a" * 64 + ".example.com",
        "a..example.com",
    ],
)
def test_bad_names_are_refused(ca: LocalCA, name: str) -> None:
    with pytest.raises(Invalid):
        ca.issue([name])


# --- selection (pure, table-driven) ---------------------------------------------------------------

EXACT = {"www.example.com": "www", "b.portway.localhost": "b-exact"}
WILDCARD = {"*.portway.localhost": "platform", "*.example.org": "org"}


@pytest.mark.parametrize(
    ("server_name", "expected"),
    [
        ("www.example.com", "www"),  # exact
        ("WWW.Example.COM.", "www"),  # case and a trailing dot do not matter
        ("b.portway.localhost", "b-exact"),  # exact beats the wildcard
        ("web-abc.portway.localhost", "platform"),  # one label under the wildcard
        ("a.b.portway.localhost", None),  # two labels: a wildcard covers exactly one
        ("portway.localhost", None),  # the wildcard does not cover its own parent
        ("shop.example.org", "org"),
        ("example.com", None),
        ("other.example.com", None),
        ("*.portway.localhost", None),  # a client asking for a wildcard asks for nothing real
        (".portway.localhost", None),  # empty first label
        ("localhost", None),
        ("", None),
        (None, None),  # no SNI at all
    ],
)
def test_select(server_name: str | None, expected: str | None) -> None:
    assert select(server_name, EXACT, WILDCARD) == expected


@pytest.mark.parametrize(
    ("names", "fqdn", "expected"),
    [
        (["*.example.org"], "shop.example.org", True),
        (["*.example.org"], "a.shop.example.org", False),
        (["*.example.org"], "example.org", False),
        (["example.org", "*.example.org"], "example.org", True),
        (["shop.example.org"], "shop.example.org", True),
        (["shop.example.org"], "SHOP.example.org.", True),
        (["10.0.0.1"], "10.0.0.1", True),
        (["10.0.0.1"], "10.0.0.2", False),
        (["*.example.org"], "10.0.0.1", False),
    ],
)
def test_covers(ca: LocalCA, names: list[str], fqdn: str, expected: bool) -> None:
    cert = x509.load_pem_x509_certificate(ca.issue(names).cert_pem)
    assert covers(cert, fqdn) is expected


def test_covers_falls_back_to_the_common_name_only_without_a_san() -> None:
    other = OtherCA.create()
    without_san = x509.load_pem_x509_certificate(other.leaf(["shop.example.org"], san=False)[0])
    with_san = x509.load_pem_x509_certificate(other.leaf(["shop.example.org", "b.example.org"])[0])

    assert covers(without_san, "shop.example.org")
    assert not covers(with_san, "c.example.org")


# --- real handshakes ------------------------------------------------------------------------------


def test_the_platform_wildcard_verifies_for_a_generated_fqdn(
    ca: LocalCA, store: CertificateStore
) -> None:
    router = router_for(store)

    with serving(router.context) as server:
        view = connect(server.port, trusting(ca.cert_path), "web-abc.portway.localhost")
        outcome = server.next_outcome()

    assert "*.portway.localhost" in view.names
    assert view.alpn == "http/1.1" and outcome.alpn == "http/1.1"
    assert outcome.error is None


def test_sni_picks_the_custom_fqdn_certificate(ca: LocalCA, store: CertificateStore) -> None:
    router = router_for(store, "www.example.com", "extra.portway.localhost")

    with serving(router.context) as server:
        custom = connect(server.port, trusting(ca.cert_path), "www.example.com")
        platform = connect(server.port, trusting(ca.cert_path), "extra.portway.localhost")
        bare = connect(server.port, not_verifying(), None)  # no SNI: an IP-only client

    assert custom.names == ("www.example.com",)
    assert "*.portway.localhost" in platform.names  # covered by the wildcard: no own leaf
    assert "*.portway.localhost" in bare.names


def test_sni_picks_a_user_certificate(ca: LocalCA, store: CertificateStore, tmp_path: Path) -> None:
    other = OtherCA.create()
    chain, key = other.leaf(["shop.example.org", "*.shop.example.org"])
    store.add_user_certificate("shop.example.org", chain, key)
    router = router_for(store, "shop.example.org")

    with serving(router.context) as server:
        view = connect(
            server.port, trusting(other.write(tmp_path / "other.pem")), "shop.example.org"
        )

    assert view.names == ("shop.example.org", "*.shop.example.org")


def test_two_labels_below_the_platform_wildcard_fail_verification(
    ca: LocalCA, store: CertificateStore
) -> None:
    router = router_for(store)

    with serving(router.context) as server, pytest.raises(ssl.SSLCertVerificationError) as caught:
        connect(server.port, trusting(ca.cert_path), "a.b.portway.localhost")

    assert "hostname mismatch" in str(caught.value).lower()


def test_a_shared_port_can_refuse_unknown_names(ca: LocalCA, store: CertificateStore) -> None:
    router = router_for(store, reject_unknown=True)

    with serving(router.context) as server:
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            connect(server.port, trusting(ca.cert_path), "a.b.portway.localhost")
        assert server.next_outcome().error is not None
        # Known names and clients without SNI still get through.
        assert connect(server.port, trusting(ca.cert_path), "web.portway.localhost")
        assert connect(server.port, not_verifying(), None)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_1_2_and_1_3_are_served(
    ca: LocalCA, store: CertificateStore, version: ssl.TLSVersion
) -> None:
    router = router_for(store)  # creates the CA the client trusts
    client = trusting(ca.cert_path)
    client.minimum_version = client.maximum_version = version

    with serving(router.context) as server:
        view = connect(server.port, client, "web.portway.localhost")

    assert (
        view.version
        == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    )
    assert view.alpn == "http/1.1"


def test_tls_1_1_is_refused(store: CertificateStore) -> None:
    client = not_verifying()
    with warnings.catch_warnings():  # the ssl module rightly deprecates what we test refusing
        warnings.simplefilter("ignore", DeprecationWarning)
        client.minimum_version = ssl.TLSVersion.TLSv1
        client.maximum_version = ssl.TLSVersion.TLSv1_1
    # OpenSSL 3 allows TLS 1.1 only at security level 0; without this the client would refuse
    # to send its hello and the server would never be tested.
    client.set_ciphers("DEFAULT:@SECLEVEL=0")

    with serving(router_for(store).context) as server:
        with pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL"):
            connect(server.port, client, "web.portway.localhost")
        refused = server.next_outcome().error

    assert isinstance(refused, ssl.SSLError) and refused.reason == "UNSUPPORTED_PROTOCOL"


def test_tcp_ports_offer_no_alpn(ca: LocalCA, store: CertificateStore) -> None:
    router = SniRouter(store.build([], alpn=()))

    with serving(router.context) as server:
        view = connect(server.port, trusting(ca.cert_path), "web.portway.localhost")

    assert view.alpn is None


def test_a_swap_serves_new_certificates_on_the_same_listener(
    ca: LocalCA, store: CertificateStore
) -> None:
    router = router_for(store)

    with serving(router.context) as server:
        before = connect(server.port, not_verifying(), "www.example.com")
        router.swap(store.build(["www.example.com"]))
        after = connect(server.port, trusting(ca.cert_path), "www.example.com")

    assert "*.portway.localhost" in before.names
    assert after.names == ("www.example.com",)
    with pytest.raises(ValueError, match="ALPN"):
        router.swap(store.build([], alpn=()))


def test_contexts_are_built_once_per_certificate(store: CertificateStore) -> None:
    first = store.build(["www.example.com"])
    second = store.build(["www.example.com", "api.example.com"])
    tcp = store.build(["www.example.com"], alpn=())

    assert second.default is first.default
    assert second.exact["www.example.com"] is first.exact["www.example.com"]
    assert tcp.default is not first.default  # ALPN is part of a context
    assert (
        store.build(["www.example.com"]).exact["www.example.com"] is first.exact["www.example.com"]
    )


# --- user certificates ----------------------------------------------------------------------------


def test_a_wildcard_user_certificate_is_accepted_for_a_name_it_covers(
    store: CertificateStore,
) -> None:
    chain, key = OtherCA.create().leaf(["*.example.org"])

    store.add_user_certificate("shop.example.org", chain, key)

    assert "shop.example.org" in store.build(["shop.example.org"]).exact


def _with_encrypted_key(other: OtherCA) -> tuple[bytes, bytes]:
    chain, key_pem = other.leaf(["shop.example.org"])
    key = serialization.load_pem_private_key(key_pem, password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    return chain, encrypted


@pytest.mark.parametrize(
    ("make", "field", "says"),
    [
        (
            lambda o: (o.leaf(["shop.example.org"])[0], o.leaf(["shop.example.org"])[1]),
            "key",
            "does not match the certificate",
        ),
        (lambda o: o.leaf(["www.example.org"]), "certificate", "is for www.example.org, not shop"),
        (lambda o: o.leaf(["*.shop.example.org"]), "certificate", "not shop.example.org"),
        (
            lambda o: o.leaf(["shop.example.org"], valid_from=timedelta(days=-100)),
            "certificate",
            "expired at",
        ),
        (
            lambda o: o.leaf(["shop.example.org"], valid_from=timedelta(days=2)),
            "certificate",
            "not valid before",
        ),
        (
            lambda o: o.leaf(["shop.example.org"], eku=ExtendedKeyUsageOID.CLIENT_AUTH),
            "certificate",
            "not for server authentication",
        ),
        (
            lambda o: (o.leaf(["shop.example.org"])[0], b""),
            "key",
            "not a usable PEM private key",
        ),
        (
            lambda o: (b"garbage", o.leaf(["shop.example.org"])[1]),
            "certificate",
            "not a PEM certificate chain",
        ),
        (
            _with_encrypted_key,
            "key",
            "encrypted",
        ),
    ],
    ids=[
        "mismatched-key",
        "wrong-name",
        "wildcard-one-level-too-deep",
        "expired",
        "not-yet-valid",
        "client-auth-only",
        "no-key",
        "not-pem",
        "encrypted-key",
    ],
)
def test_user_certificates_are_checked_with_clear_errors(
    store: CertificateStore,
    make: Callable[[OtherCA], tuple[bytes, bytes]],
    field: str,
    says: str,
) -> None:
    chain, key = make(OtherCA.create())

    with pytest.raises(CertificateRejected) as caught:
        store.add_user_certificate("shop.example.org", chain, key)

    assert isinstance(caught.value, Invalid) and caught.value.field == field
    assert says in str(caught.value)


def test_a_chain_with_a_foreign_issuer_is_named(store: CertificateStore) -> None:
    chain, key = OtherCA.create().leaf(["shop.example.org"])
    leaf = x509.load_pem_x509_certificates(chain)[0]
    stranger = OtherCA.create("Stranger").cert

    with pytest.raises(
        CertificateRejected, match="certificate 2 of the chain did not issue certificate 1"
    ):
        store.add_user_certificate(
            "shop.example.org", tls.cert_pem(leaf) + tls.cert_pem(stranger), key
        )


def test_a_chain_pasted_issuer_first_is_named(store: CertificateStore) -> None:
    chain, key = OtherCA.create().leaf(["shop.example.org"])
    reversed_chain = b"".join(
        tls.cert_pem(c) for c in reversed(x509.load_pem_x509_certificates(chain))
    )

    with pytest.raises(CertificateRejected, match="must start with the server certificate"):
        store.add_user_certificate("shop.example.org", reversed_chain, key)


# --- deadlines and costs --------------------------------------------------------------------------


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def test_print_context_build_and_handshake_costs(ca: LocalCA, store: CertificateStore) -> None:
    material = ca.issue([f"*.{DOMAIN}", DOMAIN])
    builds = []
    for _ in range(20):
        started = time.perf_counter()
        tls.server_context(material)
        builds.append(time.perf_counter() - started)

    fqdns = [f"site{i}.example.com" for i in range(20)]
    started = time.perf_counter()
    contexts: ServerContexts = store.build(fqdns)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    store.build(fqdns)
    warm = time.perf_counter() - started

    router = SniRouter(contexts)
    timings: dict[str, list[float]] = {"TLSv1.3": [], "TLSv1.2": []}
    with serving(router.context) as server:
        for name, version in (
            ("TLSv1.3", ssl.TLSVersion.TLSv1_3),
            ("TLSv1.2", ssl.TLSVersion.TLSv1_2),
        ):
            client = trusting(ca.cert_path)
            client.maximum_version = version
            for _ in range(50):
                started = time.perf_counter()
                view = connect(server.port, client, "site7.example.com")
                timings[name].append(time.perf_counter() - started)
                assert view.version == name

    print(
        f"\n[tls] one server context: median {_median_ms(builds):.2f} ms"
        f"\n[tls] store.build, 20 custom FQDNs + platform: cold {cold * 1000:.1f} ms"
        f" (issues 21 leaves), warm {warm * 1000:.2f} ms"
        f"\n[tls] loopback connect + full handshake (P-256, SNI switch):"
        f" TLS 1.3 median {_median_ms(timings['TLSv1.3']):.2f} ms,"
        f" TLS 1.2 median {_median_ms(timings['TLSv1.2']):.2f} ms"
    )
    assert warm < cold
