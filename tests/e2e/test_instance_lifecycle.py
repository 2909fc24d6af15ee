"""Instances over raw HTTP against a real `portway up` running real processes (ukc-api.md §3).

Restart policies and their back-off (§3.6), the create rules and their errors (§3.2, §1.5), the
console log (§3.4), metrics, PATCH (queued changes, tags, delete_lock), stop with a drain,
readiness, instances of an uploaded image (its manifest's command, port and env), and stop and
start sent while an instance is still starting or stopping (§3.5).

Timing assertions use the app's own clock: each start appends a timestamp to the console log,
read back through the API, so the delays measured are the ones between real process starts.
Every wait is bounded; every poll has a deadline.
"""

from __future__ import annotations

import base64
import contextlib
import random
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from portway.client.tarball import pack
from tests.daemon import Daemon

pytestmark = pytest.mark.e2e

TIMEOUT = httpx.Timeout(30.0)
TOLERANCE_S = 1.5  # on every measured delay (process start, a loaded CI machine)
# The app prints a timestamp (the wall clock, which next_at is also on) at each start.
STAMP = "date +%s.%N"


class Api:
    """The instance routes, as raw calls. Every response must be JSON with the envelope."""

    def __init__(self, daemon: Daemon) -> None:
        self.http = httpx.Client(
            base_url=daemon.url,
            headers={"Authorization": f"Bearer {daemon.token}"},
            timeout=TIMEOUT,
            trust_env=False,
        )

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        r = self.http.request(method, path, **kwargs)
        assert r.headers.get("content-type") == "application/json", r.headers
        return r

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        r = self.call("POST", "/instances", json=body)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["status"] == "success", doc
        [item] = doc["data"]["instances"]
        return dict(item)

    def get(self, uuid: str) -> dict[str, Any]:
        r = self.call("GET", "/instances", params={"uuid": uuid})
        assert r.status_code == 200, r.text
        [item] = r.json()["data"]["instances"]
        assert item["status"] == "success", item
        return dict(item)

    def items(self, method: str, path: str, **kwargs: Any) -> tuple[dict[str, Any], list[Any]]:
        """A bulk call answered HTTP 200: (the envelope, its items)."""
        r = self.call(method, path, **kwargs)
        assert r.status_code == 200, r.text
        doc = r.json()
        return doc, doc["data"]["instances"]

    def log(self, uuid: str, **range_: int) -> dict[str, Any]:
        _doc, [item] = self.items("GET", "/instances/log", json=[{"uuid": uuid, **range_}])
        assert item["status"] == "success", item
        return dict(item)

    def log_text(self, uuid: str) -> str:
        return base64.b64decode(self.log(uuid, offset=0)["output"]).decode()

    def wait(self, uuid: str, state: str, timeout_s: int = 15) -> dict[str, Any]:
        _doc, [item] = self.items(
            "GET", "/instances/wait", json=[{"uuid": uuid, "state": state, "timeout_s": timeout_s}]
        )
        assert (item["status"], item["state"]) == ("success", state), item
        return dict(item)

    def stop(self, uuid: str, **opts: Any) -> dict[str, Any]:
        _doc, [item] = self.items("PUT", "/instances/stop", json=[{"uuid": uuid, **opts}])
        assert item["status"] == "success", item
        return dict(item)

    def start(self, uuid: str) -> dict[str, Any]:
        _doc, [item] = self.items("PUT", "/instances/start", json=[{"uuid": uuid}])
        assert item["status"] == "success", item
        return dict(item)

    def patch(self, uuid: str, *triples: dict[str, Any]) -> dict[str, Any]:
        doc, items = self.items("PATCH", "/instances", json=[{"uuid": uuid, **t} for t in triples])
        assert doc["status"] == "success", doc
        return dict(items[0])

    def delete(self, uuid: str) -> dict[str, Any]:
        """Also the tests' cleanup, so it retries once on a connection the daemon dropped (it
        does after answering 500): the failure that matters is the one already raised."""
        try:
            _doc, [item] = self.items("DELETE", "/instances", json=[{"uuid": uuid}])
        except httpx.TransportError:
            _doc, [item] = self.items("DELETE", "/instances", json=[{"uuid": uuid}])
        return dict(item)

    def counts(self) -> tuple[int, int]:
        """(instances, service groups) the user has."""
        r = self.call("GET", "/instances")
        assert r.status_code == 200, r.text
        g = self.call("GET", "/services")
        assert g.status_code == 200, g.text
        return len(r.json()["data"]["instances"]), len(g.json()["data"]["service_groups"])


