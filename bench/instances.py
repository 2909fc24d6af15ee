"""Instance start-up and daemon footprint against a real `portway up`. A benchmark, not a test.

    .venv/bin/python bench/instances.py [--count 100] [--json] [--data-dir DIR]

Starts the daemon on a free port in a fresh data directory, uploads a one-file image whose app
(Python, `-S`) binds $HOST:$PORT and waits, and measures:

- app alone: the same command spawned directly, COUNT times, timed from spawn until its port
  accepts a TCP connection (polled every 0.5 ms). This is what no platform can make faster.
- create -> running: COUNT sequential `POST /v1/instances` with `autostart` and `timeout_s`,
  timed on the client until the answer says `running` (the daemon answers once the app's port
  accepts a connection). Each instance is deleted before the next create (not timed).
  Platform overhead = create -> running minus the app alone, at the same percentile.
- start COUNT: COUNT creates with `autostart` and no wait, sent one after the other, then the
  list polled until every instance is running; timed from the first create.
- daemon RSS (VmRSS of the `portway up` process) idle, and with COUNT instances running.

Everything is cleaned up: instances deleted, the daemon stopped (SIGTERM, which stops whatever
still runs), leftover processes of the run killed and reported, the data directory removed.

Exit status: 0 when every request succeeded and nothing was left behind (whether or not the
goals were met), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from _daemon import Daemon, DaemonError, kill_processes_of, processes_of, rss_mb, running_daemon
from portway.client.tarball import pack

GOAL_OVERHEAD_P50_MS = 20.0
GOAL_DAEMON_RSS_MB = 150.0
MAX_COUNT = 250  # one user's private network holds 253 instances
REQUEST_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 10.0  # for one app to accept, alone or on the platform
ALL_RUNNING_TIMEOUT_S = 120.0
TEARDOWN_TIMEOUT_S = 30.0
POLL_S = 0.0005
WARMUP = 5
# A loopback address no instance gets (the daemon hands out 127.128.0.0/9), for the app alone.
ALONE_HOST = "127.77.0.1"

APP = """\
import os, signal, socket
s = socket.socket()
s.bind((os.environ["HOST"], int(os.environ["PORT"])))
s.listen(64)
signal.pause()
"""


class BenchError(Exception):
    """A request failed: the figures would be about error paths, so none are reported."""


# --- measuring ------------------------------------------------------------------------------


def accepts(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def app_alone(count: int, port: int) -> list[float]:
    """ms from spawning the app until its port accepts, `count` times."""
    env = {"PATH": "/usr/bin:/bin", "HOST": ALONE_HOST, "PORT": str(port)}
    samples = []
    for _ in range(count + WARMUP):
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-S", "-c", APP], env=env)
        try:
            deadline = started + READY_TIMEOUT_S
            while not accepts(ALONE_HOST, port):
                if time.perf_counter() > deadline or proc.poll() is not None:
                    raise BenchError(f"the app alone did not accept on {ALONE_HOST}:{port}")
                time.sleep(POLL_S)
            samples.append((time.perf_counter() - started) * 1000)
        finally:
            proc.kill()
            proc.wait()
    return samples[WARMUP:]


def checked(response: httpx.Response) -> dict[str, Any]:
    doc: dict[str, Any] = response.json()
    if response.status_code != 200 or doc.get("status") != "success":
        raise BenchError(f"{response.request.method} {response.request.url}: {response.text[:400]}")
    return doc


def upload_app(client: httpx.Client, workdir: Path, port: int) -> str:
    app = workdir / "app"
    app.mkdir()
    (app / "app.py").write_text(APP)
    tar = pack(app, extra_manifest={"command": [sys.executable, "-S", "app.py"], "port": port})
    checked(client.post("/images", params={"name": "bench-app", "tag": "v1"}, content=tar))
    return "bench-app:v1"


def create_to_running(
    client: httpx.Client, image: str, count: int, made: set[str]
) -> tuple[list[float], list[float], list[float]]:
    """(client ms, daemon op_time ms, boot ms) of `count` creates that wait for `running`.
    boot_time_us is the daemon's own figure from spawning the app to its port accepting."""
    client_ms, server_ms, boot_ms = [], [], []
    for i in range(count + WARMUP):
        started = time.perf_counter()
        doc = checked(
            client.post("/instances", json={"image": image, "autostart": True, "timeout_s": 10})
        )
        elapsed = (time.perf_counter() - started) * 1000
        [item] = doc["data"]["instances"]
        made.add(item["uuid"])
        if item["state"] != "running":
            raise BenchError(f"create answered {item['state']}, not running")
        if i >= WARMUP:
            client_ms.append(elapsed)
            server_ms.append(doc["op_time_us"] / 1000)
            boot_ms.append(item["boot_time_us"] / 1000)
        checked(
            client.request("DELETE", "/instances", json=[{"uuid": item["uuid"], "timeout_s": 10}])
        )
    return client_ms, server_ms, boot_ms


