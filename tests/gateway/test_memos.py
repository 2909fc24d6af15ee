"""The request path's memos against what parsing the same bytes does, and the neighbours
they exposed.

Three memos skip llhttp when bytes repeat: the last response head per instance connection
(`UpstreamConnection.last_head`), a response that repeats the last one's head and length
(`UpstreamConnection._repeated`), and a client read that repeats the last whole request
(`ClientConnection._repeated`). Each test here sends a sequence where a memo could answer
differently from the parser (HEAD after GET, 204/304, split and doubled reads, HTTP/1.0,
closing, routes going away, refused upgrades, counts and the access log) and checks the client
and the instance see what parsing would give. Four of them caught older bugs next to the memos:
an instance that sends a second message in one read, or garbage after a whole response, and
the requests behind an Upgrade request the gateway or the instance refused.

Real gateway, real loopback sockets, bounded waits throughout.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .harness import WAIT_S, GatewayThread, endpoint, http_listener, route, snapshot
from .test_proxy import _read_body, _read_head, _serve, raw_backend

REQ = b"GET /r HTTP/1.1\r\nHost: app.test\r\n\r\n"
UPGRADE = b"GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"

# answer(request_head, index) -> list of writes; a float in the list is a pause (seconds)
Answer = Callable[[bytes, int], list[bytes | float]]


class Instance:
    """A keep-alive raw instance: records each request (head + body) and its connection
    number, and answers with whatever `answer` gives."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.seen: list[bytes] = []
        self.conn_of: list[int] = []
        self.connections = 0
        self.lock = threading.Lock()

    def __call__(self, conn: socket.socket, head: bytes) -> None:
        with self.lock:
            self.connections += 1
            number = self.connections
        while head:
            body = _read_body(conn, head)
            with self.lock:
                self.seen.append(head + body)
                self.conn_of.append(number)
                index = len(self.seen) - 1
            for piece in self.answer(head, index):
                if isinstance(piece, float):
                    time.sleep(piece)
                else:
                    conn.sendall(piece)
            head = _read_head(conn)


_LEFT: dict[int, bytes] = {}  # bytes read past a response, by socket fileno


def recv_exactly_response(sock: socket.socket, head_request: bool = False) -> tuple[bytes, bytes]:
    """One response (head, body) framed by Content-Length or chunked; no body for HEAD/204/304.
    Bytes past it are kept for the next call on the same socket."""
    data = _LEFT.pop(sock.fileno(), b"")
    deadline = time.monotonic() + WAIT_S

    def more() -> bytes:
        assert time.monotonic() < deadline
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        return chunk

    while b"\r\n\r\n" not in data:
        data += more()
    head, _, rest = data.partition(b"\r\n\r\n")
    lowered = head.lower()
    status = int(head.split(b" ")[1])
    if head_request or status in (204, 304):
        return head, rest  # rest should be empty: anything there is a body that should not be
    if b"content-length:" in lowered:
        length = int(lowered.split(b"content-length:")[1].split(b"\r\n")[0])
        while len(rest) < length:
            rest += more()
        if rest[length:]:
            _LEFT[sock.fileno()] = rest[length:]
        return head, rest[:length]
    if b"transfer-encoding: chunked" in lowered:
        while b"0\r\n\r\n" not in rest:
            rest += more()
        end = rest.index(b"0\r\n\r\n") + 5
        if rest[end:]:
            _LEFT[sock.fileno()] = rest[end:]
        return head, rest[:end]
    while chunk := sock.recv(65536):
        rest += chunk
    return head, rest


def nothing_more(sock: socket.socket, wait: float = 0.15) -> bytes:
    """Whatever arrives within `wait` (b"" if nothing): stray bytes after a response."""
    left = _LEFT.pop(sock.fileno(), b"")
    if left:
        return left
    sock.settimeout(wait)
    try:
        return sock.recv(65536)
    except TimeoutError:
        return b""
    finally:
        sock.settimeout(WAIT_S)


def client(gw: GatewayThread, port: int) -> socket.socket:
    sock = socket.create_connection(_serve(gw, port), timeout=WAIT_S)
    _LEFT.pop(sock.fileno(), None)
    return sock


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s" % (extra, len(body), body)


# --- d57ae8b: the upstream memo ----------------------------------------------------------


