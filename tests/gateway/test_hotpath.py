"""The request path's shortcuts give what the long way gives (no sockets).

`head.client_head` memoizes response heads; `Activity.settle` takes a limit; `least_loaded`
counts ties instead of listing them. Each is checked against the plain computation.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter

from portway.gateway import http
from portway.gateway.accesslog import AccessLog
from portway.gateway.activity import Activity
from portway.gateway.balancer import least_loaded
from portway.gateway.context import Context, Limits
from portway.gateway.http.head import (
    AS_IS,
    CLIENT_HTTP10,
    CLOSING,
    HEAD_REQUEST,
    MEMO_SIZE,
    NO_BODY,
    RECHUNK,
    _client_head,
    client_head,
    parse_response_head,
)
from portway.gateway.http.proxy import ClientConnection, Exchange
from portway.model.snapshot import Endpoint

HEADS = [
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n",  # ends with the close
    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\nConnection: close, x-a\r\nX-A: 1\r\n\r\n",
]


def test_client_head_is_the_same_from_the_memo_and_from_scratch() -> None:
    for raw in HEADS:
        status = int(raw[9:12])
        for flags in range(8):
            first = client_head(raw, status, flags)
            again = client_head(bytes(raw), status, flags)  # an equal head, another object
            fresh = _client_head(parse_response_head(raw), status, flags)
            assert first == again == fresh


def test_client_head_framing_and_close() -> None:
    keep, chunked, until_close, no_content, not_modified = HEADS
    made = client_head(keep, 200, 0)
    assert made.body_mode == AS_IS and not made.close and not made.until_close
    assert made.head.endswith(b"\r\nContent-Length: 5\r\n\r\n")
    assert b"Connection" not in made.head  # hop-by-hop, and the client keeps the connection
    assert client_head(keep, 200, CLOSING).head.endswith(b"Connection: close\r\n\r\n")
    assert client_head(keep, 200, CLIENT_HTTP10).head.endswith(b"Connection: keep-alive\r\n\r\n")
    assert client_head(keep, 200, HEAD_REQUEST).body_mode == NO_BODY
    assert client_head(chunked, 200, 0).body_mode == RECHUNK
    made = client_head(until_close, 200, 0)
    assert made.body_mode == RECHUNK and made.until_close and not made.close
    made = client_head(until_close, 200, CLIENT_HTTP10)
    assert made.body_mode == AS_IS and made.close  # an HTTP/1.0 client learns the end by the close
    assert b"Content-Length" not in client_head(no_content, 204, 0).head
    made = client_head(not_modified, 304, 0)
    assert made.body_mode == NO_BODY and b"X-A" not in made.head


def test_client_head_memo_stays_bounded() -> None:
    for n in range(MEMO_SIZE * 3):
        client_head(b"HTTP/1.1 200 OK\r\nX-N: %d\r\nContent-Length: 0\r\n\r\n" % n, 200, 0)
    assert len(http.head._MEMO) <= MEMO_SIZE


def _finished(client: ClientConnection, n: int) -> Exchange:
    """A finished request for `/n`, as ClientConnection._finish hands it over."""
    exchange = Exchange(client, 1.0)
    exchange.method, exchange.target, exchange.status = b"GET", b"/%d" % n, 200
    exchange.finished = 1.5
    return exchange


async def _a_client() -> ClientConnection:
    ctx = Context(Limits(), host="127.0.0.1", port_offset=0, access_log=AccessLog(None))
    return ClientConnection(ctx, 80, False)


def test_settle_with_a_limit_takes_the_oldest_first() -> None:
    client = asyncio.run(_a_client())
    logged: list[str] = []
    activity = Activity(on_entries=logged.extend)

    def targets() -> list[str]:
        return [json.loads(line)["target"] for line in logged]

    activity.pending.extend(_finished(client, n) for n in range(10))
    activity.settle(4)
    assert targets() == ["/0", "/1", "/2", "/3"]
    assert len(activity.pending) == 6
    activity.settle(100)
    assert targets() == [f"/{n}" for n in range(10)] and not activity.pending
    activity.pending.extend(_finished(client, n) for n in range(3))
    activity.settle()
    assert len(logged) == 13 and not activity.pending


def test_least_loaded_ties_are_uniform_and_draw_once() -> None:
    endpoints = tuple(Endpoint(f"u{i}", f"n{i}", "10.0.0.1", 80) for i in range(4))
    inflight = {"u0": 2, "u1": 1, "u2": 1, "u3": 1}
    rng = random.Random(7)
    picks = Counter(least_loaded(endpoints, inflight, rng)[0].name for _ in range(6000))
    assert set(picks) == {"n1", "n2", "n3"}
    assert all(1700 < n < 2300 for n in picks.values())
    # No tie: no draw, so the random source is left as it was.
    rng, twin = random.Random(3), random.Random(3)
    assert least_loaded(endpoints, {"u0": 0, "u1": 1, "u2": 1, "u3": 1}, rng)[0].name == "n0"
    assert rng.random() == twin.random()
