"""What a wake from standby adds to the first request (issue 5).

usage: .venv/bin/python bench/wake.py [--wakes N] [--data-dir DIR]

Starts a real `portway up` on a fresh data directory and deploys one small HTTP app (a
Python process) behind port 80 of a group, three ways, in this one invocation:
- warm: scale to zero off; every request opens a new connection through the gateway;
- stateful: `scale_to_zero {policy on, cooldown 100 ms, stateful}`: between requests the
  instance goes to standby (frozen); each request wakes it (a thaw);
- stateless: the same with `stateful: false`: each request cold-starts the app;
and, as the reference for a cold start, the same app started alone (no Portway) until its port
accepts. Each figure is the latency of a request on a new connection, measured by the client,
p50/p99 over N wakes. Added latency: stateful p50 - warm p50 (goal ≤ 2 ms); stateless p50 -
warm p50 - the app's own start p50 (goal ≤ 20 ms). Anchors from the issue: Unikraft ~20 ms
boot, Koyeb light sleep ~200 ms, Fly suspend a few hundred ms.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from _daemon import running_daemon

GOAL_STATEFUL_MS = 2.0
GOAL_STATELESS_MS = 20.0
COOLDOWN_MS = 100
TIMEOUT_S = 20.0
ALONE_HOST = "127.77.0.2"  # a loopback address no instance gets
ALONE_PORT = 18089

APP = """\
import os, socket
server = socket.create_server((os.environ["HOST"], int(os.environ["PORT"])), backlog=128)
reply = b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok"
while True:
    conn, _ = server.accept()
    with conn:
        data = b""
        while b"\\r\\n\\r\\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        conn.sendall(reply)
"""


class BenchError(Exception):
    pass


def free_offset() -> int:
    for offset in range(21000, 40000, 17):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", 80 + offset)) != 0:
                return offset
    raise BenchError("no free port offset")


def until(check: Callable[[], bool], timeout: float = TIMEOUT_S, every: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {check}")
        time.sleep(every)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Platform:
    def __init__(self, url: str, token: str, offset: int, script: Path) -> None:
        self.api = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30, trust_env=False
        )
        self.offset = offset
        self.script = script
        self.held: list[float] = []  # X-Portway-Wake-Ms of each response

    def deploy(self, name: str, stz: dict[str, Any]) -> tuple[str, str]:
        r = self.api.post(
            "/services",
            json={
                "name": name,
                "services": [{"port": 80, "destination_port": 8080, "handlers": ["http"]}],
            },
        )
        fqdn = r.json()["data"]["service_groups"][0]["domains"][0]["fqdn"]
        body = {
            "image": "host",
            "args": [sys.executable, "-S", str(self.script)],
            "service_group": {"name": name},
            "autostart": True,
            "timeout_s": 20,
            "scale_to_zero": stz,
        }
        [item] = self.api.post("/instances", json=body).json()["data"]["instances"]
        if item.get("state") != "running":
            raise BenchError(f"{name} did not start: {item}")
        return fqdn, item["uuid"]

    def state(self, uuid: str) -> str:
        [item] = self.api.get("/instances", params={"uuid": uuid}).json()["data"]["instances"]
        return str(item["state"])

    def request_ms(self, fqdn: str) -> float:
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", 80 + self.offset, timeout=TIMEOUT_S)
        try:
            conn.request("GET", "/", headers={"Host": fqdn})
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise BenchError(f"status {response.status}")
        self.held.append(float(response.getheader("X-Portway-Wake-Ms") or 0.0))
        return (time.perf_counter() - started) * 1000

    def wakes(self, fqdn: str, uuid: str, count: int) -> tuple[list[float], list[float]]:
        """Request latencies, and how long the gateway held each request for its wake."""
        samples = []
        self.held = []
        for _ in range(count):
            until(lambda: self.state(uuid) == "standby", every=0.01)
            time.sleep(0.02)  # the freeze or stop that follows the state change
            samples.append(self.request_ms(fqdn))
        return samples, self.held


def app_alone(script: Path, count: int) -> list[float]:
    """ms from spawning the app alone until its port accepts."""
    env = {"PATH": "/usr/bin:/bin", "HOST": ALONE_HOST, "PORT": str(ALONE_PORT)}
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-S", str(script)], env=env)
        try:

            def accepts() -> bool:
                with socket.socket() as probe:
                    return probe.connect_ex((ALONE_HOST, ALONE_PORT)) == 0

            until(accepts, every=0.0005)
            samples.append((time.perf_counter() - started) * 1000)
        finally:
            proc.kill()
            proc.wait()
    return samples


def row(name: str, samples: list[float]) -> str:
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    return f"  {name:<28} p50 {p50:8.2f} ms   p99 {p99:8.2f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wakes", type=int, default=50, help="wakes per kind (at least 50)")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="portway-wake-") as tmp:
        root = args.data_dir or Path(tmp)
        script = root / "app.py"
        root.mkdir(parents=True, exist_ok=True)
        script.write_text(APP)
        offset = free_offset()
        with running_daemon(root / "data", "--port-offset", str(offset)) as daemon:
            platform = Platform(daemon.url, daemon.token, offset, script)
            warm_fqdn, _ = platform.deploy("warm", {"policy": "off"})
            for _ in range(20):
                platform.request_ms(warm_fqdn)
            warm = [platform.request_ms(warm_fqdn) for _ in range(max(args.wakes, 200))]
            stz = {"policy": "on", "cooldown_time_ms": COOLDOWN_MS}
            frozen_fqdn, frozen = platform.deploy("stateful", {**stz, "stateful": True})
            stateful, stateful_held = platform.wakes(frozen_fqdn, frozen, args.wakes)
            cold_fqdn, cold = platform.deploy("stateless", {**stz, "stateful": False})
            stateless, stateless_held = platform.wakes(cold_fqdn, cold, args.wakes)
        alone = app_alone(script, args.wakes)
    warm50 = percentile(warm, 50)
    added_stateful = percentile(stateful, 50) - warm50
    added_stateless = percentile(stateless, 50) - warm50 - percentile(alone, 50)
    print(f"First request after a wake, {args.wakes} wakes each (new connection per request):")
    print(row("warm (no standby)", warm))
    print(row("stateful wake (thaw)", stateful))
    print(row("stateless wake (cold start)", stateless))
    print(row("the app's own start, alone", alone))
    print(row("held for the thaw (header)", stateful_held))
    print(row("held for the cold start", stateless_held))
    verdict = "PASS" if added_stateful <= GOAL_STATEFUL_MS else "MISS"
    print(
        f"stateful wake adds   {added_stateful:6.2f} ms p50 (goal <= {GOAL_STATEFUL_MS}): {verdict}"
    )
    verdict = "PASS" if added_stateless <= GOAL_STATELESS_MS else "MISS"
    print(
        f"stateless wake adds  {added_stateless:6.2f} ms p50 over the app's own start "
        f"(goal <= {GOAL_STATELESS_MS}): {verdict}"
    )
    print("anchors: Unikraft ~20 ms boot, Koyeb light sleep ~200 ms, Fly suspend a few 100 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
