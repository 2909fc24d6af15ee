"""The composition root: builds every part from the settings and runs them under one TaskGroup.

Only this module wires layers together (architecture.md import rules).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from . import compiled
from .api.app import create_app
from .config import Settings
from .control.controller import Controller
from .control.images import ImageController
from .control.instances import InstanceController
from .control.scaler import Scaler
from .control.users import USERS_FILE, Users, UsersFileError, ensure_admin
from .control.users import add_user as _add_user
from .gateway import metrics as gateway_metrics
from .gateway.accesslog import AccessLog
from .gateway.context import Context, Limits
from .gateway.listeners import Gateway
from .gateway.tls import CertificateStore, LocalCA, TLSError, ca_bundle_path, tls_dir
from .model.errors import Invalid
from .runtime.images import ImageFiles
from .runtime.pool_claim import PoolClaimError, claim_pool
from .runtime.process import ProcessDriver
from .store.sqlite import SQLiteStore

log = logging.getLogger("portway")
SHUTDOWN_TIMEOUT_S = 20.0  # a clean stop must end: a stuck part is logged and left behind
GRACEFUL_API_S = 3  # API requests still running when the daemon stops get this long (s)
EXIT_STUCK = 70  # EX_SOFTWARE: the stop did not finish in time
GC_YOUNG_THRESHOLD = 10_000  # allocations between young-generation collections (see serve)


@dataclass(frozen=True)
class Ready:
    """What `portway up` tells the user once the API answers."""

    api_url: str
    token_file: Path
    data_dir: Path
    gateway: str  # where public ports listen, and the mapping
    ca_file: Path
    hot_path: str  # whether the request path runs compiled (compiled.mode)


class SetupError(Exception):
    """An operator command could not be done; the message says why."""


def ca_certificate(settings: Settings) -> tuple[Path, str]:
    """`portway ca`: the CA file and its PEM, creating the CA as the daemon would."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        ca = LocalCA(tls_dir(settings.data_dir))
        return ca.cert_path, ca.pem.decode("ascii")
    except (TLSError, OSError) as err:
        raise SetupError(str(err)) from None


class _DataPlane:
    """The gateway as the API shows it (api.app.DataPlane)."""

    def __init__(self, gateway: Gateway, settings: Settings) -> None:
        self._gateway = gateway
        self._settings = settings

    def describe(self) -> dict[str, Any]:
        return {
            "host": self._settings.gateway_host,
            "port_offset": self._settings.port_offset,
            "listeners": {
                str(port): f"{host}:{bound}"
                for port, (host, bound) in sorted(self._gateway.addresses().items())
            },
            "problems": {str(port): why for port, why in sorted(self._gateway.problems.items())},
        }

    def metrics(self, user: str | None) -> bytes:
        return gateway_metrics.render(self._gateway.activity, user)


def _gateway_summary(settings: Settings) -> str:
    offset = settings.port_offset
    mapping = "public ports as they are" if offset == 0 else f"public port P on P+{offset}"
    return f"{settings.gateway_host} ({mapping})"


