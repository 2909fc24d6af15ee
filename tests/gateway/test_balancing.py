"""Seed 002's balancing and semantics.md's limits, over real sockets through the real gateway.

In-flight counts are held where the test wants them by slow backends: the gateway is first
given a Snapshot with one instance, requests (or connections) that the backend holds open are
sent, then the next instance, and so on; the final Snapshot lists all instances, and the counts
the gateway keeps per instance carry over (they are keyed by instance, not by Snapshot).
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from portway.gateway.balancer import Verdict, decide
from portway.gateway.context import Limits
from portway.model.snapshot import Endpoint

from .harness import (
    WAIT_S,
    GatewayThread,
    backends,
    http_get,
    http_listener,
    route,
    snapshot,
    tcp_listener,
)

TRIALS = 400
# Binomial(400, 1/2): sd 10; four sd either side fails a correct balancer about once in 15,000.
LOW, HIGH = 160, 240
HELD = {"a": 4, "b": 1, "c": 2, "d": 1}  # seed 002's example


# --- the policy alone -------------------------------------------------------------------------


def _endpoints(*names: str) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(f"uuid-{n}", n, "127.0.0.1", 1) for n in names)


def test_least_in_flight_ties_are_uniform() -> None:
    import random

    rng = random.Random(7)
    eps = _endpoints("a", "b", "c", "d")
    counts = {f"uuid-{k}": v for k, v in HELD.items()}
    seen = Counter()
    for _ in range(4000):
        decision = decide(eps, counts, 1000, 65535, False, rng)
        assert decision.verdict is Verdict.DISPATCH and decision.endpoint is not None
        seen[decision.endpoint.name] += 1
    assert set(seen) == {"b", "d"}
    assert 1800 <= seen["b"] <= 2200


@pytest.mark.parametrize(
    ("counts", "soft", "hard", "can_wake", "verdict", "chosen"),
    [
        ({}, 1, 10, False, Verdict.DISPATCH, None),
        ({"a": 1, "b": 1}, 1, 10, True, Verdict.WAKE, None),  # rule 2: all at soft → wake
        ({"a": 1, "b": 0}, 1, 10, True, Verdict.DISPATCH, "b"),  # rule 1: one below soft
        ({"a": 3, "b": 2}, 1, 10, False, Verdict.DISPATCH, "b"),  # rule 3: soft exceeded
        ({"a": 2, "b": 2}, 1, 2, False, Verdict.AT_HARD_LIMIT, None),  # rule 4
    ],
)
def test_limits_rules(
    counts: dict[str, int],
    soft: int,
    hard: int,
    can_wake: bool,
    verdict: Verdict,
    chosen: str | None,
) -> None:
    import random

    inflight = {f"uuid-{k}": v for k, v in counts.items()}
    decision = decide(_endpoints("a", "b"), inflight, soft, hard, can_wake, random.Random(1))
    assert decision.verdict is verdict
    if chosen is not None:
        assert decision.endpoint is not None and decision.endpoint.name == chosen


def test_nothing_running_and_nothing_to_wake() -> None:
    import random

    assert decide((), {}, 1, 2, False, random.Random(1)).verdict is Verdict.NO_INSTANCE
    assert decide((), {}, 1, 2, True, random.Random(1)).verdict is Verdict.WAKE


# --- HTTP mode over real sockets --------------------------------------------------------------


def _wait_for(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def _hold_http(address: tuple[str, int], count: int) -> list[threading.Thread]:
    threads = []
    for _ in range(count):
        t = threading.Thread(target=http_get, args=(address, "/hold"), daemon=True)
        t.start()
        threads.append(t)
    return threads


def test_seed_002_http_requests_go_to_the_least_loaded(tmp_path: Path) -> None:
    with backends("a", "b", "c", "d") as bes, GatewayThread(tmp_path) as gw:
        by_name = {b.name: b for b in bes}
        held: list[threading.Thread] = []
        expected: dict[str, int] = {}
        version = 1
        for name, count in HELD.items():
            # Only this instance is eligible while its requests are sent and held.
            r = route("web", 80, [by_name[name].endpoint()], soft_limit=1000)
            gw.apply(snapshot(version, http_listener(80, {"app.test": r})))
            version += 1
            held += _hold_http(gw.address(80), count)
            expected[f"uuid-{name}"] = count
            gw.wait_inflight(expected)
            # In flight is counted before the request is sent; the next Snapshot must not find
            # one still connecting (it would choose again), so wait until the backend has them.
            _wait_for(lambda b=by_name[name], c=count: b.requests == c)
        everyone = route("web", 80, [b.endpoint() for b in bes], soft_limit=1000)
        gw.apply(snapshot(version, http_listener(80, {"app.test": everyone})))
        address = gw.address(80)
        answered: Counter[str] = Counter()
        for _ in range(TRIALS):
            status, _, body = http_get(address, "/")
            assert status == 200
            answered[body.decode()] += 1
            gw.wait_inflight(expected)  # the request is over: counts back at 4,1,2,1
        for b in bes:
            b.release()
        for t in held:
            t.join(WAIT_S)
        assert set(answered) == {"b", "d"}, answered
        assert LOW <= answered["b"] <= HIGH, answered
        assert by_name["a"].requests == 4 and by_name["c"].requests == 2


def test_hard_limit_refuses_at_once_and_is_never_exceeded(tmp_path: Path) -> None:
    with backends("a", "b") as bes, GatewayThread(tmp_path) as gw:
        r = route("web", 80, [b.endpoint() for b in bes], soft_limit=1, hard_limit=2)
        gw.apply(snapshot(1, http_listener(80, {"app.test": r})))
        address = gw.address(80)
        results: list[tuple[int, dict[str, str], bytes]] = []
        lock = threading.Lock()

        def slow() -> None:
            result = http_get(address, "/hold")
            with lock:
                results.append(result)

        threads = [threading.Thread(target=slow, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        gw.wait_inflight({"uuid-a": 2, "uuid-b": 2})
        # The fifth finds both instances at their hard limit: refused at once, not queued.
        status, headers, body = http_get(address, "/hold", timeout=2.0)
        assert status == 503
        assert headers.get("retry-after") == "1"
        assert b"hard limit" in body
        for b in bes:
            b.release()
        for t in threads:
            t.join(WAIT_S)
        assert sorted(r[0] for r in results) == [200, 200, 200, 200]
        assert all(b.max_concurrent <= 2 for b in bes)
        assert sum(b.requests for b in bes) == 4


# --- TCP mode ---------------------------------------------------------------------------------


def _tls_client(gw: GatewayThread) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=gw.ca.pem.decode())


def _connect(gw: GatewayThread, context: ssl.SSLContext, sni: str) -> ssl.SSLSocket:
    raw = socket.create_connection(gw.address(10000), timeout=WAIT_S)
    return context.wrap_socket(raw, server_hostname=sni)


def _hold_tcp(gw: GatewayThread, context: ssl.SSLContext, count: int) -> list[ssl.SSLSocket]:
    held = []
    for _ in range(count):
        conn = _connect(gw, context, "app.portway.test")
        conn.recv(64)  # the backend's name: the relay is up
        conn.sendall(b"hold\n")
        held.append(conn)
    return held


def test_seed_002_tcp_connections_go_to_the_least_loaded(tmp_path: Path) -> None:
    with backends("a", "b", "c", "d", raw=True) as bes, GatewayThread(tmp_path) as gw:
        context = _tls_client(gw)
        by_name = {b.name: b for b in bes}
        held: list[ssl.SSLSocket] = []
        expected: dict[str, int] = {}
        version = 1
        for name, count in HELD.items():
            r = route("tcp", 10000, [by_name[name].endpoint()], soft_limit=1000)
            gw.apply(snapshot(version, tcp_listener(10000, {"app.portway.test": r})))
            version += 1
            held += _hold_tcp(gw, context, count)
            expected[f"uuid-{name}"] = count
            gw.wait_inflight(expected)
        everyone = route("tcp", 10000, [b.endpoint() for b in bes], soft_limit=1000)
        gw.apply(snapshot(version, tcp_listener(10000, {"app.portway.test": everyone})))
        answered: Counter[str] = Counter()
        for _ in range(TRIALS):
            with _connect(gw, context, "app.portway.test") as conn:
                answered[conn.recv(64).decode().strip()] += 1
            gw.wait_inflight(expected)
        for conn in held:
            conn.close()
        assert set(answered) == {"b", "d"}, answered
        assert LOW <= answered["b"] <= HIGH, answered


def test_tcp_hard_limit_closes_at_once(tmp_path: Path) -> None:
    with backends("a", raw=True) as bes, GatewayThread(tmp_path) as gw:
        context = _tls_client(gw)
        r = route("tcp", 10000, [bes[0].endpoint()], soft_limit=1, hard_limit=1)
        gw.apply(snapshot(1, tcp_listener(10000, {"app.portway.test": r})))
        held = _hold_tcp(gw, context, 1)
        with _connect(gw, context, "app.portway.test") as refused:
            refused.settimeout(2.0)
            assert refused.recv(64) == b""  # closed without reaching an instance
        assert bes[0].requests == 1
        for conn in held:
            conn.close()


# --- the soft limit and held work ---------------------------------------------------------------


class NeverWakes:
    """A waker whose wakes never end: held work can only be served by what already runs."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def wake(self, user: str, instance: str) -> asyncio.Future[bool]:
        self.asked.append(instance)
        return asyncio.get_running_loop().create_future()


