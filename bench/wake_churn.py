"""A soak of scale to zero: requests racing standbys and wakes, counting every failure.

usage: .venv/bin/python bench/wake_churn.py [--seconds 40] [--clients 3] [--toggle]
                                            [--data-dir DIR]

Starts a real `portway up` (wake timeout 10 s) and, one after the other, four groups of two
instances with a 100 ms cooldown:
- http-stateful, http-stateless: a keep-alive HTTP app behind port 80, policy `on`;
- tcp-idle: an echo app behind a TLS port, policy `idle`, stateful;
- tcp-stateless: the same, policy `on`, stateless.
For `--seconds`, `--clients` clients each send a request (HTTP) or open a connection and echo
a line (TCP), sleeping between them for gaps drawn around the cooldown, so the instances keep
falling asleep and waking while work arrives. With `--toggle`, one instance of the group is
also stopped (200 ms drain) and started again, over and over, through the API.

Prints, per group: work that succeeded, work that failed (and the first failures), and the
wakes from /metrics. Exit status 1 if anything failed. A run of this kind found a connection
re-chosen by a stale route, which kept an instance busy for ever (tests/gateway/
test_failures.py pins it down); keep soaking the wake path after changing it.
"""

from __future__ import annotations

import argparse
import http.client
import random
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from _daemon import Daemon, free_port_offset, running_daemon

COOLDOWN_MS = 100
GAPS_S = (0.0, 0.05, 0.1, 0.11, 0.12, 0.14, 0.16, 0.2, 0.3)  # around the cooldown
TIMEOUT_S = 15.0  # per request: above the daemon's wake timeout, so a failed wake shows as 503
WAKE_TIMEOUT_S = 10
HTTP_PORT, TLS_PORT = 80, 9000

HTTP_APP = """\
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = os.environ["PORTWAY_NAME"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
"""