@pytest.fixture(scope="module", autouse=True)
def drained(shared_daemon: Daemon) -> Iterator[None]:
    """Keep reading the daemon's output. tests/daemon.py stops reading it once the daemon is
    up, and a daemon that writes more than a pipe holds (64 KiB: a handful of tracebacks, which
    some tests here provoke when they find a bug) blocks on the write, and with it every
    request and its own shutdown. What is read is kept in `output`, for failure reports."""
    proc = shared_daemon.proc
    assert proc is not None and proc.stdout is not None
    stream = proc.stdout

    def pump() -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in stream:
                shared_daemon.output.append(line)

    threading.Thread(target=pump, name="daemon-output", daemon=True).start()
    yield


@pytest.fixture
def api(shared_daemon: Daemon) -> Iterator[Api]:
    client = Api(shared_daemon)
    try:
        yield client
    finally:
        client.close()


def until(what: str, check: Callable[[], Any], timeout_s: float, every: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})")


def sh(script: str, **extra: Any) -> dict[str, Any]:
    return {"image": "host", "args": ["/bin/sh", "-c", script], **extra}


def scheduled(instance: dict[str, Any]) -> bool:
    """Stopped, with its restart scheduled (the exit is recorded a moment before the restart
    is scheduled: a read may fall in between)."""
    return instance["state"] == "stopped" and "next_at" in instance["restart"]


def stamps(text: str) -> list[float]:
    return [float(line) for line in text.split() if line.replace(".", "", 1).isdigit()]


def epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def dest_port() -> int:
    """A destination port of this test's own, so that no port an earlier test left in use (a
    process still exiting) can answer for this one."""
    return random.SystemRandom().randint(12_000, 30_000)


# --- restart policy and back-off -------------------------------------------------------------


def test_on_failure_restarts_immediately_then_after_5_s_then_10_s(api: Api) -> None:
    """Exit 3 under on-failure: starts at t0, ~t0 (immediate), ~t0+5, with the next one due
    ~10 s after that. The counters follow the SDK's documentation: restart_count "increments
    each time the instance has been restarted", restart.attempt "counts the number of restarts
    performed in the current sequence", so while a restart is only scheduled it is not counted
    (and restart_count = start_count - 1 when every start after the first was a restart)."""
    problems: list[str] = []

    def check(ok: bool, what: str, got: dict[str, Any]) -> None:
        if not ok:
            counters = {k: got[k] for k in ("start_count", "restart_count", "restart")}
            problems.append(f"{what}: {counters}")

    inst = api.create(sh(f"{STAMP}; exit 3", autostart=True, restart_policy="on-failure"))
    uuid = inst["uuid"]
    try:
        # Between the 2nd start (the immediate restart) and the 3rd (after 5 s).
        second = until(
            "the immediate restart",
            lambda: (i := api.get(uuid))["start_count"] == 2 and scheduled(i) and i,
            TOLERANCE_S + 1,
        )
        t = stamps(api.log_text(uuid))
        assert len(t) == 2, t
        assert t[1] - t[0] < TOLERANCE_S, f"the first restart is immediate: {t}"
        assert second["restart_policy"] == "on-failure"
        assert (second["exit_code"], second["stop_reason"]) == (3, 3)
        assert abs(epoch(second["restart"]["next_at"]) - (t[1] + 5)) <= TOLERANCE_S, (second, t)
        check(second["restart_count"] == 1, "restart_count after 1 restart", second)
        check(second["restart"]["attempt"] == 1, "restart.attempt after 1 restart", second)

        third = until(
            "the restart after 5 s",
            lambda: (i := api.get(uuid))["start_count"] == 3 and scheduled(i) and i,
            5 + 2 * TOLERANCE_S,
        )
        t = stamps(api.log_text(uuid))
        assert len(t) == 3, t
        assert abs((t[2] - t[1]) - 5) <= TOLERANCE_S, f"the second restart waits 5 s: {t}"
        assert abs(epoch(third["restart"]["next_at"]) - (t[2] + 10)) <= TOLERANCE_S, (third, t)
        check(third["restart_count"] == 2, "restart_count after 2 restarts", third)
        check(third["restart"]["attempt"] == 2, "restart.attempt after 2 restarts", third)

        # A manual stop aborts the sequence: nothing is scheduled any more.
        api.stop(uuid)
        stopped = api.get(uuid)
        assert stopped["state"] == "stopped" and "next_at" not in stopped["restart"], stopped
        # A manual start resets the back-off: the next failure restarts immediately again.
        before = stopped["start_count"]
        api.start(uuid)
        again = until(
            "an immediate restart after a manual start",
            lambda: (i := api.get(uuid))["start_count"] == before + 2 and scheduled(i) and i,
            TOLERANCE_S + 1,
        )
        t = stamps(api.log_text(uuid))
        assert len(t) == 5 and t[4] - t[3] < TOLERANCE_S, t
        check(again["restart"]["attempt"] == 1, "restart.attempt, new sequence, 1 restart", again)
        check(again["restart_count"] == 3, "restart_count after 3 restarts in all", again)
    finally:
        api.delete(uuid)
    assert not problems, "\n".join(problems)


