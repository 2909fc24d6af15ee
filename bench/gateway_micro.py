"""The gateway's HTTP request path without sockets: Python calls and CPU time per request.

    .venv/bin/python bench/gateway_micro.py [--requests 20000] [--profile-requests 200]
                                            [--top 0] [--json]
    .venv/bin/python bench/gateway_micro.py --only N

The call counts see Python only: with the compiled build (src/portway/compiled.py) they are
near zero; `PORTWAY_PURE=1` gives the pure modules' counts.

`--only N` runs N requests and nothing else, for an instruction count that this shared VM's
noise cannot move: under `valgrind --tool=callgrind`, with N = 2000 and N = 7000, the
difference of the two totals over 5000 is the instructions per request (repeats to 0.1%).

Drives one `ClientConnection` and pooled `UpstreamConnection`s (src/portway/gateway/http/proxy.py)
with fake transports, as a keep-alive client behind the gateway does: a wrk-like `GET /` in, an
nginx-like 100-byte response back, the write batch flushed, and every 256 requests the counters
and the access log settled (the sweeper's share). Nothing here waits on I/O, so what it measures
is the Python the gateway runs per request, which is what bench/gateway.py's figures are bound by
(the gateway burns a whole core at saturation).

Two figures:
- calls per request: Python function calls (`sys.setprofile` "call" events) and C calls
  ("c_call" events) over `--profile-requests` requests, divided. `--top N` lists the N Python
  functions called most often per request.
- µs per request: the wall time of `--requests` requests without the profiler (best of 3).

The event loop is a stand-in: `call_soon` callbacks (the write batch) run after each request,
`time()` is the monotonic clock. Every loop is bounded by the request counts.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

from portway.gateway.accesslog import AccessLog
from portway.gateway.context import Context, Limits
from portway.gateway.http.proxy import ClientConnection, UpstreamConnection
from portway.model.snapshot import HTTP_MODE, Endpoint, Listener, Route, Snapshot

HOST = "bench-gw.portway.test"
REQUEST = b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"
BODY = b"x" * 100
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 03:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n" + BODY
)
SETTLE_EVERY = 256
POOLED = 4  # idle connections per instance before the run


class FakeTransport:
    """Accepts writes and pauses; says nothing is closing."""

    def __init__(self) -> None:
        self.written = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default


class FakeLoop:
    """What the request path asks of its loop: the clock and `call_soon`."""

    def __init__(self) -> None:
        self.ready: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def time(self) -> float:
        return time.monotonic()

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        self.ready.append((callback, args))

    def run_ready(self) -> None:
        ready, self.ready = self.ready, []
        for callback, args in ready:
            callback(*args)


class Rig:
    """One client connection of a gateway serving one route with two instances."""

    def __init__(self, log_dir: Path) -> None:
        self.loop = FakeLoop()
        ctx = Context(
            Limits(), host="127.0.0.1", port_offset=0, access_log=AccessLog(log_dir / "access.log")
        )
        ctx.loop = self.loop  # type: ignore[assignment]
        ctx.clock = self.loop.time
        endpoints = (
            Endpoint("uuid-a", "a", "10.0.0.1", 8080),
            Endpoint("uuid-b", "b", "10.0.0.2", 8080),
        )
        route = Route("uuid-g", "bench-gw", "alice", 80, False, endpoints, (), 1, 65535)
        listener = Listener(80, HTTP_MODE, False, MappingProxyType({HOST: route}), route)
        ctx.snapshot = Snapshot(1, MappingProxyType({80: listener}))
        ctx.eligible = frozenset(e.instance for e in endpoints)
        for endpoint in endpoints:
            for _ in range(POOLED):
                conn = UpstreamConnection(ctx, endpoint)
                conn.connection_made(FakeTransport())
                assert ctx.put_idle(endpoint, conn)
        self.ctx = ctx
        self.client = ClientConnection(ctx, 80, False)
        self.client.connection_made(FakeTransport())
        self.count = 0

    def one(self) -> None:
        """One request and its response, then the loop iteration's writes."""
        client = self.client
        client.data_received(REQUEST)
        upstream = client.queue[0].upstream
        assert upstream is not None, "the request was not dispatched to a pooled connection"
        self.loop.run_ready()
        upstream.data_received(RESPONSE)
        self.loop.run_ready()
        self.count += 1
        if self.count % SETTLE_EVERY == 0:
            self.ctx.activity.settle()
            self.ctx.access_log.flush()

    def check(self) -> None:
        assert not self.client.queue, "a response did not complete"
        assert not self.client.dead, "the client connection was closed"
        assert not self.ctx.activity.inflight, "requests left counted in flight"


def profile(rig: Rig, requests: int) -> tuple[float, float, collections.Counter[str]]:
    py: collections.Counter[str] = collections.Counter()
    c_calls = 0

    def hook(frame: Any, event: str, arg: Any) -> None:
        nonlocal c_calls
        if event == "call":
            code = frame.f_code
            py[f"{code.co_name} ({Path(code.co_filename).name}:{code.co_firstlineno})"] += 1
        elif event == "c_call":
            c_calls += 1
            py[f"[C] {getattr(arg, '__qualname__', arg)}"] += 1

    one = rig.one
    sys.setprofile(hook)
    try:
        for _ in range(requests):
            one()
    finally:
        sys.setprofile(None)
    # rig.one itself and the rig's run_ready calls are the harness, not the gateway.
    harness = {k for k in py if "gateway_micro.py" in k}
    for key in harness:
        del py[key]
    python = sum(n for k, n in py.items() if not k.startswith("[C]"))
    return python / requests, c_calls / requests, py


def timed(rig: Rig, requests: int) -> float:
    one = rig.one
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(requests):
            one()
        best = min(best, time.perf_counter() - start)
    return best / requests * 1e6


async def only(requests: int) -> None:
    with tempfile.TemporaryDirectory(prefix="portway-micro-") as tmp:
        rig = Rig(Path(tmp))
        for _ in range(requests):
            rig.one()
        rig.check()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="portway-micro-") as tmp:
        rig = Rig(Path(tmp))
        for _ in range(SETTLE_EVERY):  # warm: counters, labels and caches exist
            rig.one()
        rig.check()
        py_calls, c_calls, by_function = profile(rig, args.profile_requests)
        rig.check()
        us = timed(rig, args.requests)
        rig.check()
    per_request = args.profile_requests
    return {
        "python_calls_per_request": round(py_calls, 2),
        "c_calls_per_request": round(c_calls, 2),
        "us_per_request": round(us, 2),
        "top": [(name, round(n / per_request, 2)) for name, n in by_function.most_common(args.top)],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--profile-requests", type=int, default=SETTLE_EVERY * 2)
    parser.add_argument("--top", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", type=int, default=0, metavar="N")
    if parser.parse_args().only:
        asyncio.run(only(parser.parse_args().only))
        sys.exit(0)
    result = asyncio.run(main(parser.parse_args()))
    if parser.parse_args().json:
        print(json.dumps(result))
    else:
        print(f"Python calls per request: {result['python_calls_per_request']}")
        print(f"C calls per request:      {result['c_calls_per_request']}")
        print(f"µs per request:           {result['us_per_request']}")
        for name, n in result["top"]:
            print(f"  {n:7.2f}  {name}")
