"""HTTP mode: the protocol shells of a client connection and of a connection to an instance.

Theory of operation
-------------------
* `ClientConnection` parses requests with llhttp (httptools). Each request is an `Exchange`;
  exchanges queue in arrival order (pipelining) and only the one at the front is dispatched, so
  responses go back in order. Its body streams: each piece llhttp decodes is framed again
  (chunked or as-is under the Content-Length the gateway writes) and written to the instance, or
  kept until the connection to the instance exists.
* Dispatch asks the current Snapshot for the route (Host on this port) and the balancer for an
  instance, counts the request in flight for it, and takes an idle pooled `UpstreamConnection`
  or opens one. A connection that finishes opening re-checks that its instance may still take
  work (the apply barrier: a drain or stop that returned must see no new request).
* `UpstreamConnection` parses the response, rewrites its head and streams the body to the
  client: everything decoded from one read goes out in one write. At the end of the response
  the connection goes back to the pool if both sides allow it and the instance is still
  eligible; otherwise it closes (that is how a draining instance's keep-alive connections end).
* Outcomes the gateway answers itself (no route, limits, failures) come from `responses`.
* Deadlines are numbers checked by the Context's sweeper (`expire`), not timers.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter  # a module global: read faster than an attribute of `time`
from typing import Any, Final, NamedTuple

import httptools

from ...model.snapshot import Endpoint, Route, Snapshot
from ..accesslog import format_line, who
from ..activity import (
    REJECT_BAD_REQUEST,
    REJECT_HARD_LIMIT,
    REJECT_NO_INSTANCE,
    REJECT_NO_ROUTE,
    REJECT_WAKE,
    Activity,
)
from ..balancer import Verdict, least_loaded
from ..context import Context
from ..wake import Held
from .head import (
    AS_IS,
    CLIENT_HTTP10,
    CLOSING,
    HEAD_REQUEST,
    IDEMPOTENT,
    MAX_HEAD,
    MAX_RESPONSE_HEAD,
    MAX_TARGET,
    RECHUNK,
    ClientHead,
    Refused,
    RequestHead,
    authority,
    client_head,
    normalize_host,
    origin_form,
    parse_response_head,
    response_head,
    upstream_head,
)
from .responses import Outcome, error_response, outcome_response, redirect_response

log = logging.getLogger("portway.gateway")

SLICE: Final = 16 * 1024  # the most llhttp parses before the limits are checked
_DISPATCH: Final = Verdict.DISPATCH
_AT_HARD_LIMIT: Final = Verdict.AT_HARD_LIMIT
# Chunked bodies: framing bytes allowed beyond the data (one slice of head may be counted in).
MAX_CHUNK_FRAMING: Final = 32 * 1024
CHUNK_LINE: Final = 64  # per chunk: size, CRLFs and a short extension
MAX_PIPELINE: Final = 16  # queued requests before the client is made to wait
# The longest read a connection keeps to compare the next with (ClientConnection.repeat):
# request heads are mostly a few hundred bytes, and a connection's memory stays small.
MAX_REPEAT: Final = 4096
MAX_PENDING_BODY: Final = 1 << 20  # body bytes kept while the instance connection opens
CHUNK_END: Final = b"0\r\n\r\n"


LOGGED_PER_CONNECTION: Final = 16  # instances whose access-log fields a connection keeps


class Logged(NamedTuple):
    """Access-log fields formatted for a connection's requests to one instance, and what
    they were formatted from."""

    route: Route | None
    method: bytes
    host: bytes
    fields: str


class _ResponseEnds(Exception):
    """Raised in a response-parser callback to stop llhttp where the response ends."""


class _HeadDone(_ResponseEnds):
    """A response to HEAD ends with its head, whatever Content-Length says; llhttp cannot be
    told, so parsing stops here and the connection gets a fresh parser."""


class _Overrun(_ResponseEnds):
    """A message after the response, in the same read: the instance is out of step. Parsing
    stops before it, so that nothing of it reaches the client, the response that came before
    it is still passed on, and the connection is not reused."""


class Exchange(RequestHead):
    """One request and its response, from the first byte of the request.

    It is its own request head (`RequestHead`'s fields and checks, inherited): one object per
    request instead of two. The state starts as class attributes and an instance only stores
    what differs: making one of these per request is on the hot path, and most requests change
    a handful of fields."""

    method = b""
    target = b""
    host = b""  # normalized, from the target or the Host field
    version = "1.1"
    keep_alive = True
    head_done = False
    request_done = False
    route: Route | None = None
    endpoint: Endpoint | None = None
    upstream: UpstreamConnection | None = None
    pending: list[bytes] | None = None  # framed body pieces not yet written to the instance
    pending_bytes = 0
    body_bytes = 0
    status = 0
    response_started = False
    bytes_out = 0
    tried: tuple[str, ...] = ()
    retried = False
    abandoned = False
    outcome = ""
    refusal: bytes | None = None  # a queued refusal: answered, then the connection closes
    received_us = 0  # wall clock, µs: when its first byte was read (X-Request-Start)
    wire = 0  # bytes parsed since the head (counted per slice)
    chunks = 0
    finished = 0.0  # perf_counter at the end of the response
    served: Endpoint | None = None  # the instance that got the request, for the counters
    held: Held | None = None  # held for a wake (scale to zero), once or more
    waited = 0.0  # seconds it was held

    def __init__(self, client: ClientConnection, started: float) -> None:
        self.client = client
        self.started = started
        self.lines = []

    def account(self, activity: Activity, wall_offset: float) -> str:
        """Count the exchange (Activity.settle calls this) and return its access-log line."""
        route, served = self.route, self.served
        if route is not None:
            group = activity.groups.get(route.group) or activity.of_group(route)
            group.requests += 1
            group.bytes_in += self.body_bytes
            group.bytes_out += self.bytes_out
            group.statuses[self.status // 100] += 1
            if served is not None:
                one = activity.instances.get(served.instance) or activity.of_instance(route, served)
                one.requests += 1
                one.bytes_in += self.body_bytes
                one.bytes_out += self.bytes_out
                one.statuses[self.status // 100] += 1
        return format_line(
            self.finished + wall_offset,
            self.finished - self.started,
            self.client.log_fields(route, served, self.method, self.host),
            self.target,
            self.status,
            self.body_bytes,
            self.bytes_out,
            self.outcome,
            self.waited,
        )

    def keep(self, piece: bytes) -> None:
        """Hold a framed body piece until the connection to the instance exists."""
        if self.pending is None:
            self.pending = []
        self.pending.append(piece)

    @property
    def must_close(self) -> bool:
        """Whether the client connection ends with this exchange's response: the client asked,
        or part of its request body is still unread."""
        body_left = not self.request_done and (self.chunked or bool(self.content_length))
        return not self.keep_alive or body_left


class ClientConnection(asyncio.Protocol):
    def __init__(self, ctx: Context, port: int, tls: bool) -> None:
        self.ctx = ctx
        self.port = port  # the public port, as the snapshot knows it
        self.proto = b"https" if tls else b"http"
        self.transport: Any = None
        self.client_ip = b"-"
        self._new_parser()
        # A list, not a deque: it holds one exchange nearly always (at most MAX_PIPELINE + 1),
        # and the compiled build calls list methods directly but a deque's by name.
        self.queue: list[Exchange] = []
        self.parsing: Exchange | None = None
        self.in_head = False
        self.head_bytes = 0
        self.dead = False  # refused: nothing more is parsed
        self.tunnel: UpstreamConnection | None = None
        self.client_eof = False  # the client half-closed: close once its answers are out
        self.last_host: bytes | None = None  # the Host of the previous request, and as routed
        self.last_normalized = b""
        # The route of the previous request: the snapshot it came from (kept alive here, so
        # identity means the same one), the host object and the route.
        self.routed_in: Snapshot | None = None
        self.routed_host: bytes | None = None
        self.routed_to: Route | None = None
        self.upgrading = False  # an Upgrade request waits for the instance's answer
        self.tunnel_data: list[bytes] = []
        self.write_paused = False
        self.blocks: set[str] = set()  # why reading is paused
        self.deadline = 0.0
        self.logged: dict[str, Logged] = {}  # access-log fields by instance (log_fields)
        # The last read that was one whole request without a body, read from the start of a
        # message and kept alive, and its exchange: those bytes again are that request again.
        self.repeat = b""
        self.repeat_of: Exchange | None = None
        self.begun = 0  # requests begun on this connection

    # --- asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip = peer[0].encode()
        self.deadline = self.ctx.clock() + self.ctx.limits.header_timeout_s
        self.ctx.watched.add(self)

    def data_received(self, data: bytes) -> None:
        if (
            self.tunnel is not None
            or self.upgrading
            or self.tunnel_data
            or self.dead
            or len(data) > SLICE
        ):
            self._unusual_read(data)
            return
        fresh = self.parsing is None and not self.queue  # llhttp is at the start of a message
        if fresh and data == self.repeat:
            self._repeated()
            return
        begun = self.begun
        # _feed, inlined: a whole request in one read is the common case.
        try:
            self.feed(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as err:
            self._parse_failed(err, data)
            return
        if self.in_head or self.parsing is not None:
            self._parsed(len(data))
        elif fresh and self.begun == begun + 1 and len(self.queue) == 1:
            self._remember(data, self.queue[0])

    def _remember(self, data: bytes, exchange: Exchange) -> None:
        """Keep `data`, one whole request that llhttp and the checks in on_headers_complete
        passed, as `repeat`: the same bytes make the same head again. Not a request with a
        body (its bytes are forwarded as llhttp reads them), nor one that ends the connection
        (llhttp would refuse what follows it). An upgrade never gets here: llhttp stops at it."""
        if (
            exchange.keep_alive
            and not exchange.chunked
            and not exchange.content_length
            and len(data) <= MAX_REPEAT
        ):
            self.repeat = data
            self.repeat_of = exchange

    def _repeated(self) -> None:
        """The read is `repeat` again, with llhttp where `repeat` found it: at the start of a
        message. Its exchange is made from the remembered one's head, without llhttp and
        its callbacks; the route, instance and everything after are decided anew."""
        last = self.repeat_of
        assert last is not None
        self.begun += 1
        exchange = Exchange(self, perf_counter())
        exchange.repeat(last)
        exchange.method = last.method
        exchange.target = last.target
        exchange.host = last.host
        exchange.version = last.version
        exchange.keep_alive = not self.ctx.closing
        exchange.head_done = True
        exchange.request_done = True
        exchange.received_us = int((exchange.started + self.ctx.wall_offset) * 1_000_000)
        self.queue.append(exchange)
        self.deadline = 0.0
        self._dispatch(exchange)

    def _unusual_read(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.ctx.send(self.tunnel.transport, data)
            return
        if self.upgrading or self.tunnel_data:
            # For the new protocol, once the instance agrees. If it refused, these bytes are
            # HTTP again, read once its answer is done (`_finish`), and a read that comes
            # meanwhile waits behind them: requests are answered in the order sent.
            self.tunnel_data.append(data)
            return
        if self.dead:
            return
        # Big reads are parsed a slice at a time so the limits below act before llhttp has
        # run through (and the proxy forwarded) a whole oversized request.
        for start in range(0, len(data), SLICE):
            if self.upgrading:
                self.tunnel_data.append(data[start:])
                return
            if self.dead or self.tunnel is not None:
                return
            self._feed(data[start : start + SLICE])

    def _feed(self, data: bytes) -> None:
        try:
            self.feed(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as err:
            self._parse_failed(err, data)
            return
        self._parsed(len(data))

    def _parse_failed(self, err: Exception, data: bytes) -> None:
        if isinstance(err, httptools.HttpParserUpgrade):
            self._upgraded(data[err.args[0] :])
        elif isinstance(err, httptools.HttpParserCallbackError):
            cause = err.__context__
            if isinstance(cause, Refused):
                self._refuse(cause.status, cause.reason)
            else:
                log.error("request callback failed", exc_info=cause)
                self._refuse(500, "internal error")
        elif isinstance(err, httptools.HttpParserInvalidMethodError):
            self._refuse(501, "unknown method")
        else:
            self._refuse(400, str(err))

    def _parsed(self, size: int) -> None:
        """The limits llhttp does not know, checked after each slice it parsed."""
        if self.in_head:
            self.head_bytes += size
            if self.head_bytes > MAX_HEAD + SLICE:
                self._refuse(431, "request header fields too large")
            return
        exchange = self.parsing
        if exchange is not None and exchange.chunked and exchange.head_done:
            # Chunk framing beyond sizes and CRLFs is extensions, which are dropped: a client
            # sending kilobytes of them is refused (RFC 9112 §7.1.1 asks for a limit).
            exchange.wire += size
            framing = exchange.wire - exchange.body_bytes
            if framing > MAX_CHUNK_FRAMING + CHUNK_LINE * exchange.chunks:
                self._refuse(400, "chunk extensions too long")

    def eof_received(self) -> bool:
        if self.tunnel is not None:
            # The client is done sending: pass the half-close on; the tunnel ends when the
            # instance closes its side.
            if self.tunnel.transport.can_write_eof():
                self.ctx.send_eof(self.tunnel.transport)
            return True
        # A client that half-closes after its request still gets the response; with nothing
        # left to answer, the connection closes after what is already queued for it.
        self.client_eof = True
        if not self.queue or self.dead:
            self.ctx.send_close(self.transport)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.ctx.watched.discard(self)
        self.dead = True
        self.repeat_of = None  # it refers back to this connection
        while self.queue:
            exchange = self.queue.pop(0)
            exchange.abandoned = True
            upstream = exchange.upstream
            if upstream is not None:
                upstream.abandon()
            if exchange.endpoint is not None:
                self.ctx.activity.end(exchange.endpoint.instance)
                exchange.outcome = exchange.outcome or "client_closed"
                self._log(exchange)
                exchange.endpoint = None

    def pause_writing(self) -> None:
        self.write_paused = True
        front = self.queue[0] if self.queue else None
        if front is not None and front.upstream is not None:
            front.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        front = self.queue[0] if self.queue else None
        if front is not None and front.upstream is not None:
            front.upstream.transport.resume_reading()

    def expire(self) -> None:
        if self.queue and self.queue[0].head_done:
            return  # a request is in progress: the upstream side has its own deadlines
        self.deadline = 0.0
        if self.in_head and self.head_bytes:
            self._write_close(
                outcome_response(Outcome.HEADER_TIMEOUT, "request timeout", close=True)
            )
        else:
            self.ctx.send_close(self.transport)

    def log_fields(
        self, route: Route | None, served: Endpoint | None, method: bytes, host: bytes
    ) -> str:
        """The access-log fields from "kind" to "host" (accesslog.who) of a request on this
        connection. A keep-alive client's requests to one instance share them, so they are
        kept by instance and formatted again only when they change."""
        key = served.instance if served is not None else ""
        known = self.logged.get(key)
        if (
            known is not None
            and known.route is route
            and known.host is host
            and known.method == method
        ):
            return known.fields
        fields = who(
            "http",
            self.port,
            self.client_ip,
            route.group_name if route is not None else "",
            served.name if served is not None else "",
            method,
            host,
        )
        if len(self.logged) >= LOGGED_PER_CONNECTION:
            self.logged.clear()
        self.logged[key] = Logged(route, method, host, fields)
        return fields

    # --- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.begun += 1
        exchange = Exchange(self, perf_counter())
        self.parsing = exchange
        self.queue.append(exchange)
        self.in_head = True
        self.head_bytes = 0
        if len(self.queue) == 1:
            self.deadline = self.ctx.clock() + self.ctx.limits.header_timeout_s
        elif len(self.queue) > MAX_PIPELINE:
            self._block("pipeline")

    def on_url(self, url: bytes) -> None:
        exchange = self.parsing
        assert exchange is not None
        exchange.target += url
        if len(exchange.target) > MAX_TARGET:
            raise Refused(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self.parsing
        assert exchange is not None
        if not exchange.head_done:  # after the head: trailer fields, which are not forwarded
            exchange.add(name, value)

    def on_headers_complete(self) -> None:
        exchange = self.parsing
        assert exchange is not None
        self.in_head = False
        parser = self.parser
        exchange.method = method = parser.get_method()
        keep_alive = parser.should_keep_alive()
        if keep_alive and b"keep-alive" not in exchange.connection:
            # llhttp keeps an HTTP/1.0 request alive only if it says `keep-alive`, and takes
            # no version but 0.9, 1.0, 1.1 and 2.0: this is 1.1. (get_http_version formats a
            # string every time: it was a twentieth of the request path's instructions.)
            version = "1.1"
        else:
            version = parser.get_http_version()
        exchange.version = version
        exchange.keep_alive = keep_alive and not self.ctx.closing
        if version != "1.1" and version != "1.0":
            raise Refused(505, f"HTTP/{version} is not supported")
        if method == b"CONNECT":
            raise Refused(501, "CONNECT is not supported")
        host_field = exchange.host_field
        if host_field is not None and host_field == self.last_host and exchange.hosts == 1:
            host = self.last_normalized  # keep-alive clients send the same Host every time
        else:
            host = exchange.finish(version)
            self.last_host, self.last_normalized = host_field, host
        target = exchange.target
        if target[:1] == b"/":
            exchange.host = host
        else:
            named = authority(target)
            exchange.host = normalize_host(named) if named is not None else host
            exchange.target = origin_form(target, method)
        length = exchange.content_length
        if length is not None and length > self.ctx.limits.max_body_bytes:
            raise Refused(413, "request body too large")
        if exchange.connection:
            exchange.drop_connection_listed()
        exchange.head_done = True
        exchange.received_us = int((exchange.started + self.ctx.wall_offset) * 1_000_000)
        if self.queue[0] is exchange:
            self.deadline = 0.0
            self._dispatch(exchange)

    def on_chunk_header(self) -> None:
        exchange = self.parsing
        assert exchange is not None
        exchange.chunks += 1

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        assert exchange is not None
        exchange.body_bytes += len(body)
        if exchange.body_bytes > self.ctx.limits.max_body_bytes:
            raise Refused(413, "request body too large")
        if exchange.chunked:
            body = b"%x\r\n%s\r\n" % (len(body), body)
        upstream = exchange.upstream
        if upstream is not None:
            self.ctx.send(upstream.transport, body)
        elif not exchange.abandoned and exchange.status == 0:
            exchange.keep(body)
            exchange.pending_bytes += len(body)
            if exchange.pending_bytes > MAX_PENDING_BODY:
                self._block("body")

    def on_message_complete(self) -> None:
        exchange = self.parsing
        assert exchange is not None
        self.parsing = None
        exchange.request_done = True
        if exchange.chunked:
            upstream = exchange.upstream
            if upstream is not None:
                self.ctx.send(upstream.transport, CHUNK_END)
            elif exchange.status == 0:
                exchange.keep(CHUNK_END)

    # --- dispatch -------------------------------------------------------------------------

    def _dispatch(self, exchange: Exchange) -> None:
        snapshot = self.ctx.snapshot
        host = exchange.host
        if snapshot is self.routed_in and host is self.routed_host:
            # The same snapshot and the same Host object as the previous request (keep-alive,
            # see on_headers_complete): the same route.
            route = self.routed_to
        else:
            listener = snapshot.listeners.get(self.port)
            route = listener.route(host.decode("ascii")) if listener is not None else None
            self.routed_in, self.routed_host, self.routed_to = snapshot, host, route
        if route is None:
            self.ctx.activity.reject(None, REJECT_NO_ROUTE)
            shown = exchange.host.decode("ascii", "replace") or "(none)"
            self._answer(exchange, Outcome.NO_ROUTE, f"no service answers to host '{shown}'")
            return
        exchange.route = route
        if route.redirect:
            offset = self.ctx.port_offset
            port = b":%d" % (443 + offset) if offset else b""
            location = b"https://%s%s%s" % (exchange.host, port, exchange.target)
            exchange.status = 301
            exchange.outcome = Outcome.REDIRECT.value
            close = exchange.must_close
            self.ctx.send(self.transport, redirect_response(location, close=close))
            self._finish(exchange, close)
            return
        self._choose(exchange)

    def _choose(self, exchange: Exchange) -> None:
        route = exchange.route
        assert route is not None
        ctx = self.ctx
        inflight = ctx.activity.inflight
        endpoints = route.endpoints
        endpoint: Endpoint | None
        if route.standby or exchange.tried or ctx.wakes.waking or ctx.awake:
            if exchange.tried:
                endpoints = tuple(e for e in endpoints if e.instance not in exchange.tried)
            decision = ctx.decide(route, endpoints)
            verdict, endpoint = decision.verdict, decision.endpoint
            if verdict is Verdict.NO_INSTANCE and exchange.tried:
                # Every running instance refused, and nothing can be woken instead.
                self._answer(exchange, Outcome.CONNECT_FAILED, "no instance accepted a connection")
                return
        elif endpoints:
            # Nothing asleep or waking, so balancer.decide comes down to its rules 1, 3 and 4:
            # the least loaded (ties at random), unless it is at the hard limit. Decided here,
            # without the Decision it would allocate: this runs for every request.
            endpoint, count = least_loaded(endpoints, inflight, ctx.rng)
            # The members as module constants: an Enum member lookup costs ~90 ns on 3.11.
            verdict = _DISPATCH if count < route.hard_limit else _AT_HARD_LIMIT
        else:
            verdict, endpoint = Verdict.NO_INSTANCE, None
        if verdict is Verdict.DISPATCH:
            assert endpoint is not None
            exchange.endpoint = endpoint
            # Activity.begin and taking a pooled connection, inlined (the request path's
            # hottest lines).
            inflight[endpoint.instance] = inflight.get(endpoint.instance, 0) + 1
            idle = ctx.pool.get(endpoint.address)
            if idle:
                idle.pop().attach(exchange)
            else:
                ctx.spawn(self._connect(exchange, endpoint))
        elif verdict is Verdict.WAKE:
            self._hold(exchange, route)
        elif verdict is Verdict.AT_HARD_LIMIT:
            ctx.activity.reject(route, REJECT_HARD_LIMIT)
            self._answer(
                exchange,
                Outcome.HARD_LIMIT,
                f"every instance of '{route.group_name}' is at its hard limit "
                f"({route.hard_limit} in flight)",
            )
        else:
            ctx.activity.reject(route, REJECT_NO_INSTANCE)
            self._answer(
                exchange, Outcome.NO_INSTANCE, f"no instance of '{route.group_name}' is running"
            )

    def _hold(self, exchange: Exchange, route: Route) -> None:
        """Hold the exchange for a wake. (Not in `_choose`: a function with a lambda in it
        makes an object for what the lambda sees on every call, and `_choose` runs for every
        request.)"""
        exchange.held = self.ctx.hold(
            route,
            exchange.held,
            lambda: self._resume(exchange),
            lambda why: self._wake_failed(exchange, why),
        )

    def _resume(self, exchange: Exchange) -> None:
        """Held work routed again (something woke or has room): with the current Snapshot."""
        if exchange.abandoned or exchange.held is None:
            return
        exchange.waited = exchange.held.waited_s
        self._dispatch(exchange)

    def _wake_failed(self, exchange: Exchange, why: str) -> None:
        if exchange.abandoned or exchange.held is None:
            return
        exchange.waited = exchange.held.waited_s
        assert exchange.route is not None
        self.ctx.activity.reject(exchange.route, REJECT_WAKE)
        self._answer(exchange, Outcome.WAKE_FAILED, f"{exchange.route.group_name}: {why}")

    async def _connect(self, exchange: Exchange, endpoint: Endpoint) -> None:
        ctx = self.ctx
        try:
            _, conn = await asyncio.wait_for(
                ctx.loop.create_connection(
                    lambda: UpstreamConnection(ctx, endpoint), endpoint.host, endpoint.port
                ),
                ctx.limits.connect_timeout_s,
            )
        except (OSError, TimeoutError) as err:
            ctx.activity.end(endpoint.instance)
            exchange.endpoint = None
            if exchange.abandoned:
                return
            log.info(
                "connecting to %s (%s:%s): %s", endpoint.name, endpoint.host, endpoint.port, err
            )
            exchange.tried += (endpoint.instance,)
            if len(exchange.tried) >= ctx.limits.connect_attempts:
                self._answer(exchange, Outcome.CONNECT_FAILED, "no instance accepted a connection")
            else:
                self._dispatch(exchange)
            return
        if exchange.abandoned:
            conn.close()
            return
        if endpoint.instance not in ctx.eligible:
            # Drained or stopped while we connected: nothing was sent, so choose again, by the
            # Snapshot in place now. (The route the exchange began with still lists the
            # instance: choosing by it connected to it again, and again, without end.)
            ctx.activity.end(endpoint.instance)
            exchange.endpoint = None
            conn.close()
            self._dispatch(exchange)
            return
        conn.attach(exchange)

    # --- answers and the end of an exchange -----------------------------------------------

    def _answer(self, exchange: Exchange, outcome: Outcome, message: str) -> None:
        """The gateway answers the exchange at the front itself. An Upgrade request it
        answers ends the connection: what the client sent after it was kept for a tunnel
        that will not be, and is not read as HTTP."""
        close = exchange.must_close or (self.upgrading and exchange.upgrade is not None)
        response = outcome_response(outcome, message, close=close)
        exchange.status = int(response[9:12])
        exchange.outcome = outcome.value
        exchange.pending = None
        self.ctx.send(self.transport, response)
        self._finish(exchange, close)

    def _finish(self, exchange: Exchange, close: bool) -> None:
        """The response to the front exchange is written: count it, log it, go on."""
        queue = self.queue
        if queue and queue[0] is exchange:
            queue.pop(0)
        exchange.upstream = None
        endpoint = exchange.endpoint
        activity = self.ctx.activity
        if endpoint is not None:
            # Not inlined: an inlined copy once lost the idle time and the held-work retry.
            activity.end(endpoint.instance)
        # _log, inlined.
        exchange.finished = perf_counter()
        activity.pending.append(exchange)
        if (
            close
            or not exchange.keep_alive
            or (self.dead and self.ends_after_front)
            or (self.client_eof and not queue)
        ):
            self.dead = True
            self.ctx.send_close(self.transport)
            return
        if self.blocks:
            self._unblock("pipeline")
        if self.tunnel_data and not self.upgrading:
            leftover, self.tunnel_data = b"".join(self.tunnel_data), []
            self.deadline = self.ctx.clock() + self.ctx.limits.idle_timeout_s
            self.data_received(leftover)
            return
        if self.queue:
            nxt = self.queue[0]
            if nxt.refusal is not None:
                self._log(nxt)
                self._write_close(nxt.refusal)
            elif nxt.head_done:
                self._dispatch(nxt)
            else:
                self.deadline = self.ctx.clock() + self.ctx.limits.header_timeout_s
        else:
            self.deadline = self.ctx.clock() + self.ctx.limits.idle_timeout_s

    @property
    def ends_after_front(self) -> bool:
        """Nothing more will be read, and no refusal waits its turn behind the front: the
        connection closes once the front exchange is answered."""
        return self.dead and not (self.queue and self.queue[-1].refusal is not None)

    def _log(self, exchange: Exchange) -> None:
        """Hand the finished exchange to the counters and the access log, which take it in
        at their next settle (a few times a second): nothing but an append per request."""
        exchange.finished = perf_counter()
        self.ctx.activity.pending.append(exchange)

    def _refuse(self, status: int, reason: str) -> None:
        """A request that cannot be served: answer `status` after what is ahead of it, then
        close. Nothing more is read from this client."""
        self.dead = True
        self.in_head = False
        self.ctx.activity.reject(None, REJECT_BAD_REQUEST)
        exchange, self.parsing = self.parsing, None
        response = error_response(status, f"bad request: {reason}", close=True)
        front = self.queue[0] if self.queue else None
        if exchange is not None and exchange in self.queue and exchange is not front:
            self.queue.remove(exchange)
        if exchange is not None and exchange is front:
            self.queue.pop(0)
            exchange.abandoned = True
            if exchange.upstream is not None:
                # Its body broke midway: the instance has part of it and cannot be reused.
                exchange.upstream.abandon()
            if exchange.endpoint is not None:
                self.ctx.activity.end(exchange.endpoint.instance)
                exchange.endpoint = None
            if exchange.response_started:
                self.ctx.send_close(self.transport)
                return
        elif self.queue:
            # Requests ahead of it are still being answered: refuse once they are done.
            self.queue.append(_refusal(self, response))
            return
        self._write_close(response)

    def _write_close(self, response: bytes) -> None:
        self.dead = True
        self.ctx.send(self.transport, response)
        self.ctx.send_close(self.transport)

    def _upgraded(self, rest: bytes) -> None:
        """The parser saw an Upgrade request; what follows its head belongs to the new
        protocol once the instance agrees (101), so it is kept, not parsed. No more HTTP is
        read from this connection either way."""
        self.parsing = None
        exchange = self.queue[-1] if self.queue else None
        if exchange is None:
            self.dead = True
            self.ctx.send_close(self.transport)  # answered already (404 ...): nothing to switch to
            return
        exchange.request_done = True
        self.upgrading = True
        if rest:
            self.tunnel_data.append(rest)

    def upgrade_refused(self) -> None:
        """The instance answered the Upgrade request without switching: the bytes after it
        are HTTP again, for a fresh parser once this response is done (see `_finish`)."""
        self.upgrading = False
        self._new_parser()

    def _new_parser(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.feed = self.parser.feed_data  # bound once: called for every read

    def start_tunnel(self, upstream: UpstreamConnection) -> None:
        self.upgrading = False
        self.tunnel = upstream
        if self.tunnel_data:
            self.ctx.send(upstream.transport, b"".join(self.tunnel_data))
            self.tunnel_data = []
        if self.client_eof and upstream.transport.can_write_eof():
            # The client half-closed while the instance was deciding: pass it on now, as
            # eof_received does once the tunnel is up, or the instance waits for it forever.
            self.ctx.send_eof(upstream.transport)

    # --- reading pauses -------------------------------------------------------------------

    def _block(self, why: str) -> None:
        if not self.blocks:
            self.transport.pause_reading()
        self.blocks.add(why)

    def _unblock(self, why: str) -> None:
        if why in self.blocks:
            self.blocks.discard(why)
            if not self.blocks and not self.transport.is_closing():
                self.transport.resume_reading()

    def body_sent(self) -> None:
        self._unblock("body")

    def upstream_paused(self, paused: bool) -> None:
        if paused:
            self._block("upstream")
        else:
            self._unblock("upstream")


def _refusal(client: ClientConnection, response: bytes) -> Exchange:
    """A queued placeholder that answers `response` and closes when it reaches the front."""
    exchange = Exchange(client, perf_counter())
    exchange.head_done = True
    exchange.status = int(response[9:12])
    exchange.outcome = Outcome.BAD_REQUEST.value
    exchange.refusal = response
    exchange.keep_alive = False
    return exchange


class UpstreamConnection(asyncio.Protocol):
    """One connection to an instance; carries one exchange at a time."""

    def __init__(self, ctx: Context, endpoint: Endpoint) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.transport: Any = None
        self._new_parser()
        self.exchange: Exchange | None = None
        self.client: ClientConnection | None = None
        self.reused = False
        self.out: list[bytes] = []
        self.raw = b""  # the response head being received (llhttp does not keep it)
        self.body_mode = AS_IS
        self.until_close = False  # a response whose body ends when the instance closes
        self.keep_alive = False  # the instance keeps the connection open after this response
        self.done = False
        self.tunnel = False
        self.deadline = 0.0
        # The last final head and flags `client_head` was asked about, and its answer. An
        # instance sends the same head on a connection again and again (`Date` changes once a
        # second), and comparing bytes costs a tenth of hashing them for the shared memo.
        self.last_head = b""
        self.last_flags = -1
        self.last_made: ClientHead | None = None
        self.last_status = 0
        self.overrun = False  # the instance sent bytes past the end of its response

    def _new_parser(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.feed = self.parser.feed_data  # bound once: called for every read

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.ctx.watched.add(self)

    def attach(self, exchange: Exchange) -> None:
        """Send the exchange's request (head and whatever body is in) in one write."""
        client = exchange.client
        self.exchange = exchange
        self.client = client
        exchange.upstream = self
        exchange.served = self.endpoint
        if exchange.chunked:
            framing = b"Transfer-Encoding: chunked\r\n"
        elif exchange.content_length is not None:
            framing = b"Content-Length: %d\r\n" % exchange.content_length
        else:
            framing = b""
        if exchange.upgrade is not None:
            framing += b"Connection: upgrade\r\nUpgrade: %s\r\n" % exchange.upgrade
        request = upstream_head(
            exchange.method,
            exchange.target,
            exchange,
            client.client_ip,
            client.proto,
            exchange.host,
            framing,
            exchange.received_us,
        )
        if exchange.pending:
            request = b"".join((request, *exchange.pending))
            exchange.pending = None
            exchange.pending_bytes = 0
            client.body_sent()
        self.ctx.send(self.transport, request)
        self.deadline = self.ctx.clock() + self.ctx.limits.first_byte_timeout_s
        if client.write_paused:
            self.transport.pause_reading()

    # --- asyncio callbacks ----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        client = self.client
        if self.tunnel:
            assert client is not None
            self.ctx.send(client.transport, data)
            return
        exchange = self.exchange
        if exchange is None or client is None:
            # Bytes nobody asked for: the connection is unusable.
            self.ctx.send_close(self.transport)
            return
        first = not exchange.response_started and not self.raw
        if first and self.last_made is not None and self._repeated(exchange, client, data):
            return
        out = self.out = []
        if not exchange.response_started:
            self.raw += data
            if len(self.raw) > MAX_RESPONSE_HEAD:
                self._broken("the instance's response head is too large")
                return
        try:
            self.feed(data)
        except httptools.HttpParserUpgrade as upgrade:
            rest = data[upgrade.args[0] :]
            if rest:
                out.append(rest)
            self.tunnel = True
        except httptools.HttpParserError as err:
            # httptools wraps what a callback raises: the end of a HEAD response, or bytes
            # after a whole response, is not an error in that response.
            if not isinstance(err.__context__, _ResponseEnds):
                self._broken(f"invalid response from the instance: {err.__context__ or err}")
                return
            self.done = True
        if out:
            chunk = b"".join(out)
            exchange.bytes_out += len(chunk)
            self.ctx.send(client.transport, chunk)
        if self.tunnel:
            client.start_tunnel(self)
        elif self.done:
            self._complete(exchange)

    def _repeated(self, exchange: Exchange, client: ClientConnection, data: bytes) -> bool:
        """Answer the exchange without llhttp when `data` is the last response again: the
        same head bytes, which llhttp accepted on this connection, and exactly the body its
        Content-Length gives. llhttp, at the start of a message here (a pooled connection
        holds no bytes past its last response: see `overrun`), would read it the same way and
        end at the start of the next. Per response this skips the parser and its callbacks."""
        head, made = self.last_head, self.last_made
        assert made is not None
        if (
            made.length < 0
            or len(data) != len(head) + made.length
            or not data.startswith(head)
            or exchange.held is not None
            or exchange.upgrade is not None
            or self._flags(exchange, client) != self.last_flags
        ):
            return False
        self.deadline = 0.0
        exchange.status = self.last_status
        exchange.response_started = True
        self.body_mode = AS_IS
        self.until_close = False
        # `keep_alive` is as llhttp said for this head last time (left unchanged since).
        if made.close:
            exchange.keep_alive = False
        chunk = made.head + data[len(head) :]
        exchange.bytes_out += len(chunk)
        self.ctx.send(client.transport, chunk)
        self._complete(exchange)
        return True

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.ctx.watched.discard(self)
        exchange, client = self.exchange, self.client
        self.exchange = None
        if exchange is None or client is None or exchange.abandoned:
            self.ctx.drop_idle(self.endpoint, self)
            return
        if self.tunnel:
            client._finish(exchange, True)
            return
        if exchange.response_started:
            if self.until_close:
                if self.body_mode == RECHUNK:
                    self.ctx.send(client.transport, CHUNK_END)
                client._finish(exchange, True)
            else:
                exchange.outcome = "instance_closed_midway"
                client.dead = True
                client._finish(exchange, True)
            return
        if (
            self.reused
            and not exchange.retried
            and exchange.method in IDEMPOTENT
            and exchange.body_bytes == 0
            and exchange.request_done
        ):
            # A pooled connection the instance closed as we reused it: nothing reached the
            # application, and the method is safe to send again.
            exchange.retried = True
            assert exchange.endpoint is not None
            self.ctx.activity.end(exchange.endpoint.instance)
            exchange.endpoint = None
            exchange.upstream = None
            client._dispatch(exchange)
            return
        self._broken("the instance closed the connection before responding")

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.upstream_paused(True)

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.upstream_paused(False)

    def expire(self) -> None:
        exchange = self.exchange
        if exchange is None:
            self.ctx.send_close(self.transport)  # idle in the pool too long
        elif not exchange.response_started:
            self.deadline = 0.0
            client = self.client
            self.exchange = None
            self.transport.abort()
            if client is not None and not exchange.abandoned:
                exchange.upstream = None
                client._answer(
                    exchange, Outcome.UPSTREAM_TIMEOUT, "the instance did not respond in time"
                )
        else:
            self.deadline = 0.0

    def close(self) -> None:
        if self.transport is not None:
            self.ctx.send_close(self.transport)

    def abandon(self) -> None:
        """The client went away or broke its request: this connection's state is unknown."""
        self.exchange = None
        self.client = None
        if self.transport is not None:
            self.transport.abort()

    # --- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.done:
            # A message after the response, in the same read: the instance is out of step.
            # Left to run on, llhttp would parse it as the answer (its head and body would
            # follow the response on the client connection); stopped, the connection is
            # closed after the response instead of reused.
            self.overrun = True
            raise _Overrun

    def on_headers_complete(self) -> None:
        exchange, client = self.exchange, self.client
        assert exchange is not None and client is not None
        status = self.parser.get_status_code()
        raw = self.raw
        end = raw.find(b"\r\n\r\n") + 4
        head = raw[:end]
        if status < 200 or status == 101:
            self.raw = raw[end:]  # an interim response may be followed by the final one
            self._interim_or_switch(exchange, status, head)
            return
        self.raw = b""
        self.deadline = 0.0
        exchange.status = status
        exchange.response_started = True
        # Read now: once the message is complete llhttp has reset for the next one.
        self.keep_alive = self.parser.should_keep_alive()
        if exchange.upgrade is not None and client.upgrading:
            client.upgrade_refused()
        flags = self._flags(exchange, client)
        made = self.last_made
        if made is None or flags != self.last_flags or head != self.last_head:
            made = self.last_made = client_head(head, status, flags)
            self.last_head = head
            self.last_flags = flags
            self.last_status = status
        self.body_mode = made.body_mode
        self.until_close = made.until_close
        if made.close:
            exchange.keep_alive = False
        if exchange.held is None:
            self.out.append(made.head)
        else:  # held for a wake: say how long (the head ends with its blank line)
            wake = b"X-Portway-Wake-Ms: %.3f\r\n\r\n" % (exchange.waited * 1000)
            self.out.append(made.head[:-2] + wake)
        if flags & HEAD_REQUEST:
            raise _HeadDone

    def _flags(self, exchange: Exchange, client: ClientConnection) -> int:
        """What `client_head` is told about the exchange."""
        flags = CLOSING if (not exchange.keep_alive or self.ctx.closing) else 0
        if client.dead and flags == 0 and client.ends_after_front:
            flags = CLOSING
        if exchange.version == "1.0":
            flags |= CLIENT_HTTP10
        if exchange.method == b"HEAD":
            flags |= HEAD_REQUEST
        return flags

    def _interim_or_switch(self, exchange: Exchange, status: int, head: bytes) -> None:
        """An interim response (100 Continue ...), passed on to an HTTP/1.1 client, or the
        instance's 101 to an Upgrade request."""
        response = parse_response_head(head)
        if status != 101:
            if exchange.version == "1.1":  # the client may need it
                self.out.append(response_head(response, b""))
            return
        self.raw = b""
        self.deadline = 0.0
        exchange.status = status
        exchange.response_started = True
        self.keep_alive = self.parser.should_keep_alive()
        extra = b"Connection: upgrade\r\nUpgrade: %s\r\n" % (exchange.upgrade or b"")
        self.out.append(response_head(response, extra))

    def on_body(self, body: bytes) -> None:
        if self.body_mode == RECHUNK:
            self.out.append(b"%x\r\n%s\r\n" % (len(body), body))
        else:
            self.out.append(body)

    def on_message_complete(self) -> None:
        if self.exchange is None or not self.exchange.response_started:
            return  # an interim response
        if self.body_mode == RECHUNK:
            self.out.append(CHUNK_END)
        self.done = True

    # --- the end of a response ------------------------------------------------------------

    def _complete(self, exchange: Exchange) -> None:
        client = self.client
        assert client is not None
        reusable = (
            exchange.request_done and self.keep_alive and not self.until_close and not self.overrun
        )
        self.exchange = None
        self.client = None
        self.done = False
        self.raw = b""
        if exchange.method == b"HEAD":
            self._new_parser()
        ctx = self.ctx
        if reusable and ctx.put_idle(self.endpoint, self):
            self.reused = True
        else:
            ctx.send_close(self.transport)
        client._finish(exchange, not exchange.keep_alive)

    def _broken(self, why: str) -> None:
        exchange, client = self.exchange, self.client
        self.exchange = None
        self.transport.abort()
        if exchange is None or client is None or exchange.abandoned:
            return
        exchange.upstream = None
        if exchange.response_started:
            exchange.outcome = "invalid_response"
            client.dead = True
            client._finish(exchange, True)
        else:
            client._answer(exchange, Outcome.UPSTREAM_BROKEN, why)
