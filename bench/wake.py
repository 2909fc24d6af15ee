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
p50/p99 over N wakes.

The machine's speed drifts (it is shared), so each wake is paired with references taken just
before it: a warm request, and for a stateless wake a start of the app alone. The added latency
is the median of the per-wake differences: stateful - warm (goal ≤ 2 ms); stateless - warm -
the app alone (goal ≤ 20 ms). Anchors from the issue: Unikraft ~20 ms boot, Koyeb light sleep
~200 ms, Fly suspend a few hundred ms.
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

from _daemon import free_port_offset, running_daemon

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

    def request_ms(self, fqdn: str) -> tuple[float, float]:
        """(ms the request took, ms the gateway held it for a wake: X-Portway-Wake-Ms)."""
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
        took = (time.perf_counter() - started) * 1000
        return took, float(response.getheader("X-Portway-Wake-Ms") or 0.0)

    def wakes(self, fqdn: str, uuid: str, warm_fqdn: str, count: int, alone: bool) -> Wakes:
        """`count` wakes of `uuid`, each after a warm request (and a start of the app alone)."""
        out = Wakes()
        for _ in range(count):
            until(lambda: self.state(uuid) == "standby", every=0.01)
            out.warm.append(self.request_ms(warm_fqdn)[0])
            if alone:
                out.alone.append(app_alone(self.script))
            time.sleep(0.02)  # the freeze or stop that follows the state change
            took, held = self.request_ms(fqdn)
            out.woken.append(took)
            out.held.append(held)
        return out


class Wakes:
    """Per wake: its request's latency, how long it was held, and the references before it."""

    def __init__(self) -> None:
        self.woken: list[float] = []
        self.held: list[float] = []
        self.warm: list[float] = []
        self.alone: list[float] = []

    def added_ms(self) -> float:
        """Median over the wakes of what the wake added to the request: its latency minus the
        warm request's, minus the app's own start when there is one."""
        alone = self.alone or [0.0] * len(self.woken)
        paired = zip(self.woken, self.warm, alone, strict=True)
        return percentile([w - r - a for w, r, a in paired], 50)


def app_alone(script: Path) -> float:
    """ms from spawning the app alone until its port accepts."""
    env = {"PATH": "/usr/bin:/bin", "HOST": ALONE_HOST, "PORT": str(ALONE_PORT)}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-S", str(script)], env=env)
    try:

        def accepts() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex((ALONE_HOST, ALONE_PORT)) == 0

        until(accepts, every=0.0005)
        return (time.perf_counter() - started) * 1000
    finally:
        proc.kill()
        proc.wait()


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
        offset = free_port_offset((80,), 21000)
        with running_daemon(root / "data", "--port-offset", str(offset)) as daemon:
            platform = Platform(daemon.url, daemon.token, offset, script)
            warm_fqdn, _ = platform.deploy("warm", {"policy": "off"})
            for _ in range(20):
                platform.request_ms(warm_fqdn)
            stz = {"policy": "on", "cooldown_time_ms": COOLDOWN_MS}
            frozen_fqdn, frozen = platform.deploy("stateful", {**stz, "stateful": True})
            stateful = platform.wakes(frozen_fqdn, frozen, warm_fqdn, args.wakes, alone=False)
            cold_fqdn, cold = platform.deploy("stateless", {**stz, "stateful": False})
            stateless = platform.wakes(cold_fqdn, cold, warm_fqdn, args.wakes, alone=True)
    print(f"First request after a wake, {args.wakes} wakes each (new connection per request):")
    print(row("warm (no standby)", stateful.warm + stateless.warm))
    print(row("stateful wake (thaw)", stateful.woken))
    print(row("stateless wake (cold start)", stateless.woken))
    print(row("the app's own start, alone", stateless.alone))
    print(row("held for the thaw (header)", stateful.held))
    print(row("held for the cold start", stateless.held))
    for kind, wakes, goal, over in (
        ("stateful", stateful, GOAL_STATEFUL_MS, ""),
        ("stateless", stateless, GOAL_STATELESS_MS, " over the app's own start"),
    ):
        added = wakes.added_ms()
        verdict = "PASS" if added <= goal else "MISS"
        print(f"{kind + ' wake adds':21} {added:6.2f} ms p50{over} (goal <= {goal}): {verdict}")
    print("anchors: Unikraft ~20 ms boot, Koyeb light sleep ~200 ms, Fly suspend a few 100 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
