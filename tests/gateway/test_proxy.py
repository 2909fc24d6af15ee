"""HTTP-mode behaviours beyond framing, through the real gateway over real sockets: Upgrade
tunnels, 100-continue, streaming, deadlines, retry on a refused connection, and config changes
that must not drop open connections."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from portway.gateway import listeners
from portway.gateway.context import Limits

from .harness import (
    WAIT_S,
    GatewayThread,
    backends,
    endpoint,
    http_get,
    http_listener,
    read_response,
    read_responses,
    route,
    snapshot,
)

Handler = Callable[[socket.socket, bytes], None]


@contextlib.contextmanager
def raw_backend(handle: Handler) -> Iterator[int]:
    """A server whose handler gets each connection and the request head it read."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=_run, args=(conn,), daemon=True).start()

    def _run(conn: socket.socket) -> None:
        conn.settimeout(WAIT_S)
        with conn, contextlib.suppress(OSError):
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(1)
                if not chunk:
                    return
                head += chunk
            handle(conn, head)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(WAIT_S)
        server.close()


def _serve(gw: GatewayThread, port: int, **limits: int) -> tuple[str, int]:
    r = route("web", 80, [endpoint("a", port)], soft_limit=100, **limits)
    gw.apply(snapshot(1, http_listener(80, {"app.test": r})))
    return gw.address(80)


def test_websocket_upgrade_becomes_a_tunnel_counted_in_flight(tmp_path: Path) -> None:
    def upgrade(conn: socket.socket, head: bytes) -> None:
        assert b"upgrade: websocket" in head.lower() and b"connection: upgrade" in head.lower()
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        while data := conn.recv(65536):
            conn.sendall(data.upper())

    with raw_backend(upgrade) as port, GatewayThread(tmp_path) as gw:
        address = _serve(gw, port)
        with socket.create_connection(address, timeout=WAIT_S) as sock:
            sock.sendall(
                b"GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\nearly"
            )
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(1)
            assert head.startswith(b"HTTP/1.1 101")
            got = b""
            while len(got) < 5:
                got += sock.recv(64)
            assert got == b"EARLY"  # sent with the request head, delivered after the 101
            gw.wait_inflight({"uuid-a": 1})  # the open tunnel counts as one in flight
            sock.sendall(b"hello")
            assert sock.recv(64) == b"HELLO"
        gw.wait_inflight({})


def test_a_half_close_before_the_101_reaches_the_instance_through_the_tunnel(
    tmp_path: Path,
) -> None:
    def upgrade_then_answer_at_eof(conn: socket.socket, head: bytes) -> None:
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n"
        )
        got = b""
        while data := conn.recv(65536):  # until the client's end of stream (or the timeout)
            got += data
        conn.sendall(b"got:" + got)

    with raw_backend(upgrade_then_answer_at_eof) as port, GatewayThread(tmp_path) as gw:
        address = _serve(gw, port)
        with socket.create_connection(address, timeout=WAIT_S) as sock:
            sock.sendall(
                b"GET /x HTTP/1.1\r\nHost: app.test\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n"
                b"early"
            )
            sock.shutdown(socket.SHUT_WR)  # before the instance has answered
            received = b""
            while data := sock.recv(65536):
                received += data
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        assert rest == b"got:early"  # the instance saw the end of stream, then answered


