"""Server-side TLS over a plain asyncio transport, with half-close.

Why not asyncio's own SSL transport
-----------------------------------
TCP-mode ports terminate TLS and relay plaintext to a backend. A relay must pass a half-close
through: the client sends close_notify, the backend gets `write_eof()`, answers, closes, and its
last bytes still reach the client, followed by our close_notify. asyncio's SSL transport (and
uvloop's) cannot: `write_eof()` raises NotImplementedError and a peer's close_notify tears the
whole connection down. So the listener creates a `TLSServerProtocol` per plain TCP connection;
it runs OpenSSL over two `ssl.MemoryBIO`s and hands the app protocol a `TLSTransport`.

HTTPS ports (HTTP mode) use it too, for speed: under `wrk -c64` it cost less CPU per request
than uvloop's TLS (same-minute A/B, user time 40.7 -> 36.7 µs). One TLS stack also means one
set of deadlines and one behaviour at close for every public port.

Theory of operation
-------------------
* Handshake: bytes from the client go into the incoming BIO and `do_handshake()` runs until it
  stops asking for more. A deadline (`handshake_timeout`) aborts clients that never finish; a
  failed handshake (no shared cipher, an alert from the SNI callback) flushes OpenSSL's alert
  and closes quietly. The app sees `connection_made` only once the handshake is done.
* The two directions shut independently:
  - the peer's: its close_notify, or a bare TCP FIN (truncation, which relays treat as EOF as a
    plain TCP proxy would), reaches the app as one `eof_received()`; our side stays writable;
  - ours: `write_eof()` sends close_notify and keeps reading, so bytes the peer sends afterwards
    still arrive.
  When both are shut, the plain transport is closed.
* Never a whole record in the incoming BIO when we send close_notify. `SSLObject.unwrap()`
  calls SSL_shutdown twice, and the second call reads: an application-data record it finds
  fails the connection (APPLICATION_DATA_AFTER_CLOSE_NOTIFY). Partial records are safe. So
  every record is decrypted as soon as it arrives, even while the app has paused reading (the
  plaintext waits in `_pending`), and plaintext is delivered only after the BIO is drained.
* `close()` sends close_notify and then waits, at most `shutdown_timeout`, for the peer to end
  its side, reading and dropping whatever it still sends: closing a socket with unread bytes
  makes the kernel answer with a RST, which can destroy our last bytes still in flight. The same
  deadline bounds flushing once the plain transport is closing, so a peer that stops reading
  cannot hold a connection.
* Flow control: the plain transport's pause/resume_writing go to the app; the app's
  pause_reading pauses the plain transport, and plaintext already decrypted waits until
  resume_reading.

Hot path: `data_received` is one BIO write, SSL_read per record, one join, one
`data_received` to the app and at most one plain `write`; `write` is one SSL_write and one
plain `write`. No logging there.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Iterable
from typing import Any, Final, cast

_log = logging.getLogger(__name__)

# The largest plaintext one TLS record can carry (RFC 8446 §5.1), and SSL_read never returns
# more than one record. Asking for more only costs: `SSLObject.read(n)` allocates n bytes and
# shrinks them, and at 256 KiB glibc serves that with mmap/munmap on every call, which measured
# at a third of the throughput of this size.
_RECORD_SIZE: Final = 16 * 1024


class TLSServerProtocol(asyncio.Protocol):
    """The protocol of one accepted plain TCP connection: terminates TLS (server side) and
    drives `app` through a `TLSTransport` once the handshake is done.

    `context` may switch `connection.context` in its `sni_callback`; that keeps working.
    """

    __slots__ = (
        "_app",
        "_app_paused",
        "_closing",
        "_eof_delivered",
        "_eof_sent",
        "_error",
        "_handshake_timeout",
        "_incoming",
        "_loop",
        "_lost",
        "_outgoing",
        "_peer_closed",
        "_pending",
        "_raw",
        "_raw_closed",
        "_shutdown_timeout",
        "_sslobj",
        "_timer",
        "_transport",
        "_write_paused",
    )

    _raw: asyncio.Transport
    _loop: asyncio.AbstractEventLoop

    def __init__(
        self,
        context: ssl.SSLContext,
        app: asyncio.Protocol,
        *,
        handshake_timeout: float,
        shutdown_timeout: float,
    ) -> None:
        self._app = app
        self._handshake_timeout = handshake_timeout
        self._shutdown_timeout = shutdown_timeout
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        # Set once the handshake is done; until then the app knows nothing of this connection.
        self._transport: TLSTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pending: list[bytes] = []  # decrypted while the app had paused reading
        self._error: Exception | None = None  # why we aborted, for app.connection_lost
        self._peer_closed = False  # the peer's direction is shut (close_notify or FIN)
        self._eof_delivered = False  # app.eof_received() was called
        self._eof_sent = False  # our close_notify is written: our direction is shut
        self._closing = False  # the app closed or aborted: no more deliveries or writes
        self._raw_closed = False  # the plain transport was closed or aborted
        self._lost = False  # the plain transport reported connection_lost
        self._app_paused = False  # the app called pause_reading()
        self._write_paused = False  # the plain transport asked us to stop writing

    # --- the plain transport's side ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        # The client speaks first: data_received runs the handshake.
        self._timer = self._loop.call_later(self._handshake_timeout, self._on_handshake_timeout)

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            self._handshake(data)
            return
        if self._peer_closed:
            return  # nothing may follow the peer's close_notify
        self._incoming.write(data)
        try:
            plain = self._decrypt()
        except ssl.SSLError as exc:  # a bad record MAC, an alert from the peer
            self._fail(exc)
            return
        if plain:
            if self._closing:
                pass  # the app is gone; we only read on to reach the peer's close_notify
            elif self._app_paused or self._pending:
                self._pending.append(plain)
            else:
                self._app.data_received(plain)
        if self._peer_closed:
            self._on_peer_closed()

    def eof_received(self) -> bool:
        if self._transport is None:
            return False  # a FIN mid-handshake: let the plain transport close
        if not self._peer_closed:
            # A FIN without close_notify. A relay cannot tell truncation from a client that
            # skips close_notify (many do), and a plain TCP proxy would pass the FIN on too.
            self._peer_closed = True
            self._on_peer_closed()
        return True  # keep our direction open until we shut it

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = self._closing = self._raw_closed = True
        self._cancel_timer()
        self._pending.clear()
        if self._transport is not None:
            self._app.connection_lost(exc if exc is not None else self._error)

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._transport is not None and not self._lost:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._transport is not None and not self._lost:
            self._app.resume_writing()

    # --- handshake --------------------------------------------------------------------------------

    def _handshake(self, data: bytes) -> None:
        if self._raw_closed:
            return
        self._incoming.write(data)
        try:
            self._sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError as exc:  # no shared cipher, an alert from sni_callback, garbage
            self._handshake_failed(exc)
            return
        self._cancel_timer()
        try:
            # The client may have sent data, even close_notify, right behind its Finished.
            # Decrypt it before the app can call write_eof() (see the module docstring). This
            # also flushes our last flight and TLS 1.3 session tickets.
            plain = self._decrypt()
        except ssl.SSLError as exc:
            self._handshake_failed(exc)
            return
        if plain:
            self._pending.append(plain)
        self._transport = TLSTransport(self)
        self._app.connection_made(self._transport)
        if self._write_paused:
            self._app.pause_writing()
        self._drain()

    def _handshake_failed(self, exc: ssl.SSLError) -> None:
        _log.debug("TLS handshake from %s failed: %s", self._peer(), exc)
        self._flush()  # OpenSSL's alert tells the client why
        self._close_raw()

    def _on_handshake_timeout(self) -> None:
        self._timer = None
        _log.debug("TLS handshake from %s timed out", self._peer())
        self._raw_closed = True
        self._raw.abort()

    def _peer(self) -> Any:
        return self._raw.get_extra_info("peername")

    # --- reading ----------------------------------------------------------------------------------

    def _decrypt(self) -> bytes:
        """All plaintext in the complete records the incoming BIO holds; sets `_peer_closed` at
        the peer's close_notify. Raises ssl.SSLError when the stream is corrupt."""
        sslobj, incoming = self._sslobj, self._incoming
        read = sslobj.read
        chunks: list[bytes] = []
        try:
            while True:
                chunk = read(_RECORD_SIZE)
                if not chunk:  # close_notify while our side is still open
                    self._peer_closed = True
                    break
                chunks.append(chunk)
                # Nothing left to decrypt: stop here rather than read again to be told so by
                # SSLWantReadError, an exception raised and caught on every read otherwise.
                if not incoming.pending and not sslobj.pending():
                    break
        except ssl.SSLWantReadError:
            pass  # a partial record at most is left, which is safe (see the module docstring)
        except ssl.SSLZeroReturnError:  # close_notify after ours
            self._peer_closed = True
        if self._outgoing.pending:  # what reading produced: alerts, a KeyUpdate answer
            self._raw.write(self._outgoing.read())
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    def _on_peer_closed(self) -> None:
        if self._closing:
            # The app closed first and we were reading on only to reach this point.
            self._close_raw()
        elif not (self._app_paused or self._pending):
            self._deliver_eof()

    def _deliver_eof(self) -> None:
        self._eof_delivered = True
        # The return value does not matter: the connection stays open for our writes until
        # the app calls write_eof() or close().
        self._app.eof_received()
        if self._eof_sent and not self._raw_closed:
            self._close_raw()  # both directions shut

    def _drain(self) -> None:
        """Delivers what waited while the app had paused reading, in order, stopping as soon
        as the app pauses again or closes."""
        pending = self._pending
        while pending and not (self._app_paused or self._closing):
            self._app.data_received(pending.pop(0))
        if self._peer_closed and not (
            pending or self._eof_delivered or self._app_paused or self._closing
        ):
            self._deliver_eof()

    # --- the app's side (called through TLSTransport) ---------------------------------------------

    def _write(self, data: bytes | bytearray | memoryview[Any]) -> None:
        if self._closing or self._eof_sent:
            if self._closing:
                return  # closed, aborted or lost: dropped, as asyncio's transports do
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        try:
            # Memory BIOs never block, so SSL_write takes all of `data` at once.
            self._sslobj.write(data)
        except ssl.SSLError as exc:
            self._fail(exc)
            return
        self._raw.write(self._outgoing.read())

    def _write_eof(self) -> None:
        if self._eof_sent or self._closing:
            return
        self._send_close_notify()
        if self._eof_delivered and not self._raw_closed:
            self._close_raw()  # both directions shut

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._pending.clear()
        if not self._eof_sent:
            self._send_close_notify()
        if self._raw_closed:
            return  # sending failed and aborted
        if self._peer_closed:
            self._close_raw()
            return
        # Read on (dropping the data) until the peer ends its side, bounded.
        if self._app_paused:
            self._raw.resume_reading()
        self._arm(self._on_shutdown_timeout)

    def _abort(self) -> None:
        self._closing = self._raw_closed = True
        self._pending.clear()
        self._cancel_timer()
        self._raw.abort()

    def _pause_reading(self) -> None:
        if self._app_paused or self._closing:
            return
        self._app_paused = True
        if not self._raw_closed:
            self._raw.pause_reading()

    def _resume_reading(self) -> None:
        if not self._app_paused or self._closing:
            return
        self._app_paused = False
        if not self._raw_closed:
            self._raw.resume_reading()
        if self._pending or (self._peer_closed and not self._eof_delivered):
            # Not from inside resume_reading(): the app may be in the middle of its own callback.
            self._loop.call_soon(self._drain)

    def _extra_info(self, name: str, default: Any) -> Any:
        sslobj = self._sslobj
        if name == "ssl_object":
            return sslobj
        if name == "sslcontext":
            return sslobj.context  # the one the SNI callback chose, if it switched
        if name == "cipher":
            return sslobj.cipher()
        if name == "peercert":
            return sslobj.getpeercert()
        if name == "compression":
            return sslobj.compression()
        return self._raw.get_extra_info(name, default)

    # --- shutting down ----------------------------------------------------------------------------

    def _send_close_notify(self) -> None:
        self._eof_sent = True
        try:
            self._sslobj.unwrap()
        except ssl.SSLWantReadError:
            pass  # sent; the peer's close_notify has not come yet, and we read on
        except ssl.SSLError as exc:
            self._fail(exc)
            return
        self._flush()

    def _close_raw(self) -> None:
        """Closes the plain transport after it has flushed, but no later than the deadline."""
        self._raw_closed = True
        self._raw.close()
        self._arm(self._on_shutdown_timeout)

    def _on_shutdown_timeout(self) -> None:
        self._timer = None
        self._raw_closed = True
        self._raw.abort()

    def _fail(self, exc: Exception) -> None:
        _log.debug("TLS connection from %s failed: %s", self._peer(), exc)
        if self._error is None:
            self._error = exc
        self._abort()

    def _flush(self) -> None:
        if self._outgoing.pending:
            self._raw.write(self._outgoing.read())

    def _arm(self, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        if not self._lost:
            self._timer = self._loop.call_later(self._shutdown_timeout, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class TLSTransport(asyncio.Transport):
    """What the app protocol writes to: plaintext in, TLS records out on the plain transport.

    `write_eof()` sends close_notify and keeps reading. `get_extra_info` answers `ssl_object`,
    `sslcontext` (the context the SNI callback chose), `cipher`, `peercert` and `compression`,
    and passes every other name (`peername`, `sockname`, `socket`) to the plain transport.
    Write buffer sizes and limits are the plain transport's, so they count TLS records.
    """

    __slots__ = ("_tls",)

    def __init__(self, tls: TLSServerProtocol) -> None:
        super().__init__()
        self._tls = tls

    def write(self, data: bytes | bytearray | memoryview[Any]) -> None:
        self._tls._write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview[Any]]) -> None:
        # One SSL_write makes full records where many small writes would each make their own.
        self._tls._write(b"".join(list_of_data))

    def write_eof(self) -> None:
        self._tls._write_eof()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self._tls._close()

    def abort(self) -> None:
        self._tls._abort()

    def is_closing(self) -> bool:
        return self._tls._closing or self._tls._raw_closed

    def pause_reading(self) -> None:
        self._tls._pause_reading()

    def resume_reading(self) -> None:
        self._tls._resume_reading()

    def is_reading(self) -> bool:
        return not (self._tls._app_paused or self._tls._closing)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._tls._extra_info(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._tls._raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._tls._raw.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._tls._raw.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        if not isinstance(protocol, asyncio.Protocol):
            raise TypeError(f"TLSTransport drives an asyncio.Protocol, not {protocol!r}")
        self._tls._app = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._tls._app
