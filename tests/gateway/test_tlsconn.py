"""TLSServerProtocol over real loopback sockets (port 0, every wait bounded), each test on
asyncio's own loop and on uvloop: handshake, its deadline and SNI; echo; half-close in both
directions; flow control both ways; failures. `pytest -s` prints the bulk throughput."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop
from cryptography import x509

from portway.gateway.tls import (
    LocalCA,
    ServerContexts,
    SniRouter,
    certificate_names,
    server_context,
)
from portway.gateway.tlsconn import TLSServerProtocol, TLSTransport

HOST = "test.example"
OTHER = "other.example"
IO_TIMEOUT_S = 5.0
SCENARIO_TIMEOUT_S = 20.0
KIB = 1024
MIB = 1024 * KIB

T = TypeVar("T")


# --- loops, certificates, listeners ---------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """Runs one scenario on a fresh event loop of one kind, bounded as a whole."""

    name: str
    loop_factory: Callable[[], asyncio.AbstractEventLoop]

    def __call__(self, scenario: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=self.loop_factory) as runner:
            return runner.run(asyncio.wait_for(scenario, SCENARIO_TIMEOUT_S))


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop
    return Run(request.param, factory)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server_ctx(ca: LocalCA) -> ssl.SSLContext:
    return server_context(ca.issue([HOST]), ())


@pytest.fixture(scope="module")
def other_ctx(ca: LocalCA) -> ssl.SSLContext:
    return server_context(ca.issue([OTHER]), ())


def client_context(ca_file: Path, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    if maximum is not None:
        context.maximum_version = maximum
    return context


@pytest.fixture(scope="module")
def client_ctx(ca: LocalCA) -> ssl.SSLContext:
    return client_context(ca.cert_path)


@dataclass
class Listener:
    port: int
    accepted: asyncio.Queue[App]

    async def next_app(self) -> App:
        """The app of the next accepted connection (created at accept, before any handshake)."""
        return await asyncio.wait_for(self.accepted.get(), IO_TIMEOUT_S)


@asynccontextmanager
async def listening(
    context: ssl.SSLContext,
    make_app: Callable[[], App],
    *,
    handshake_timeout: float = IO_TIMEOUT_S,
    shutdown_timeout: float = IO_TIMEOUT_S,
) -> AsyncIterator[Listener]:
    """A plain TCP listener on 127.0.0.1:0 whose connections speak TLS through
    TLSServerProtocol, as the gateway's TCP-mode ports will."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Queue[App] = asyncio.Queue()

    def factory() -> TLSServerProtocol:
        app = make_app()
        accepted.put_nowait(app)
        return TLSServerProtocol(
            context, app, handshake_timeout=handshake_timeout, shutdown_timeout=shutdown_timeout
        )

    server = await loop.create_server(factory, "127.0.0.1", 0)
    try:
        yield Listener(server.sockets[0].getsockname()[1], accepted)
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), IO_TIMEOUT_S)


async def wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), IO_TIMEOUT_S)


# --- app protocols --------------------------------------------------------------------------------


class App(asyncio.Protocol):
    """Records what the TLS layer tells it, in order; subclasses decide how to answer."""

    def __init__(self) -> None:
        self.transport: TLSTransport | None = None
        self.events: list[str] = []  # consecutive data_received calls count as one "data"
        self.received = bytearray()
        self.data_calls = 0
        self.lost_exc: Exception | None = None
        self.connected = asyncio.Event()
        self.got_data = asyncio.Event()
        self.got_eof = asyncio.Event()
        self.lost = asyncio.Event()

    @property
    def tls(self) -> TLSTransport:
        assert self.transport is not None
        return self.transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, TLSTransport)
        self.transport = transport
        self.events.append("made")
        self.connected.set()

    def data_received(self, data: bytes) -> None:
        if self.events[-1] != "data":
            self.events.append("data")
        self.received += data
        self.data_calls += 1
        self.got_data.set()

    def eof_received(self) -> bool | None:
        self.events.append("eof")
        self.got_eof.set()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost_exc = exc
        self.lost.set()


class Echo(App):
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # writelines, to cover it; every other app uses write.
        self.tls.writelines([data[:1], memoryview(data)[1:]])

    def eof_received(self) -> bool | None:
        super().eof_received()
        self.tls.close()
        return None


def summary(count: int, digest: str) -> bytes:
    return f"{count} {digest}".encode()