def test_expect_100_continue_is_relayed(tmp_path: Path) -> None:
    def continue_then_read(conn: socket.socket, head: bytes) -> None:
        assert b"expect: 100-continue" in head.lower()
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = b""
        while len(body) < 5:
            body += conn.recv(5 - len(body))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + body.upper())

    with raw_backend(continue_then_read) as port, GatewayThread(tmp_path) as gw:
        address = _serve(gw, port)
        with socket.create_connection(address, timeout=WAIT_S) as sock:
            sock.sendall(
                b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            interim = b""
            while b"\r\n\r\n" not in interim:
                interim += sock.recv(1)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(b"hello")
            status, _, body = read_response(sock)
            assert (status, body) == (200, b"HELLO")


def test_bodies_stream_both_ways(tmp_path: Path) -> None:
    size = 8 << 20

    def echo_length(conn: socket.socket, head: bytes) -> None:
        # Answer before reading the whole body: a proxy that buffered it would deadlock here.
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        received = 0
        while received < size:
            chunk = conn.recv(1 << 16)
            if not chunk:
                break
            received += len(chunk)
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.sendall(b"0\r\n\r\n")

    with raw_backend(echo_length) as port, GatewayThread(tmp_path) as gw:
        address = _serve(gw, port)
        with socket.create_connection(address, timeout=WAIT_S) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n" % size)
            payload = bytes(range(256)) * (size // 256)
            sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
            sender.start()
            data = b""
            while not data.endswith(b"0\r\n\r\n"):
                chunk = sock.recv(1 << 20)
                assert chunk, "closed early"
                data += chunk
            sender.join(WAIT_S)
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in head
        decoded, rest = b"", body
        while True:
            line, _, rest = rest.partition(b"\r\n")
            length = int(line, 16)
            if length == 0:
                break
            decoded, rest = decoded + rest[:length], rest[length + 2 :]
        assert decoded == payload


def test_a_slow_request_head_gets_408(tmp_path: Path) -> None:
    with backends("a") as bes, GatewayThread(tmp_path, Limits(header_timeout_s=0.5)) as gw:
        r = route("web", 80, [bes[0].endpoint()])
        gw.apply(snapshot(1, http_listener(80, {"app.test": r})))
        with socket.create_connection(gw.address(80), timeout=WAIT_S) as sock:
            started = time.monotonic()
            sock.sendall(b"GET / HTTP/1.1\r\nHost: app")  # and never the rest
            status, headers, _ = read_response(sock)
            assert status == 408 and headers.get("connection") == "close"
            assert time.monotonic() - started < 2.0
        assert bes[0].requests == 0


def test_refused_connection_is_retried_on_another_instance(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]  # bound, never listening: connections are refused
        with backends("b") as bes, GatewayThread(tmp_path) as gw:
            dead = endpoint("dead", dead_port)
            r = route("web", 80, [dead, bes[0].endpoint()], soft_limit=100)
            gw.apply(snapshot(1, http_listener(80, {"app.test": r})))
            results = [http_get(gw.address(80)) for _ in range(20)]
            assert [s for s, _, _ in results] == [200] * 20
            assert {body for _, _, body in results} == {b"b"}


def test_a_config_change_drops_no_open_connection(tmp_path: Path) -> None:
    with backends("a", "b") as bes, GatewayThread(tmp_path) as gw:
        first = route("web", 80, [bes[0].endpoint()])
        gw.apply(snapshot(1, http_listener(80, {"app.test": first})))
        address = gw.address(80)
        outcome: list[tuple[int, dict[str, str], bytes]] = []
        held = threading.Thread(target=lambda: outcome.append(http_get(address, "/hold")))
        held.start()
        gw.wait_inflight({"uuid-a": 1})
        # Counted in flight is not yet sent: until a has the request, a new snapshot without a
        # would send it elsewhere (the apply barrier), so wait until a really holds it.
        deadline = time.monotonic() + WAIT_S
        while bes[0].requests < 1 and time.monotonic() < deadline:
            time.sleep(0.002)
        assert bes[0].requests == 1
        # Instance a leaves the group; the port gets a second host: the held request is a's.
        second = route("web", 80, [bes[1].endpoint()])
        gw.apply(snapshot(2, http_listener(80, {"app.test": second, "www.test": second})))
        assert gw.address(80) == address  # same listener
        assert http_get(address, "/", host="www.test")[2] == b"b"
        bes[0].release()
        held.join(WAIT_S)
        assert outcome and outcome[0][0] == 200 and outcome[0][2] == b"a"
        # A keep-alive connection opened before the change is served under the new config.
        assert http_get(address)[2] == b"b"


def test_connections_to_instances_are_reused(tmp_path: Path) -> None:
    with backends("a") as bes, GatewayThread(tmp_path) as gw:
        address = _serve(gw, bes[0].port)
        with socket.create_connection(address, timeout=WAIT_S) as sock:
            for _ in range(50):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
                assert read_response(sock)[0] == 200
        for _ in range(10):  # new client connections find the pooled one too
            assert http_get(address)[0] == 200
        assert bes[0].requests == 60
        assert bes[0].connections == 1


def test_response_heads_lose_hop_by_hop_fields_only(tmp_path: Path) -> None:
    def answer(conn: socket.socket, head: bytes) -> None:
        conn.sendall(
            b"HTTP/1.1 200 Fine Thanks\r\nX-One: 1\r\nConnection: keep-alive, X-Secret\r\n"
            b"Keep-Alive: timeout=5\r\nX-Secret: drop me\r\ncontent-length: 2\r\nX-Two: 2\r\n"
            b"\r\nok"
        )

    with raw_backend(answer) as port, GatewayThread(tmp_path) as gw:
        with socket.create_connection(_serve(gw, port), timeout=WAIT_S) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            data = b""
            while not data.endswith(b"ok"):
                data += sock.recv(4096)
        head = data.split(b"\r\n\r\n")[0].split(b"\r\n")
        assert head == [
            b"HTTP/1.1 200 Fine Thanks",
            b"X-One: 1",
            b"X-Two: 2",
            b"Content-Length: 2",
        ]


def test_head_responses_end_with_their_head_and_the_connection_is_reused(tmp_path: Path) -> None:
    def serve(conn: socket.socket, head: bytes) -> None:
        while True:
            method = head.split(b" ", 1)[0]
            body = b"" if method == b"HEAD" else b"hello"
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + body)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(1)
                if not chunk:
                    return
                head += chunk

    with raw_backend(serve) as port, GatewayThread(tmp_path) as gw:
        sock = socket.create_connection(_serve(gw, port), timeout=WAIT_S)
        with sock:
            for method in (b"HEAD", b"GET", b"HEAD", b"GET"):
                sock.sendall(method + b" / HTTP/1.1\r\nHost: app.test\r\n\r\n")
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(4096)
                    assert chunk, f"closed after {data!r}"
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                assert b"Content-Length: 5" in head
                if method == b"GET":
                    while len(body) < 5:
                        chunk = sock.recv(4096)
                        assert chunk, f"closed after {data!r}"
                        body += chunk
                    assert body == b"hello"
                else:
                    assert body == b""


def test_the_same_instance_head_is_rewritten_for_what_each_request_asked(tmp_path: Path) -> None:
    """The instance sends one head, byte for byte, on one pooled connection; the client's
    last request says `Connection: close`, so only its answer may say so (the gateway
    remembers the last head per connection, and must tell requests apart)."""

    def serve(conn: socket.socket, head: bytes) -> None:
        while head:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            head = b""
            while b"\r\n\r\n" not in head and (chunk := conn.recv(1)):
                head += chunk

    heads = []
    with (
        raw_backend(serve) as port,
        GatewayThread(tmp_path) as gw,
        socket.create_connection(_serve(gw, port), timeout=WAIT_S) as sock,
    ):
        for connection in (b"keep-alive", b"keep-alive", b"close"):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: %s\r\n\r\n" % connection)
            data = b""
            while not data.endswith(b"\r\n\r\nhello"):
                chunk = sock.recv(4096)
                assert chunk, f"closed after {data!r}"
                data += chunk
            heads.append(data.partition(b"\r\n\r\n")[0])
        assert sock.recv(4096) == b""  # closed after the answer to `Connection: close`
    assert [b"Connection: close" in head for head in heads] == [False, False, True]


def _scripted(answers: list[bytes], connections: list[int]) -> Handler:
    """A keep-alive instance that sends the next of `answers` for each request, in one
    write, and counts its connections."""
    script = iter(answers)

    def serve(conn: socket.socket, head: bytes) -> None:
        connections.append(1)
        while head:
            conn.sendall(next(script))
            head = b""
            while b"\r\n\r\n" not in head and (chunk := conn.recv(1)):
                head += chunk

    return serve


def test_a_response_like_the_last_one_reaches_the_client_as_the_instance_sent_it(
    tmp_path: Path,
) -> None:
    """A pooled connection skips parsing a response whose head and length repeat the last
    one's: the body, a head of the same length and another status must still come through."""

    def answer(status: bytes, seq: bytes, body: bytes) -> bytes:
        return b"HTTP/1.1 %s\r\nX-Seq: %s\r\nContent-Length: 5\r\n\r\n%s" % (status, seq, body)

    sent = [
        (b"200 OK", b"1", b"hello"),
        (b"200 OK", b"1", b"hello"),
        (b"200 OK", b"1", b"world"),  # the same head, another body
        (b"200 OK", b"2", b"world"),  # another head of the same length
        (b"404 No", b"2", b"world"),  # another status
        (b"404 No", b"2", b"world"),
    ]
    connections: list[int] = []
    got = []
    with (
        raw_backend(_scripted([answer(*a) for a in sent], connections)) as port,
        GatewayThread(tmp_path) as gw,
        socket.create_connection(_serve(gw, port), timeout=WAIT_S) as sock,
    ):
        for _ in sent:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            status, headers, body = read_response(sock)
            got.append((status, headers["x-seq"].encode(), body))
    assert got == [(int(s.split()[0]), seq, body) for s, seq, body in sent]
    assert len(connections) == 1


def test_an_instance_that_sends_past_its_response_loses_the_connection(tmp_path: Path) -> None:
    """Bytes after the end of a response, in the same read, put the connection out of step:
    the client gets the response, and the next request goes over a new connection."""
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Le",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nagain",
    ]
    connections: list[int] = []
    with raw_backend(_scripted(answers, connections)) as port, GatewayThread(tmp_path) as gw:
        address = _serve(gw, port)
        assert http_get(address)[::2] == (200, b"ok")
        assert http_get(address)[::2] == (200, b"again")
    assert len(connections) == 2


