"""Acceptance: the gateway's HTTP/1.1 framing defences (RFC 9112).

Each vector of framing_vectors.py goes, byte for byte, to the gateway on a fresh TCP connection;
the write side is never shut down (some proxies close on EOF, which would hide a wait). The
responses are read back with a small tolerant parser for at most READ_TIMEOUT_S, stopping early
when the gateway closes or once the expected answers are in (plus GRACE_S for extra ones). The
backend behind the gateway (backend.py) numbers every request it answers, so the test compares
two views of the same exchange:

- the client's: which responses carry `X-Backend-Seq` (forwarded) and which the gateway made up;
- the backend's: which sequence numbers it handed out while this vector ran.

They must be the same set (0 desyncs), the backend must have seen nothing malformed, no 5xx but
501 (or a vector's own extra statuses), no hang, and the outcome must be one `expect` allows.

`framing_gateway` comes from tests/gateway/conftest.py: `.address` (host, port) of a gateway
listener routing Host `app.test` to `.backend`, a started CountingBackend shared by the module.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field
from typing import Protocol

import pytest

from tests.gateway.backend import CountingBackend, Received
from tests.gateway.framing_vectors import VECTORS, Vector

READ_TIMEOUT_S = 3.0
GRACE_S = 0.25  # after the expected answers: time for an unexpected extra one to show up
SETTLE_S = 0.1  # after closing: time for a late forward to reach the backend
CONNECT_TIMEOUT_S = 3.0
REJECT_STATUSES = frozenset({400, 413, 414, 431, 501})
SMUGGLED_MARK = b"/smuggled"


class FramingGateway(Protocol):
    @property
    def address(self) -> tuple[str, int]: ...

    @property
    def backend(self) -> CountingBackend: ...

    @property
    def host(self) -> str: ...


# --- a tolerant response reader (pure) ----------------------------------------------------------

_STATUS_LINE = re.compile(rb"HTTP/\d(?:\.\d)? (\d{3})(?:[ \t].*)?")
_HEAD_END = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class Response:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @property
    def backend_seq(self) -> int | None:
        value = self.header(b"x-backend-seq")
        return int(value) if value is not None and value.isdigit() else None

    def summary(self) -> str:
        seq = self.backend_seq
        origin = f"backend #{seq}" if seq is not None else "gateway"
        conn = self.header(b"connection")
        extra = f", Connection: {conn.decode('latin-1')}" if conn is not None else ""
        return f"{self.status} ({origin}{extra})"


@dataclass(frozen=True)
class Stream:
    finals: list[Response]
    interim: list[Response]
    rest: bytes  # bytes not (yet) forming a complete response
    malformed: str | None = None


def parse_responses(data: bytes, eof: bool) -> Stream:
    """Split a response byte stream into complete responses. Lenient on line endings; a
    response with neither Content-Length nor chunked framing runs to EOF."""
    finals: list[Response] = []
    interim: list[Response] = []
    pos = 0
    while pos < len(data):
        end = _HEAD_END.search(data, pos)
        if end is None:
            return Stream(finals, interim, data[pos:])
        lines = re.split(rb"\r?\n", data[pos : end.start()])
        match = _STATUS_LINE.fullmatch(lines[0])
        if match is None:
            return Stream(finals, interim, data[pos:], f"bad status line {lines[0][:80]!r}")
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.strip().lower(), value.strip()))
        status = int(match.group(1))
        body_start = end.end()
        if 100 <= status < 200:
            interim.append(Response(status, tuple(headers), b""))
            pos = body_start
            continue
        te = b",".join(v for k, v in headers if k == b"transfer-encoding").lower()
        lengths = {v for k, v in headers if k == b"content-length"}
        if status in (204, 304):
            body, pos = b"", body_start
        elif te.replace(b" ", b"").endswith(b"chunked"):
            decoded = _dechunk(data, body_start)
            if decoded is None:
                return Stream(finals, interim, data[pos:])
            body, pos = decoded
        elif lengths:
            if len(lengths) != 1 or not next(iter(lengths)).isdigit():
                return Stream(finals, interim, data[pos:], f"bad Content-Length {lengths!r}")
            length = int(next(iter(lengths)))
            if len(data) - body_start < length:
                return Stream(finals, interim, data[pos:])
            body, pos = data[body_start : body_start + length], body_start + length
        elif eof:
            body, pos = data[body_start:], len(data)
        else:
            return Stream(finals, interim, data[pos:])
        finals.append(Response(status, tuple(headers), body))
    return Stream(finals, interim, b"")


def _dechunk(data: bytes, pos: int) -> tuple[bytes, int] | None:
    body = bytearray()
    while True:
        eol = data.find(b"\n", pos)
        if eol == -1:
            return None
        size_text = data[pos:eol].split(b";", 1)[0].strip()
        size = int(size_text, 16) if re.fullmatch(rb"[0-9A-Fa-f]+", size_text) else 0
        pos = eol + 1
        if size == 0:
            end = _HEAD_END.search(data, pos - 1)  # trailers then the blank line
            if data[pos : pos + 2] == b"\r\n":
                return bytes(body), pos + 2
            if data[pos : pos + 1] == b"\n":
                return bytes(body), pos + 1
            return None if end is None else (bytes(body), end.end())
        if len(data) < pos + size + 1:
            return None
        body += data[pos : pos + size]
        pos += size
        eol = data.find(b"\n", pos)
        if eol == -1:
            return None
        pos = eol + 1


# --- one exchange over a raw socket ------------------------------------------------------------


@dataclass
class Exchange:
    stream: Stream
    closed: bool = False  # the gateway closed (FIN or RST)
    reset: bool = False
    timed_out: bool = False  # READ_TIMEOUT_S ran out before any stopping condition
    send_error: str | None = None
    elapsed: float = 0.0
    received: bytes = field(default=b"", repr=False)


def exchange(address: tuple[str, int], raw: bytes, *, want: int, need_close: bool) -> Exchange:
    """Send `raw`, then read until the gateway closes, or until `want` final responses arrived
    (plus GRACE_S; or, with `need_close`, until the close), or READ_TIMEOUT_S. A response
    that did not come from the backend always means `need_close`: rejections end connections."""
    started = time.monotonic()
    deadline = started + READ_TIMEOUT_S
    buf = bytearray()
    stream = Stream([], [], b"")
    result = Exchange(stream)
    reached_at: float | None = None
    with socket.create_connection(address, timeout=CONNECT_TIMEOUT_S) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall(raw)
        except OSError as exc:  # the gateway may refuse and close before reading it all
            result.send_error = repr(exc)
        while True:
            now = time.monotonic()
            must_close = need_close or any(r.backend_seq is None for r in stream.finals)
            if reached_at is not None and not must_close and now >= reached_at + GRACE_S:
                break
            if now >= deadline:
                result.timed_out = True
                break
            sock.settimeout(max(0.01, min(deadline - now, 0.05)))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                result.closed = result.reset = True
                break
            if not chunk:
                result.closed = True
                break
            buf += chunk
            stream = parse_responses(bytes(buf), eof=False)
            if reached_at is None and len(stream.finals) >= want:
                reached_at = time.monotonic()
    result.stream = parse_responses(bytes(buf), eof=result.closed)
    result.elapsed = time.monotonic() - started
    result.received = bytes(buf)
    return result


# --- the verdict (pure) ------------------------------------------------------------------------


def judge(
    vector: Vector,
    ex: Exchange,
    window: list[Received],
    new_errors: list[str],
) -> list[str]:
    """Everything wrong with one exchange; empty when the gateway behaved."""
    problems: list[str] = []
    finals = ex.stream.finals
    seen = [r.backend_seq for r in finals if r.backend_seq is not None]
    forwarded = [r for r in finals if r.backend_seq is not None]
    made_up = [r for r in finals if r.backend_seq is None]
    allowed = REJECT_STATUSES | vector.statuses
    want = vector.expected_forwards

    # Global: one view of the exchange on both sides of the gateway.
    if sorted(seen) != sorted(r.seq for r in window):
        problems.append(
            f"desync: client saw backend seqs {sorted(seen)}, backend answered "
            f"{[r.seq for r in window]}"
        )
    if len(set(seen)) != len(seen):
        problems.append(f"a backend response was delivered twice: {seen}")
    if new_errors:
        problems.append(f"backend saw malformed requests: {new_errors}")
    if ex.stream.malformed is not None:
        problems.append(f"unparseable response stream: {ex.stream.malformed}")
    elif ex.stream.rest:
        problems.append(f"incomplete trailing response bytes: {ex.stream.rest[:120]!r}")
    for response in finals:
        if response.status >= 500 and response.status not in allowed:
            problems.append(f"5xx answer {response.status}")
    for response in ex.stream.interim:
        if response.status != 100:
            problems.append(f"unexpected interim response {response.status}")
    if ex.timed_out:
        problems.append(
            f"hang: after {READ_TIMEOUT_S}s the connection was open and the exchange unfinished"
        )
    for request in window:
        if SMUGGLED_MARK in request.target:
            problems.append(f"smuggled request reached the backend: {request.target[:80]!r}")

    # Shape: backend answers first, at most one gateway answer, and only as the last word.
    if len(made_up) > 1 or (made_up and finals[-1] is not made_up[0]):
        problems.append("a gateway-made response is not the last one on the connection")
    rejection = made_up[-1] if made_up else None
    if rejection is not None:
        if rejection.status not in allowed:
            problems.append(f"gateway answered {rejection.status}, not one of {sorted(allowed)}")
        if not ex.closed:
            problems.append(f"gateway answered {rejection.status} and kept the connection open")

    if vector.expect == "reject":
        if rejection is None:
            problems.append(f"not rejected: {len(forwarded)} forwarded, no gateway answer")
        if len(forwarded) != want:
            problems.append(f"{len(forwarded)} requests forwarded before the rejection, not {want}")
    elif vector.expect == "normalize":
        if rejection is None and len(forwarded) != want:
            problems.append(f"forwarded {len(forwarded)} requests, the vector holds {want}")
        if rejection is not None and len(forwarded) > want:
            problems.append(f"forwarded {len(forwarded)} requests, the vector holds {want}")
    else:
        if rejection is not None:
            problems.append(f"a well-formed control was rejected with {rejection.status}")
        if len(forwarded) != want:
            problems.append(f"forwarded {len(forwarded)} requests, expected {want}")
    if vector.close and rejection is None and len(forwarded) == want and not ex.closed:
        problems.append("connection left open after a message that requires close (§6.1)")
    for response in forwarded:
        if response.status != 200:
            problems.append(f"backend answer arrived as {response.status}")
    if vector.body is not None and window:
        first = min(window, key=lambda r: r.seq)
        accepted = (vector.body, *vector.alt_bodies)
        if first.body not in accepted:
            problems.append(
                f"backend got body {first.body[:120]!r}, the gateway should have framed "
                f"{' or '.join(repr(b[:120]) for b in accepted)}"
            )
    return problems


def describe(vector: Vector, ex: Exchange, window: list[Received], aborted: list[str]) -> str:
    lines = [
        f"vector {vector.name} (expect {vector.expect}): {vector.note}",
        f"  sent {len(vector.raw)} bytes: {vector.raw[:200]!r}",
        f"  answers: {[r.summary() for r in ex.stream.finals]}"
        f" interim {[r.status for r in ex.stream.interim]}",
        f"  closed={ex.closed} reset={ex.reset} timed_out={ex.timed_out} "
        f"send_error={ex.send_error} after {ex.elapsed:.2f}s",
        f"  received: {ex.received[:300]!r}",
    ]
    for request in window:
        lines.append(
            f"  backend #{request.seq}: {request.method!r} {request.target[:80]!r} "
            f"HTTP/{request.http_version.decode()} body {request.body[:80]!r}"
        )
    lines.extend(f"  backend aborted: {message}" for message in aborted)
    return "\n".join(lines)


# --- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_vector(framing_gateway: FramingGateway, vector: Vector) -> None:
    gateway = framing_gateway
    backend = gateway.backend
    count_before = backend.count
    errors_before = backend.errors
    aborted_before = backend.aborted
    want = vector.expected_forwards + (1 if vector.expect == "reject" else 0)

    ex = exchange(gateway.address, vector.raw, want=want, need_close=vector.close)

    time.sleep(SETTLE_S)
    window = [r for r in backend.requests if r.seq > count_before]
    new_errors = backend.error_log[errors_before:]
    aborted = backend.aborted_log[aborted_before:]
    problems = judge(vector, ex, window, new_errors)
    assert not problems, "\n".join(["", *problems, describe(vector, ex, window, aborted)])


def test_corpus_size() -> None:
    names = [v.name for v in VECTORS]
    assert len(VECTORS) >= 100
    assert len(set(names)) == len(names), sorted({n for n in names if names.count(n) > 1})
