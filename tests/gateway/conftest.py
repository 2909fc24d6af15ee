"""Fixtures that put the real gateway (in a thread, on loopback, port 0) in front of a backend."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .backend import CountingBackend
from .harness import GatewayThread, endpoint, http_listener, route, snapshot

FRAMING_HOST = "app.test"


@dataclass(frozen=True)
class FramingGateway:
    address: tuple[str, int]
    backend: CountingBackend
    host: str = FRAMING_HOST


@pytest.fixture(scope="module")
def framing_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FramingGateway]:
    """A plain-HTTP public port routing Host `app.test` to a strict counting backend."""
    with CountingBackend() as backend, GatewayThread(tmp_path_factory.mktemp("gw")) as gw:
        host, port = backend.address
        r = route("framing", 80, [endpoint("backend", port, host)], soft_limit=1000)
        gw.apply(snapshot(1, http_listener(80, {FRAMING_HOST: r})))
        yield FramingGateway(gw.address(80), backend)
