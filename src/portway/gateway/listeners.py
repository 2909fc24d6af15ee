"""The gateway as control sees it: `apply(snapshot)` and what it reports back.

`apply` is the data-plane half of the apply barrier: when it returns, every published port has
a listener, certificates cover every TLS host, new work goes only to the instances the Snapshot
lists, and pooled connections to the others are closed. Listeners stay up across applies; a port
no group publishes any more stops accepting, and its open connections run to their end.

Public port P listens on `host:(P + port_offset)`: the offset is 0 where the daemon may bind
low ports, and the documented mapping (printed URLs include it) where it may not.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from ..model.snapshot import HTTP_MODE, Listener, Snapshot
from .context import Context
from .http.proxy import ClientConnection
from .tcp import TcpClient
from .tls import (
    HANDSHAKE_TIMEOUT_S,
    HTTP_ALPN,
    SHUTDOWN_TIMEOUT_S,
    CertificateStore,
    SniRouter,
    select,
)
from .tlsconn import TLSServerProtocol

log = logging.getLogger("portway.gateway")

Kind = tuple[str, bool]  # (mode, tls)


class Gateway:
    def __init__(self, ctx: Context, certificates: CertificateStore) -> None:
        self.ctx = ctx
        self._certificates = certificates
        self._servers: dict[int, tuple[Kind, asyncio.Server]] = {}
        self._routers: dict[tuple[str, ...], SniRouter] = {}
        self._hosts: frozenset[str] | None = None
        self.problems: dict[int, str] = {}  # public port → why it has no listener
        self._lock = asyncio.Lock()

    @property
    def activity(self) -> Any:
        return self.ctx.activity

    async def apply(self, snapshot: Snapshot) -> None:
        async with self._lock:
            ctx = self.ctx
            await self._certify(snapshot)
            ctx.snapshot = snapshot
            ctx.eligible = frozenset(
                e.instance
                for listener in snapshot.listeners.values()
                for route in listener.routes.values()
                for e in route.endpoints
            )
            ctx.applied(snapshot)
            ctx.close_idle(ctx.eligible)
            await self._listen(snapshot)

    def addresses(self) -> dict[int, tuple[str, int]]:
        """Public port → the address its listener is bound to."""
        found: dict[int, tuple[str, int]] = {}
        for port, (_, server) in self._servers.items():
            sock = server.sockets[0] if server.sockets else None
            if sock is not None:
                host, bound = sock.getsockname()[:2]
                found[port] = (host, bound)
        return found

    async def close(self) -> None:
        for _, server in self._servers.values():
            server.close()
        self._servers.clear()
        await self.ctx.close()

    # --- certificates ---------------------------------------------------------------------

    async def _certify(self, snapshot: Snapshot) -> None:
        if not any(lst.tls for lst in snapshot.listeners.values()):
            return
        # Names under the platform domain share its wildcard: only the others need a build.
        platform = {self._certificates.platform_wildcard: True}
        hosts = frozenset(h for h in snapshot.hosts if select(h, {}, platform) is None)
        if hosts == self._hosts:
            return
        for alpn in (HTTP_ALPN, ()):
            # Issuing a certificate writes files and makes keys: not on the event loop.
            contexts = await asyncio.to_thread(self._certificates.build, hosts, alpn=alpn)
            router = self._routers.get(alpn)
            if router is None:
                self._routers[alpn] = SniRouter(contexts)
            else:
                router.swap(contexts)
        self._hosts = hosts

    # --- listeners ------------------------------------------------------------------------

    async def _listen(self, snapshot: Snapshot) -> None:
        wanted = {port: (lst.mode, lst.tls) for port, lst in snapshot.listeners.items()}
        for port, (kind, server) in list(self._servers.items()):
            if wanted.get(port) != kind:
                server.close()  # open connections keep going; new ones are refused
                del self._servers[port]
        for port, kind in wanted.items():
            if port in self._servers:
                continue
            try:
                server = await self._serve(snapshot.listeners[port])
            except OSError as err:
                listen = (self.ctx.host, self.ctx.listen_port(port))
                self.problems[port] = f"cannot listen on {listen[0]}:{listen[1]}: {err.strerror}"
                log.error("public port %s: %s", port, self.problems[port])
                continue
            self.problems.pop(port, None)
            self._servers[port] = (kind, server)

    async def _serve(self, listener: Listener) -> asyncio.Server:
        ctx, port = self.ctx, listener.port
        sock = _bind(ctx.host, ctx.listen_port(port))
        loop = ctx.loop
        try:
            if listener.mode != HTTP_MODE:
                return await loop.create_server(self._tcp_factory(listener), sock=sock)
            if not listener.tls:
                return await loop.create_server(
                    lambda: ClientConnection(ctx, port, False), sock=sock
                )
            router = self._routers[HTTP_ALPN]
            return await loop.create_server(
                lambda: _behind_tls(router.context, ClientConnection(ctx, port, True)), sock=sock
            )
        except BaseException:
            sock.close()
            raise

    def _tcp_factory(self, listener: Listener) -> Callable[[], asyncio.Protocol]:
        ctx, port = self.ctx, listener.port
        if not listener.tls:
            return lambda: TcpClient(ctx, port, lambda _: None)
        router = self._routers[()]
        return lambda: _behind_tls(router.context, TcpClient(ctx, port, router.server_name))

    async def run(self) -> None:
        """The gateway's own loop: deadlines, counters and the access log."""
        await self.ctx.sweep()


def _behind_tls(context: ssl.SSLContext, app: asyncio.Protocol) -> TLSServerProtocol:
    """`app` (an HTTP-mode or TCP-mode client connection) behind the gateway's TLS, with its
    handshake and shutdown deadlines: the same for every TLS port."""
    return TLSServerProtocol(
        context, app, handshake_timeout=HANDSHAKE_TIMEOUT_S, shutdown_timeout=SHUTDOWN_TIMEOUT_S
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