def test_never_leaves_a_failed_app_stopped_with_its_exit_code(api: Api) -> None:
    inst = api.create(sh(f"{STAMP}; exit 3", autostart=True))
    uuid = inst["uuid"]
    assert api.get(uuid)["restart_policy"] == "never"
    api.wait(uuid, "stopped")
    time.sleep(1.0)  # an (unwanted) immediate restart would have happened by now
    got = api.get(uuid)
    assert got["state"] == "stopped"
    assert (got["exit_code"], got["stop_reason"]) == (3, 3), got
    assert (got["start_count"], got["restart_count"]) == (1, 0), got
    assert got["restart"] == {"attempt": 0}, got
    assert len(stamps(api.log_text(uuid))) == 1
    api.delete(uuid)


def test_clean_exit_restarts_only_with_always(api: Api) -> None:
    on_failure = api.create(sh(f"{STAMP}; exit 0", autostart=True, restart_policy="on-failure"))
    always = api.create(sh(f"{STAMP}; exit 0", autostart=True, restart_policy="always"))
    try:
        # `always` restarts a clean exit at once, then backs off (5 s).
        restarted = until(
            "`always` restarting a clean exit",
            lambda: (i := api.get(always["uuid"]))["start_count"] >= 2 and scheduled(i) and i,
            TOLERANCE_S + 1,
        )
        assert restarted["exit_code"] == 0 and restarted["restart_count"] >= 1, restarted
        api.wait(on_failure["uuid"], "stopped")
        time.sleep(1.0)
        got = api.get(on_failure["uuid"])
        assert got["state"] == "stopped" and got["exit_code"] == 0, got
        assert got["stop_reason"] == 3, "K|A: a clean exit of the app"
        assert (got["start_count"], got["restart_count"]) == (1, 0), got
        assert "next_at" not in got["restart"], got
        assert len(stamps(api.log_text(on_failure["uuid"]))) == 1
        t = stamps(api.log_text(always["uuid"]))
        assert t[1] - t[0] < TOLERANCE_S, f"the first restart is immediate: {t}"
        assert all(later - t[1] >= 5 - TOLERANCE_S for later in t[2:]), f"then 5 s: {t}"
    finally:
        api.delete(on_failure["uuid"])
        api.delete(always["uuid"])


# --- bad inputs -----------------------------------------------------------------------------

SLEEPER: dict[str, Any] = {"image": "host", "args": ["sleep", "60"]}


