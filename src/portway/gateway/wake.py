"""Waking instances from standby, and the work held for them (semantics.md "Soft and hard
limits" rule 2, "Scale to zero").

When the balancer says WAKE (nothing running can take the work below its soft limit, and the
group has an instance asleep or waking), the request or connection is *held* here instead of
being refused. Held work is dispatched again, in arrival order, whenever something may have
made room: a Snapshot applied (a woken instance became running), a running instance finishing
work (it may be below its soft limit again), a wake that failed. Held work that waits longer
than the wake timeout is failed (HTTP 503 + Retry-After, or a TCP close).

Concurrent arrivals share wakes: a group gets one more wake only when the work held for it is
more than the wakes under way can take at the soft limit (`more_wakes_needed`), so 50 first
requests to a sleeping group start one wake, not 50.

Control does the waking (the `Waker` it implements) and says when the instance can serve, which
is before the Snapshot that says it runs: until then the gateway counts it as `awake`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from ..model.snapshot import Endpoint, Route, Snapshot

log = logging.getLogger("portway.gateway")


class Waker(Protocol):
    def wake(self, user: str, instance: str) -> asyncio.Future[bool]:
        """Start waking `instance` (of `user`) out of standby. The future is True once the
        instance can serve (the Snapshot saying it runs may come a little later), False if
        the wake failed (the instance's state and log say why)."""


class NothingToWake:
    """For a gateway without scale to zero (tests of other things)."""

    def wake(self, user: str, instance: str) -> asyncio.Future[bool]:
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        done.set_result(False)
        return done


def more_wakes_needed(held: int, waking: int, soft_limit: int) -> bool:
    """Whether `held` pieces of work need another wake beyond the `waking` ones under way: each
    woken instance takes up to `soft_limit` of them before the next one is worth waking."""
    return held > waking * soft_limit


class Held:
    """One request or connection waiting for a wake. `resume` routes it again (it may be held
    again, keeping its place and its deadline); `fail` answers it with the wake failure."""

    __slots__ = ("deadline", "fail", "group", "resume", "since")

    def __init__(
        self,
        group: str,
        resume: Callable[[], None],
        fail: Callable[[str], None],
        deadline: float,
    ) -> None:
        self.group = group
        self.resume = resume
        self.fail = fail
        self.since = time.perf_counter()
        self.deadline = deadline  # loop time

    @property
    def waited_s(self) -> float:
        return time.perf_counter() - self.since


class Wakes:
    """The wakes under way and the work held for them, by group."""

    def __init__(
        self,
        waker: Waker,
        timeout_s: float,
        on_wake: Callable[[Route, Endpoint, float, bool], None] | None = None,
        on_awake: Callable[[str, Endpoint], None] | None = None,
    ) -> None:
        self.waker = waker
        self.timeout_s = timeout_s
        self.held: dict[str, list[Held]] = {}  # group uuid -> held work, in arrival order
        self.waking: dict[str, str] = {}  # instance uuid -> its group's uuid
        # Standby instances of the current Snapshot, by group, and all of them.
        self.sleeping: dict[str, frozenset[str]] = {}
        self.asleep: frozenset[str] = frozenset()
        self.serving: frozenset[str] = frozenset()  # groups with a running instance
        # Woken instances that serve before a Snapshot says they run: instance -> (group,
        # endpoint). The wake's state is written after the instance can serve (a thaw takes
        # microseconds, the commit milliseconds), so held work does not wait for the write.
        self.awake: dict[str, tuple[str, Endpoint, float]] = {}  # ... and since (loop time)
        self.on_wake = on_wake  # (route, instance, seconds, ok): the metrics
        self.on_awake = on_awake  # (group, instance): it serves before the Snapshot says so
        self._retry_scheduled = False

    def can_wake(self, route: Route) -> bool:
        """Something of the group is asleep, or waking: work may wait for it."""
        if route.group in self.waking.values():
            return True
        return any(self._wakeable(e.instance) for e in route.standby)

    def _wakeable(self, instance: str) -> bool:
        return instance not in self.waking and instance not in self.awake

    def hold(self, route: Route, held: Held) -> None:
        """Keep `held` until the group can take it, starting a wake if the held work needs one."""
        queue = self.held.setdefault(route.group, [])
        queue.append(held)
        waking = sum(1 for g in self.waking.values() if g == route.group)
        for endpoint in route.standby:
            if not more_wakes_needed(len(queue), waking, route.soft_limit):
                break
            if self._wakeable(endpoint.instance):
                self.wake(route, endpoint)
                waking += 1

    def wake(self, route: Route, endpoint: Endpoint) -> None:
        """Start waking the instance of `endpoint` unless that is under way already."""
        instance = endpoint.instance
        if instance in self.waking:
            return
        self.waking[instance] = route.group
        began = time.perf_counter()
        done = self.waker.wake(route.user, instance)
        done.add_done_callback(lambda f: self._woken(route, endpoint, began, f))

    def _woken(
        self, route: Route, endpoint: Endpoint, began: float, done: asyncio.Future[bool]
    ) -> None:
        group = self.waking.pop(endpoint.instance, None)
        ok = not done.cancelled() and done.exception() is None and done.result()
        if not ok and not done.cancelled() and done.exception() is not None:
            log.warning("waking %s failed", endpoint.name, exc_info=done.exception())
        if self.on_wake is not None:
            self.on_wake(route, endpoint, time.perf_counter() - began, ok)
        if group is None:
            return
        if ok and self.on_awake is not None:
            self.on_awake(group, endpoint)
        others = group in self.waking.values() or bool(self.sleeping.get(group))
        if ok or others or group in self.serving:
            self.retry(group)  # routed again: to the woken one, a running one, or held again
        else:
            self._fail_group(group, "the instance did not wake (its state and log say why)")

    def _fail_group(self, group: str, why: str) -> None:
        """Nothing of the group is left to wake: what waits for a wake waits in vain."""
        for held in self.held.pop(group, []):
            held.fail(why)

    def retry(self, group: str) -> None:
        for held in self.held.pop(group, []):
            held.resume()

    def retry_all(self) -> None:
        self._retry_scheduled = False
        for group in list(self.held):
            self.retry(group)

    def retry_soon(self) -> None:
        """Something finished: held work may fit now. Once per loop iteration at most."""
        if not self._retry_scheduled and self.held:
            self._retry_scheduled = True
            asyncio.get_running_loop().call_soon(self.retry_all)

    def applied(self, snapshot: Snapshot) -> None:
        """A new Snapshot: which instances sleep now. (The caller then routes held work
        again: `retry_all`.)"""
        sleeping: dict[str, frozenset[str]] = {}
        serving: set[str] = set()
        for listener in snapshot.listeners.values():
            for route in listener.routes.values():
                if route.standby:
                    sleeping[route.group] = frozenset(e.instance for e in route.standby)
                if route.endpoints:
                    serving.add(route.group)
        self.sleeping, self.serving = sleeping, frozenset(serving)
        self.asleep = frozenset().union(*sleeping.values())

    def expire(self, now: float) -> None:
        """Fail held work past its deadline (the Context's sweeper calls this)."""
        for group, queue in list(self.held.items()):
            late = [h for h in queue if h.deadline <= now]
            if not late:
                continue
            kept = [h for h in queue if h.deadline > now]
            if kept:
                self.held[group] = kept
            else:
                del self.held[group]
            for held in late:
                held.fail(f"no instance woke within the wake timeout ({self.timeout_s:g} s)")

    def fail_all(self, why: str) -> None:
        for group in list(self.held):
            self._fail_group(group, why)
