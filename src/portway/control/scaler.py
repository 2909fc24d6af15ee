"""Scale to zero and instance autokill: the clock-driven side of an instance's life.

Every `TICK_S` the scaler looks at the running instances that have a scale-to-zero policy and
asks the gateway's counts (`IdleReport`) whether each was busy. An instance quiet for its
`cooldown_time_ms` goes to standby (`InstanceController.standby`); `notify_time_ms` before
that it gets the standby signal. The gateway wakes it again through `wake` (the gateway's
`Waker`). Instance autokill deletes an instance stopped for `autokill.time_ms`, or one that
has served `autokill.num_requests` requests or connections.

What counts as busy (ukc-api.md §4.1) is the pure `busy` below; the sampling makes a standby
start up to one tick after the cooldown ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..model.instance import Instance, ScaleToZero, State
from .instances import InstanceController

log = logging.getLogger("portway.control")

TICK_S = 0.05
T = TypeVar("T")


class IdleReport(Protocol):
    """What the gateway tells the scaler about an instance's traffic."""

    def inflight_of(self, instance: str) -> int: ...

    def quiet_since(self, instance: str) -> float | None: ...

    def tcp_of(self, instance: str) -> tuple[int, int]: ...

    def traffic_of(self, instance: str) -> tuple[int, int, int, int]: ...


def busy(stz: ScaleToZero, inflight: int, tcp_open: int) -> bool:
    """Whether in-flight work keeps the instance awake. `on`: any request or connection.
    `idle`: only HTTP requests; open TCP connections may sleep with a frozen instance (their
    bytes are what counts, see `Scaler._sample`). A stateless instance would lose them, so
    for it `idle` is `on`."""
    if stz.policy == "idle" and stz.stateful:
        return inflight - tcp_open > 0
    return inflight > 0


@dataclass
class _Watch:
    user: str
    stz: ScaleToZero
    active_at: float  # monotonic: the last time it was seen busy (or began running)
    tcp: tuple[int, int] = (0, 0)  # open connections and their bytes, last sample
    notified: bool = False
    settling: bool = False  # a standby is under way


class Scaler:
    def __init__(
        self,
        instances: InstanceController,
        traffic: IdleReport,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._instances = instances
        self._traffic = traffic
        self._clock = clock
        self._watched: dict[str, _Watch] = {}  # running instances with a policy
        self._autokill_stopped: dict[str, tuple[str, float]] = {}  # uuid -> (user, due epoch)
        self._autokill_requests: dict[str, tuple[str, int]] = {}  # uuid -> (user, requests)
        self._tasks: set[asyncio.Task[Any]] = set()
        instances.on_change = self.seen

    # --- what the instance controller reports --------------------------------------------

    def seen(self, instance: Instance) -> None:
        """An instance as just written: watch it if it runs with a policy, else forget it."""
        uuid, stz = instance.uuid, instance.config.scale_to_zero
        if instance.state is State.RUNNING and stz.enabled and instance.group_uuid:
            watch = self._watched.get(uuid)
            if watch is None:
                self._watched[uuid] = _Watch(instance.user, stz, self._clock())
            else:
                watch.stz = stz
        else:
            self._watched.pop(uuid, None)
        self._see_autokill(instance)

    def _see_autokill(self, instance: Instance) -> None:
        uuid, autokill = instance.uuid, instance.config.autokill
        stopped_at = instance.status.stopped_at
        if (
            instance.state is State.STOPPED
            and autokill.time_ms
            and not instance.delete_lock
            and stopped_at is not None
        ):
            self._autokill_stopped[uuid] = (instance.user, stopped_at + autokill.time_ms / 1000)
        else:
            self._autokill_stopped.pop(uuid, None)
        if autokill.num_requests and instance.state is not State.DELETED:
            self._autokill_requests[uuid] = (instance.user, autokill.num_requests)
        else:
            self._autokill_requests.pop(uuid, None)

    # --- the gateway's Waker ------------------------------------------------------------

    def wake(self, user: str, instance: str) -> asyncio.Future[bool]:
        """True as soon as the instance can serve (a thaw done, a cold start's port
        accepting), which is before its `running` state is written and published: the held
        work goes at once, and the gateway counts the instance as awake until the Snapshot
        says so."""
        ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def can_serve() -> None:
            if not ready.done():
                ready.set_result(True)

        def ended(task: asyncio.Task[bool]) -> None:
            if ready.done():
                return
            ok = not task.cancelled() and task.exception() is None and task.result()
            ready.set_result(bool(ok))

        self._spawn(self._instances.wake(user, instance, can_serve)).add_done_callback(ended)
        return ready

    # --- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        for instance in await self._instances.all_instances():
            self.seen(instance)
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.tick()
            except Exception:
                log.exception("scale-to-zero tick failed")

    def tick(self) -> None:
        now = self._clock()
        for uuid, watch in list(self._watched.items()):
            if not watch.settling:
                self._sample(uuid, watch, now)
        if self._autokill_stopped or self._autokill_requests:
            self._autokill(time.time())

    def _sample(self, uuid: str, watch: _Watch, now: float) -> None:
        traffic, stz = self._traffic, watch.stz
        tcp = traffic.tcp_of(uuid)
        if busy(stz, traffic.inflight_of(uuid), tcp[0]) or tcp != watch.tcp:
            watch.active_at, watch.tcp, watch.notified = now, tcp, False
            return
        ended = traffic.quiet_since(uuid)
        quiet = now - max(watch.active_at, ended or 0.0)
        cooldown = stz.cooldown_time_ms / 1000
        notify = stz.notify_time_ms / 1000
        if notify and not watch.notified and quiet >= cooldown - notify:
            watch.notified = True
            self._instances.notify(uuid)
        if quiet >= cooldown:
            watch.settling = True
            self._spawn(self._standby(uuid, watch))

    async def _standby(self, uuid: str, watch: _Watch) -> None:
        def still_idle() -> bool:
            traffic = self._traffic
            return not busy(watch.stz, traffic.inflight_of(uuid), traffic.tcp_of(uuid)[0])

        try:
            if not await self._instances.standby(watch.user, uuid, still_idle):
                watch.active_at = self._clock()  # not now: it starts a fresh cooldown
        finally:
            watch.settling = False

    def _autokill(self, now: float) -> None:
        for uuid, (user, due) in list(self._autokill_stopped.items()):
            if now >= due:
                del self._autokill_stopped[uuid]
                self._spawn(self._instances.autokill(user, uuid, "stopped"))
        for uuid, (user, limit) in list(self._autokill_requests.items()):
            if self._traffic.traffic_of(uuid)[3] >= limit:
                del self._autokill_requests[uuid]
                self._spawn(self._instances.autokill(user, uuid, "served"))

    def _spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 2.0)