def test_bad_creates_get_the_documented_error_and_create_nothing(api: Api) -> None:
    taken = api.create({**SLEEPER, "name": f"taken-{random.getrandbits(32):x}"})
    replica_taken = api.create({**SLEEPER, "name": f"{taken['name']}x-1"})
    group_rule = [{"port": 443, "destination_port": 8080}]
    http_400: dict[str, tuple[dict[str, Any], str]] = {
        "memory_mb as a string": ({**SLEEPER, "memory_mb": "128"}, "memory_mb"),
        "args as a string": ({**SLEEPER, "args": "x"}, "args"),
        "env as a list": ({**SLEEPER, "env": ["A=1"]}, "env"),
        "autostart as a string": ({**SLEEPER, "autostart": "yes"}, "autostart"),
        "memory_mb below range": ({**SLEEPER, "memory_mb": 1}, "memory_mb"),
        "memory_mb above range": ({**SLEEPER, "memory_mb": 1 << 30}, "memory_mb"),
        "timeout_s without autostart": ({**SLEEPER, "timeout_s": 5}, "timeout_s"),
        "scale_to_zero without a group": (
            {**SLEEPER, "scale_to_zero": {"policy": "on"}},
            "scale_to_zero",
        ),
        "delete-on-stop with restart always": (
            {**SLEEPER, "features": ["delete-on-stop"], "restart_policy": "always"},
            "features",
        ),
        "volumes": ({**SLEEPER, "volumes": [{"name": "v", "at": "/data"}]}, "volumes"),
        "an unknown field": ({**SLEEPER, "bogus": 1}, "bogus"),
        "inline group: port 0": (
            {**SLEEPER, "service_group": {"services": [{"port": 0, "destination_port": 80}]}},
            "services.0.port",
        ),
        "inline group: destination port out of range": (
            {**SLEEPER, "service_group": {"services": [{"port": 443, "destination_port": 70000}]}},
            "services.0.destination_port",
        ),
        "inline group: redirect without http": (
            {**SLEEPER, "service_group": {"services": [{"port": 80, "handlers": ["redirect"]}]}},
            "services.0.handlers",
        ),
        "inline group: one port twice": (
            {**SLEEPER, "service_group": {"services": [{"port": 443}, {"port": 443}]}},
            "services",
        ),
        "inline group and a group name": (
            {**SLEEPER, "service_group": {"name": "x", "services": group_rule}},
            "service_group",
        ),
    }
    item_errors: dict[str, tuple[dict[str, Any], int, str]] = {
        "unknown image": ({"image": f"nope-{random.getrandbits(32):x}:latest"}, 8, "nope-"),
        "unknown image with an inline group": (
            {"image": "nope:v1", "service_group": {"services": group_rule}},
            8,
            "nope:v1",
        ),
        "unknown group": ({**SLEEPER, "service_group": {"name": "no-such-group"}}, 8, "group"),
        "a name taken": ({**SLEEPER, "name": taken["name"]}, 23, taken["name"]),
        "a name taken, with an inline group": (
            {**SLEEPER, "name": taken["name"], "service_group": {"services": group_rule}},
            23,
            taken["name"],
        ),
        "a replica's name taken": (
            {**SLEEPER, "name": f"{taken['name']}x", "replicas": 1},
            23,
            replica_taken["name"],
        ),
    }
    try:
        before = api.counts()
        for label, (body, field) in http_400.items():
            r = api.call("POST", "/instances", json=body)
            assert r.status_code == 400, (label, r.status_code, r.text)
            doc = r.json()
            assert doc["status"] == "error" and field in doc["message"], (label, doc)
            assert doc["errors"] == [{"status": 400, "message": doc["message"]}], (label, doc)
            assert api.counts() == before, f"{label}: created something"
        for label, (body, code, named) in item_errors.items():
            r = api.call("POST", "/instances", json=body)
            assert r.status_code == 200, (label, r.text)
            doc = r.json()
            [item] = doc["data"]["instances"]
            assert (doc["status"], item["status"], item["error"]) == ("error", "error", code), (
                label,
                doc,
            )
            assert named in item["message"] and not doc.get("errors"), (label, doc)
            assert api.counts() == before, f"{label}: created something"
    finally:
        api.delete(taken["uuid"])
        api.delete(replica_taken["uuid"])


# --- logs -----------------------------------------------------------------------------------