def test_work_held_at_the_soft_limit_goes_where_a_request_ends(tmp_path: Path) -> None:
    with backends("a") as (a,), GatewayThread(tmp_path, Limits(wake_timeout_s=20)) as gw:
        waker = NeverWakes()
        assert gw.gateway is not None
        wakes = gw.gateway.ctx.wakes
        gw.call(lambda: setattr(wakes, "waker", waker))
        asleep = Endpoint("uuid-z", "z", "127.0.0.1", 1)
        r = dataclasses.replace(route("web", 80, [a.endpoint()], soft_limit=1), standby=(asleep,))
        gw.apply(snapshot(1, http_listener(80, {"app.test": r})))
        address = gw.address(80)
        first: list[int] = []
        holder = threading.Thread(target=lambda: first.append(http_get(address, "/hold")[0]))
        holder.start()
        gw.wait_inflight({"uuid-a": 1})
        second: list[tuple[int, dict[str, str], bytes]] = []
        waiter = threading.Thread(target=lambda: second.append(http_get(address, "/")))
        waiter.start()
        deadline = time.monotonic() + WAIT_S
        while not waker.asked and time.monotonic() < deadline:
            time.sleep(0.002)
        assert waker.asked == ["uuid-z"]  # a at its soft limit: the second is held for a wake
        released = time.monotonic()
        a.release()
        waiter.join(WAIT_S)
        holder.join(WAIT_S)
        # The wake never ends, so only the end of the first request can have sent it on.
        assert time.monotonic() - released < 2.0
        assert first == [200]
        assert second and second[0][0] == 200 and second[0][2] == b"a"
        # It waited, and says so, though the instance's answer repeats the first one's.
        assert float(second[0][1]["x-portway-wake-ms"]) > 0
