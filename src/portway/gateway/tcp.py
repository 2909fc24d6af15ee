"""TCP mode: one TLS-terminated client connection relayed to one instance, chosen per connection.

The client side is the plaintext face of `tlsconn.TLSServerProtocol` (which, unlike asyncio's
own TLS, can half-close), the instance side a plain TCP connection. Each side writes what the
other reads, pauses the other's reading when its own buffer fills (backpressure), and passes an
end of stream on as a half-close: the client's close_notify becomes a FIN to the instance, the
instance's FIN becomes our close_notify. The connection counts as in flight for its instance
from the choice until both sides are closed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any, Final

from ..model.snapshot import Endpoint, Route
from .accesslog import format_line, who
from .activity import REJECT_HARD_LIMIT, REJECT_NO_INSTANCE, REJECT_NO_ROUTE, REJECT_WAKE
from .balancer import Verdict
from .context import Context
from .wake import Held

log = logging.getLogger("portway.gateway")

MAX_EARLY_BYTES: Final = 1 << 20  # client bytes kept while the instance connection opens

ServerName = Callable[[ssl.SSLObject | None], str | None]


class TcpClient(asyncio.Protocol):
    def __init__(self, ctx: Context, port: int, server_name: ServerName) -> None:
        self.ctx = ctx
        self.port = port
        self.server_name = server_name
        self.transport: Any = None
        self.route: Route | None = None
        self.endpoint: Endpoint | None = None
        self.upstream: TcpUpstream | None = None
        self.early: list[bytes] = []
        self.early_bytes = 0
        self.client_eof = False
        self.closed = False
        self.finished = False
        self.tried: tuple[str, ...] = ()
        self.bytes_in = 0
        self.bytes_out = 0
        self.started = 0.0
        self.client_ip = "-"
        self.host: str | None = None
        self.held: Held | None = None  # waiting for a wake (scale to zero)
        self.waited = 0.0
        # The instance went to standby (policy `idle`) with this connection open: the next
        # byte either way wakes it.
        self.asleep = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.started = time.perf_counter()
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip = peer[0]
        self.host = self.server_name(transport.get_extra_info("ssl_object"))
        self.route = self._current_route()
        if self.route is None:
            self.ctx.activity.reject(None, REJECT_NO_ROUTE)
            self._log("no_route")
            transport.close()
            return
        self._choose()

    def _choose(self) -> None:
        route = self.route
        assert route is not None
        ctx = self.ctx
        endpoints = tuple(e for e in route.endpoints if e.instance not in self.tried)
        decision = ctx.decide(route, endpoints)
        if decision.verdict is Verdict.WAKE:
            self.held = ctx.hold(route, self.held, self._resume, self._wake_failed)
            return
        if decision.verdict is not Verdict.DISPATCH or decision.endpoint is None:
            # Refused at once, never queued (semantics.md rule 4).
            why = REJECT_HARD_LIMIT if decision.verdict is Verdict.AT_HARD_LIMIT else None
            if self.tried:
                self._close(why or "connect_failed")  # a failed connect, not a limit refusal
            else:
                self._refuse(why or REJECT_NO_INSTANCE)
            return
        endpoint = self.endpoint = decision.endpoint
        ctx.activity.begin(endpoint.instance)
        ctx.activity.of_instance(route, endpoint).open_connections += 1
        ctx.activity.tcp_open.setdefault(endpoint.instance, set()).add(self)
        ctx.spawn(self._connect(endpoint))

    def _current_route(self) -> Route | None:
        """The route for this connection's name in the Snapshot in place now."""
        listener = self.ctx.snapshot.listeners.get(self.port)
        return listener.route(self.host) if listener is not None else None

    def _resume(self) -> None:
        """Held for a wake, now routed again with the current Snapshot."""
        if self.closed or self.held is None:
            return
        self.waited = self.held.waited_s
        self._choose_again()

    def _choose_again(self) -> None:
        """Route again by the Snapshot in place now: the route the connection began with may
        list an instance that has since left (choosing by it would connect to it again)."""
        route = self._current_route()
        if route is None:
            self._refuse(REJECT_NO_ROUTE)
            return
        self.route = route
        self._choose()

    def _wake_failed(self, why: str) -> None:
        if self.closed or self.held is None:
            return
        self.waited = self.held.waited_s
        log.info("connection held for %s closed: %s", self.host or self.port, why)
        self._refuse(REJECT_WAKE)

    def _refuse(self, why: str) -> None:
        """Turn the connection away: counted as a rejection, logged, closed."""
        if self.route is not None:
            self.ctx.activity.reject(self.route, why)
        self._close(why)

    def _close(self, outcome: str) -> None:
        self._log(outcome)
        self.closed = True
        self.transport.close()

    async def _connect(self, endpoint: Endpoint) -> None:
        ctx = self.ctx
        try:
            _, upstream = await asyncio.wait_for(
                ctx.loop.create_connection(lambda: TcpUpstream(self), endpoint.host, endpoint.port),
                ctx.limits.connect_timeout_s,
            )
        except (OSError, TimeoutError) as err:
            log.info(
                "connecting to %s (%s:%s): %s", endpoint.name, endpoint.host, endpoint.port, err
            )
            self._release()
            if self.closed:
                return
            self.tried += (endpoint.instance,)
            if len(self.tried) >= ctx.limits.connect_attempts:
                self._close("connect_failed")
            else:
                self._choose_again()
            return
        if self.closed:
            upstream.transport.close()
            return
        if endpoint.instance not in ctx.eligible:
            self._release()  # drained or stopped while we connected: choose again
            upstream.detach()
            self._choose_again()
            return
        self.upstream = upstream
        if self.early:
            upstream.transport.write(b"".join(self.early))
            self.early = []
            self.early_bytes = 0
            self.transport.resume_reading()
        if self.client_eof:
            upstream.transport.write_eof()

    def _release(self) -> None:
        """Stop counting the connection against its instance."""
        endpoint, route = self.endpoint, self.route
        if endpoint is None or route is None:
            return
        self.endpoint = None
        activity = self.ctx.activity
        activity.end(endpoint.instance)
        counters = activity.of_instance(route, endpoint)
        counters.open_connections -= 1
        conns = activity.tcp_open.get(endpoint.instance)
        if conns is not None:
            conns.discard(self)
            if not conns:
                del activity.tcp_open[endpoint.instance]

    # --- client side ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        if self.asleep:
            self._wake_instance()
        upstream = self.upstream
        if upstream is not None:
            upstream.transport.write(data)
        else:
            self.early.append(data)
            self.early_bytes += len(data)
            if self.early_bytes > MAX_EARLY_BYTES:
                self.transport.pause_reading()

    def _wake_instance(self) -> None:
        """Bytes for an instance in standby (policy `idle`): they wait in its socket, frozen
        with it, until the wake thaws it."""
        route, endpoint = self.route, self.endpoint
        if route is not None and endpoint is not None:
            self.ctx.wakes.wake(route, endpoint)

    def eof_received(self) -> bool:
        self.client_eof = True
        if self.asleep:
            self._wake_instance()
        if self.upstream is not None and not self.upstream.transport.is_closing():
            self.upstream.transport.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        upstream = self.upstream
        if upstream is not None:
            if exc is None:
                upstream.transport.close()
            else:
                upstream.transport.abort()
        self.finish()

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.transport.resume_reading()

    def finish(self) -> None:
        """Both sides are done (or one failed): count and log the connection, once."""
        route, endpoint = self.route, self.endpoint
        if self.finished or route is None or endpoint is None:
            return
        self.finished = True
        for counters in (
            self.ctx.activity.of_instance(route, endpoint),
            self.ctx.activity.of_group(route),
        ):
            counters.connections += 1
            counters.bytes_in += self.bytes_in
            counters.bytes_out += self.bytes_out
        self._release()
        self._log("closed", endpoint)

    def _log(self, outcome: str, endpoint: Endpoint | None = None) -> None:
        route = self.route
        self.ctx.access_log.add(
            format_line(
                time.time(),
                time.perf_counter() - self.started,
                who(
                    "tcp",
                    self.port,
                    self.client_ip,
                    route.group_name if route is not None else "",
                    endpoint.name if endpoint is not None else "",
                    "",
                    self.host or "",
                ),
                "",
                0,
                self.bytes_in,
                self.bytes_out,
                outcome,
                self.waited,
            )
        )


class TcpUpstream(asyncio.Protocol):
    def __init__(self, client: TcpClient) -> None:
        self.client = client
        self.transport: Any = None
        self.eof = False
        self.detached = False  # closed unused: its end must not end the client's connection

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def detach(self) -> None:
        """Close a connection the client will not use (its instance left as it opened)."""
        self.detached = True
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.detached:
            return
        client = self.client
        client.bytes_out += len(data)
        client.transport.write(data)

    def eof_received(self) -> bool:
        if self.detached:
            return False
        self.eof = True
        client = self.client
        if not client.transport.is_closing():
            client.transport.write_eof()
        return not client.client_eof  # both directions done: let asyncio close it

    def connection_lost(self, exc: Exception | None) -> None:
        client = self.client
        if not client.closed and not self.detached:
            client.closed = True
            if exc is None:
                client.transport.close()
            else:
                client.transport.abort()

    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client.transport.resume_reading()