def test_logs_base64_ranges_alias_and_kept_across_restarts(api: Api) -> None:
    # 4 lines of 6 bytes each, then the app stays up.
    script = "for i in 1 2 3 4; do echo line$i; done; exec sleep 60"
    inst = api.create(sh(script, autostart=True))
    uuid = inst["uuid"]
    try:
        until("the app's output", lambda: api.log(uuid)["available"]["end"] >= 24, 5)
        whole = b"line1\nline2\nline3\nline4\n"
        item = api.log(uuid)
        assert base64.b64decode(item["output"]) == whole
        assert item["available"] == {"start": 0, "end": 24}
        assert item["range"] == {"start": 0, "end": 24}
        assert (item["uuid"], item["name"], item["state"]) == (uuid, inst["name"], "running")

        part = api.log(uuid, offset=6, limit=8)
        assert base64.b64decode(part["output"]) == b"line2\nli"
        assert part["range"] == {"start": 6, "end": 14}
        assert part["available"] == {"start": 0, "end": 24}
        tail = api.log(uuid, offset=-12)
        assert base64.b64decode(tail["output"]) == b"line3\nline4\n"
        assert tail["range"] == {"start": 12, "end": 24}
        tail = api.log(uuid, offset=-12, limit=6)
        assert base64.b64decode(tail["output"]) == b"line3\n"
        past = api.log(uuid, offset=100)
        assert past["output"] == "" and past["range"]["start"] == past["range"]["end"]
        assert api.log(uuid, offset=0, limit=0)["output"] == ""

        # The docs' spelling, the per-uuid form and query parameters answer the same.
        for method, path, kwargs in (
            ("GET", "/instances/logs", {"json": [{"uuid": uuid, "offset": 6, "limit": 8}]}),
            ("GET", f"/instances/{uuid}/log", {"json": {"offset": 6, "limit": 8}}),
            ("GET", f"/instances/{uuid}/logs", {"params": {"offset": 6, "limit": 8}}),
            ("GET", "/instances/log", {"params": {"uuid": uuid, "offset": 6, "limit": 8}}),
        ):
            _doc, [same] = api.items(method, path, **kwargs)
            assert same == part, (path, same)

        # Across a stop and a start, the log keeps the first run's output.
        api.stop(uuid)
        api.wait(uuid, "stopped")
        stopped = api.log(uuid)
        assert base64.b64decode(stopped["output"]) == whole and stopped["state"] == "stopped"
        api.start(uuid)
        until("the second run's output", lambda: api.log(uuid)["available"]["end"] >= 48, 5)
        assert base64.b64decode(api.log(uuid)["output"]) == whole + whole
    finally:
        api.delete(uuid)


# --- metrics --------------------------------------------------------------------------------


def test_metrics_of_a_running_instance(api: Api) -> None:
    # Burns ~0.3 s of CPU, says so, then idles.
    burn = (
        "import time\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass\n"
        "print('burnt', flush=True)\n"
        "time.sleep(60)\n"
    )
    inst = api.create({"image": "host", "args": [sys.executable, "-c", burn], "autostart": True})
    uuid = inst["uuid"]
    try:
        until("the burn", lambda: b"burnt" in base64.b64decode(api.log(uuid)["output"]), 10)
        _doc, [m] = api.items("GET", "/instances/metrics", params={"uuid": uuid})
        assert (m["status"], m["uuid"], m["name"]) == ("success", uuid, inst["name"])
        assert isinstance(m["rss_bytes"], int) and m["rss_bytes"] > 1 << 20, m
        assert isinstance(m["cpu_time_ms"], int) and m["cpu_time_ms"] >= 250, m
        _doc, [by_path] = api.items("GET", f"/instances/{uuid}/metrics")
        assert by_path["uuid"] == uuid and by_path["rss_bytes"] > 0
        api.stop(uuid)
        api.wait(uuid, "stopped")
        _doc, [after] = api.items("GET", "/instances/metrics", params={"uuid": uuid})
        assert after["rss_bytes"] == 0, "RSS drops to 0 when stopped"
    finally:
        api.delete(uuid)


# --- PATCH ----------------------------------------------------------------------------------


def test_env_patch_is_pending_while_running_and_applies_at_next_start(api: Api) -> None:
    inst = api.create(sh('echo "greeting=$GREETING"; exec sleep 60', env={"GREETING": "one"}))
    uuid = inst["uuid"]
    try:
        # Stopped: a change applies at once.
        api.patch(uuid, {"prop": "env", "op": "add", "value": {"OTHER": "x"}})
        got = api.get(uuid)
        assert got["env"] == {"GREETING": "one", "OTHER": "x"} and got["updates"] == []
        api.start(uuid)
        api.wait(uuid, "running")
        until("the first greeting", lambda: "greeting=one\n" in api.log_text(uuid), 5)

        # Running: the change waits for the next start, and says so.
        reply = api.patch(uuid, {"prop": "env", "op": "set", "value": {"GREETING": "two"}})
        assert (reply["status"], reply["uuid"]) == ("success", uuid)
        got = api.get(uuid)
        assert got["env"] == {"GREETING": "one", "OTHER": "x"}
        assert got["updates"] == [
            {"prop": "env", "op": "set", "value": {"GREETING": "two"}, "status": "pending"}
        ], got["updates"]
        api.stop(uuid)
        api.wait(uuid, "stopped")
        api.start(uuid)
        api.wait(uuid, "running")
        until("the second greeting", lambda: "greeting=two\n" in api.log_text(uuid), 5)
        assert api.log_text(uuid) == "greeting=one\ngreeting=two\n"
        got = api.get(uuid)
        assert got["env"] == {"GREETING": "two"} and got["updates"] == []
    finally:
        api.delete(uuid)