def test_head_after_get_with_the_same_instance_head(tmp_path: Path) -> None:
    head5 = b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 5\r\n\r\n"

    def answer(head: bytes, i: int) -> list[bytes | float]:
        return [head5] if head.startswith(b"HEAD") else [head5 + b"hello"]

    inst = Instance(answer)
    methods = [b"GET", b"GET", b"HEAD", b"HEAD", b"GET", b"GET", b"HEAD", b"GET"]
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        for m in methods:
            sock.sendall(m + b" /r HTTP/1.1\r\nHost: app.test\r\n\r\n")
            head, body = recv_exactly_response(sock, head_request=m == b"HEAD")
            assert b"Content-Length: 5" in head
            if m == b"HEAD":
                assert body == b"" and nothing_more(sock) == b""
            else:
                assert body == b"hello"
        gw.wait_inflight({})
    assert inst.connections == 1 and len(inst.seen) == len(methods)


def test_head_request_answered_with_a_body_like_a_get_is_not_passed_as_one(
    tmp_path: Path,
) -> None:
    """An instance that wrongly sends a body to HEAD, with the same bytes as its GET answer:
    the client gets no body either way (the connection may not be reused)."""
    full = ok(b"hello")
    inst = Instance(lambda head, i: [full])
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        for m in (b"GET", b"GET", b"HEAD", b"GET"):
            sock.sendall(m + b" /r HTTP/1.1\r\nHost: app.test\r\n\r\n")
            head, body = recv_exactly_response(sock, head_request=m == b"HEAD")
            assert head.startswith(b"HTTP/1.1 200")
            if m == b"HEAD":
                assert body == b"" and nothing_more(sock) == b""
            else:
                assert body == b"hello"


def test_304_and_204_with_content_length_repeat_without_a_body(tmp_path: Path) -> None:
    n304 = b"HTTP/1.1 304 Not Modified\r\nETag: x\r\nContent-Length: 5\r\n\r\n"
    n204 = b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"
    script = [n304, n304, n304, n204, n204, ok(b"hello"), ok(b"hello")]
    inst = Instance(lambda head, i: [script[i]])
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        got = []
        for _ in script:
            sock.sendall(REQ)
            head, body = recv_exactly_response(sock)
            got.append((int(head.split(b" ")[1]), body))
            assert nothing_more(sock, 0.05) == b""
    assert got == [(304, b"")] * 3 + [(204, b"")] * 2 + [(200, b"hello")] * 2
    assert inst.connections == 1


def test_a_repeated_response_split_across_reads(tmp_path: Path) -> None:
    full = ok(b"hello world")
    cut = full.index(b"\r\n\r\n") + 4
    script: list[list[bytes | float]] = [
        [full],
        [full],
        [full[:cut], 0.05, full[cut:]],  # head, then body
        [full[: cut + 3], 0.05, full[cut + 3 :]],  # head and part of the body
        [full[:10], 0.05, full[10:]],  # part of the head
        [full],
    ]
    inst = Instance(lambda head, i: script[i])
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        for _ in script:
            sock.sendall(REQ)
            _head, body = recv_exactly_response(sock)
            assert body == b"hello world"
            assert nothing_more(sock, 0.05) == b""
    assert inst.connections == 1


def test_two_repeated_responses_in_one_read_do_not_answer_the_next_request(
    tmp_path: Path,
) -> None:
    """The instance sends its answer twice for one request: the second must never reach the
    client as the answer to the next request."""
    a, b = ok(b"first"), ok(b"secnd")
    script = [[a], [a], [a + a], [b], [b]]
    inst = Instance(lambda head, i: script[i])
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        bodies = []
        for _ in script:
            sock.sendall(REQ)
            bodies.append(recv_exactly_response(sock)[1] + nothing_more(sock, 0.1))
        gw.wait_inflight({})
    # observed: the third is b"first\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\n\r\n"
    assert bodies == [b"first", b"first", b"first", b"secnd", b"secnd"]
    assert inst.conn_of == [1, 1, 1, 2, 2]


def test_an_instance_that_sends_garbage_after_a_complete_response(tmp_path: Path) -> None:
    """9e9e525 says: bytes past the response put the connection out of step, the client still
    gets the response. That must hold whatever the extra bytes are."""
    script = [[ok(b"ok")], [ok(b"ok") + b"XYZ"], [ok(b"again")]]
    inst = Instance(lambda head, i: script[i])
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        bodies = []
        for _ in script:
            sock.sendall(REQ)
            bodies.append(recv_exactly_response(sock)[1])
    assert bodies == [b"ok", b"ok", b"again"]


