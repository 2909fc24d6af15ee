"""`/metrics`: the gateway's counters in the Prometheus text format, made when scraped.

The request path bumps plain ints (activity.py); this collector reads them only here, so a
scrape costs the scraper's time, not the data plane's.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from .activity import WAKE_BUCKETS_S, Activity, Counters

CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class ActivityCollector(Collector):
    """The counters of one user's groups and instances, or of everyone's (`user=None`)."""

    def __init__(self, activity: Activity, user: str | None) -> None:
        self._activity = activity
        self._user = user

    def collect(self) -> Iterator[Metric]:
        yield from _family(self._activity, "instance", self._activity.instances, self._user)
        yield from _family(self._activity, "group", self._activity.groups, self._user)
        yield from _wakes(self._activity, self._user)
        inflight = GaugeMetricFamily(
            "portway_instance_inflight",
            "Requests (HTTP mode) and connections (TCP mode) in flight at an instance",
            labels=["user", "group", "instance"],
        )
        for uuid, count in self._activity.inflight.items():
            labels = self._activity.labels.get(uuid)
            if labels is not None and self._user in (None, labels.user):
                inflight.add_metric([labels.user, labels.group, labels.instance], count)
        yield inflight
        if self._user is None:
            unrouted = CounterMetricFamily(
                "portway_gateway_rejected",
                "Requests and connections refused before a group was known, by reason",
                labels=["reason"],
            )
            for reason, count in self._activity.unrouted.items():
                unrouted.add_metric([reason], count)
            yield unrouted


def _family(
    activity: Activity, kind: str, table: dict[str, Counters], user: str | None
) -> Iterator[Metric]:
    names = ["user", "group"] + (["instance"] if kind == "instance" else [])
    prefix = f"portway_{kind}"
    requests = CounterMetricFamily(f"{prefix}_requests", "HTTP requests answered", labels=names)
    connections = CounterMetricFamily(
        f"{prefix}_connections", "TCP-mode connections handled", labels=names
    )
    open_now = GaugeMetricFamily(
        f"{prefix}_open_connections", "TCP-mode connections open now", labels=names
    )
    bytes_in = CounterMetricFamily(f"{prefix}_received_bytes", "Bytes from clients", labels=names)
    bytes_out = CounterMetricFamily(f"{prefix}_sent_bytes", "Bytes to clients", labels=names)
    statuses = CounterMetricFamily(
        f"{prefix}_responses", "HTTP responses by status class", labels=[*names, "code"]
    )
    rejected = CounterMetricFamily(
        f"{prefix}_rejected",
        "Work refused by the gateway before reaching an instance, by reason",
        labels=[*names, "reason"],
    )
    for uuid, counters in table.items():
        found = activity.labels.get(uuid)
        if found is None or user not in (None, found.user):
            continue
        values = [found.user, found.group] + ([found.instance] if kind == "instance" else [])
        requests.add_metric(values, counters.requests)
        connections.add_metric(values, counters.connections)
        open_now.add_metric(values, counters.open_connections)
        bytes_in.add_metric(values, counters.bytes_in)
        bytes_out.add_metric(values, counters.bytes_out)
        for index, code in enumerate(CLASSES, start=1):
            statuses.add_metric([*values, code], counters.statuses[index])
        for reason, count in counters.rejected.items():
            rejected.add_metric([*values, reason], count)
    yield from (requests, connections, open_now, bytes_in, bytes_out, statuses, rejected)


def _wakes(activity: Activity, user: str | None) -> Iterator[Metric]:
    names = ["user", "group", "instance"]
    duration = HistogramMetricFamily(
        "portway_instance_wake_seconds",
        "How long waking the instance out of standby took, until it served (scale to zero)",
        labels=names,
    )
    failures = CounterMetricFamily(
        "portway_instance_wake_failures",
        "Wakes that failed (the instance crashed or did not become ready)",
        labels=names,
    )
    for uuid, counters in activity.instances.items():
        found = activity.labels.get(uuid)
        if (
            found is None
            or user not in (None, found.user)
            or not (counters.wakes or counters.wake_failures)
        ):
            continue
        values = [found.user, found.group, found.instance]
        pairs = zip(WAKE_BUCKETS_S, counters.wake_buckets, strict=True)
        buckets = [(f"{bound:g}", count) for bound, count in pairs]
        buckets.append(("+Inf", counters.wakes))
        duration.add_metric(values, buckets, counters.wake_seconds)
        failures.add_metric(values, counters.wake_failures)
    yield from (duration, failures)


def render(activity: Activity, user: str | None) -> bytes:
    """The exposition text for `user`'s series (every user's, and the gateway's, for None)."""
    activity.settle()
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ActivityCollector(activity, user))
    return generate_latest(reg)