def start_many(
    client: httpx.Client, image: str, count: int, made: set[str], uuids: list[str]
) -> tuple[float, float]:
    """Create `count` instances with autostart and no wait, noting each in `uuids`; (seconds
    until the creates were all answered, seconds until every one is running)."""
    started = time.perf_counter()
    for _ in range(count):
        doc = checked(client.post("/instances", json={"image": image, "autostart": True}))
        uuids.append(doc["data"]["instances"][0]["uuid"])
        made.add(uuids[-1])
    sent = time.perf_counter() - started
    wanted = set(uuids)
    deadline = started + ALL_RUNNING_TIMEOUT_S
    while True:
        items = checked(client.get("/instances"))["data"]["instances"]
        running = {i["uuid"] for i in items if i["state"] == "running"}
        if wanted <= running:
            return sent, time.perf_counter() - started
        if time.perf_counter() > deadline:
            raise BenchError(f"{len(wanted - running)} of {count} not running after the deadline")
        time.sleep(0.01)


def delete_all(client: httpx.Client, uuids: list[str]) -> None:
    if uuids:
        body = [{"uuid": u, "timeout_s": 10} for u in uuids]
        checked(client.request("DELETE", "/instances", json=body))


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: a value that was actually observed."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def run_benchmark(daemon: Daemon, workdir: Path, count: int, made: set[str]) -> dict[str, Any]:
    """The figures; every uuid the run creates goes into `made` (for the leftover check)."""
    port = random.SystemRandom().randint(12_000, 30_000)
    figures: dict[str, Any] = {}
    with httpx.Client(
        base_url=daemon.url,
        headers={"Authorization": f"Bearer {daemon.token}"},
        timeout=REQUEST_TIMEOUT_S,
        trust_env=False,
    ) as client:
        image = upload_app(client, workdir, port)
        alone = app_alone(count, port)
        figures["rss_idle_mb"] = rss_mb(daemon.pid)
        created_ms, server_ms, boot_ms = create_to_running(client, image, count, made)
        figures |= {
            "app_alone_p50_ms": percentile(alone, 50),
            "app_alone_p99_ms": percentile(alone, 99),
            "create_running_p50_ms": percentile(created_ms, 50),
            "create_running_p99_ms": percentile(created_ms, 99),
            "create_server_p50_ms": percentile(server_ms, 50),
            "boot_p50_ms": percentile(boot_ms, 50),
        }
        figures["overhead_p50_ms"] = figures["create_running_p50_ms"] - figures["app_alone_p50_ms"]
        figures["overhead_p99_ms"] = figures["create_running_p99_ms"] - figures["app_alone_p99_ms"]
        uuids: list[str] = []
        try:
            sent_s, all_running_s = start_many(client, image, count, made, uuids)
            figures["start_all_sent_s"] = sent_s
            figures["start_all_running_s"] = all_running_s
            time.sleep(0.5)  # let the supervisors settle before reading the footprint
            figures["rss_running_mb"] = rss_mb(daemon.pid)
            figures["app_processes"] = len(processes_of(made))
        finally:
            # Reported, not raised: the figures above stand whatever the cleanup meets.
            try:
                delete_all(client, uuids)
                figures["delete_all"] = "ok"
            except (BenchError, httpx.HTTPError) as err:
                figures["delete_all"] = f"failed: {err}"
        deadline = time.monotonic() + TEARDOWN_TIMEOUT_S
        while processes_of(made) and time.monotonic() < deadline:
            time.sleep(0.05)
        figures["teardown_left"] = len(processes_of(made))
    return figures


# --- reporting ------------------------------------------------------------------------------