def test_the_same_instance_answer_for_http10_and_http11_clients(tmp_path: Path) -> None:
    full = ok(b"hello")
    inst = Instance(lambda head, i: [full])
    r10 = b"GET /r HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n"
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw:
        address = _serve(gw, port)
        with (
            socket.create_connection(address, timeout=WAIT_S) as s11,
            socket.create_connection(address, timeout=WAIT_S) as s10,
        ):
            _LEFT.clear()
            for sock, req in [(s11, REQ), (s10, r10)] * 3 + [(s11, REQ), (s11, REQ)]:
                sock.sendall(req)
                head, body = recv_exactly_response(sock)
                assert body == b"hello"
                if req is r10:
                    assert b"Connection: keep-alive" in head
                else:
                    assert b"Connection" not in head
                assert nothing_more(sock, 0.05) == b""
    assert inst.connections == 1


def test_an_instance_that_answers_connection_close_the_same_way_each_time(
    tmp_path: Path,
) -> None:
    full = ok(b"hello", b"Connection: close\r\n")

    def answer(head: bytes, i: int) -> list[bytes | float]:
        return [full]

    inst = Instance(answer)

    def once_then_close(conn: socket.socket, head: bytes) -> None:
        with inst.lock:
            inst.connections += 1
            inst.seen.append(head)
        conn.sendall(full)

    with raw_backend(once_then_close) as port, GatewayThread(tmp_path) as gw:
        with client(gw, port) as sock:
            for _ in range(4):
                sock.sendall(REQ)
                head, body = recv_exactly_response(sock)
                assert body == b"hello" and b"Connection" not in head
        gw.wait_inflight({})
    assert inst.connections == 4


def test_a_client_that_asks_to_close_after_repeated_answers(tmp_path: Path) -> None:
    full = ok(b"hello")
    inst = Instance(lambda head, i: [full])
    closing = b"GET /r HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        for req in (REQ, REQ, REQ, closing):
            sock.sendall(req)
            head, body = recv_exactly_response(sock)
            assert body == b"hello"
            assert (b"Connection: close" in head) == (req is closing)
        assert sock.recv(16) == b""
        gw.wait_inflight({})


def test_a_gateway_closing_while_a_repeated_answer_is_on_its_way(tmp_path: Path) -> None:
    """The gateway starts closing while the instance holds a repeated request's answer: the
    client's answer says close and the connection ends."""
    gate = threading.Event()
    full = ok(b"hello")

    def answer(head: bytes, i: int) -> list[bytes | float]:
        if i == 2:
            gate.wait(WAIT_S)
        return [full]

    inst = Instance(answer)
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        for _ in range(2):
            sock.sendall(REQ)
            assert recv_exactly_response(sock)[1] == b"hello"
        sock.sendall(REQ)
        deadline = time.monotonic() + WAIT_S
        while len(inst.seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.002)
        assert gw.gateway is not None
        ctx = gw.gateway.ctx
        gw.call(lambda: setattr(ctx, "closing", True))
        gate.set()
        head, body = recv_exactly_response(sock)
        assert body == b"hello" and b"Connection: close" in head
        assert sock.recv(16) == b""


# --- ca4dd33: the client-side memo --------------------------------------------------------


def test_repeated_requests_forward_fresh_fields_and_do_not_grow_x_forwarded_for(
    tmp_path: Path,
) -> None:
    req = (
        b"GET /r HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 10.0.0.1\r\n"
        b"Connection: keep-alive, X-Hop\r\nX-Hop: drop\r\nX-Request-Start: t=1\r\n\r\n"
    )
    inst = Instance(lambda head, i: [ok(b"%d" % i)])
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        for i in range(4):
            sock.sendall(req)
            assert recv_exactly_response(sock)[1] == b"%d" % i
            time.sleep(0.002)
    starts = []
    for seen in inst.seen:
        assert seen.count(b"X-Forwarded-For:") == 1
        assert b"X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n" in seen
        assert b"X-Hop" not in seen and b"t=1\r\n" not in seen
        assert seen.count(b"X-Request-Start:") == 1
        starts.append(int(seen.split(b"X-Request-Start: t=")[1].split(b"\r\n")[0]))
    assert starts == sorted(set(starts))
    assert len({s.split(b"X-Request-Start")[0] for s in inst.seen}) == 1