def test_tags_set_add_del_and_the_tags_filter(api: Api) -> None:
    t = f"t{random.getrandbits(32):x}"
    a = api.create({**SLEEPER, "tags": [f"{t}-a"]})
    b = api.create({**SLEEPER, "tags": [f"{t}-y"]})
    try:
        assert api.get(a["uuid"])["tags"] == [f"{t}-a"]
        api.patch(a["uuid"], {"prop": "tags", "op": "set", "value": [f"{t}-x", f"{t}-y"]})
        api.patch(a["uuid"], {"prop": "tags", "op": "add", "value": [f"{t}-z"]})
        api.patch(a["uuid"], {"prop": "tags", "op": "del", "value": [f"{t}-x"]})
        assert api.get(a["uuid"])["tags"] == [f"{t}-y", f"{t}-z"]

        def listed(tags: str) -> list[str]:
            r = api.call("GET", "/instances", params={"tags": tags})
            assert r.status_code == 200, r.text
            return [i["uuid"] for i in r.json()["data"]["instances"]]

        assert listed(f"{t}-y,{t}-z") == [a["uuid"]]
        assert listed(f"{t}-y") == [a["uuid"], b["uuid"]]
        assert listed(f"{t}-y,{t}-nope") == []
        assert listed(f"{t}-a") == []
    finally:
        api.delete(a["uuid"])
        api.delete(b["uuid"])


def test_delete_lock_blocks_delete_until_unset(api: Api) -> None:
    inst = api.create({**SLEEPER, "autostart": True, "timeout_s": 10})
    uuid = inst["uuid"]
    assert inst["state"] == "running"
    api.patch(uuid, {"prop": "delete_lock", "op": "set", "value": True})
    assert api.get(uuid)["delete_lock"] is True
    for method, path, kwargs in (
        ("DELETE", "/instances", {"json": [{"uuid": uuid}]}),
        ("DELETE", "/instances", {"params": {"name": inst["name"]}}),
        ("DELETE", f"/instances/{uuid}", {}),
    ):
        doc, [item] = api.items(method, path, **kwargs)
        assert (doc["status"], item["status"]) == ("error", "error"), (path, doc)
        assert isinstance(item["error"], int) and item["error"] not in (0, 8), item
        assert "delete_lock" in item["message"], item
        still = api.get(uuid)
        assert still["state"] == "running", "a refused delete does not stop it either"
    api.patch(uuid, {"prop": "delete_lock", "op": "set", "value": False})
    item = api.delete(uuid)
    assert (item["status"], item["uuid"]) == ("success", uuid), item
    r = api.call("GET", "/instances", params={"uuid": uuid})
    assert r.json()["data"]["instances"][0]["error"] == 8


# --- stop with a drain ----------------------------------------------------------------------


def test_stop_with_drain_and_force_with_drain(api: Api) -> None:
    inst = api.create({**SLEEPER, "autostart": True, "timeout_s": 10})
    uuid = inst["uuid"]
    try:
        for path, body in (
            ("/instances/stop", [{"uuid": uuid, "force": True, "drain_timeout_ms": 1000}]),
            (f"/instances/{uuid}/stop", {"force": True, "drain_timeout_ms": 1000}),
        ):
            r = api.call("PUT", path, json=body)
            assert r.status_code == 400, r.text
            assert "drain_timeout_ms" in r.json()["message"]
        assert api.get(uuid)["state"] == "running", "the refused stop changed nothing"

        item = api.stop(uuid, drain_timeout_ms=2000)
        assert item["previous_state"] == "running"
        assert item["state"] in ("draining", "stopping", "stopped"), item
        api.wait(uuid, "stopped", timeout_s=10)
        got = api.get(uuid)
        assert got["stop_reason"] & 0b1100 == 0b1100, "P|U: a user's stop"
    finally:
        api.delete(uuid)


