"""Scale to zero on a real `portway up`: real instances (Python processes) frozen by the cgroup
freezer (or SIGSTOP) or stopped, woken by real requests and connections through the gateway.

Every wait is bounded; the daemon runs with a short wake timeout so a failed wake shows fast.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import ssl
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon import Daemon

pytestmark = pytest.mark.e2e

WAIT_S = 20.0
WAKE_TIMEOUT_S = 5.0
CHURN_S = 6.0  # how long requests race with standbys and wakes
HTTP_PORT = [{"port": 80, "destination_port": 8080, "handlers": ["http"]}]
TLS_PORT = [{"port": 9000, "destination_port": 8080, "handlers": ["tls"]}]

# Writes its pid to ./pid; answers its name; /slow takes a second; SIGWINCH (the standby
# notice) is written to ./notified. With CRASH_ON_RESTART, a second start exits with 3 at once.
HTTP_APP = textwrap.dedent(
    """
    import os, signal, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    if os.environ.get("CRASH_ON_RESTART") and os.path.exists("started"):
        print("cannot start twice", flush=True)
        sys.exit(3)
    open("started", "w").close()
    open("pid", "w").write(str(os.getpid()))
    signal.signal(signal.SIGWINCH, lambda *_: open("notified", "a").write("standby soon\\n"))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path == "/slow":
                time.sleep(1.0)
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
)

ECHO_APP = textwrap.dedent(
    """
    import os, socket, threading

    open("pid", "w").write(str(os.getpid()))

    def serve(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    server = socket.create_server((os.environ["HOST"], int(os.environ["PORT"])))
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
    """
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("data"), "--wake-timeout", str(WAKE_TIMEOUT_S)).start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("apps")
    (folder / "http_app.py").write_text(HTTP_APP)
    (folder / "echo_app.py").write_text(ECHO_APP)
    return {"http": folder / "http_app.py", "echo": folder / "echo_app.py"}


@pytest.fixture(scope="module")
def api(daemon: Daemon) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=daemon.url,
        headers={"Authorization": f"Bearer {daemon.token}"},
        timeout=30.0,
        trust_env=False,
    ) as client:
        yield client


def _items(api: httpx.Client, method: str, path: str, **kwargs: Any) -> list[dict[str, Any]]:
    r = api.request(method, path, **kwargs)
    assert r.status_code == 200, r.text
    doc = r.json()
    key = "service_groups" if "services" in path else "instances"
    items: list[dict[str, Any]] = doc["data"][key]
    return items


def _deploy(
    api: httpx.Client,
    name: str,
    script: Path,
    stz: dict[str, Any],
    services: list[dict[str, Any]] = HTTP_PORT,
    count: int = 1,
    soft_limit: int | None = None,
    **extra: Any,
) -> tuple[str, list[dict[str, Any]]]:
    group: dict[str, Any] = {"name": name, "services": services}
    if soft_limit is not None:
        group["soft_limit"] = soft_limit
    [made] = _items(api, "POST", "/services", json=group)
    assert made["status"] == "success", made
    body = {
        "image": "host",
        "args": [sys.executable, str(script)],
        "service_group": {"name": name},
        "replicas": count - 1,
        "autostart": True,
        "timeout_s": 20,
        "scale_to_zero": stz,
        **extra,
    }
    instances = _items(api, "POST", "/instances", json=body)
    assert all(i["state"] == "running" for i in instances), instances
    return made["domains"][0]["fqdn"], instances


def _set_scale_to_zero(api: httpx.Client, uuid: str, stz: dict[str, Any]) -> None:
    [patched] = _items(
        api,
        "PATCH",
        "/instances",
        json=[{"uuid": uuid, "prop": "scale_to_zero", "op": "set", "value": stz}],
    )
    assert patched["status"] == "success", patched


def _state(api: httpx.Client, uuid: str) -> dict[str, Any]:
    [item] = _items(api, "GET", "/instances", params={"uuid": uuid})
    return item