def _read_head(conn: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head and (chunk := conn.recv(1)):
        head += chunk
    return head


def _read_body(conn: socket.socket, head: bytes) -> bytes:
    """The body after `head`, chunked (kept framed) or by its Content-Length."""
    lowered, body = head.lower(), b""
    if b"transfer-encoding: chunked" in lowered:
        while not body.endswith(b"0\r\n\r\n") and (chunk := conn.recv(1)):
            body += chunk
    elif b"content-length:" in lowered:
        length = int(lowered.split(b"content-length:")[1].split(b"\r\n")[0])
        while len(body) < length and (chunk := conn.recv(length - len(body))):
            body += chunk
    return body


def _recording(seen: list[bytes], connections: list[int], gate: threading.Event) -> Handler:
    """A keep-alive instance that keeps each request it reads, head and body, and answers
    with the body, or with the number of requests it has read when there is none. It
    answers when `gate` is set."""

    def serve(conn: socket.socket, head: bytes) -> None:
        connections.append(1)
        while head:
            body = _read_body(conn, head)
            seen.append(head + body)
            gate.wait(WAIT_S)
            answer = body or b"%d" % len(seen)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
            head = _read_head(conn)

    return serve


def _opened() -> threading.Event:
    gate = threading.Event()
    gate.set()
    return gate


def test_a_request_sent_again_reaches_the_instance_as_a_request_of_its_own(
    tmp_path: Path,
) -> None:
    """The gateway reads a request whose bytes repeat the last one's on the connection
    without parsing them again: each must still get its own forwarded fields and start
    time, and be routed by the configuration in place when it came."""
    request = b"GET /a?b=c HTTP/1.1\r\nHost: app.test\r\nX-Custom: 1\r\n\r\n"
    seen: list[bytes] = []
    connections: list[int] = []
    moved: list[bytes] = []
    with (
        raw_backend(_recording(seen, connections, _opened())) as port,
        raw_backend(_recording(moved, [], _opened())) as other,
        GatewayThread(tmp_path) as gw,
        socket.create_connection(_serve(gw, port), timeout=WAIT_S) as sock,
    ):
        answers = []
        for _ in range(3):
            sock.sendall(request)
            answers.append(read_response(sock)[::2])
            time.sleep(0.002)  # X-Request-Start counts microseconds
        r = route("web", 80, [endpoint("b", other)], soft_limit=100)
        gw.apply(snapshot(2, http_listener(80, {"app.test": r})))
        sock.sendall(request)
        answers.append(read_response(sock)[::2])
    assert answers == [(200, b"1"), (200, b"2"), (200, b"3"), (200, b"1")]
    assert len(seen) == 3 and len(moved) == 1 and len(connections) == 1
    starts = [int(head.split(b"X-Request-Start: t=")[1].split(b"\r\n")[0]) for head in seen]
    assert starts == sorted(set(starts))
    for head in seen + moved:
        assert head.startswith(b"GET /a?b=c HTTP/1.1\r\nHost: app.test\r\nX-Custom: 1\r\n")
        assert b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n" in head


def test_requests_sent_again_with_a_body_carry_their_body(tmp_path: Path) -> None:
    requests = [
        b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
    ]
    seen: list[bytes] = []
    with (
        raw_backend(_recording(seen, [], _opened())) as port,
        GatewayThread(tmp_path) as gw,
        socket.create_connection(_serve(gw, port), timeout=WAIT_S) as sock,
    ):
        bodies = []
        for request in requests:
            for _ in range(2):
                sock.sendall(request)
                bodies.append(read_response(sock)[2])
    assert bodies == [b"hello", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n"]
    assert len(seen) == 4


def test_a_request_sent_again_before_the_last_is_answered_waits_its_turn(
    tmp_path: Path,
) -> None:
    """Pipelined: the second goes to the instance after the first is answered, over the
    same connection, and the answers come back in order."""
    request = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"
    seen: list[bytes] = []
    connections: list[int] = []
    gate = _opened()
    with (
        raw_backend(_recording(seen, connections, gate)) as port,
        GatewayThread(tmp_path) as gw,
        socket.create_connection(_serve(gw, port), timeout=WAIT_S) as sock,
    ):
        sock.sendall(request)
        answers = [read_response(sock)[::2]]  # the gateway now remembers the request
        gate.clear()
        sock.sendall(request)
        deadline = time.monotonic() + WAIT_S
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.002)
        sock.sendall(request)  # while the instance holds the answer to the one before
        time.sleep(0.05)
        gate.set()
        answers += read_responses(sock, 2)
    assert answers == [(200, b"1"), (200, b"2"), (200, b"3")]
    assert len(connections) == 1


@pytest.mark.parametrize("again", [b"/", b"/other"], ids=["same bytes", "new bytes"])
@pytest.mark.parametrize("answer", [200, 404], ids=["by the instance", "by the gateway"])
def test_a_gateway_shutting_down_closes_keep_alive_connections_after_their_answer(
    tmp_path: Path, again: bytes, answer: int
) -> None:
    """Once the gateway has begun to close, the next request on a kept-alive connection is
    answered with `Connection: close` and the connection then ends: whether that request's
    bytes repeat the last one's or not, and whoever answers it."""
    with (
        raw_backend(_recording([], [], _opened())) as port,
        GatewayThread(tmp_path) as gw,
        socket.create_connection(_serve(gw, port), timeout=WAIT_S) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        assert "connection" not in read_response(sock)[1]
        if answer == 404:
            gw.apply(snapshot(2, http_listener(80, {})))
        assert gw.gateway is not None
        gw.call(gw.gateway.ctx.close)
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: app.test\r\n\r\n" % again)
        status, headers, _ = read_response(sock)
        assert (status, headers.get("connection")) == (answer, "close")
        assert sock.recv(16) == b""


def test_two_requests_in_one_read_are_both_answered_each_time(tmp_path: Path) -> None:
    """The first is answered by the gateway (no such host) before the second begins; a read
    of both must not be taken for a read of the second alone."""
    both = b"GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\nGET / HTTP/1.1\r\nHost: app.test\r\n\r\n"
    with (
        raw_backend(_recording([], [], _opened())) as port,
        GatewayThread(tmp_path) as gw,
        socket.create_connection(_serve(gw, port), timeout=WAIT_S) as sock,
    ):
        statuses = []
        for _ in range(2):
            sock.sendall(both)
            statuses += [status for status, _ in read_responses(sock, 2)]
    assert statuses == [404, 200, 404, 200]


def _fetch(address: tuple[str, int], request: bytes) -> bytes:
    """Send one request and read until the gateway closes or a whole response is in."""
    with socket.create_connection(address, timeout=WAIT_S) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if data.endswith(b"0\r\n\r\n") or b"Content-Length: 5\r\n\r\nhello" in data:
                break
        return data


def test_bodies_without_length_reach_http11_clients_chunked(tmp_path: Path) -> None:
    def until_close(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhel")
        conn.sendall(b"lo")  # the body ends when the instance closes

    with raw_backend(until_close) as port, GatewayThread(tmp_path) as gw:
        data = _fetch(_serve(gw, port), b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body.endswith(b"0\r\n\r\n")
    assert b"".join(body.split(b"\r\n")[1::2]) == b"hello"


def test_chunked_responses_are_reframed_and_http10_clients_get_a_length_or_a_close(
    tmp_path: Path,
) -> None:
    def chunked(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n")
        conn.sendall(b"2;ext=1\r\nlo\r\n0\r\nX-Trailer: t\r\n\r\n")

    with raw_backend(chunked) as port, GatewayThread(tmp_path) as gw:
        address = _serve(gw, port)
        new = _fetch(address, b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        old = _fetch(address, b"GET / HTTP/1.0\r\nHost: app.test\r\n\r\n")
    head, _, body = new.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and b"X-Trailer" not in body
    assert body == b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"
    head, _, body = old.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head
    assert body == b"hello"


@pytest.mark.parametrize(
    ("request_head", "http11"),
    [
        (b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n", True),
        (b"GET / HTTP/1.0\r\nHost: app.test\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nHost: app.test\r\nConnection: Keep-Alive, x\r\n\r\n", False),
    ],
)
def test_the_client_version_is_known_with_or_without_connection_tokens(
    tmp_path: Path, request_head: bytes, http11: bool
) -> None:
    """The proxy infers HTTP/1.1 from llhttp's keep-alive answer when no `keep-alive` token
    was sent (proxy.py, on_headers_complete): each way in must reach the same version. A body
    without a length tells them apart: chunked for 1.1, as-is up to the close for 1.0."""

    def chunked(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        conn.sendall(b"0\r\n\r\n")

    with raw_backend(chunked) as port, GatewayThread(tmp_path) as gw:
        response = _fetch(_serve(gw, port), request_head)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    if http11:
        assert b"Transfer-Encoding: chunked" in head and body == b"5\r\nhello\r\n0\r\n\r\n"
    else:
        assert b"Transfer-Encoding" not in head and b"Connection: close" in head
        assert body == b"hello"


def test_a_client_that_half_closes_after_its_request_gets_the_whole_answer(
    tmp_path: Path,
) -> None:
    with backends("a") as bes, GatewayThread(tmp_path) as gw:
        address = _serve(gw, bes[0].port)
        for _ in range(20):  # the answer and the end of stream race in one loop iteration
            with socket.create_connection(address, timeout=WAIT_S) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
                sock.shutdown(socket.SHUT_WR)
                status, _, body = read_response(sock)
                assert (status, body) == (200, b"a")
                assert sock.recv(16) == b""  # and then the gateway closes


# --- HTTPS: the gateway terminates TLS in front of an HTTP-mode port -------------------------


def _answer_framing(conn: socket.socket, head: bytes) -> None:
    """Answer each request of the connection with what reached the instance: the proto the
    gateway named and how many body bytes arrived."""
    reader = conn.makefile("rb")
    while head:
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
        body = reader.read(int(fields.get(b"Content-Length", b"0")))
        answer = b"%s %d" % (fields.get(b"X-Forwarded-Proto", b"-"), len(body))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = reader.readline()
            if not line:
                return
            head += line


def test_https_requests_of_every_size_reach_the_instance_whole(tmp_path: Path) -> None:
    """Over one keep-alive TLS connection: bodies from none to many TLS records, some sent in
    one write (so one read brings the gateway several records to decrypt)."""
    sizes = [0, 1, 16 * 1024, 100_000, 300_000, 5, 0]
    with raw_backend(_answer_framing) as port, GatewayThread(tmp_path) as gw:
        r = route("web", 443, [endpoint("a", port)], soft_limit=100)
        gw.apply(snapshot(1, http_listener(443, {"web.portway.test": r}, tls=True)))
        context = ssl.create_default_context(cafile=str(gw.ca.cert_path))
        with (
            socket.create_connection(gw.address(443), timeout=WAIT_S) as raw,
            context.wrap_socket(raw, server_hostname="web.portway.test") as tls,
        ):
            for size in sizes:
                tls.sendall(
                    b"POST /upload HTTP/1.1\r\nHost: web.portway.test\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (size, b"x" * size)
                )
                status, _, body = read_response(tls)  # type: ignore[arg-type]
                assert (status, body) == (200, b"https %d" % size)


def test_a_silent_client_is_dropped_at_the_https_handshake_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert listeners.HANDSHAKE_TIMEOUT_S <= 10  # T21: half-open handshakes go within 10 s
    monkeypatch.setattr(listeners, "HANDSHAKE_TIMEOUT_S", 0.3)  # the same path, test-sized
    with backends("a") as bes, GatewayThread(tmp_path) as gw:
        r = route("web", 443, [endpoint("a", bes[0].port)])
        gw.apply(snapshot(1, http_listener(443, {"web.portway.test": r}, tls=True)))
        started = time.monotonic()  # before the connection, so before the gateway's clock
        with socket.create_connection(gw.address(443), timeout=WAIT_S) as sock:
            sock.sendall(b"\x16\x03\x01\x02\x00")  # the first bytes of a ClientHello
            assert sock.recv(16) == b""  # closed without a word
            waited = time.monotonic() - started
        assert 0.3 <= waited < WAIT_S - 1  # by the deadline, not by our wait giving up
        monkeypatch.undo()  # a real handshake next, on the real deadline: a slow machine is fine
        context = ssl.create_default_context(cafile=str(gw.ca.cert_path))
        with (
            socket.create_connection(gw.address(443), timeout=WAIT_S) as raw,
            context.wrap_socket(raw, server_hostname="web.portway.test") as tls,
        ):
            tls.sendall(b"GET / HTTP/1.1\r\nHost: web.portway.test\r\n\r\n")
            assert read_response(tls)[::2] == (200, b"a")  # type: ignore[arg-type]
