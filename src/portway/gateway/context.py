"""What every gateway connection shares: the current Snapshot, the counters, the upstream
connection pool, the random source, the deadlines sweeper and the settings.

Deadlines are coarse on purpose: instead of one timer per connection (a `call_later` handle
made and cancelled on every request), each connection keeps one `deadline` number and a single
sweeper looks at all of them every `SWEEP_S`. A deadline therefore fires up to `SWEEP_S` late,
which no timeout here is sensitive to.

The same sweeper settles finished requests more often, every `SETTLE_S`: until then each one is
a live object the young garbage-collector generation walks. Settled every 0.25 s, at 40,000
requests a second 10,000 of them were alive whenever a collection came, a 3-6 ms pause about
every 0.3 s that every request in flight waited through (the gateway's p99 at c=64).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..model.snapshot import EMPTY, Endpoint, Route, Snapshot
from .accesslog import AccessLog
from .activity import Activity
from .balancer import Decision, decide
from .wake import Held, NothingToWake, Waker, Wakes

if TYPE_CHECKING:
    # Not imported at run time (proxy imports this module). Named, not a Protocol, so the
    # compiled build sets a pooled connection's deadline directly instead of by name.
    from .http.proxy import UpstreamConnection

log = logging.getLogger("portway.gateway")

SWEEP_S: Final = 0.25
SETTLES_PER_SWEEP: Final = 5
SETTLE_S: Final = SWEEP_S / SETTLES_PER_SWEEP  # 50 ms
AWAKE_GRACE_S: Final = 5.0  # a woken instance serves this long at most before its Snapshot
SETTLE_CHUNK: Final = 256  # finished requests counted and logged per turn of the loop
# Markers in the outbox, after the data sent before them.
_EOF: Final = object()
_CLOSE: Final = object()


@dataclass(frozen=True)
class Limits:
    """Deadlines (seconds) and sizes; `portway up` flags may change them."""

    header_timeout_s: float = 10.0  # whole request head, from its first byte (not per byte)
    idle_timeout_s: float = 60.0  # a keep-alive client connection with nothing to do
    connect_timeout_s: float = 5.0
    first_byte_timeout_s: float = 60.0  # request sent → first byte of the response head
    pool_idle_s: float = 30.0  # an unused pooled connection to an instance
    pool_per_endpoint: int = 64
    max_body_bytes: int = 1 << 30  # a larger request body answers 413
    connect_attempts: int = 3  # instances tried when connecting fails
    wake_timeout_s: float = 30.0  # work held for a wake fails after this long (503 / close)


class Expiring(Protocol):
    deadline: float

    def expire(self) -> None: ...


class Context:
    def __init__(
        self,
        limits: Limits,
        *,
        host: str,
        port_offset: int,
        access_log: AccessLog,
        waker: Waker | None = None,
        rng: random.Random | None = None,
        any_port: bool = False,
    ) -> None:
        self.limits = limits
        self.host = host
        self.port_offset = port_offset
        # Tests: every public port listens on a free port of the OS's choosing (port 0).
        self.any_port = any_port
        self.snapshot: Snapshot = EMPTY
        # instance uuids that may take new work in the current snapshot (the apply barrier)
        self.eligible: frozenset[str] = frozenset()
        self.activity = Activity(on_entries=access_log.extend)
        self.access_log = access_log
        self.wakes = Wakes(
            waker or NothingToWake(),
            limits.wake_timeout_s,
            on_wake=self.activity.woke,
            on_awake=self._awake,
        )
        self.awake = self.wakes.awake
        self.activity.held = self.wakes.held
        self.activity.retry_held = self.wakes.retry_soon
        self.rng = rng or random.Random()
        self.loop = asyncio.get_running_loop()
        # The loop's clock, bound once: the request path reads it several times a request, and
        # a bound method is called without looking `time` up on the loop each time.
        self.clock: Callable[[], float] = self.loop.time
        self.pool: dict[str, list[UpstreamConnection]] = {}  # by Endpoint.address
        self.watched: set[Expiring] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._outbox: list[tuple[Any, object]] = []
        self._flush_scheduled = False
        self.closing = False
        # Wall clock minus perf_counter, kept by the sweeper: a perf_counter reading becomes a
        # wall-clock time (X-Request-Start) with an addition instead of another clock call.
        self.wall_offset = time.time() - time.perf_counter()

    def listen_port(self, public_port: int) -> int:
        return 0 if self.any_port else public_port + self.port_offset

    def decide(self, route: Route, endpoints: tuple[Endpoint, ...]) -> Decision:
        """The balancer's choice among `endpoints` of `route`, with the gateway's counts,
        wakes and random source."""
        wakes = self.wakes
        can_wake = bool(route.standby or wakes.waking) and wakes.can_wake(route)
        if self.awake:
            endpoints = self._with_awake(route, endpoints)
        return decide(
            endpoints,
            self.activity.inflight,
            route.soft_limit,
            route.hard_limit,
            can_wake,
            self.rng,
        )

    def _with_awake(self, route: Route, endpoints: tuple[Endpoint, ...]) -> tuple[Endpoint, ...]:
        extra = [e for g, e, _ in self.awake.values() if g == route.group and e not in endpoints]
        return (*endpoints, *extra) if extra else endpoints

    def _awake(self, group: str, endpoint: Endpoint) -> None:
        if endpoint.instance not in self.eligible:
            self.awake[endpoint.instance] = (group, endpoint, self.loop.time())
            self.eligible = self.eligible | {endpoint.instance}

    def applied(self, snapshot: Snapshot) -> None:
        """After a Snapshot is in place (and `eligible` made from it): instances woken ahead
        of it stay eligible until it stops calling them asleep, open TCP connections to
        instances that fell asleep (or woke) learn it, and held work is routed again."""
        wakes = self.wakes
        before = wakes.asleep
        wakes.applied(snapshot)
        # Until the Snapshot has caught up (it says running), within a bound: a woken
        # instance that died before its state was written must not stay eligible.
        late = self.loop.time() - AWAKE_GRACE_S
        for instance, (_g, _e, since) in list(self.awake.items()):
            if instance in self.eligible or since < late:
                del self.awake[instance]
        if self.awake:
            self.eligible = self.eligible | frozenset(self.awake)
        for instance in before ^ wakes.asleep:
            asleep = instance in wakes.asleep
            for conn in self.activity.tcp_open.get(instance, ()):
                conn.asleep = asleep
        if wakes.held:
            wakes.retry_all()

    def hold(self, route: Route, held: Held | None, resume: Any, fail: Any) -> Held:
        """Hold work for a wake (the balancer said WAKE): `held` again, or new work."""
        if held is None:
            held = Held(route.group, resume, fail, self.loop.time() + self.limits.wake_timeout_s)
        self.wakes.hold(route, held)
        return held

    # --- writes -----------------------------------------------------------------------------
    # HTTP mode writes at the end of the loop iteration, all that the iteration produced
    # together: a peer woken by the first write is still awake for the rest, so a busy
    # gateway causes fewer wake-ups, the dearest part of a loopback write (+13% rps measured).
    # Every write, end of stream and close of an HTTP-mode transport goes through here, so
    # they keep their order.

    def send(self, transport: Any, data: bytes) -> None:
        # _queue, inlined: twice per request.
        self._outbox.append((transport, data))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush_outbox)

    def _queue(self, transport: Any, item: object) -> None:
        self._outbox.append((transport, item))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush_outbox)

    def send_eof(self, transport: Any) -> None:
        self._queue(transport, _EOF)

    def send_close(self, transport: Any) -> None:
        """Close once what was sent before is written."""
        self._queue(transport, _CLOSE)

    def _flush_outbox(self) -> None:
        outbox, self._outbox = self._outbox, []
        self._flush_scheduled = False
        for transport, data in outbox:
            if transport.is_closing():
                continue
            if data is _CLOSE:
                transport.close()
            elif data is _EOF:
                if transport.can_write_eof():
                    transport.write_eof()
            else:
                transport.write(data)

    # --- the pool of idle connections to instances ------------------------------------------

    def put_idle(self, endpoint: Endpoint, conn: UpstreamConnection) -> bool:
        """Keep `conn` for reuse if the instance may still take work and there is room."""
        if self.closing or endpoint.instance not in self.eligible:
            return False
        idle = self.pool.get(endpoint.address)
        if idle is None:
            idle = self.pool[endpoint.address] = []  # not setdefault: no list made on every call
        if len(idle) >= self.limits.pool_per_endpoint:
            return False
        conn.deadline = self.clock() + self.limits.pool_idle_s
        idle.append(conn)
        return True

    def drop_idle(self, endpoint: Endpoint, conn: object) -> None:
        idle = self.pool.get(endpoint.address)
        if idle is not None and conn in idle:
            idle.remove(conn)

    def close_idle(self, keep: frozenset[str]) -> None:
        """Close pooled connections to instances no longer in `keep` (draining, stopped)."""
        for key, idle in list(self.pool.items()):
            kept = [c for c in idle if c.endpoint.instance in keep]
            for conn in idle:
                if conn.endpoint.instance not in keep:
                    conn.close()
            if kept:
                self.pool[key] = kept
            else:
                del self.pool[key]

    # --- tasks and deadlines ----------------------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """A task the gateway owns: kept until done, cancelled on close."""
        task = self.loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def sweep(self) -> None:
        """The counters and access log catching up with finished work every `SETTLE_S`, and
        deadlines every `SWEEP_S`."""
        try:
            settles = 0
            while True:
                await asyncio.sleep(SETTLE_S)
                await self._settle()
                settles += 1
                if settles % SETTLES_PER_SWEEP == 0:
                    self.wall_offset = time.time() - time.perf_counter()
                    self._expire()
        finally:
            self.activity.settle()
            self.access_log.flush()

    async def _settle(self) -> None:
        """Count and log the requests finished since the last settle, a chunk at a time with a
        turn of the loop in between. At 40,000 requests a second a settle's worth is 2,000
        entries, milliseconds that would otherwise hold every connection at once (at 0.25 s
        and 5,000 entries they were the gateway's p99). Work finished meanwhile waits for the
        next settle."""
        activity, access_log = self.activity, self.access_log
        for _ in range(len(activity.pending) // SETTLE_CHUNK + 1):
            activity.settle(SETTLE_CHUNK)
            access_log.flush()
            if not activity.pending:
                return
            await asyncio.sleep(0)

    def _expire(self) -> None:
        now = self.loop.time()
        if self.wakes.held:
            self.wakes.expire(now)
        for conn in [c for c in self.watched if 0 < c.deadline <= now]:
            try:
                conn.expire()
            except Exception:
                log.exception("expiring %r", conn)

    async def close(self) -> None:
        self.closing = True
        self.wakes.fail_all("the gateway is shutting down")
        for idle in self.pool.values():
            for conn in idle:
                conn.close()
        self.pool.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