def _until(check: Callable[[], bool], timeout: float = WAIT_S, every: float = 0.01) -> float:
    """Poll until `check` holds; the monotonic time it first did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s: {check}")


def _root(daemon: Daemon, uuid: str) -> Path:
    return daemon.data_dir / "instances" / uuid / "root"


def _pid(daemon: Daemon, uuid: str) -> int:
    path = _root(daemon, uuid) / "pid"
    _until(lambda: path.exists() and path.read_text().strip() != "")
    return int(path.read_text())


def _frozen(pid: int) -> bool:
    """Frozen as /proc shows it: its v1 freezer cgroup says FROZEN, or the task is stopped."""
    try:
        cgroups = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    if state == "T":
        return True
    for line in cgroups:
        _, controllers, path = line.split(":", 2)
        if "freezer" in controllers.split(","):
            freezer = Path("/sys/fs/cgroup/freezer") / path.lstrip("/") / "freezer.state"
            if freezer.exists() and freezer.read_text().strip() == "FROZEN":
                return True
        if controllers == "":
            events = Path("/sys/fs/cgroup/unified") / path.lstrip("/") / "cgroup.events"
            if events.exists() and "frozen 1" in events.read_text():
                return True
    return False


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _get(daemon: Daemon, fqdn: str, path: str = "/") -> tuple[int, str, dict[str, str]]:
    conn = http.client.HTTPConnection(*daemon.gateway(80), timeout=30)
    try:
        conn.request("GET", path, headers={"Host": fqdn})
        response = conn.getresponse()
        return response.status, response.read().decode(), dict(response.getheaders())
    finally:
        conn.close()


def _metric(daemon: Daemon, name: str, instance: str) -> float:
    text = httpx.get(
        f"{daemon.base}/metrics",
        headers={"Authorization": f"Bearer {daemon.token}"},
        trust_env=False,
    ).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and f'instance="{instance}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- standby and wake ---------------------------------------------------------------------


def test_idle_stateful_instance_freezes_within_cooldown_and_wakes(
    api: httpx.Client, daemon: Daemon, apps: dict[str, Path]
) -> None:
    stz = {"policy": "on", "cooldown_time_ms": 500, "stateful": True, "notify_time_ms": 200}
    fqdn, [instance] = _deploy(api, "stateful", apps["http"], stz)
    uuid, name = instance["uuid"], instance["name"]
    assert instance["scale_to_zero"]["enabled"] is True
    pid = _pid(daemon, uuid)
    assert _get(daemon, fqdn)[:2] == (200, name)
    quiet_from = time.monotonic()
    frozen_at = _until(lambda: _frozen(pid), timeout=5.0, every=0.005)
    assert frozen_at - quiet_from <= 0.5 + 0.2, f"froze after {frozen_at - quiet_from:.3f} s"
    item = _state(api, uuid)
    assert item["state"] == "standby"
    assert item["stop_reason"] == 39
    assert (_root(daemon, uuid) / "notified").read_text() == "standby soon\n"
    ticks = _cpu_ticks(pid)
    time.sleep(0.3)
    assert _cpu_ticks(pid) == ticks, "a standby instance used CPU"
    status, body, headers = _get(daemon, fqdn)
    assert (status, body) == (200, name)
    assert float(headers["X-Portway-Wake-Ms"]) > 0
    assert not _frozen(pid)
    assert _pid(daemon, uuid) == pid, "a stateful wake keeps the process"
    # `running` is written just after the held request went on (RESUME_WRITE_AFTER_S).
    _until(lambda: _state(api, uuid)["state"] == "running", timeout=1.0)
    assert _metric(daemon, "portway_instance_wake_seconds_count", name) == 1
    access_log = daemon.data_dir / "logs" / "access.log"

    def logged_wake() -> bool:  # the log is written in batches, a few times a second
        lines = access_log.read_text().splitlines() if access_log.exists() else []
        entries = [json.loads(line) for line in lines if f'"instance":"{name}"' in line]
        return any(entry["wake_ms"] > 0 for entry in entries)

    _until(logged_wake, timeout=5.0, every=0.05)


def test_scale_to_zero_turned_on_and_off_by_patch(
    api: httpx.Client, daemon: Daemon, apps: dict[str, Path]
) -> None:
    fqdn, [instance] = _deploy(api, "patched", apps["http"], {"policy": "off"})
    uuid, name = instance["uuid"], instance["name"]
    pid = _pid(daemon, uuid)
    stz = {"policy": "on", "cooldown_time_ms": 600, "stateful": True}
    _set_scale_to_zero(api, uuid, stz)
    shown = _state(api, uuid)["scale_to_zero"]
    assert (shown["enabled"], shown["policy"], shown["cooldown_time_ms"]) == (True, "on", 600)
    # The running instance's new policy is followed without a restart: it goes to sleep...
    _until(lambda: _frozen(pid), timeout=5.0)
    assert _state(api, uuid)["state"] == "standby"
    # ... wakes for a request, and once the policy is off again it stays up past the cooldown.
    assert _get(daemon, fqdn)[:2] == (200, name)
    _until(lambda: _state(api, uuid)["state"] == "running", timeout=1.0)
    _set_scale_to_zero(api, uuid, {"policy": "off"})
    assert _state(api, uuid)["scale_to_zero"]["enabled"] is False
    time.sleep(1.0)  # past the cooldown the policy had
    assert _state(api, uuid)["state"] == "running" and not _frozen(pid)


def test_idle_stateless_instance_stops_and_cold_starts(
    api: httpx.Client, daemon: Daemon, apps: dict[str, Path]
) -> None:
    stz = {"policy": "on", "cooldown_time_ms": 300, "stateful": False}
    fqdn, [instance] = _deploy(api, "stateless", apps["http"], stz)
    uuid, name = instance["uuid"], instance["name"]
    pid = _pid(daemon, uuid)
    (_root(daemon, uuid) / "pid").unlink()
    _until(lambda: not Path(f"/proc/{pid}").exists(), timeout=5.0)
    _until(lambda: _state(api, uuid)["state"] == "standby", timeout=5.0)
    assert _state(api, uuid)["stop_reason"] == 39
    assert _get(daemon, fqdn)[:2] == (200, name)
    assert _pid(daemon, uuid) != pid
    _until(lambda: _state(api, uuid)["state"] == "running", timeout=1.0)


@pytest.mark.parametrize("stateful", [True, False], ids=["stateful", "stateless"])
def test_requests_racing_many_standbys_and_wakes_all_succeed(
    api: httpx.Client, daemon: Daemon, apps: dict[str, Path], stateful: bool
) -> None:
    """Two clients send requests at gaps around a 100 ms cooldown for a few seconds: the two
    instances keep going to standby and waking while requests race with both. Every request
    gets its 200. (A longer run of this load found connections chosen again by a stale
    route, which kept an instance busy for ever; tests/gateway/test_failures.py pins that
    cause down deterministically.)"""
    stz = {"policy": "on", "cooldown_time_ms": 100, "stateful": stateful}
    fqdn, instances = _deploy(api, f"churn-{stateful}".lower(), apps["http"], stz, count=2)
    names = {i["name"] for i in instances}
    served: list[str] = []
    failed: list[object] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        end = time.monotonic() + CHURN_S
        while time.monotonic() < end:
            time.sleep(rng.choice((0.05, 0.1, 0.12, 0.15, 0.2, 0.3, 0.4)))
            try:
                status, body, _ = _get(daemon, fqdn)
            except OSError as err:
                failed.append(repr(err))
                continue
            if status == 200 and body in names:
                served.append(body)
            else:
                failed.append((status, body))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CHURN_S + 2 * WAIT_S)
    assert not failed, failed[:5]
    assert len(served) > 20
    # Enough sleeps to have raced (a loaded CI machine stretches every gap, so not many).
    wakes = sum(_metric(daemon, "portway_instance_wake_seconds_count", n) for n in names)
    assert wakes >= 2, "the load never let the instances sleep"


def test_fifty_first_requests_share_one_wake(
    api: httpx.Client, daemon: Daemon, apps: dict[str, Path]
) -> None:
    stz = {"policy": "on", "cooldown_time_ms": 300, "stateful": False}
    fqdn, [instance] = _deploy(api, "fifty", apps["http"], stz)
    uuid, name = instance["uuid"], instance["name"]
    _until(lambda: _state(api, uuid)["state"] == "standby", timeout=5.0)
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _: _get(daemon, fqdn)[:2], range(50)))
    assert answers == [(200, name)] * 50
    assert _metric(daemon, "portway_instance_wake_seconds_count", name) == 1
    assert _metric(daemon, "portway_instance_wake_failures_total", name) == 0


def test_soft_limit_wakes_one_instance_per_request_and_all_sleep_again(
    api: httpx.Client, daemon: Daemon, apps: dict[str, Path]
) -> None:
    stz = {"policy": "on", "cooldown_time_ms": 400, "stateful": True}
    fqdn, made = _deploy(api, "soft", apps["http"], stz, count=3, soft_limit=1)
    uuids = [i["uuid"] for i in made]

    def all_standby() -> bool:
        return all(_state(api, u)["state"] == "standby" for u in uuids)

    _until(all_standby, timeout=10.0, every=0.05)
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: _get(daemon, fqdn, "/slow")[:2], range(3)))
    assert sorted(answers) == sorted((200, i["name"]) for i in made)  # one request each
    for i in made:
        assert _metric(daemon, "portway_instance_wake_seconds_count", i["name"]) == 1
    _until(all_standby, timeout=0.4 + 5.0, every=0.05)


def test_idle_policy_keeps_a_silent_connection_and_its_next_bytes_wake(
    api: httpx.Client, daemon: Daemon, apps: dict[str, Path]
) -> None:
    stz = {"policy": "idle", "cooldown_time_ms": 400, "stateful": True}
    fqdn, [instance] = _deploy(api, "idle", apps["echo"], stz, services=TLS_PORT)
    uuid = instance["uuid"]
    pid = _pid(daemon, uuid)
    context = ssl.create_default_context(cafile=str(daemon.data_dir / "tls" / "ca.pem"))
    with (
        socket.create_connection(daemon.gateway(9000), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=fqdn) as tls,
    ):
        tls.sendall(b"hello")
        assert tls.recv(100) == b"hello"
        _until(lambda: _frozen(pid), timeout=5.0)
        assert _state(api, uuid)["state"] == "standby"
        tls.sendall(b"again")
        assert tls.recv(100) == b"again"  # the same connection, answered after the wake
        _until(lambda: _state(api, uuid)["state"] == "running", timeout=1.0)
        assert not _frozen(pid)


def test_app_that_crashes_when_woken_fails_held_requests_fast(
    api: httpx.Client, daemon: Daemon, apps: dict[str, Path]
) -> None:
    stz = {"policy": "on", "cooldown_time_ms": 300, "stateful": False}
    fqdn, [instance] = _deploy(api, "crashy", apps["http"], stz, env={"CRASH_ON_RESTART": "1"})
    uuid = instance["uuid"]
    _until(lambda: _state(api, uuid)["state"] == "standby", timeout=5.0)
    began = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: _get(daemon, fqdn), range(3)))
    took = time.monotonic() - began
    assert took < WAKE_TIMEOUT_S
    for status, body, headers in answers:
        assert status == 503
        assert headers["Retry-After"] == "1"
        assert "did not wake" in body
    item = _state(api, uuid)
    assert item["state"] == "stopped"
    assert item["exit_code"] == 3
    console = (daemon.data_dir / "instances" / uuid / "console.log").read_text()
    assert "cannot start twice" in console


def test_instance_autokill_after_stop_and_after_requests(
    api: httpx.Client, daemon: Daemon, apps: dict[str, Path]
) -> None:
    _fqdn, [stopped] = _deploy(
        api, "autokill-stop", apps["http"], {"policy": "off"}, autokill={"time_ms": 300}
    )
    fqdn, [served] = _deploy(
        api, "autokill-reqs", apps["http"], {"policy": "off"}, autokill={"num_requests": 3}
    )
    _items(api, "PUT", "/instances/stop", json=[{"uuid": stopped["uuid"]}])

    def gone(uuid: str) -> Callable[[], bool]:
        return lambda: _state(api, uuid).get("error") == 8

    _until(gone(stopped["uuid"]), timeout=10.0, every=0.05)
    for _ in range(3):
        assert _get(daemon, fqdn)[0] == 200
    _until(gone(served["uuid"]), timeout=10.0, every=0.05)
    assert os.path.exists(daemon.data_dir)  # the daemon is still fine