def test_a_repeated_request_after_the_route_goes_away_and_comes_back(tmp_path: Path) -> None:
    inst = Instance(lambda head, i: [ok(b"hi")])
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        statuses = []
        for step in ("same", "same", "gone", "gone", "back", "back"):
            if step == "gone" and statuses[-1] == 200:
                gw.apply(snapshot(2, http_listener(80, {})))
            if step == "back" and statuses[-1] == 404:
                r = route("web", 80, [endpoint("a", port)], soft_limit=100)
                gw.apply(snapshot(3, http_listener(80, {"app.test": r})))
            sock.sendall(REQ)
            head, _ = recv_exactly_response(sock)
            statuses.append(int(head.split(b" ")[1]))
        gw.wait_inflight({})
    assert statuses == [200, 200, 404, 404, 200, 200]
    assert len(inst.seen) == 4


def test_a_repeated_request_after_a_gateway_404_on_the_connection(tmp_path: Path) -> None:
    inst = Instance(lambda head, i: [ok(b"hi")])
    other = b"GET /r HTTP/1.1\r\nHost: nowhere.test\r\n\r\n"
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        statuses = []
        for req in (REQ, REQ, other, REQ, other, other, REQ):
            sock.sendall(req)
            head, _ = recv_exactly_response(sock)
            statuses.append(int(head.split(b" ")[1]))
    assert statuses == [200, 200, 404, 200, 404, 404, 200]
    assert len(inst.seen) == 4


def test_a_repeated_request_after_a_refused_upgrade(tmp_path: Path) -> None:
    inst = Instance(lambda head, i: [ok(b"%d" % i)])
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        bodies = []
        for req in (REQ, REQ, UPGRADE, REQ, REQ):
            sock.sendall(req)
            bodies.append(recv_exactly_response(sock)[1])
        # the upgrade request and a repeat in one read
        sock.sendall(UPGRADE + REQ)
        bodies.append(recv_exactly_response(sock)[1])
        bodies.append(recv_exactly_response(sock)[1])
        sock.sendall(REQ)
        bodies.append(recv_exactly_response(sock)[1])
        gw.wait_inflight({})
    assert bodies == [b"%d" % i for i in range(8)]
    assert [s.split(b" ")[1] for s in inst.seen] == [
        b"/r",
        b"/r",
        b"/ws",
        b"/r",
        b"/r",
        b"/ws",
        b"/r",
        b"/r",
    ]


def test_pipelined_duplicates_after_a_remembered_request(tmp_path: Path) -> None:
    inst = Instance(lambda head, i: [ok(b"%d" % i)])
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        bodies = []
        sock.sendall(REQ)
        bodies.append(recv_exactly_response(sock)[1])
        sock.sendall(REQ + REQ)
        bodies.append(recv_exactly_response(sock)[1])
        bodies.append(recv_exactly_response(sock)[1])
        sock.sendall(REQ)
        bodies.append(recv_exactly_response(sock)[1])
        sock.sendall(REQ + REQ[:10])
        bodies.append(recv_exactly_response(sock)[1])
        time.sleep(0.05)
        sock.sendall(REQ[10:])
        bodies.append(recv_exactly_response(sock)[1])
        sock.sendall(REQ)
        bodies.append(recv_exactly_response(sock)[1])
        gw.wait_inflight({})
    assert bodies == [b"%d" % i for i in range(7)]


def test_a_repeated_request_while_the_last_answer_still_streams(tmp_path: Path) -> None:
    big = b"x" * 200_000

    def answer(head: bytes, i: int) -> list[bytes | float]:
        h = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(big) + 1)
        return [h, big[:1000], 0.1, big[1000:], b"%d" % (i % 10)]

    inst = Instance(answer)
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        sock.sendall(REQ)
        assert recv_exactly_response(sock)[1][-1:] == b"0"
        sock.sendall(REQ)
        time.sleep(0.03)  # the answer has begun, the instance is mid-body
        sock.sendall(REQ)
        assert recv_exactly_response(sock)[1][-1:] == b"1"
        assert recv_exactly_response(sock)[1][-1:] == b"2"
        gw.wait_inflight({})
    assert len(inst.seen) == 3


