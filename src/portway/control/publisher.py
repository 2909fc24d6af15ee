"""The control half of the apply barrier: after a change that matters to traffic, build a
Snapshot and hand it to the data plane before the API call answers.

Incremental: the publisher keeps the groups it last read and their instances, and each publish
re-reads only the groups it is told changed (all of them when it is told nothing). Publishes
coalesce: callers that arrive while a build is running are all served by the next build, which
reads the store after every one of their writes committed (all store calls run on one thread,
in order). So a burst of N changes costs about two builds, not N, and no caller returns before
a Snapshot that includes its own change is being served.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Protocol

from ..model.instance import Instance
from ..model.service_group import ServiceGroup
from ..model.snapshot import Snapshot, build

log = logging.getLogger("portway")

# Read the given groups (None: every group) and the instances attached to them.
Read = Callable[
    [Collection[str] | None], Awaitable[tuple[Iterable[ServiceGroup], Iterable[Instance]]]
]


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
        self._dirty: set[str] | None = None  # None: everything
        self._groups: dict[str, ServiceGroup] = {}
        self._members: dict[str, list[Instance]] = {}

    async def publish(self, groups: Iterable[str | None] | None = None) -> None:
        """Serve the store as it is now; `groups` names the groups that changed (None for
        all; None inside it is ignored, for callers passing an instance's optional group)."""
        if groups is None:
            self._dirty = None
        elif self._dirty is not None:
            self._dirty.update(g for g in groups if g is not None)
        self._requested += 1
        mine = self._requested
        async with self._lock:
            if self._published >= mine:
                return  # a build that started after my change already covered it
            version, dirty = self._requested, self._dirty
            self._dirty = set()
            try:
                await self._refresh(dirty)
                await self._sink.apply(
                    build(version, self._groups.values(), _flatten(self._members))
                )
            except Exception:
                # The change itself is committed; the data plane keeps its last good Snapshot.
                self._dirty = None  # and the next publish starts from a full read
                log.exception("publishing snapshot %s failed", version)
            self._published = version

    async def _refresh(self, dirty: set[str] | None) -> None:
        if dirty is not None and not dirty:
            return
        groups, instances = await self._read(dirty)
        if dirty is None:
            self._groups.clear()
            self._members.clear()
        else:
            for uuid in dirty:
                self._groups.pop(uuid, None)
                self._members.pop(uuid, None)
        for group in groups:
            self._groups[group.uuid] = group
        for instance in instances:
            if instance.group_uuid is not None:
                self._members.setdefault(instance.group_uuid, []).append(instance)


def _flatten(members: dict[str, list[Instance]]) -> Iterable[Instance]:
    for instances in members.values():
        yield from instances