def add_user(settings: Settings, name: str) -> str:
    """`portway user add`: a new user (or a new token for one) in users.json; returns the token."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        return _add_user(settings.data_dir, name)
    except (Invalid, UsersFileError) as err:
        raise SetupError(str(err)) from None


class _Server(uvicorn.Server):
    # The daemon owns SIGINT/SIGTERM (to stop every part, not just the API); uvicorn would
    # otherwise install its own handlers and re-raise the signal after its shutdown.
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _write_client_file(settings: Settings, ready: Ready) -> None:
    """Where the CLI finds the daemon when UKC_METRO/UKC_TOKEN are not set."""
    doc = {"metro": ready.api_url, "token_file": str(ready.token_file)}
    tmp = settings.client_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(settings.client_file)


async def serve(settings: Settings, on_ready: Callable[[Ready], None]) -> None:
    """Run the daemon until SIGINT or SIGTERM, then stop every part cleanly."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    token_file = ensure_admin(settings.data_dir)
    users = Users(settings.data_dir / USERS_FILE)
    store = SQLiteStore(settings.database)
    ca = LocalCA(tls_dir(settings.data_dir))
    ca.pem  # made now if missing, so that the CA file the banner names exists  # noqa: B018
    logs = settings.data_dir / "logs"
    logs.mkdir(exist_ok=True, mode=0o700)
    gateway = Gateway(
        Context(
            Limits(wake_timeout_s=settings.wake_timeout_s),
            host=settings.gateway_host,
            port_offset=settings.port_offset,
            access_log=AccessLog(logs / "access.log"),
        ),
        CertificateStore(ca, settings.platform_domain),
    )
    controller = Controller(store, platform_domain=settings.platform_domain, sink=gateway)
    files = ImageFiles(settings.data_dir / "images")
    driver = _driver(settings)
    try:
        pool = claim_pool(_data_dir_key(settings), settings.data_dir)
    except PoolClaimError as err:
        raise SetupError(str(err)) from None
    instances = InstanceController(
        controller,
        store,
        driver,
        files,
        settings.data_dir,
        platform_domain=settings.platform_domain,
        address_pool=pool.network,
        traffic=gateway.activity,
    )
    scaler = Scaler(instances, gateway.activity)
    gateway.ctx.wakes.waker = scaler
    images = ImageController(controller, store, files)
    api = create_app(
        controller,
        users,
        settings.platform_domain,
        instances,
        images,
        _DataPlane(gateway, settings),
    )
    sock = _listen(settings.api_host, settings.api_port)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    server = _Server(
        uvicorn.Config(
            api,
            lifespan="off",
            access_log=False,
            log_level="warning",
            http="httptools",
            timeout_keep_alive=30,
            # Requests still running at shutdown (a long `wait`) get this long, not forever.
            timeout_graceful_shutdown=GRACEFUL_API_S,
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await instances.reconcile()
        await controller.publish()
        async with asyncio.TaskGroup() as tasks:
            gateway_task = tasks.create_task(gateway.run(), name="gateway")
            api_task = tasks.create_task(server.serve(sockets=[sock]), name="api")
            autokill = tasks.create_task(controller.run_autokill(), name="autokill")
            trimmer = tasks.create_task(instances.run_log_trimmer(), name="log-trimmer")
            scaling = tasks.create_task(scaler.run(), name="scale-to-zero")
            while not server.started:
                if api_task.done():
                    break
                await asyncio.sleep(0.005)
            ready = Ready(
                f"http://{shown_host}:{port}/v1",
                token_file,
                settings.data_dir,
                _gateway_summary(settings),
                ca_bundle_path(settings.data_dir),
                compiled.mode,
            )
            _write_client_file(settings, ready)
            # What exists now (the API app and its models, the store, the modules) lives as
            # long as the daemon: frozen out of the collector's sight, a full collection walks
            # only what came after. Unfrozen, one took ~45 ms over these ~75,000 objects, and
            # the gateway's request path triggers one every few seconds (its p99).
            gc.freeze()
            # The request path makes a few container objects per request that live until
            # the sweeper counts them (~50 ms): at the default threshold (700) the young
            # generation is collected every few hundred requests and its survivors walked
            # again in the middle one, to collect nothing (measured: collected=0). At 10,000,
            # GC time per request fell from ~0.9 to ~0.3 µs under wrk -c64; with
            # settles 50 ms apart a young pass walks few of them (~0.1 ms, context.py).
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
            on_ready(ready)
            await stop.wait()
            log.info("stopping")
            _watchdog(loop, SHUTDOWN_TIMEOUT_S + 2)
            server.should_exit = True
            autokill.cancel()
            trimmer.cancel()
            scaling.cancel()
            await scaler.close()
            gateway_task.cancel()
            try:
                await asyncio.wait_for(instances.close(), timeout=SHUTDOWN_TIMEOUT_S)
            except TimeoutError:
                log.error(
                    "stopping the instances took over %ss; exiting anyway", SHUTDOWN_TIMEOUT_S
                )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await gateway.close()
        controller.close()
        driver.close()
        sock.close()
        pool.release()


def _watchdog(loop: asyncio.AbstractEventLoop, after_s: float) -> None:
    """The last bound on a stop: if the daemon is still stopping `after_s` from now, log what
    every task is waiting on (to find what ignored its cancellation) and exit. A daemon that
    ignores SIGTERM is worse than one that stops hard (kill -9 is recovered from anyway)."""

    def dump() -> None:
        for task in asyncio.all_tasks(loop):
            log.error("still running at shutdown: %r", task)
            task.print_stack(limit=8)

    def expire() -> None:
        log.error("stopping took over %ss; exiting now", after_s)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(dump)
        time.sleep(0.5)
        os._exit(EXIT_STUCK)

    timer = threading.Timer(after_s, expire)
    timer.daemon = True
    timer.start()


def _data_dir_key(settings: Settings) -> bytes:
    """What sets one daemon's process trees and addresses apart from another's on the host."""
    return hashlib.sha256(str(settings.data_dir).encode()).digest()


def _driver(settings: Settings) -> ProcessDriver:
    """The process driver, with a namespace of its own per data directory so that two daemons
    on one host (tests, say) never touch each other's process trees."""
    namespace = _data_dir_key(settings).hex()[:12]
    return ProcessDriver(namespace=namespace, state_dir=settings.data_dir / "runtime")


def run(settings: Settings, on_ready: Callable[[Ready], None]) -> None:
    """Run on uvloop: the gateway shares this loop, and uvloop is what makes it fast."""
    import uvloop

    uvloop.run(serve(settings, on_ready))
