"""The control half of the apply barrier: after a change that matters to traffic, build a
Snapshot from the store and hand it to the data plane before the API call answers.

Publishes coalesce: callers that arrive while a build is running are all served by the next
build, which reads the store after every one of their writes committed (all store calls run on
one thread, in order). So a burst of N changes costs about two builds, not N, and no caller
returns before a Snapshot that includes its own change is being served.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from ..model.instance import Instance
from ..model.service_group import ServiceGroup
from ..model.snapshot import Snapshot, build

log = logging.getLogger("portway")

Read = Callable[[], Awaitable[tuple[Iterable[ServiceGroup], Iterable[Instance]]]]


class SnapshotSink(Protocol):
    """What the gateway offers control: serve this Snapshot from now on."""

    async def apply(self, snapshot: Snapshot) -> None: ...


class Publisher:
    def __init__(self, read: Read, sink: SnapshotSink) -> None:
        self._read = read
        self._sink = sink
        self._lock = asyncio.Lock()
        self._requested = 0
        self._published = 0

    async def publish(self) -> None:
        self._requested += 1
        mine = self._requested
        async with self._lock:
            if self._published >= mine:
                return  # a build that started after my change already covered it
            version = self._requested
            groups, instances = await self._read()
            try:
                await self._sink.apply(build(version, groups, instances))
            except Exception:
                # The change itself is committed; the data plane keeps its last good Snapshot.
                log.exception("publishing snapshot %s failed", version)
            self._published = version
