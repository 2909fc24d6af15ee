"""Latency of the service-group API against a real `portway up`. A benchmark, not a test.

    .venv/bin/python bench/api.py [--count 1000] [--json] [--data-dir DIR]

Starts the daemon on a free port in a fresh data directory, then, over one keep-alive
connection and one request at a time: creates COUNT groups, reads each back by uuid and by
name, and lists pages of 100. GET /v1/healthz (no store write, only a ping on the store thread)
runs as many times first: it is the floor of the HTTP stack, so "x healthz" shows what the store
operation itself costs. Latency is measured on the client, from sending to the last byte read;
"srv p50" is the daemon's own op_time_us: the route handler only, without HTTP, auth or
request validation.

Create cost is dominated by fsync (synchronous=FULL), so it depends on the filesystem holding
the data directory: point --data-dir at the disk you care about.

Exit status: 0 when every request succeeded (whether or not the goals were met), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from _daemon import DaemonError, running_daemon

# p99 goals in ms; operations without one are reported only.
GOALS_P99_MS = {"create": 30.0, "get by uuid": 10.0, "get by name": 10.0}
LIST_PAGE = 100
WARMUP_REQUESTS = 50
STOP_TIMEOUT_S = 10.0  # the daemon, after SIGTERM and again after SIGKILL (it runs no instances)
REQUEST_TIMEOUT_S = 10.0

Call = Callable[[], httpx.Response]  # one request, ready to send


class BenchError(Exception):
    """A request failed: the figures would be about error paths, so none are reported."""


# --- measuring ------------------------------------------------------------------------------


@dataclass
class Samples:
    name: str
    client_ms: list[float]
    server_ms: list[float]


def timed(send: Call) -> tuple[float, dict[str, Any]]:
    """Client-side latency of one request, and its checked JSON body."""
    started = time.perf_counter_ns()
    response = send()
    elapsed_ms = (time.perf_counter_ns() - started) / 1e6
    doc: dict[str, Any] = response.json()
    if response.status_code != 200 or doc.get("status") != "success":
        raise BenchError(f"{response.request.method} {response.request.url}: {response.text[:300]}")
    return elapsed_ms, doc


def measure(name: str, calls: list[Call]) -> tuple[Samples, list[dict[str, Any]]]:
    """Send the calls one after the other; keep each latency and each answer."""
    samples = Samples(name, [], [])
    docs = []
    for send in calls:
        elapsed_ms, doc = timed(send)
        samples.client_ms.append(elapsed_ms)
        samples.server_ms.append(doc.get("op_time_us", 0) / 1000)
        docs.append(doc)
    return samples, docs


def only_item(doc: dict[str, Any]) -> dict[str, Any]:
    items = doc["data"]["service_groups"]
    if len(items) != 1 or items[0].get("status") != "success":
        raise BenchError(f"expected one successful item, got {json.dumps(doc)[:300]}")
    item: dict[str, Any] = items[0]
    return item


def run_benchmark(client: httpx.Client, count: int) -> list[Samples]:
    warm_up(client)
    results = []

    healthz, _ = measure("healthz", [lambda: client.get("/healthz")] * count)
    results.append(healthz)

    names = [f"bench-{i}" for i in range(count)]
    create, docs = measure("create", [create_call(client, name) for name in names])
    uuids = [only_item(doc)["uuid"] for doc in docs]
    results.append(create)

    by_uuid, docs = measure("get by uuid", [get_call(client, "uuid", u) for u in uuids])
    check_found(docs, "uuid", uuids)
    results.append(by_uuid)

    by_name, docs = measure("get by name", [get_call(client, "name", n) for n in names])
    check_found(docs, "name", names)
    results.append(by_name)

    listing, docs = measure(f"list {LIST_PAGE}", list_calls(client, uuids))
    check_pages(docs, min(LIST_PAGE, count))
    results.append(listing)
    return results


def warm_up(client: httpx.Client) -> None:
    """Open the connection and run the read path once before timing: the first requests pay
    for imports and caches that a running daemon has long paid for."""
    for _ in range(WARMUP_REQUESTS):
        client.get("/healthz").raise_for_status()
        client.get("/services", params={"name": "warm-up"}).raise_for_status()


def create_call(client: httpx.Client, name: str) -> Call:
    body = {"name": name, "services": [{"port": 443, "destination_port": 8080}]}
    return lambda: client.post("/services", json=body)


def get_call(client: httpx.Client, key: str, value: str) -> Call:
    return lambda: client.get("/services", params={key: value})


def list_calls(client: httpx.Client, uuids: list[str]) -> list[Call]:
    """One page per 10 groups (at least 10 pages), starting at cursors spread over the set so
    that every page is a full one, as an SDK paging through would ask."""
    pages = max(10, len(uuids) // 10)
    last_start = max(0, len(uuids) - LIST_PAGE)
    cursors = [uuids[round(i * last_start / max(1, pages - 1))] for i in range(pages)]
    return [page_call(client, cursor) for cursor in cursors]


def page_call(client: httpx.Client, cursor: str) -> Call:
    return lambda: client.get("/services", params={"count": LIST_PAGE, "from": cursor})


def check_found(docs: list[dict[str, Any]], key: str, expected: list[str]) -> None:
    for doc, value in zip(docs, expected, strict=True):
        if only_item(doc)[key] != value:
            raise BenchError(f"asked for {key}={value}, got {only_item(doc)[key]}")


def check_pages(docs: list[dict[str, Any]], size: int) -> None:
    for doc in docs:
        if len(doc["data"]["service_groups"]) != size:
            raise BenchError(f"a page has {len(doc['data']['service_groups'])} items, not {size}")


# --- reporting ------------------------------------------------------------------------------


def percentile(sorted_ms: list[float], p: float) -> float:
    """Nearest rank: a value that was actually observed."""
    return sorted_ms[max(0, math.ceil(p / 100 * len(sorted_ms)) - 1)]


def summarize(samples: Samples, floor_p50_ms: float) -> dict[str, Any]:
    ms = sorted(samples.client_ms)
    p50 = percentile(ms, 50)
    row: dict[str, Any] = {
        "operation": samples.name,
        "count": len(ms),
        "p50_ms": round(p50, 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(ms[-1], 3),
        "server_p50_ms": round(percentile(sorted(samples.server_ms), 50), 3),
        "p50_vs_healthz": round(p50 / floor_p50_ms, 2) if floor_p50_ms else None,
        "goal_p99_ms": GOALS_P99_MS.get(samples.name),
    }
    row["result"] = (
        None
        if row["goal_p99_ms"] is None
        else ("PASS" if row["p99_ms"] < row["goal_p99_ms"] else "MISS")
    )
    return row


def machine_info(data_dir: Path) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "httpx": httpx.__version__,
        "data_dir": str(data_dir),
    }


def print_table(machine: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    print(f"machine: {machine['cpu_count']} CPUs, {machine['python']}, {machine['platform']}")
    print(f"sqlite {machine['sqlite']}, httpx {machine['httpx']}, data dir {machine['data_dir']}")
    print()
    header = (
        "operation",
        "count",
        "p50",
        "p90",
        "p99",
        "max",
        "srv p50",
        "x healthz",
        "goal p99",
        "result",
    )
    print(f"{header[0]:<12} {header[1]:>6} " + " ".join(f"{h:>9}" for h in header[2:]))
    for r in rows:
        goal = "-" if r["goal_p99_ms"] is None else f"< {r['goal_p99_ms']:g}"
        ratio = "-" if r["operation"] == "healthz" else f"{r['p50_vs_healthz']:.1f}x"
        figures = " ".join(
            f"{r[k]:>9.2f}" for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "server_p50_ms")
        )
        print(
            f"{r['operation']:<12} {r['count']:>6} {figures} {ratio:>9} {goal:>9} "
            f"{r['result'] or '-':>9}"
        )
    print("\nall times in ms, measured on the client; srv p50 from the daemon's op_time_us")


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=1000, help="groups to create (default 1000)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="parent directory for the daemon's fresh data directory (default: system temp)",
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="portway-bench-", dir=args.data_dir) as tmp:
        data_dir = Path(tmp) / "data"
        machine = machine_info(data_dir)
        try:
            with (
                running_daemon(data_dir, stop_timeout_s=STOP_TIMEOUT_S) as daemon,
                httpx.Client(
                    base_url=daemon.url,
                    headers={"Authorization": f"Bearer {daemon.token}"},
                    timeout=REQUEST_TIMEOUT_S,
                ) as client,
            ):
                results = run_benchmark(client, args.count)
        except (BenchError, DaemonError, httpx.HTTPError) as err:
            print(f"bench/api.py: {err}", file=sys.stderr)
            return 1
    floor = percentile(sorted(results[0].client_ms), 50)
    rows = [summarize(s, floor) for s in results]
    if args.json:
        print(json.dumps({"machine": machine, "results": rows}, indent=2))
    else:
        print_table(machine, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