class Digest(App):
    """Answers the byte count and SHA-256 of what it got, only once the client has shut its
    side, then shuts its own: a relay whose backend answers after write_eof."""

    def __init__(self) -> None:
        super().__init__()
        self.hash = hashlib.sha256()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.hash.update(data)

    def eof_received(self) -> bool | None:
        super().eof_received()
        self.tls.write(summary(len(self.received), self.hash.hexdigest()))
        self.tls.write_eof()
        return None


class Producer(App):
    """Sends `total` bytes as fast as flow control allows, then write_eof()."""

    def __init__(self, chunk: bytes, total: int, *, high: int | None = None) -> None:
        super().__init__()
        self.chunk, self.total, self.high = chunk, total, high
        self.sent = 0
        self.paused = False
        self.pauses = self.resumes = 0
        self.buffered_at_pause = 0
        self.limits: tuple[int, int] | None = None
        self.was_paused = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.high is not None:
            self.tls.set_write_buffer_limits(high=self.high, low=self.high // 4)
            self.limits = self.tls.get_write_buffer_limits()
        self.produce()

    def produce(self) -> None:
        while not self.paused and self.sent < self.total:
            self.tls.write(self.chunk)
            self.sent += len(self.chunk)
            if self.sent >= self.total:
                self.tls.write_eof()

    def pause_writing(self) -> None:
        self.pauses += 1
        self.paused = True
        self.buffered_at_pause = self.tls.get_write_buffer_size()
        self.was_paused.set()

    def resume_writing(self) -> None:
        self.resumes += 1
        self.paused = False
        self.produce()


# --- a client that can half-close -----------------------------------------------------------------


class BioClient:
    """A TLS client over a plain stream that does what asyncio's SSL transport cannot: send
    close_notify and read on. Like TLSServerProtocol it decrypts every record as soon as it
    has it, so SSL_shutdown never finds a whole one (see tlsconn's docstring)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        context: ssl.SSLContext,
        server_hostname: str,
    ) -> None:
        self.reader, self.writer = reader, writer
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self._in, self._out, server_hostname=server_hostname)
        self.received = bytearray()
        self.ended: str | None = None  # "close_notify", or "eof" for a bare TCP FIN

    @classmethod
    async def connect(
        cls, port: int, context: ssl.SSLContext, *, send_finished: bool = True
    ) -> BioClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), IO_TIMEOUT_S
        )
        client = cls(reader, writer, context, HOST)
        await client.handshake(send_finished=send_finished)
        return client

    async def handshake(self, *, send_finished: bool) -> None:
        """With send_finished=False our last flight waits for the next send, so data (and
        close_notify) can reach the server in the same segment as the handshake's end."""
        while True:
            try:
                self.ssl.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._send_pending()
                if not await self._fill():
                    raise ConnectionError("the server closed during the handshake") from None
        if send_finished:
            self._send_pending()

    async def send(self, data: bytes) -> None:
        for start in range(0, len(data), 256 * KIB):
            self.ssl.write(data[start : start + 256 * KIB])
            self._send_pending()
            await asyncio.wait_for(self.writer.drain(), IO_TIMEOUT_S)

    async def send_close_notify(self) -> None:
        self._decrypt()  # no whole record may wait in the BIO when SSL_shutdown reads
        # SSLWantReadError: sent, and the server's close_notify has not come yet.
        with contextlib.suppress(ssl.SSLWantReadError):
            self.ssl.unwrap()
        self._send_pending()
        await asyncio.wait_for(self.writer.drain(), IO_TIMEOUT_S)

    async def receive(self, count: int) -> bytes:
        while len(self.received) < count and self.ended is None:
            self._decrypt()
            if len(self.received) < count and self.ended is None:
                await self._fill()
        return bytes(self.received[:count])

    async def receive_until_end(self) -> tuple[bytes, str]:
        """Everything the server sends until it shuts its side, and how it did."""
        while True:
            self._decrypt()
            if self.ended is not None:
                return bytes(self.received), self.ended
            await self._fill()

    async def tcp_rest(self) -> bytes:
        """What follows at the TCP level: b"" once the server has closed."""
        with contextlib.suppress(ConnectionResetError):
            return await asyncio.wait_for(self.reader.read(), IO_TIMEOUT_S)
        return b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(self.writer.wait_closed(), IO_TIMEOUT_S)

    def _send_pending(self) -> None:
        if self._out.pending:
            self.writer.write(self._out.read())

    async def _fill(self) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(256 * KIB), IO_TIMEOUT_S)
        except ConnectionResetError:
            data = b""
        if not data:
            self.ended = self.ended or "eof"
            return False
        self._in.write(data)
        return True

    def _decrypt(self) -> None:
        try:
            while chunk := self.ssl.read(64 * KIB):
                self.received += chunk
            self.ended = "close_notify"  # read() returns b"" at close_notify
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:  # close_notify after ours
            self.ended = "close_notify"
        self._send_pending()