def test_repeated_requests_are_each_counted_and_logged(tmp_path: Path) -> None:
    inst = Instance(lambda head, i: [ok(b"hello")])
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        for _ in range(7):
            sock.sendall(REQ)
            assert recv_exactly_response(sock)[1] == b"hello"
        gw.wait_inflight({})
        gw.flush_log()
        assert gw.gateway is not None
        act = gw.gateway.ctx.activity
        group = gw.call(lambda: act.groups["uuid-web"])
        one = gw.call(lambda: act.instances["uuid-a"])
        assert (group.requests, one.requests) == (7, 7)
        assert group.bytes_out == one.bytes_out
    lines = [json.loads(ln) for ln in gw.access_log.read_text().splitlines() if ln.strip()]
    assert len(lines) == 7
    assert {(ln["status"], ln["target"], ln["bytes_out"]) for ln in lines} == {
        (200, "/r", lines[0]["bytes_out"])
    }
    assert lines[0]["bytes_out"] == len(ok(b"hello"))


def test_an_http10_keep_alive_client_repeating_itself(tmp_path: Path) -> None:
    r10 = b"GET /r HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"  # no Host: the default route
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    script = [ok(b"hello"), ok(b"hello"), ok(b"hello"), chunked]
    inst = Instance(lambda head, i: [script[i]])
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        for i in range(4):
            sock.sendall(r10)
            head, body = recv_exactly_response(sock)
            if i < 3:
                assert body == b"hello" and b"Connection: keep-alive" in head
            else:
                assert b"Connection: close" in head and body == b"hello"
        assert sock.recv(16) == b""
    assert all(b" HTTP/1.1\r\n" in s for s in inst.seen)


