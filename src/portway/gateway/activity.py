"""What the gateway counts: in-flight work per instance (the balancer's input) and the
per-instance and per-group counters `/metrics` and the instance metrics API report.

Plain ints in slotted objects, bumped on the request path; turning them into Prometheus text
happens only when someone scrapes (api/metrics.py), so counting costs nanoseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..model.snapshot import Endpoint, Route

if TYPE_CHECKING:
    # Not imported at run time (proxy imports this module). Named, not a Protocol, so the
    # compiled build calls Exchange.account directly instead of by name.
    from .http.proxy import Exchange

# Why a request or connection was refused without reaching an instance (a metric label).
REJECT_HARD_LIMIT, REJECT_NO_INSTANCE, REJECT_NO_ROUTE, REJECT_BAD_REQUEST, REJECT_WAKE = (
    "hard_limit",
    "no_instance",
    "no_route",
    "bad_request",
    "wake_failed",  # held for a wake that failed or timed out
)


# Wake durations (seconds), the upper bounds of the histogram buckets: from a thaw (about a
# millisecond) to a slow cold start.
WAKE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Counters:
    """Counters of one instance or one group."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "connections",
        "open_connections",
        "rejected",
        "requests",
        "statuses",
        "wake_buckets",
        "wake_failures",
        "wake_seconds",
        "wakes",
    )

    def __init__(self) -> None:
        self.connections = 0  # TCP-mode connections handled
        self.requests = 0  # HTTP requests handled
        self.open_connections = 0  # TCP-mode connections open now
        self.bytes_in = 0  # from clients
        self.bytes_out = 0  # to clients
        self.statuses = [0, 0, 0, 0, 0, 0]  # responses by class: index 1..5 = 1xx..5xx
        self.rejected: dict[str, int] = {}
        self.wakes = 0  # wakes that brought the instance up
        self.wake_failures = 0
        self.wake_seconds = 0.0  # their total duration
        self.wake_buckets = [0] * len(WAKE_BUCKETS_S)  # cumulative, as Prometheus counts them


@dataclass(frozen=True, slots=True)
class Labels:
    user: str
    group: str  # group name
    instance: str = ""  # instance name; empty for group counters


@dataclass
class Activity:
    """Counters by instance uuid and by group uuid, with the names to label them by."""

    instances: dict[str, Counters] = field(default_factory=dict)
    groups: dict[str, Counters] = field(default_factory=dict)
    labels: dict[str, Labels] = field(default_factory=dict)
    # The balancer's view: requests (HTTP) + connections (TCP) in flight by instance uuid.
    inflight: dict[str, int] = field(default_factory=dict)
    unrouted: dict[str, int] = field(default_factory=dict)  # refusals before a route was known
    # Finished requests not yet counted: the request path appends, `settle` counts (in
    # batches, a few times a second, and before anyone reads the counters). TCP-mode
    # connections are few and counted as they close.
    pending: list[Exchange] = field(default_factory=list)
    on_entries: Callable[[list[str]], None] | None = None  # the access log, given lines
    # Scale to zero: when each instance last had nothing in flight (monotonic seconds) ...
    idle_since: dict[str, float] = field(default_factory=dict)
    # ... and its open TCP-mode connections (their bytes tell silence from activity).
    tcp_open: dict[str, set[Any]] = field(default_factory=dict)
    # The work held for wakes (the gateway's `Wakes.held`): when something ends while work is
    # held, `retry_held` lets it try again.
    held: dict[str, Any] = field(default_factory=dict)
    retry_held: Callable[[], None] | None = None

    def settle(self, limit: int | None = None) -> None:
        """Count the pending work (at most `limit` items, the oldest) and log it."""
        pending = self.pending
        if limit is None or len(pending) <= limit:
            self.pending = []
        else:
            pending, self.pending = pending[:limit], pending[limit:]
        if not pending:
            return
        wall_offset = time.time() - time.perf_counter()
        entries = [item.account(self, wall_offset) for item in pending]
        if self.on_entries is not None:
            self.on_entries(entries)

    def of_instance(self, route: Route, endpoint: Endpoint) -> Counters:
        counters = self.instances.get(endpoint.instance)
        if counters is None:
            counters = self.instances[endpoint.instance] = Counters()
            self.labels[endpoint.instance] = Labels(route.user, route.group_name, endpoint.name)
        return counters

    def of_group(self, route: Route) -> Counters:
        counters = self.groups.get(route.group)
        if counters is None:
            counters = self.groups[route.group] = Counters()
            self.labels[route.group] = Labels(route.user, route.group_name)
        return counters

    def begin(self, instance: str) -> None:
        self.inflight[instance] = self.inflight.get(instance, 0) + 1

    def end(self, instance: str) -> None:
        left = self.inflight.get(instance, 0) - 1
        if left > 0:
            self.inflight[instance] = left
        else:
            self.inflight.pop(instance, None)
            self.idle_since[instance] = time.monotonic()
        if self.held and self.retry_held is not None:
            self.retry_held()

    def woke(self, route: Route, endpoint: Endpoint, seconds: float, ok: bool) -> None:
        counters = self.of_instance(route, endpoint)
        if not ok:
            counters.wake_failures += 1
            return
        counters.wakes += 1
        counters.wake_seconds += seconds
        for index, bound in enumerate(WAKE_BUCKETS_S):
            if seconds <= bound:
                counters.wake_buckets[index] += 1

    def reject(self, route: Route | None, why: str) -> None:
        table = self.of_group(route).rejected if route is not None else self.unrouted
        table[why] = table.get(why, 0) + 1

    # --- what control reads (the TrafficReport it is given) --------------------------------

    def inflight_of(self, instance: str) -> int:
        return self.inflight.get(instance, 0)

    def quiet_since(self, instance: str) -> float | None:
        """Monotonic time since which nothing was in flight at the instance (0.0 if it never
        had any work: the caller knows when it started); None while something is."""
        if self.inflight.get(instance, 0):
            return None
        return self.idle_since.get(instance, 0.0)

    def tcp_of(self, instance: str) -> tuple[int, int]:
        """(open TCP-mode connections, bytes they carried so far both ways)."""
        conns = self.tcp_open.get(instance)
        if not conns:
            return 0, 0
        return len(conns), sum(c.bytes_in + c.bytes_out for c in conns)

    def traffic_of(self, instance: str) -> tuple[int, int, int, int]:
        """(nconns, nreqs, nqueued, ntotal) as the instance metrics API reports them."""
        self.settle()
        counters = self.instances.get(instance)
        if counters is None:
            return (0, 0, 0, 0)
        in_requests = self.inflight.get(instance, 0) - counters.open_connections
        return (
            counters.open_connections,
            max(0, in_requests),
            0,
            counters.connections + counters.requests,
        )