async def open_tls(
    port: int, context: ssl.SSLContext, server_hostname: str = HOST
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client on the loop's own SSL transport: what most clients look like."""
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=server_hostname),
        IO_TIMEOUT_S,
    )


async def close_tls(writer: asyncio.StreamWriter) -> None:
    """Sends close_notify and waits for the server's. (TimeoutError is an OSError: not
    suppressed, so a server that never answers fails the test.)"""
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await asyncio.wait_for(writer.wait_closed(), IO_TIMEOUT_S)


# --- echo -----------------------------------------------------------------------------------------


def test_echo_is_byte_exact_and_the_transport_describes_the_connection(
    run: Run, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    payload = os.urandom(64 * KIB)

    async def scenario() -> tuple[bytes, App, dict[str, Any], Any]:
        async with listening(server_ctx, Echo) as listener:
            reader, writer = await open_tls(listener.port, client_ctx)
            app = await listener.next_app()
            writer.write(payload)
            await asyncio.wait_for(writer.drain(), IO_TIMEOUT_S)
            echoed = await asyncio.wait_for(reader.readexactly(len(payload)), IO_TIMEOUT_S)
            info = {
                name: app.tls.get_extra_info(name)
                for name in ("ssl_object", "sslcontext", "cipher", "peercert", "peername")
            }
            info["socket"] = app.tls.get_extra_info("socket")
            info["missing"] = app.tls.get_extra_info("no such thing", "fallback")
            client_address = writer.get_extra_info("sockname")
            await close_tls(writer)  # close_notify; Echo closes in turn
            await wait(app.lost)
            return echoed, app, info, client_address

    echoed, app, info, client_address = run(scenario())

    assert echoed == payload
    assert app.events == ["made", "data", "eof", "lost"]
    assert app.lost_exc is None
    assert isinstance(info["ssl_object"], ssl.SSLObject)
    assert info["ssl_object"].version() == "TLSv1.3"
    assert info["sslcontext"] is server_ctx
    assert info["cipher"][1] == "TLSv1.3"
    assert info["peercert"] is None  # no client certificates here
    assert tuple(info["peername"]) == tuple(client_address)
    assert info["socket"] is not None
    assert info["missing"] == "fallback"


# --- half-close -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "expected_version"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
    ids=["tls1.2", "tls1.3"],
)
def test_the_reply_to_a_client_close_notify_still_arrives(
    run: Run,
    ca: LocalCA,
    server_ctx: ssl.SSLContext,
    version: ssl.TLSVersion,
    expected_version: str,
) -> None:
    """The key behaviour: the client ends its side, the app answers only then, and the client
    gets the whole answer, then our close_notify, then the TCP close."""
    payload = os.urandom(64 * KIB)
    context = client_context(ca.cert_path, maximum=version)

    async def scenario() -> tuple[bytes, str, bytes, Digest, str | None]:
        async with listening(server_ctx, Digest) as listener:
            client = await BioClient.connect(listener.port, context)
            app = await listener.next_app()
            await client.send(payload)
            await client.send_close_notify()
            reply, ended = await client.receive_until_end()
            rest = await client.tcp_rest()
            await wait(app.lost)
            await client.close()
            assert isinstance(app, Digest)
            return reply, ended, rest, app, client.ssl.version()

    reply, ended, rest, app, negotiated = run(scenario())

    assert negotiated == expected_version
    assert reply == summary(len(payload), hashlib.sha256(payload).hexdigest())
    assert ended == "close_notify"
    assert rest == b""  # and then the server closed the connection
    assert app.events == ["made", "data", "eof", "lost"]
    assert app.lost_exc is None