ECHO_APP = """\
import os, socket, threading

def serve(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)

server = socket.create_server((os.environ["HOST"], int(os.environ["PORT"])), backlog=128)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


@dataclass(frozen=True)
class Kind:
    name: str
    tcp: bool
    policy: str
    stateful: bool


KINDS = (
    Kind("http-stateful", False, "on", True),
    Kind("http-stateless", False, "on", False),
    Kind("tcp-idle", True, "idle", True),
    Kind("tcp-stateless", True, "on", False),
)


@dataclass
class Tally:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, failure: str | None) -> None:
        with self.lock:
            if failure is None:
                self.ok += 1
            else:
                self.failures.append(failure)


class Platform:
    def __init__(self, daemon: Daemon, root: Path, offset: int) -> None:
        self.daemon = daemon
        self.api = httpx.Client(
            base_url=daemon.url,
            headers={"Authorization": f"Bearer {daemon.token}"},
            timeout=30,
            trust_env=False,
        )
        self.root = root
        self.offset = offset
        self.tls = ssl.create_default_context(cafile=str(root / "data" / "tls" / "ca.pem"))

    def deploy(self, kind: Kind) -> tuple[str, list[dict[str, Any]]]:
        port, handlers = (TLS_PORT, ["tls"]) if kind.tcp else (HTTP_PORT, ["http"])
        service = {"port": port, "destination_port": 8080, "handlers": handlers}
        group = self.api.post("/services", json={"name": kind.name, "services": [service]})
        fqdn = str(group.json()["data"]["service_groups"][0]["domains"][0]["fqdn"])
        script = self.root / f"{kind.name}.py"
        script.write_text(ECHO_APP if kind.tcp else HTTP_APP)
        stz = {"policy": kind.policy, "cooldown_time_ms": COOLDOWN_MS, "stateful": kind.stateful}
        body = {
            "image": "host",
            "args": [sys.executable, str(script)],
            "service_group": {"name": kind.name},
            "replicas": 1,
            "autostart": True,
            "timeout_s": 20,
            "scale_to_zero": stz,
        }
        items: list[dict[str, Any]] = self.api.post("/instances", json=body).json()["data"][
            "instances"
        ]
        if not all(item.get("state") == "running" for item in items):
            raise SystemExit(f"{kind.name} did not start: {items}")
        return fqdn, items

    def http_once(self, fqdn: str) -> str | None:
        conn = http.client.HTTPConnection("127.0.0.1", HTTP_PORT + self.offset, timeout=TIMEOUT_S)
        try:
            conn.request("GET", "/", headers={"Host": fqdn})
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        return None if response.status == 200 else f"{response.status} {body[:80]!r}"

    def tcp_once(self, fqdn: str) -> str | None:
        line = f"hello {random.random()}\n".encode()
        raw = socket.create_connection(("127.0.0.1", TLS_PORT + self.offset), timeout=TIMEOUT_S)
        with self.tls.wrap_socket(raw, server_hostname=fqdn) as conn:
            conn.sendall(line)
            got = b""
            while len(got) < len(line):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                got += chunk
        return None if got == line else f"echo {got[:40]!r}"

    def wakes(self, names: set[str]) -> int:
        text = httpx.get(
            self.daemon.url.rsplit("/v1", 1)[0] + "/metrics",
            headers={"Authorization": f"Bearer {self.daemon.token}"},
            trust_env=False,
        ).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("portway_instance_wake_seconds_count{") and any(
                f'instance="{n}"' in line for n in names
            ):
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def toggle(self, uuid: str, until: float, tally: Tally) -> None:
        """Stop (with a drain) and start one instance, over and over, until `until`."""
        while time.monotonic() < until:
            time.sleep(0.7)
            for verb, item in (("stop", {"drain_timeout_ms": 200}), ("start", {})):
                reply = self.api.put(f"/instances/{verb}", json=[{"uuid": uuid, **item}])
                status = reply.json()["data"]["instances"][0].get("status")
                tally.add(None if status == "success" else f"{verb}: {reply.text[:120]}")
                time.sleep(0.4)


def churn(platform: Platform, kind: Kind, seconds: float, clients: int, toggle: bool) -> bool:
    """One group's soak; whether everything succeeded."""
    fqdn, items = platform.deploy(kind)
    once: Callable[[str], str | None] = platform.tcp_once if kind.tcp else platform.http_once
    until = time.monotonic() + seconds
    work, ops = Tally(), Tally()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < until:
            time.sleep(rng.choice(GAPS_S))
            try:
                work.add(once(fqdn))
            except OSError as err:
                work.add(repr(err)[:120])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    if toggle:
        toggling = (items[0]["uuid"], until, ops)
        threads.append(threading.Thread(target=platform.toggle, args=toggling))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 4 * TIMEOUT_S)
    wakes = platform.wakes({str(item["name"]) for item in items})
    print(
        f"{kind.name:15} ok {work.ok:6}  failed {len(work.failures):4}  wakes {wakes:5}"
        + (f"  API stop/start ok {ops.ok} failed {len(ops.failures)}" if toggle else "")
    )
    for failure in (work.failures + ops.failures)[:3]:
        print(f"    {failure}")
    sys.stdout.flush()
    return not (work.failures or ops.failures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="per group (40)")
    parser.add_argument("--clients", type=int, default=3, help="per group (3)")
    parser.add_argument("--toggle", action="store_true", help="also stop/start an instance")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="portway-churn-") as tmp:
        root = args.data_dir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        offset = free_port_offset((HTTP_PORT, TLS_PORT), 24000)
        extra = ("--port-offset", str(offset), "--wake-timeout", str(WAKE_TIMEOUT_S))
        with running_daemon(root / "data", *extra) as daemon:
            platform = Platform(daemon, root, offset)
            passed = [churn(platform, k, args.seconds, args.clients, args.toggle) for k in KINDS]
    return 0 if all(passed) else 1


if __name__ == "__main__":
    sys.exit(main())