def test_an_app_serving_its_port_is_running_only_once_it_listens(api: Api) -> None:
    """Readiness is the destination port accepting a connection: an app that listens only after
    a second stays `starting` until then."""
    port = dest_port()
    app = textwrap.dedent(
        """\
        import os, socket, time
        time.sleep(1.0)
        s = socket.socket()
        s.bind((os.environ["HOST"], int(os.environ["PORT"])))
        s.listen()
        print("listening", flush=True)
        time.sleep(60)
        """
    )
    inst = api.create(
        {
            "image": "host",
            "args": [sys.executable, "-c", app],
            "service_group": {"services": [{"port": 443, "destination_port": port}]},
            "autostart": True,
        }
    )
    uuid = inst["uuid"]
    try:
        assert inst["state"] == "starting", inst
        time.sleep(0.5)
        assert api.get(uuid)["state"] == "starting"
        api.wait(uuid, "running", timeout_s=10)
        assert "listening" in api.log_text(uuid)
    finally:
        api.delete(uuid)


def test_an_address_another_process_answers_on_is_not_taken_for_ready(daemon: Daemon) -> None:
    """Readiness is "the port accepts": with another process already answering on the
    instance's address and port (a host server on 0.0.0.0:PORT, or another instance whose app
    ignores $HOST), the app could not listen while its check saw the other one, and the gateway
    would send its traffic there. The start fails instead, saying why, until the port is free."""
    import ipaddress
    import socket

    from portway.runtime.pool_claim import RECORD

    pool = ipaddress.IPv4Network((daemon.data_dir / RECORD).read_text().strip())
    address = str(pool.network_address + 2)  # a fresh daemon's first instance
    port = dest_port()
    app = textwrap.dedent(
        """\
        import os, socket, time
        s = socket.socket()
        s.bind((os.environ["HOST"], int(os.environ["PORT"])))
        s.listen()
        print("app ready", flush=True)
        time.sleep(60)
        """
    )
    body = {
        "image": "host",
        "args": [sys.executable, "-c", app],
        "service_group": {"services": [{"port": 443, "destination_port": port}]},
        "autostart": True,
        "timeout_s": 10,
    }
    api = Api(daemon)
    squatter = socket.create_server((address, port))
    try:
        doc = api.call("POST", "/instances", json=body).json()
        [inst] = doc["data"]["instances"]
        assert inst["private_ip"] == address, inst
        assert "stopped before it was running (exit code 127)" in doc["message"], doc
        assert api.get(inst["uuid"])["state"] == "stopped"
        log = api.log_text(inst["uuid"])
        assert f"{address}:{port} already accepts connections" in log, log
        assert "app ready" not in log
        squatter.close()
        api.start(inst["uuid"])
        api.wait(inst["uuid"], "running", timeout_s=10)
        assert "app ready" in api.log_text(inst["uuid"])
        api.delete(inst["uuid"])
    finally:
        squatter.close()
        api.close()


# --- instances of an uploaded image ---------------------------------------------------------


def test_an_uploaded_image_runs_with_its_manifest(api: Api, tmp_path: Path) -> None:
    """`POST /v1/images` with a tar whose portway.toml gives the command, port and env; an
    instance of it needs no args and no group: readiness is the manifest's port, the request's
    env goes over the image's. PATCH image to an image that does not exist is that item's
    not-found, and changes nothing."""
    port = dest_port()
    app = tmp_path / "app"
    app.mkdir()
    (app / "serve.py").write_text(
        textwrap.dedent(
            """\
            import os, socket, time
            print("from", os.environ["WHO"], os.environ["ALSO"], flush=True)
            s = socket.socket()
            s.bind((os.environ["HOST"], int(os.environ["PORT"])))
            s.listen()
            time.sleep(60)
            """
        )
    )
    manifest = {
        "command": [sys.executable, "serve.py"],
        "port": port,
        "env": {"WHO": "manifest", "ALSO": "kept"},
    }
    name = f"app-{random.getrandbits(32):x}"
    r = api.call("POST", "/images", params={"name": name, "tag": "v1"}, content=pack(app, manifest))
    assert r.status_code == 200, r.text
    [image] = r.json()["data"]["images"]
    assert (image["name"], image["tag"], image["port"]) == (name, "v1", port)
    assert image["digest"].startswith("sha256:") and image["args"] == manifest["command"]

    inst = api.create(
        {"image": f"{name}:v1", "env": {"WHO": "request"}, "autostart": True, "timeout_s": 15}
    )
    uuid = inst["uuid"]
    try:
        assert inst["state"] == "running", inst
        assert inst["image"].startswith(f"{name}:v1@sha256:"), inst["image"]
        assert inst["name"].startswith(f"{name}-"), "a random name is <app>-<suffix>"
        assert "from request kept\n" in api.log_text(uuid)

        before = api.get(uuid)
        doc, [item] = api.items(
            "PATCH",
            "/instances",
            json=[{"uuid": uuid, "prop": "image", "op": "set", "value": "nope:v9"}],
        )
        assert (doc["status"], item["status"], item["error"]) == ("error", "error", 8), doc
        assert "nope:v9" in item["message"]
        after = api.get(uuid)
        for read in (before, after):
            read.pop("uptime_ms")
        assert after == before
    finally:
        api.delete(uuid)
        api.call("DELETE", "/images", json=[{"name": f"{name}:v1"}])