def rows(figures: dict[str, Any], count: int) -> list[tuple[str, str, str, str]]:
    """(metric, value, goal, result)."""

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    overhead = figures["overhead_p50_ms"]
    rss = figures["rss_running_mb"]
    per_instance_kb = (rss - figures["rss_idle_mb"]) * 1024 / count
    return [
        ("app alone: spawn -> accepts, p50", f"{figures['app_alone_p50_ms']:.1f} ms", "-", "-"),
        ("app alone: spawn -> accepts, p99", f"{figures['app_alone_p99_ms']:.1f} ms", "-", "-"),
        ("create -> running, p50", f"{figures['create_running_p50_ms']:.1f} ms", "-", "-"),
        ("create -> running, p99", f"{figures['create_running_p99_ms']:.1f} ms", "-", "-"),
        ("  daemon's op_time of it, p50", f"{figures['create_server_p50_ms']:.1f} ms", "-", "-"),
        ("  of which spawn -> accepts (boot), p50", f"{figures['boot_p50_ms']:.1f} ms", "-", "-"),
        (
            "platform overhead, p50",
            f"{overhead:.1f} ms",
            f"< {GOAL_OVERHEAD_P50_MS:g} ms",
            verdict(overhead < GOAL_OVERHEAD_P50_MS),
        ),
        ("platform overhead, p99", f"{figures['overhead_p99_ms']:.1f} ms", "-", "-"),
        (f"start {count}: creates answered", f"{figures['start_all_sent_s']:.2f} s", "-", "-"),
        (f"start {count}: all running", f"{figures['start_all_running_s']:.2f} s", "-", "-"),
        (
            f"app processes at {count} running",
            str(figures["app_processes"]),
            str(count),
            verdict(figures["app_processes"] == count),
        ),
        ("daemon RSS, idle", f"{figures['rss_idle_mb']:.1f} MB", "-", "-"),
        (
            f"daemon RSS, {count} running",
            f"{rss:.1f} MB",
            f"< {GOAL_DAEMON_RSS_MB:g} MB",
            verdict(rss < GOAL_DAEMON_RSS_MB),
        ),
        ("  daemon RSS per instance", f"{per_instance_kb:.0f} KB", "-", "-"),
        (
            f"delete {count} in one request",
            "ok" if figures["delete_all"] == "ok" else "failed",
            "ok",
            verdict(figures["delete_all"] == "ok"),
        ),
        (
            "app processes left after delete",
            str(figures["teardown_left"]),
            "0",
            verdict(figures["teardown_left"] == 0),
        ),
    ]


def machine_info(data_dir: Path) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "httpx": httpx.__version__,
        "data_dir": str(data_dir),
    }


def print_table(
    machine: dict[str, Any], table: list[tuple[str, str, str, str]], count: int
) -> None:
    print(f"machine: {machine['cpu_count']} CPUs, {machine['python']}, {machine['platform']}")
    print(f"data dir {machine['data_dir']}; {count} samples / instances")
    print()
    width = max(len(r[0]) for r in table)
    print(f"{'metric':<{width}}  {'value':>10}  {'goal':>10}  {'result':>6}")
    for metric, value, goal, result in table:
        print(f"{metric:<{width}}  {value:>10}  {goal:>10}  {result:>6}")
    print("\nlatencies measured on the client; overhead = create->running minus the app alone")


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--count",
        type=int,
        default=100,
        help=f"latency samples, and instances started at once (default 100, at most {MAX_COUNT})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="parent directory for the daemon's fresh data directory (default: system temp)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.count <= MAX_COUNT:
        parser.error(f"--count must be between 1 and {MAX_COUNT}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    made: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="portway-bench-", dir=args.data_dir) as tmp:
        data_dir = Path(tmp) / "data"
        machine = machine_info(data_dir)
        try:
            with running_daemon(data_dir) as daemon:
                figures = run_benchmark(daemon, Path(tmp), args.count, made)
        except (BenchError, DaemonError, httpx.HTTPError, OSError) as err:
            print(f"bench/instances.py: {err}", file=sys.stderr)
            return 1
        finally:
            # The daemon is stopped (SIGTERM stops its instances); nothing of the run may remain.
            left = kill_processes_of(made)
            if left:
                print(f"bench/instances.py: killed {left} leftover processes", file=sys.stderr)
    table = rows(figures, args.count)
    if args.json:
        print(json.dumps({"machine": machine, "figures": figures, "count": args.count}, indent=2))
    else:
        print_table(machine, table, args.count)
    if figures["delete_all"] != "ok":
        print(f"bench/instances.py: delete all: {figures['delete_all']}", file=sys.stderr)
    return 1 if left or figures["teardown_left"] or figures["delete_all"] != "ok" else 0


if __name__ == "__main__":
    sys.exit(main())
