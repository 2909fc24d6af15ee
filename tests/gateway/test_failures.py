"""What the gateway does when a client or an instance goes away mid-exchange: no in-flight count
may leak (a leak would hold every later drain until its timeout), and the client learns of it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import ssl
import threading
from collections.abc import Iterator
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
    tcp_listener,
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


@contextlib.contextmanager
def slow_to_accept() -> Iterator[tuple[socket.socket, list[socket.socket]]]:
    """A listening socket whose accept queue is full: a connection to it waits (its SYN is
    dropped and sent again after about a second) until `drain` makes room."""
    gate = socket.socket()
    gate.bind(("127.0.0.1", 0))
    gate.listen(0)
    fillers = [socket.create_connection(gate.getsockname(), timeout=WAIT_S)]  # queue of 1: full
    try:
        yield gate, fillers
    finally:
        for s in fillers:
            s.close()
        gate.close()


def drain(gate: socket.socket) -> None:
    gate.settimeout(0.2)
    with contextlib.suppress(TimeoutError):
        while True:
            gate.accept()[0].close()


def test_a_connection_that_opens_after_its_instance_left_goes_by_the_new_snapshot(
    tmp_path: Path,
) -> None:
    """An instance leaves (drained, or gone to standby) while the gateway is still connecting
    to it: once connected, the request is routed by the Snapshot in place, to the instance
    that is there now; choosing again by the route it began with connected to the departed
    instance again, and again, and never answered."""
    with (
        slow_to_accept() as (gate, _),
        backends("b") as (b,),
        GatewayThread(tmp_path) as gw,
    ):
        departed = endpoint("a", gate.getsockname()[1])
        gw.apply(snapshot(1, http_listener(80, {"app.test": route("web", 80, [departed])})))
        answers: list[tuple[int, dict[str, str], bytes]] = []
        client = threading.Thread(target=lambda: answers.append(http_get(gw.address(80))))
        client.start()
        gw.wait_inflight({"uuid-a": 1})  # connecting to a, which does not accept yet
        gw.apply(snapshot(2, http_listener(80, {"app.test": route("web", 80, [b.endpoint()])})))
        drain(gate)  # the connection to a opens now
        client.join(WAIT_S)
        assert answers and answers[0][0] == 200 and answers[0][2] == b"b"
        gw.wait_inflight({})


def test_a_tcp_connection_that_opens_after_its_instance_left_goes_by_the_new_snapshot(
    tmp_path: Path,
) -> None:
    """The same for a TCP-mode connection (balanced per connection)."""
    with (
        slow_to_accept() as (gate, _),
        backends("b", raw=True) as (b,),
        GatewayThread(tmp_path) as gw,
    ):
        departed = endpoint("a", gate.getsockname()[1])
        hosts = {"app.portway.test": route("tcp", 10000, [departed])}
        gw.apply(snapshot(1, tcp_listener(10000, hosts)))
        context = ssl.create_default_context(cadata=gw.ca.pem.decode())
        raw = socket.create_connection(gw.address(10000), timeout=WAIT_S)
        with context.wrap_socket(raw, server_hostname="app.portway.test") as conn:
            gw.wait_inflight({"uuid-a": 1})  # connecting to a, which does not accept yet
            hosts = {"app.portway.test": route("tcp", 10000, [b.endpoint()])}
            gw.apply(snapshot(2, tcp_listener(10000, hosts)))
            drain(gate)  # the connection to a opens now
            assert conn.recv(64) == b"b\n"  # relayed to b, which greets with its name


class WakesAtOnce:
    """A waker whose instances can serve as soon as asked (they already listen)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def wake(self, user: str, instance: str) -> asyncio.Future[bool]:
        self.asked.append(instance)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        done.set_result(True)
        return done


def test_when_no_running_instance_accepts_a_standby_one_is_woken(tmp_path: Path) -> None:
    """The only running instance refuses connections (it is going away); the group has one in
    standby: the request is held and that one woken, not answered 502."""
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))
    gone = endpoint("a", refusing.getsockname()[1])
    refusing.close()  # nothing listens there now: connections are refused
    with backends("b") as (b,), GatewayThread(tmp_path) as gw:
        assert gw.gateway is not None
        waker, wakes = WakesAtOnce(), gw.gateway.ctx.wakes
        gw.call(lambda: setattr(wakes, "waker", waker))
        r = dataclasses.replace(route("web", 80, [gone]), standby=(b.endpoint(),))
        gw.apply(snapshot(1, http_listener(80, {"app.test": r})))
        status, _, body = http_get(gw.address(80))
        assert (status, body) == (200, b"b")
        assert waker.asked == ["uuid-b"]