def test_a_repeated_request_after_a_refused_request_is_not_served(tmp_path: Path) -> None:
    """A 400 ends the connection: bytes after it are never served, repeat or not."""
    inst = Instance(lambda head, i: [ok(b"hi")])
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        sock.sendall(REQ)
        assert recv_exactly_response(sock)[1] == b"hi"
        sock.sendall(b"GET /r HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        head, _ = recv_exactly_response(sock)
        assert head.startswith(b"HTTP/1.1 400")
        with contextlib.suppress(OSError):
            sock.sendall(REQ)
        # The gateway closed; our late bytes may make the kernel reset: fine.
        with contextlib.suppress(ConnectionResetError):
            assert nothing_more(sock, 0.3) == b""
    assert len(inst.seen) == 1


def test_an_upgrade_the_gateway_answers_itself_ends_the_connection(tmp_path: Path) -> None:
    """An Upgrade request whose instance refuses connections gets a 502 from the gateway that
    closes the connection: what the client sent after it was kept for a tunnel that will not
    be. (Kept alive, the next request was swallowed until the idle deadline.) A plain request
    answered the same way keeps its connection."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there
    with GatewayThread(tmp_path) as gw, client(gw, dead_port) as sock:
        sock.sendall(REQ)
        head, _ = recv_exactly_response(sock)
        assert head.startswith(b"HTTP/1.1 502") and b"Connection: close" not in head, head
        sock.sendall(UPGRADE + REQ)
        head, _ = recv_exactly_response(sock)
        assert head.startswith(b"HTTP/1.1 502") and b"Connection: close" in head, head
        assert _LEFT.pop(sock.fileno(), b"") == b""  # the GET behind it is not answered
        assert sock.recv(65536) == b""  # closed: kept open, this would time out


def test_an_empty_body_response_repeats(tmp_path: Path) -> None:
    empty = b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n"
    script = [empty, empty, empty, ok(b"x"), empty]
    inst = Instance(lambda head, i: [script[i]])
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        bodies = []
        for _ in script:
            sock.sendall(REQ)
            bodies.append(recv_exactly_response(sock)[1] + nothing_more(sock, 0.05))
    assert bodies == [b"", b"", b"", b"x", b""]
    assert inst.connections == 1


def test_a_pooled_connection_the_instance_closed_is_retried_for_a_repeated_request(
    tmp_path: Path,
) -> None:
    """The instance closes each connection just after its (keep-alive) answer."""
    connections: list[int] = []

    def once(conn: socket.socket, head: bytes) -> None:
        connections.append(1)
        conn.sendall(ok(b"n%d" % len(connections)))
        time.sleep(0.02)

    with raw_backend(once) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        bodies = []
        for _ in range(4):
            sock.sendall(REQ)
            bodies.append(recv_exactly_response(sock)[1])
            time.sleep(0.1)  # the instance has closed its side by now
        gw.wait_inflight({})
    assert bodies == [b"n1", b"n2", b"n3", b"n4"]


def test_a_client_that_half_closes_after_a_repeated_request(tmp_path: Path) -> None:
    inst = Instance(lambda head, i: [ok(b"hello")])
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        for _ in range(2):
            sock.sendall(REQ)
            assert recv_exactly_response(sock)[1] == b"hello"
        sock.sendall(REQ)
        sock.shutdown(socket.SHUT_WR)
        assert recv_exactly_response(sock)[1] == b"hello"
        assert sock.recv(16) == b""
        gw.wait_inflight({})


def test_requests_with_leading_and_trailing_blank_lines_repeat(tmp_path: Path) -> None:
    reqs = [b"\r\n" + REQ, b"\r\n" + REQ, REQ + b"\r\n", REQ + b"\r\n", REQ]
    inst = Instance(lambda head, i: [ok(b"%d" % i)])
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        bodies = []
        for req in reqs:
            sock.sendall(req)
            bodies.append(recv_exactly_response(sock)[1] + nothing_more(sock, 0.05))
    assert bodies == [b"%d" % i for i in range(len(reqs))]


def test_a_repeated_request_with_expect_and_no_body(tmp_path: Path) -> None:
    req = b"GET /r HTTP/1.1\r\nHost: app.test\r\nExpect: 100-continue\r\n\r\n"
    cont = b"HTTP/1.1 100 Continue\r\n\r\n"
    script: list[list[bytes | float]] = [
        [cont, 0.03, ok(b"a")],
        [cont, 0.03, ok(b"a")],
        [cont + ok(b"a")],
        [ok(b"a")],
    ]
    inst = Instance(lambda head, i: script[i])
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        for i in range(len(script)):
            sock.sendall(req)
            data = b""
            deadline = time.monotonic() + WAIT_S
            while not data.endswith(b"\r\n\r\na") and time.monotonic() < deadline:
                chunk = sock.recv(4096)
                assert chunk
                data += chunk
            assert data.count(b"HTTP/1.1 200") == 1
            assert data.startswith(b"HTTP/1.1 100") == (i < 3)
    assert inst.connections == 1


def test_requests_after_a_refused_upgrade_are_answered_in_the_order_sent(
    tmp_path: Path,
) -> None:
    """An Upgrade request and a request behind it in one read (kept for the tunnel), then,
    once the instance has begun a non-101 answer, one more: answers in the order sent."""

    def answer(head: bytes, i: int) -> list[bytes | float]:
        if head.startswith(b"GET /ws"):
            return [b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", 0.3, b"nows"]
        target = head.split(b" ")[1]
        return [ok(target)]

    inst = Instance(answer)
    with raw_backend(inst) as port, GatewayThread(tmp_path) as gw, client(gw, port) as sock:
        sock.sendall(UPGRADE + b"GET /1 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        time.sleep(0.15)  # the instance has sent the head of its answer to the Upgrade
        sock.sendall(b"GET /2 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        bodies = [recv_exactly_response(sock)[1] for _ in range(3)]
    assert bodies == [b"nows", b"/1", b"/2"]


def test_a_repeated_request_after_the_gateway_answered_504(tmp_path: Path) -> None:
    from portway.gateway.context import Limits

    gate = threading.Event()

    def answer(head: bytes, i: int) -> list[bytes | float]:
        if i == 1:
            gate.wait(3.0)  # past the first-byte deadline
            return []
        return [ok(b"%d" % i)]

    inst = Instance(answer)
    limits = Limits(first_byte_timeout_s=0.3)
    with raw_backend(inst) as port, GatewayThread(tmp_path, limits) as gw, client(gw, port) as sock:
        statuses = []
        for _ in range(3):
            sock.sendall(REQ)
            head, body = recv_exactly_response(sock)
            statuses.append(
                (int(head.split(b" ")[1]), body if head.startswith(b"HTTP/1.1 200") else b"")
            )
        gate.set()
        gw.wait_inflight({})
    assert statuses == [(200, b"0"), (504, b""), (200, b"2")]