class GreetsThenListens(App):
    """Shuts its side first, in connection_made, and reads on."""

    def __init__(self) -> None:
        super().__init__()
        self.write_after_eof: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.tls.write(b"hello")
        self.tls.write_eof()
        self.tls.write_eof()  # idempotent
        try:
            self.tls.write(b"too late")
        except RuntimeError as exc:
            self.write_after_eof = exc


def test_after_our_close_notify_the_client_data_still_arrives(
    run: Run, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    payload = os.urandom(64 * KIB)

    async def scenario() -> tuple[bytes, str, bytes, GreetsThenListens, bool]:
        async with listening(server_ctx, GreetsThenListens) as listener:
            client = await BioClient.connect(listener.port, client_ctx)
            app = await listener.next_app()
            greeting, ended = await client.receive_until_end()
            still_open = not app.lost.is_set()
            await client.send(payload)
            await client.send_close_notify()
            await wait(app.lost)
            rest = await client.tcp_rest()
            await client.close()
            assert isinstance(app, GreetsThenListens)
            return greeting, ended, rest, app, still_open

    greeting, ended, rest, app, still_open = run(scenario())

    assert (greeting, ended) == (b"hello", "close_notify")
    assert still_open
    assert bytes(app.received) == payload
    assert app.events == ["made", "data", "eof", "lost"]
    assert app.lost_exc is None
    assert isinstance(app.write_after_eof, RuntimeError)
    assert rest == b""


def test_a_fin_without_close_notify_is_one_eof(
    run: Run, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    """Many clients skip close_notify; a relay passes their FIN on like a TCP proxy would."""
    payload = os.urandom(16 * KIB)

    async def scenario() -> tuple[bytes, str, App]:
        async with listening(server_ctx, Digest) as listener:
            client = await BioClient.connect(listener.port, client_ctx)
            app = await listener.next_app()
            await client.send(payload)
            client.writer.write_eof()  # TCP FIN, no close_notify
            reply, ended = await client.receive_until_end()
            await wait(app.lost)
            await client.close()
            return reply, ended, app

    reply, ended, app = run(scenario())

    assert reply == summary(len(payload), hashlib.sha256(payload).hexdigest())
    assert ended == "close_notify"
    assert app.events == ["made", "data", "eof", "lost"]


class SaysByeAndCloses(App):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.tls.write(b"bye")
        self.tls.close()


def test_close_waits_for_the_peer_but_only_until_the_shutdown_deadline(
    run: Run, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async def scenario() -> tuple[bytes, str, App, App, float]:
        async with listening(server_ctx, SaysByeAndCloses, shutdown_timeout=0.3) as listener:
            # A polite client answers our close_notify with its own: closed at once.
            polite = await BioClient.connect(listener.port, client_ctx)
            polite_app = await listener.next_app()
            await polite.receive_until_end()
            await polite.send_close_notify()
            await wait(polite_app.lost)
            await polite.close()
            # A silent one keeps sending and never ends its side: dropped at the deadline,
            # and what it sent after our close() never reaches the app.
            silent = await BioClient.connect(listener.port, client_ctx)
            silent_app = await listener.next_app()
            started = time.perf_counter()
            bye, ended = await silent.receive_until_end()
            await silent.send(b"late")
            await wait(silent_app.lost)
            waited = time.perf_counter() - started
            await silent.tcp_rest()
            await silent.close()
            return bye, ended, polite_app, silent_app, waited

    bye, ended, polite_app, silent_app, waited = run(scenario())

    assert (bye, ended) == (b"bye", "close_notify")
    assert polite_app.events == ["made", "lost"]
    assert silent_app.events == ["made", "lost"]  # no "data": we had closed
    assert silent_app.lost_exc is None
    assert 0.2 <= waited < IO_TIMEOUT_S


# --- handshake --------------------------------------------------------------------------------


def test_a_client_that_never_finishes_its_handshake_is_dropped_at_the_deadline(
    run: Run, server_ctx: ssl.SSLContext
) -> None:
    deadline = 0.3

    async def stall(port: int, first_bytes: bytes) -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(first_bytes)
        started = time.perf_counter()
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), IO_TIMEOUT_S) == b""
        waited = time.perf_counter() - started
        writer.close()
        return waited

    async def scenario() -> tuple[list[float], list[App]]:
        async with listening(server_ctx, App, handshake_timeout=deadline) as listener:
            waits = await asyncio.gather(
                stall(listener.port, b""),  # connects and says nothing
                stall(listener.port, b"\x16\x03\x01\x02\x00"),  # the start of a ClientHello
            )
            apps = [await listener.next_app(), await listener.next_app()]
            return list(waits), apps

    waits, apps = run(scenario())

    for waited in waits:
        assert deadline - 0.05 <= waited < deadline + 1.0
    assert [app.events for app in apps] == [[], []]  # never connected


def test_sni_picks_the_certificate_and_an_unknown_name_fails_quietly(
    run: Run,
    server_ctx: ssl.SSLContext,
    other_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="portway.gateway.tlsconn")
    contexts = ServerContexts(
        default=server_ctx, exact={HOST: server_ctx, OTHER: other_ctx}, wildcard={}, alpn=()
    )
    router = SniRouter(contexts, reject_unknown=True)

    async def connect(port: int, name: str) -> tuple[tuple[str, ...], bytes]:
        reader, writer = await open_tls(port, client_ctx, name)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.write(b"ping")
        echoed = await asyncio.wait_for(reader.readexactly(4), IO_TIMEOUT_S)
        await close_tls(writer)
        return certificate_names(x509.load_der_x509_certificate(der)), echoed

    async def scenario() -> tuple[dict[str, Any], list[App], BaseException | None]:
        seen: dict[str, Any] = {}
        async with listening(router.context, Echo) as listener:
            for name in (HOST, OTHER):
                seen[name] = await connect(listener.port, name)
                app = await listener.next_app()
                await wait(app.lost)
                seen[name] += (app.tls.get_extra_info("sslcontext"),)
            refused: BaseException | None = None
            try:
                await connect(listener.port, "unknown.example")
            except ssl.SSLError as exc:
                refused = exc
            unknown_app = await listener.next_app()
            await asyncio.sleep(0.05)  # let the server side finish closing
            return seen, [unknown_app], refused

    seen, (unknown_app,), refused = run(scenario())

    assert seen[HOST] == ((HOST,), b"ping", server_ctx)
    assert seen[OTHER] == ((OTHER,), b"ping", other_ctx)
    assert refused is not None and "UNRECOGNIZED_NAME" in str(refused)
    assert unknown_app.events == []
    mine = [r for r in caplog.records if r.name == "portway.gateway.tlsconn"]
    assert mine and all(r.levelno == logging.DEBUG for r in mine)
    assert any("handshake" in r.getMessage() for r in mine)


def test_a_corrupt_record_aborts_and_reports_the_error(
    run: Run, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async def scenario() -> App:
        async with listening(server_ctx, App) as listener:
            client = await BioClient.connect(listener.port, client_ctx)
            app = await listener.next_app()
            await client.send(b"fine")
            await wait(app.got_data)
            client.writer.write(b"\x17\x03\x03\x00\x20" + bytes(32))  # application data, bad MAC
            await wait(app.lost)
            await client.tcp_rest()
            await client.close()
            return app

    app = run(scenario())

    assert app.events == ["made", "data", "lost"]
    assert isinstance(app.lost_exc, ssl.SSLError)


# --- flow control ---------------------------------------------------------------------------------


def test_write_pressure_reaches_the_app_and_everything_arrives(
    run: Run, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    chunk, total, high = os.urandom(256 * KIB), 8 * MIB, 64 * KIB
    expected = hashlib.sha256(chunk * (total // len(chunk))).hexdigest()

    async def scenario() -> tuple[int, str, str, Producer]:
        async with listening(server_ctx, lambda: Producer(chunk, total, high=high)) as listener:
            client = await BioClient.connect(listener.port, client_ctx)
            app = await listener.next_app()
            assert isinstance(app, Producer)
            await wait(app.was_paused)  # the client has not read a byte yet
            received, ended = await client.receive_until_end()
            await client.send_close_notify()
            await wait(app.lost)
            await client.close()
            return len(received), hashlib.sha256(received).hexdigest(), ended, app

    count, digest, ended, app = run(scenario())

    assert (count, digest, ended) == (total, expected, "close_notify")
    assert app.limits == (high // 4, high)
    assert app.pauses >= 1 and app.resumes >= 1
    assert app.buffered_at_pause > high
    assert app.events == ["made", "eof", "lost"]


class PausesAtOnce(App):
    def __init__(self) -> None:
        super().__init__()
        self.reading: list[bool] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.tls.pause_reading()
        self.reading.append(self.tls.is_reading())


def test_pause_reading_holds_back_plaintext_already_decrypted(
    run: Run, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    """Data and close_notify ride in the same segment as the client's Finished, so they are
    decrypted with the handshake, before the app pauses; they must wait for resume_reading."""
    payload = os.urandom(32 * KIB)

    async def scenario() -> tuple[PausesAtOnce, list[str], int, bytes]:
        async with listening(server_ctx, PausesAtOnce) as listener:
            client = await BioClient.connect(listener.port, client_ctx, send_finished=False)
            client.ssl.write(payload)
            await client.send_close_notify()  # Finished, data and close_notify in one write
            app = await listener.next_app()
            assert isinstance(app, PausesAtOnce)
            await wait(app.connected)
            await asyncio.sleep(0.2)
            while_paused = list(app.events)
            app.tls.resume_reading()
            app.reading.append(app.tls.is_reading())
            await wait(app.got_eof)
            app.tls.close()
            await wait(app.lost)
            _, ended = await client.receive_until_end()
            assert ended == "close_notify"
            rest = await client.tcp_rest()
            await client.close()
            return app, while_paused, app.data_calls, rest

    app, while_paused, data_calls, rest = run(scenario())

    assert while_paused == ["made"]
    assert app.reading == [False, True]
    assert bytes(app.received) == payload
    assert app.events == ["made", "data", "eof", "lost"]
    assert data_calls >= 1
    assert rest == b""


class PausesOnFirstData(App):
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.data_calls == 1:
            self.tls.pause_reading()


def test_pause_reading_stops_data_until_resume(
    run: Run, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    payload = os.urandom(1 * MIB)

    async def scenario() -> tuple[App, int]:
        async with listening(server_ctx, PausesOnFirstData) as listener:
            client = await BioClient.connect(listener.port, client_ctx)
            app = await listener.next_app()
            sending = asyncio.ensure_future(client.send(payload))
            await wait(app.got_data)
            await asyncio.sleep(0.2)
            calls_while_paused = app.data_calls
            app.tls.resume_reading()
            await asyncio.wait_for(sending, IO_TIMEOUT_S)
            await client.send_close_notify()
            await wait(app.got_eof)
            app.tls.close()
            await wait(app.lost)
            await client.close()
            return app, calls_while_paused

    app, calls_while_paused = run(scenario())

    assert calls_while_paused == 1
    assert bytes(app.received) == payload
    assert app.events == ["made", "data", "eof", "lost"]


# --- throughput -----------------------------------------------------------------------------------


class Sink(App):
    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        self.count = 0
        self.done = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.count += len(data)
        if self.count >= self.total:
            self.done.set()

    def eof_received(self) -> bool | None:
        self.tls.close()
        return None


def test_bulk_transfer_prints_throughput(
    run: Run, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    """32 MiB each way through one loop (client and server share the CPU, so the figure is
    a floor for the server alone). Informational: nothing is asserted about speed."""
    total = 32 * MIB
    chunk = os.urandom(256 * KIB)

    async def upload(port: int, listener: Listener) -> float:
        _, writer = await open_tls(port, client_ctx)
        app = await listener.next_app()
        assert isinstance(app, Sink)
        started = time.perf_counter()
        for _ in range(total // len(chunk)):
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), IO_TIMEOUT_S)
        await wait(app.done)
        elapsed = time.perf_counter() - started
        assert app.count == total
        await close_tls(writer)
        return elapsed

    async def download(port: int, listener: Listener) -> float:
        started = time.perf_counter()
        reader, writer = await open_tls(port, client_ctx)
        count = 0
        while data := await asyncio.wait_for(reader.read(256 * KIB), IO_TIMEOUT_S):
            count += len(data)
        elapsed = time.perf_counter() - started
        assert count == total
        await close_tls(writer)
        return elapsed

    async def scenario() -> tuple[float, float]:
        async with listening(server_ctx, lambda: Sink(total)) as listener:
            up = await upload(listener.port, listener)
        async with listening(server_ctx, lambda: Producer(chunk, total)) as listener:
            down = await download(listener.port, listener)
        return up, down

    up, down = run(scenario())

    mb = total / 1e6
    print(
        f"\n[{run.name}] TLS relay leg, 32 MiB: client->server {mb / up:.0f} MB/s,"
        f" server->client {mb / down:.0f} MB/s"
    )
