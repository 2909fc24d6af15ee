"""The reconciler: `portway up` killed with SIGKILL while instances run, then started again.

The apps do not die with the daemon (their output goes straight to their log files and their
parent is gone, not them). The restarted daemon must adopt every tree that survived rather than
start a second copy, restart what should run but died meanwhile, leave stopped instances
stopped, and still be able to tear everything down.

Process trees are counted from /proc: the daemon gives every run PORTWAY_UUID=<uuid> in its
environment, which every process of the tree inherits, so "the trees of this test" are exactly
the live processes whose environ names one of the test's uuids.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import textwrap
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator
from typing import Any

import httpx
import pytest

from tests.daemon import Daemon

pytestmark = pytest.mark.e2e

RUNNING = 10
SERVERS = 3  # of the RUNNING, these serve HTTP on their private address (the rest sleep)
RECONCILE_S = 5.0  # after the restart, every instance reports running within this
TEARDOWN_S = 10.0

SERVER = textwrap.dedent(
    """\
    import http.server, os
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = os.environ["PORTWAY_UUID"].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    address = (os.environ["HOST"], int(os.environ["PORT"]))
    http.server.HTTPServer(address, Hello).serve_forever()
    """
)


def trees(uuids: Collection[str]) -> dict[str, list[int]]:
    """uuid -> the pids of live (not zombie) processes whose environment names it."""
    wanted = {f"PORTWAY_UUID={u}".encode(): u for u in uuids}
    found: dict[str, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            continue
        if state in (b"Z", b"X"):
            continue
        for var in environ:
            if var in wanted:
                found[wanted[var]].append(int(entry.name))
    return {u: sorted(p) for u, p in found.items()}


def until(what: str, check: Callable[[], Any], timeout_s: float, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})")


def client(daemon: Daemon) -> httpx.Client:
    return httpx.Client(
        base_url=daemon.url,
        headers={"Authorization": f"Bearer {daemon.token}"},
        timeout=30,
        trust_env=False,
    )


def create(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = http.post("/instances", json=body)
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    return dict(r.json()["data"]["instances"][0])


def states(http: httpx.Client, uuids: Collection[str]) -> dict[str, str]:
    r = http.get("/instances", params=[("uuid", u) for u in uuids])
    assert r.status_code == 200, r.text
    return {
        i["uuid"]: i.get("state", f"error {i.get('error')}") for i in r.json()["data"]["instances"]
    }


def serves(ip: str, port: int, uuid: str) -> bool:
    try:
        r = httpx.get(f"http://{ip}:{port}/", timeout=2, trust_env=False)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and r.text == uuid


@pytest.fixture
def leftovers() -> Iterator[set[str]]:
    """The uuids a test made; whatever of theirs still runs at the end is killed, so a failed
    test leaves no process behind (after a SIGKILL the daemon cannot clean up)."""
    made: set[str] = set()
    yield made
    for pids in trees(made).values():
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_kill_9_and_restart_adopts_every_tree_once(daemon: Daemon, leftovers: set[str]) -> None:
    rng = random.SystemRandom()
    with client(daemon) as http:
        running: list[dict[str, Any]] = []
        for i in range(RUNNING):
            body: dict[str, Any] = {"image": "host", "autostart": True, "timeout_s": 15}
            port = None
            if i < SERVERS:
                port = rng.randint(12_000, 30_000)
                body["args"] = [sys.executable, "-c", SERVER]
                body["service_group"] = {"services": [{"port": 443, "destination_port": port}]}
                body["restart_policy"] = "on-failure"
            else:
                body["args"] = ["sleep", "1000"]
                body["restart_policy"] = "always" if i == RUNNING - 1 else "never"
            inst = create(http, body)
            assert inst["state"] == "running", inst
            running.append({**inst, "port": port})
            leftovers.add(inst["uuid"])
        stopped = create(
            http, {"image": "host", "args": ["sleep", "1000"], "autostart": True, "timeout_s": 15}
        )
        assert stopped["state"] == "running", stopped
        leftovers.add(stopped["uuid"])
        r = http.put("/instances/stop", json=[{"uuid": stopped["uuid"]}])
        assert r.json()["status"] == "success", r.text
        never_started = create(http, {"image": "host", "args": ["sleep", "1000"]})
        leftovers.add(never_started["uuid"])
        r = http.request(
            "GET",
            "/instances/wait",
            json=[{"uuid": stopped["uuid"], "state": "stopped", "timeout_s": 15}],
        )
        assert r.json()["status"] == "success", r.text

    uuids = [i["uuid"] for i in running]
    idle = [stopped["uuid"], never_started["uuid"]]
    before = until(
        "one process per running instance",
        lambda: (t := trees([*uuids, *idle])) and sorted(t) == sorted(uuids) and t,
        5,
    )
    assert all(len(pids) == 1 for pids in before.values()), before

    assert daemon.kill(signal.SIGKILL) == -signal.SIGKILL
    # The apps outlive the daemon. One of them dies while it is down: its policy is `always`,
    # so the restarted daemon must run it again.
    assert trees(uuids) == before, "the apps died with the daemon"
    crashed = running[-1]["uuid"]
    os.kill(before[crashed][0], signal.SIGKILL)
    until("the crashed app to be gone", lambda: crashed not in trees([crashed]), 5)

    restarted_at = time.monotonic()
    daemon.start()
    with client(daemon) as http:
        seen = until(
            "every instance running again",
            lambda: (s := states(http, uuids)) and set(s.values()) == {"running"} and s,
            RECONCILE_S - (time.monotonic() - restarted_at),
            every=0.02,
        )
        assert len(seen) == RUNNING
        # Exactly one tree per instance, now and a moment later (no late second copy).
        for _ in range(3):
            after = trees([*uuids, *idle])
            assert sorted(after) == sorted(uuids), after
            assert all(len(pids) == 1 for pids in after.values()), after
            time.sleep(0.3)
        # The survivors were adopted (same processes), the crashed one was started anew.
        assert {u: p for u, p in after.items() if u != crashed} == {
            u: p for u, p in before.items() if u != crashed
        }
        assert after[crashed] != before[crashed]
        for inst in running[:SERVERS]:
            assert serves(inst["private_ip"], inst["port"], inst["uuid"]), inst["name"]
        # Stopped instances stayed stopped.
        assert states(http, idle) == {stopped["uuid"]: "stopped", never_started["uuid"]: "stopped"}
        got = http.get("/instances", params={"uuid": crashed}).json()["data"]["instances"][0]
        assert got["start_count"] == 2, got

        # Deleting everything leaves no process behind.
        everything = [*uuids, *idle]
        r = http.request("DELETE", "/instances", json=[{"uuid": u} for u in everything])
        assert r.status_code == 200 and r.json()["status"] == "success", r.text
        until("every process gone", lambda: not trees(everything), TEARDOWN_S)
        gone = http.get("/instances", params=[("uuid", u) for u in everything]).json()
        assert [i.get("error") for i in gone["data"]["instances"]] == [8] * len(everything)
        r = http.get("/services")
        assert r.json()["data"]["service_groups"] == [], "the inline groups went with them"


def test_kill_9_while_stopping_and_restart_with_nothing_running(
    daemon: Daemon, leftovers: set[str]
) -> None:
    """A daemon killed right after a stop was asked for: the instance the user stopped must not
    come back on restart, and its process must be gone."""
    with client(daemon) as http:
        inst = create(
            http, {"image": "host", "args": ["sleep", "1000"], "autostart": True, "timeout_s": 15}
        )
        leftovers.add(inst["uuid"])
        r = http.put("/instances/stop", json=[{"uuid": inst["uuid"]}])
        assert r.json()["status"] == "success", r.text
    daemon.kill(signal.SIGKILL)
    daemon.start()
    with client(daemon) as http:
        until("the process to be gone", lambda: not trees([inst["uuid"]]), 5)
        time.sleep(0.5)
        assert states(http, [inst["uuid"]]) == {inst["uuid"]: "stopped"}
        assert not trees([inst["uuid"]])
        r = http.request("DELETE", "/instances", json=[{"uuid": inst["uuid"]}])
        assert r.json()["status"] == "success", r.text


MASS = 100
CHURN_S = 4.0


def test_a_mass_delete_leaves_the_daemon_healthy_and_nothing_running(
    daemon: Daemon, leftovers: set[str]
) -> None:
    """MASS instances running, then seconds of churn (create one, delete it, again) beside
    them, then all deleted in one request: every request is answered, the daemon stays healthy
    through its background work's next rounds (the log trimmer walks the running instances
    every second, while the churn and the deletes change them), no process of theirs
    survives, and a SIGTERM then stops the daemon cleanly (exit 0)."""
    sleeper = {"image": "host", "args": ["sleep", "1000"], "autostart": True}
    with client(daemon) as http:
        made = []
        for _ in range(MASS):
            made.append(create(http, sleeper)["uuid"])
            leftovers.add(made[-1])
        until("all running", lambda: set(states(http, made).values()) == {"running"}, 20)
        churned = []
        deadline = time.monotonic() + CHURN_S
        while time.monotonic() < deadline:
            churned.append(create(http, sleeper)["uuid"])
            leftovers.add(churned[-1])
            r = http.request("DELETE", "/instances", json=[{"uuid": churned[-1]}])
            assert r.status_code == 200 and r.json()["status"] == "success", r.text
        r = http.request("DELETE", "/instances", json=[{"uuid": u, "timeout_s": 10} for u in made])
        assert r.status_code == 200 and r.json()["status"] == "success", r.text[:600]
        until("every process gone", lambda: not trees([*made, *churned]), TEARDOWN_S)
        for _ in range(12):  # over two more trimmer rounds
            h = http.get("/healthz")
            assert h.status_code == 200, h.text
            time.sleep(0.2)
        r = http.get("/instances")
        assert r.status_code == 200 and r.json()["data"]["instances"] == [], r.text[:300]
    proc = daemon.proc
    assert proc is not None and proc.poll() is None, "the daemon died"
    assert daemon.stop() == 0, "SIGTERM should stop the daemon cleanly"
