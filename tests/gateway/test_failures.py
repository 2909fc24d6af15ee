"""What the gateway does when a client or an instance goes away mid-exchange: no in-flight count
may leak (a leak would hold every later drain until its timeout), and the client learns of it."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from .harness import (
    WAIT_S,
    GatewayThread,
    backends,
    endpoint,
    http_get,
    http_listener,
    read_response,
    route,
    snapshot,
)
from .test_proxy import raw_backend


def test_a_client_that_leaves_mid_request_leaks_no_in_flight_count(tmp_path: Path) -> None:
    with backends("a") as bes, GatewayThread(tmp_path) as gw:
        r = route("web", 80, [bes[0].endpoint()])
        gw.apply(snapshot(1, http_listener(80, {"app.test": r})))
        sock = socket.create_connection(gw.address(80), timeout=WAIT_S)
        sock.sendall(b"GET /hold HTTP/1.1\r\nHost: app.test\r\n\r\n")
        gw.wait_inflight({"uuid-a": 1})
        # An end of stream may be a half-close (the client still wants its answer), so the
        # request stays in flight until the instance answers; then nothing is left counted.
        sock.close()
        bes[0].release()
        gw.wait_inflight({})
        assert http_get(gw.address(80))[0] == 200  # the instance still serves others


def test_an_instance_that_dies_mid_response_closes_the_client_and_is_uncounted(
    tmp_path: Path,
) -> None:
    def die(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        # and the connection closes with 93 bytes missing

    with raw_backend(die) as port, GatewayThread(tmp_path) as gw:
        r = route("web", 80, [endpoint("a", port)])
        gw.apply(snapshot(1, http_listener(80, {"app.test": r})))
        with socket.create_connection(gw.address(80), timeout=WAIT_S) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            status, headers, body = read_response(sock)
            assert status == 200 and headers["content-length"] == "100"
            assert body == b"partial"  # then the gateway closed: the client sees it truncated
        gw.wait_inflight({})
        gw.flush_log()
        [line] = [json.loads(x) for x in gw.access_log.read_text().splitlines()]
        assert line["outcome"] == "instance_closed_midway"


def test_no_instance_accepting_is_a_502_after_trying_each(tmp_path: Path) -> None:
    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])  # free again: connections are refused
    with GatewayThread(tmp_path) as gw:
        r = route("web", 80, [endpoint("a", ports[0]), endpoint("b", ports[1])])
        gw.apply(snapshot(1, http_listener(80, {"app.test": r})))
        status, _, body = http_get(gw.address(80))
        assert status == 502 and b"no instance accepted" in body
        gw.wait_inflight({})
