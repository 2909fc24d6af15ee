"""A counting HTTP/1.1 instance for the gateway's framing acceptance test (test_framing.py).

Theory of operation: the gateway sits between a client sending hostile bytes and this backend.
The backend parses what the gateway forwards with h11 plus the checks h11 leaves out (see
`strict_head_problem`), so anything the gateway lets through that a second, stricter parser
would read differently shows up as a protocol error here instead of a silent desync. Every
complete request gets a sequence number, is recorded, and is answered `200` with
`X-Backend-Seq: <n>`; the client side of the test matches those numbers against what the
backend recorded, so a request the gateway forwarded but the client never saw an answer for (or
the reverse) is visible.

Plain sockets and one thread per connection: the test is synchronous and the backend must not
share an event loop with the gateway under test. Every blocking call has a timeout.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from dataclasses import dataclass, field
from types import TracebackType

import h11

ACCEPT_POLL_S = 0.2
IDLE_TIMEOUT_S = 10.0
JOIN_TIMEOUT_S = 2.0
MAX_HEAD_BYTES = 1024 * 1024  # the gateway's limits are under test, not ours
RECV_BYTES = 65536

_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSIONS = (b"HTTP/1.0", b"HTTP/1.1")


@dataclass(frozen=True)
class Received:
    """One complete request as the backend saw it (values as h11 decoded them)."""

    seq: int
    method: bytes
    target: bytes
    http_version: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header_values(self, name: bytes) -> list[bytes]:
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]


def strict_head_problem(head: bytes) -> str | None:
    """What h11 tolerates but a gateway must never forward: bare CR or LF line endings,
    obs-fold, separators other than one SP, versions other than 1.0/1.1. `head` is the raw
    request head including the blank line. None when the head is clean."""
    if not head.endswith(b"\r\n\r\n"):
        return "head does not end with CRLF CRLF"
    lines = head[:-4].split(b"\r\n")
    for line in lines:
        if b"\r" in line or b"\n" in line:
            return f"bare CR or LF in line {line[:80]!r}"
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        return f"request line is not `method SP target SP version`: {lines[0][:120]!r}"
    if parts[2] not in _VERSIONS:
        return f"version {parts[2][:20]!r} forwarded"
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            return f"obs-fold forwarded: {line[:80]!r}"
        name, colon, _ = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            return f"field line with a bad name: {line[:80]!r}"
    return None


@dataclass
class _Partial:
    request: h11.Request
    body: bytearray = field(default_factory=bytearray)


class CountingBackend:
    """A real HTTP/1.1 server on 127.0.0.1, port 0, in background threads.

    `.count` is the number of complete requests answered so far (the last sequence number),
    `.errors` the number of connections closed because what arrived was malformed,
    `.aborted` the number closed by the peer in the middle of a request (a gateway aborting an
    upstream request it has started to stream is not a framing error, so it is kept apart).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._error_log: list[str] = []
        self._aborted_log: list[str] = []
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._workers: list[threading.Thread] = []
        self._open: set[socket.socket] = set()
        self._address: tuple[str, int] | None = None

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        if self._listener is not None:
            raise RuntimeError("CountingBackend already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        listener.settimeout(ACCEPT_POLL_S)
        host, port = listener.getsockname()[:2]
        self._listener = listener
        self._address = (str(host), int(port))
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="counting-backend-accept", daemon=True
        )
        self._acceptor.start()
        return self._address

    @property
    def address(self) -> tuple[str, int]:
        if self._address is None:
            raise RuntimeError("CountingBackend not started")
        return self._address

    def close(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            still_open = list(self._open)
        for sock in still_open:
            _shutdown(sock)
        if self._acceptor is not None:
            self._acceptor.join(JOIN_TIMEOUT_S)
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(JOIN_TIMEOUT_S)

    def __enter__(self) -> CountingBackend:
        if self._listener is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- observations -----------------------------------------------------------------------

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._requests)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def errors(self) -> int:
        with self._lock:
            return len(self._error_log)

    @property
    def error_log(self) -> list[str]:
        with self._lock:
            return list(self._error_log)

    @property
    def aborted(self) -> int:
        with self._lock:
            return len(self._aborted_log)

    @property
    def aborted_log(self) -> list[str]:
        with self._lock:
            return list(self._aborted_log)

    # --- serving ----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # listener closed
            sock.settimeout(IDLE_TIMEOUT_S)
            worker = threading.Thread(
                target=self._serve, args=(sock,), name="counting-backend-conn", daemon=True
            )
            with self._lock:
                self._open.add(sock)
                self._workers = [w for w in self._workers if w.is_alive()]
                self._workers.append(worker)
            worker.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            self._serve_connection(sock)
        except (OSError, h11.LocalProtocolError):
            pass  # the gateway went away while we answered; nothing to record
        finally:
            with self._lock:
                self._open.discard(sock)
            _shutdown(sock)

    def _serve_connection(self, sock: socket.socket) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        # `window` holds the bytes h11 has not consumed yet (a suffix of everything received),
        # so the raw head of each request can be cut out of it for the strict checks.
        window = bytearray()
        partial: _Partial | None = None
        saw_eof = False
        while not self._stopping.is_set():
            unconsumed_before = len(window)
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                pending = bytes(window[:200])
                if saw_eof:
                    self._log_aborted(f"peer closed mid-request ({exc}); pending {pending!r}")
                else:
                    self._log_error(f"h11: {exc}; pending {pending!r}")
                return
            unconsumed_after = len(conn.trailing_data[0])
            head = bytes(window[: unconsumed_before - unconsumed_after])
            del window[: len(window) - unconsumed_after]

            if event is h11.NEED_DATA:
                try:
                    data = sock.recv(RECV_BYTES)
                except TimeoutError:
                    if partial is not None or window:
                        self._log_aborted(f"idle {IDLE_TIMEOUT_S}s mid-request")
                    return
                except OSError:
                    return
                if not data:
                    saw_eof = True
                window += data
                conn.receive_data(data)
                continue
            if event is h11.PAUSED:
                conn.start_next_cycle()
                continue
            if isinstance(event, h11.ConnectionClosed):
                return
            if isinstance(event, h11.Request):
                problem = strict_head_problem(head) or _framing_problem(event)
                if problem is not None:
                    self._log_error(f"strict: {problem}")
                    return
                partial = _Partial(event)
                if conn.they_are_waiting_for_100_continue:
                    _send(sock, conn, h11.InformationalResponse(status_code=100, headers=[]))
                continue
            if isinstance(event, h11.Data):
                assert partial is not None
                partial.body += event.data
                continue
            if isinstance(event, h11.EndOfMessage):
                assert partial is not None
                seq = self._record(partial)
                partial = None
                body = b"backend-seq=%d" % seq
                _send(
                    sock,
                    conn,
                    h11.Response(
                        status_code=200,
                        headers=[
                            ("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body))),
                            ("X-Backend-Seq", str(seq)),
                        ],
                    ),
                    h11.Data(data=body),
                    h11.EndOfMessage(),
                )
                if conn.our_state is h11.MUST_CLOSE:
                    return
                continue

    def _record(self, partial: _Partial) -> int:
        request = partial.request
        with self._lock:
            seq = len(self._requests) + 1
            self._requests.append(
                Received(
                    seq=seq,
                    method=bytes(request.method),
                    target=bytes(request.target),
                    http_version=bytes(request.http_version),
                    headers=[(bytes(k), bytes(v)) for k, v in request.headers.raw_items()],
                    body=bytes(partial.body),
                )
            )
        return seq

    def _log_error(self, message: str) -> None:
        with self._lock:
            self._error_log.append(message)

    def _log_aborted(self, message: str) -> None:
        with self._lock:
            self._aborted_log.append(message)


def _framing_problem(request: h11.Request) -> str | None:
    if request.method == b"CONNECT":
        # A 2xx would turn the connection into a tunnel; instances never get one.
        return "CONNECT forwarded to an instance"
    names = {name for name, _ in request.headers}
    if b"content-length" in names and b"transfer-encoding" in names:
        return "forwarded both Content-Length and Transfer-Encoding (RFC 9112 §6.3 rule 3)"
    return None


def _send(sock: socket.socket, conn: h11.Connection, *events: h11.Event) -> None:
    out = b"".join(conn.send(event) or b"" for event in events)
    sock.sendall(out)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
