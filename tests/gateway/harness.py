"""The real gateway in a thread of its own, for tests that drive it with blocking sockets.

`GatewayThread` runs `Gateway` on a uvloop loop in a background thread, listening on loopback
ports of the OS's choosing, and serves Snapshots the test builds by hand (`route`, `snapshot`).
Backends are real servers (threads with blocking sockets), so every byte crosses real sockets.
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import uvloop

from portway.gateway.accesslog import AccessLog
from portway.gateway.context import Context, Limits
from portway.gateway.listeners import Gateway
from portway.gateway.tls import CertificateStore, LocalCA
from portway.model.snapshot import HTTP_MODE, TCP_MODE, Endpoint, Listener, Route, Snapshot

T = TypeVar("T")
WAIT_S = 10.0
DOMAIN = "portway.test"


def endpoint(name: str, port: int, host: str = "127.0.0.1") -> Endpoint:
    return Endpoint(instance=f"uuid-{name}", name=name, host=host, port=port)


def route(
    group: str,
    port: int,
    endpoints: Sequence[Endpoint],
    *,
    soft_limit: int = 1,
    hard_limit: int = 65535,
    redirect: bool = False,
    user: str = "alice",
) -> Route:
    return Route(
        group=f"uuid-{group}",
        group_name=group,
        user=user,
        port=port,
        redirect=redirect,
        endpoints=tuple(endpoints),
        standby=(),
        soft_limit=soft_limit,
        hard_limit=hard_limit,
    )


def snapshot(version: int, *listeners: tuple[int, str, bool, dict[str, Route]]) -> Snapshot:
    """Listeners as (public port, mode, tls, {host: route})."""
    built = {}
    for port, mode, tls, hosts in listeners:
        groups = {r.group for r in hosts.values()}
        default = next(iter(hosts.values())) if len(groups) == 1 else None
        built[port] = Listener(port, mode, tls, MappingProxyType(dict(hosts)), default)
    return Snapshot(version, MappingProxyType(built))


def http_listener(port: int, hosts: dict[str, Route], tls: bool = False) -> Any:
    return (port, HTTP_MODE, tls, hosts)


def tcp_listener(port: int, hosts: dict[str, Route]) -> Any:
    return (port, TCP_MODE, True, hosts)


class GatewayThread:
    def __init__(self, data_dir: Path, limits: Limits | None = None, seed: int = 1) -> None:
        self.data_dir = data_dir
        self.limits = limits or Limits()
        self.seed = seed
        self.loop: asyncio.AbstractEventLoop | None = None
        self.gateway: Gateway | None = None
        self.ca = LocalCA(data_dir / "tls")
        self.access_log = data_dir / "access.log"
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None

    def __enter__(self) -> GatewayThread:
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self._thread.start()
        if not self._ready.wait(WAIT_S):
            raise RuntimeError("the gateway thread did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(WAIT_S)

    def _run(self) -> None:
        uvloop.run(self._main())

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        ctx = Context(
            self.limits,
            host="127.0.0.1",
            port_offset=0,
            access_log=AccessLog(self.access_log),
            rng=random.Random(self.seed),
            any_port=True,
        )
        self.gateway = Gateway(ctx, CertificateStore(self.ca, DOMAIN))
        runner = asyncio.create_task(self.gateway.run())
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
            await self.gateway.close()

    def call(self, work: Callable[[], Any]) -> Any:
        """Run `work` (a coroutine function or plain function) on the gateway's loop."""
        assert self.loop is not None

        async def wrapped() -> Any:
            result = work()
            if asyncio.iscoroutine(result):
                return await result
            return result

        future: Future[Any] = asyncio.run_coroutine_threadsafe(wrapped(), self.loop)
        return future.result(WAIT_S)

    def apply(self, snap: Snapshot) -> None:
        assert self.gateway is not None
        gateway = self.gateway
        self.call(lambda: gateway.apply(snap))

    def address(self, public_port: int) -> tuple[str, int]:
        assert self.gateway is not None
        gateway = self.gateway
        found: dict[int, tuple[str, int]] = self.call(gateway.addresses)
        return found[public_port]

    def inflight(self) -> dict[str, int]:
        assert self.gateway is not None
        gateway = self.gateway
        return dict(self.call(lambda: dict(gateway.ctx.activity.inflight)))

    def wait_inflight(self, expected: dict[str, int], timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.inflight() == expected:
                return
            time.sleep(0.002)
        raise AssertionError(f"in flight {self.inflight()} never became {expected}")

    def flush_log(self) -> None:
        assert self.gateway is not None
        gateway = self.gateway

        def flush() -> None:
            gateway.ctx.activity.settle()
            gateway.ctx.access_log.flush()

        self.call(flush)


# --- backends ---------------------------------------------------------------------------------


class HoldingBackend:
    """A tiny HTTP/1.1 and raw-TCP server in a thread: answers its name, or holds.

    HTTP: `GET /hold` waits until `release()`; anything else answers at once with the body
    `<name>`. TCP (`raw=True`): sends `<name>\\n` on connect; `hold\\n` from the client keeps the
    connection open until `release()`; any other line is echoed until EOF.
    """

    def __init__(self, name: str, raw: bool = False) -> None:
        self.name = name
        self.raw = raw
        self.release_event = threading.Event()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self.connections = 0
        self.max_concurrent = 0
        self._concurrent = 0
        self._lock = threading.Lock()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def endpoint(self) -> Endpoint:
        return endpoint(self.name, self.port)

    def release(self) -> None:
        self.release_event.set()

    def close(self) -> None:
        self._closed = True
        self.release_event.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            worker = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            worker.start()

    def _enter(self) -> None:
        with self._lock:
            self.requests += 1
            self._concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self._concurrent)

    def _leave(self) -> None:
        with self._lock:
            self._concurrent -= 1

    def _handle(self, conn: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        conn.settimeout(WAIT_S * 3)
        with contextlib.closing(conn), contextlib.suppress(OSError):
            if self.raw:
                self._handle_raw(conn)
            else:
                self._handle_http(conn)

    def _handle_raw(self, conn: socket.socket) -> None:
        self._enter()
        try:
            conn.sendall(self.name.encode() + b"\n")
            reader = conn.makefile("rb")
            for line in reader:
                if line == b"hold\n":
                    self.release_event.wait(WAIT_S * 3)
                    return
                conn.sendall(line)
            conn.shutdown(socket.SHUT_WR)
        finally:
            self._leave()

    def _handle_http(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        while True:
            line = reader.readline()
            if not line:
                return
            target = line.split(b" ")[1] if b" " in line else b"/"
            length = 0
            while True:
                header = reader.readline()
                if header in (b"\r\n", b"\n", b""):
                    break
                name, _, value = header.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                reader.read(length)
            self._enter()
            try:
                if target.startswith(b"/hold"):
                    self.release_event.wait(WAIT_S * 3)
                body = self.name.encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: %s\r\n\r\n%s"
                    % (len(body), body, body)
                )
            finally:
                self._leave()


@contextlib.contextmanager
def backends(*names: str, raw: bool = False) -> Iterator[list[HoldingBackend]]:
    made = [HoldingBackend(n, raw=raw) for n in names]
    try:
        yield made
    finally:
        for b in made:
            b.close()


def http_get(
    address: tuple[str, int], path: str = "/", host: str = "app.test", timeout: float = WAIT_S
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection; (status, headers, body)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return read_response(sock)


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """`count` Content-Length-framed responses in a row, as (status, body). Pipelined
    answers can share one read, which `read_response` would cut at the first's end."""
    reader = sock.makefile("rb")
    answers = []
    for _ in range(count):
        status = int(reader.readline().split(b" ")[1])
        length = 0
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        answers.append((status, reader.read(length)))
    return answers


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one whole Content-Length-framed response (or until close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        want = int(headers["content-length"])
        while len(body) < want:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    else:
        while chunk := sock.recv(65536):
            body += chunk
    return status, headers, body