def test_a_stop_while_starting_is_not_lost(api: Api) -> None:
    """A stop accepted while the instance is still `starting` (autostart without a wait, then
    stop at once) ends in `stopped` with no process left, every time."""
    made: list[str] = []
    try:
        for _ in range(16):
            made.append(api.create({**SLEEPER, "autostart": True})["uuid"])
            answer = api.stop(made[-1])
            assert answer["state"] in ("stopping", "stopped"), answer
        # Bounded: a lost stop would otherwise keep the wait for its full timeout.
        api.items(
            "GET",
            "/instances/wait",
            json=[{"uuid": uuid, "state": "stopped", "timeout_s": 5} for uuid in made],
        )
        final = {uuid: api.get(uuid)["state"] for uuid in made}
        assert set(final.values()) == {"stopped"}, final
        for uuid in made:
            _doc, [m] = api.items("GET", "/instances/metrics", params={"uuid": uuid})
            assert m["rss_bytes"] == 0, f"{uuid} still has processes: {m}"
    finally:
        for uuid in made:
            api.delete(uuid)


def test_rapid_stop_and_start_answer_and_end_as_last_asked(shared_daemon: Daemon) -> None:
    """stop, start, stop, start in quick succession (the later ones while the instance is still
    `starting` or `stopping`): every request is answered (no 5xx, no dropped connection), and
    each instance ends running, as last asked, with exactly one run; then a stop ends them all."""
    problems: list[str] = []
    api = Api(shared_daemon)
    made: list[str] = []
    try:
        for _ in range(10):
            uuid = api.create({**SLEEPER, "autostart": True})["uuid"]
            made.append(uuid)
            for op in ("stop", "start", "stop", "start"):
                try:
                    r = api.http.put(f"/instances/{uuid}/{op}")
                except httpx.TransportError as err:
                    r = None
                    problems.append(f"{op} {uuid}: connection dropped: {err!r}")
                if r is None or r.status_code >= 500:
                    # The daemon drops a connection it answered 500 on: carry on with another.
                    api.close()
                    api = Api(shared_daemon)
                if r is None:
                    continue
                item = r.json()["data"]["instances"][0] if r.status_code == 200 else {}
                if r.status_code != 200 or item.get("status") != "success":
                    problems.append(
                        f"{op} {uuid} while starting/stopping: {r.status_code} {r.text}"
                    )
        _doc, items = api.items(
            "GET",
            "/instances/wait",
            json=[{"uuid": u, "state": "running", "timeout_s": 5} for u in made],
        )
        late = {i["uuid"]: i.get("state") for i in items if i["status"] != "success"}
        if late:
            problems.append(f"not running as last asked: {late}")
        api.items("PUT", "/instances/stop", json=[{"uuid": u} for u in made])
        _doc, items = api.items(
            "GET",
            "/instances/wait",
            json=[{"uuid": u, "state": "stopped", "timeout_s": 5} for u in made],
        )
        late = {i["uuid"]: i.get("state") for i in items if i["status"] != "success"}
        if late:
            problems.append(f"not stopped by the final stop: {late}")
    finally:
        for uuid in made:
            api.delete(uuid)
        api.close()
    assert not problems, "\n".join(problems)
