"""The official `unikraft-cloud` SDK (0.3.0) against a real `portway up`: instances.

Everything goes through the SDK's idiomatic layer, as a user's script would: a response the SDK
cannot parse (an enum value it does not know, a missing field it needs), a failure shape it
classifies differently (a lapsed wait, an instance that stopped before it ran, a missing
instance) fails here. The apps are real processes: a tiny HTTP server bound to the instance's
own private address ($HOST) and destination port ($PORT), so "running" is checked by talking to
it, not only by reading the state.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import random
import socket
import sys
import textwrap
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import httpx
import pytest
from unikraft_cloud import (
    InstanceStoppedError,
    NotFoundError,
    UnikraftCloud,
    WaitTimeoutError,
)

from tests.daemon import Daemon

# A warning the API sends back (deprecations, adjusted requests) is a failure here.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("error::unikraft_cloud.UnikraftCloudWarning"),
]

T = TypeVar("T")
RUN_TIMEOUT_S = 60.0
PRIVATE_POOL = ipaddress.ip_network("127.128.0.0/9")

# Serves on the instance's private address and destination port. It prints before it listens,
# so once the daemon sees the port open the line is in the log.
SERVER = textwrap.dedent(
    """\
    import http.server, os
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = ("hello from " + os.environ["PORTWAY_NAME"]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    address = (os.environ["HOST"], int(os.environ["PORT"]))
    print("serving", os.environ.get("GREETING", ""), flush=True)
    http.server.HTTPServer(address, Hello).serve_forever()
    """
)


def run(factory: Callable[[UnikraftCloud], Coroutine[Any, Any, T]], daemon: Daemon) -> T:
    """Run one SDK session against the daemon, bounded in time."""

    async def session() -> T:
        async with UnikraftCloud(base_url=daemon.url, token=daemon.token, trust_env=False) as ukc:
            return await factory(ukc)

    return asyncio.run(asyncio.wait_for(session(), timeout=RUN_TIMEOUT_S))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuidlib.uuid4().hex[:10]}"


def dest_port() -> int:
    """A destination port of this test's own. The daemons of parallel test workers hand out the
    same private addresses, so a shared port could make one's app look like another's. Below
    the kernel's ephemeral range, so no outgoing connection holds it."""
    return random.SystemRandom().randint(12_000, 30_000)


def server_spec(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "image": "host",
        "args": [sys.executable, "-c", SERVER],
        "service_group": {"services": [{"port": 443, "destination_port": port}]},
        **extra,
    }


async def get_app(ip: str, port: int) -> str:
    """What the app answers on its private address (it must be reachable right now)."""
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        r = await http.get(f"http://{ip}:{port}/")
    assert r.status_code == 200, r.text
    return r.text


def refuses(ip: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((ip, port)) != 0


async def raises(work: Awaitable[Any], kind: type[BaseException]) -> Any:
    """Await `work` and return the exception of class `kind` it raised (fail otherwise)."""
    try:
        result = await work
    except kind as err:
        return err
    raise AssertionError(f"expected {kind.__name__}, got a result: {result!r}")


def stable(instance: Any) -> dict[str, Any]:
    """A read minus what changes by itself while the instance runs."""
    doc: dict[str, Any] = instance.model_dump()
    doc.pop("uptime_ms", None)
    return doc


async def group_absent(daemon: Daemon, uuid: str) -> dict[str, Any]:
    """GET /v1/services?uuid=: the not-found item (HTTP 200, error 8), as the API answers it."""
    auth = {"Authorization": f"Bearer {daemon.token}"}
    async with httpx.AsyncClient(base_url=daemon.url, headers=auth, timeout=10) as http:
        r = await http.get("/services", params={"uuid": uuid})
    assert r.status_code == 200, r.text
    [item] = r.json()["data"]["service_groups"]
    return dict(item)


# --- the whole life of an instance with an inline group ---------------------------------------


def test_inline_group_instance_lifecycle(shared_daemon: Daemon) -> None:
    name = unique("sdk-web")
    port = dest_port()

    async def scenario(ukc: UnikraftCloud) -> None:
        created = await ukc.instances.create(
            name=name, autostart=True, timeout_s=15, **server_spec(port)
        )
        # The create's handle re-reads the instance: a full object, already running.
        assert created.name == name and created.state == "running"
        assert uuidlib.UUID(created.uuid or "").version == 4
        assert created.metro
        ip = created.private_ip or ""
        assert ipaddress.ip_address(ip) in PRIVATE_POOL
        assert created.private_fqdn == f"{name}.internal"
        assert created.image and created.image.startswith("host")
        assert (created.memory_mb, created.vcpus, created.restart_policy) == (128, 1, "never")
        assert created.start_count == 1 and created.restart_count == 0
        group = created.service_group
        assert group is not None and group.uuid and group.name
        assert [d.fqdn for d in group.domains or []], "the inline group got a generated FQDN"
        # Running means the app answers on its private address.
        assert await get_app(ip, port) == f"hello from {name}"

        # The group is instance-owned and lists it.
        read_group = await ukc.services.get(uuid=group.uuid)
        assert read_group.persistent is False
        assert [i.uuid for i in read_group.instances or []] == [created.uuid]
        assert [(s.port, s.destination_port) for s in read_group.services or []] == [(443, port)]

        by_name = await ukc.instances.get(name=name)
        by_uuid = await ukc.instances.get(uuid=created.uuid)
        assert stable(by_name) == stable(by_uuid) == stable(created)

        # stop: does not block; wait for `stopped`; the app is gone with its port.
        stopped = await ukc.instances.get(name=name).stop()
        assert (stopped.uuid, stopped.previous_state) == (created.uuid, "running")
        assert stopped.state in ("stopping", "stopped")
        waited = await ukc.instances.get(name=name).wait(state="stopped", timeout_seconds=15)
        assert (waited.uuid, waited.state) == (created.uuid, "stopped")
        assert refuses(ip, port)
        now = await ukc.instances.get(name=name)
        assert now.state == "stopped" and now.stop is not None
        assert now.stop_reason is not None and now.stop_reason & 0b1100 == 0b1100, (
            "a user's stop is reported as platform + user initiated (P|U)"
        )

        # A wait that lapses raises WaitTimeoutError, carrying the state the API last saw.
        err = await raises(
            ukc.instances.get(name=name).wait(state="running", timeout_seconds=1), WaitTimeoutError
        )
        assert err.state == "stopped"

        # start, then wait for `running`: the app answers again.
        started = await ukc.instances.get(uuid=created.uuid).start()
        assert (started.uuid, started.previous_state) == (created.uuid, "stopped")
        assert started.state in ("starting", "running")
        waited = await ukc.instances.get(uuid=created.uuid).wait(
            state="running", timeout_seconds=15
        )
        assert waited.state == "running"
        assert await get_app(ip, port) == f"hello from {name}"
        again = await ukc.instances.get(uuid=created.uuid)
        assert again.start_count == 2 and again.restart_count == 0

        # delete: the instance, its processes, and its (last-instance-owned) group go.
        deleted = await ukc.instances.get(name=name).delete()
        assert (deleted.uuid, deleted.name, deleted.previous_state) == (
            created.uuid,
            name,
            "running",
        )
        missing = await raises(ukc.instances.get(uuid=created.uuid), NotFoundError)
        assert missing.absent is True
        gone = await group_absent(shared_daemon, group.uuid)
        assert (gone["status"], gone["error"]) == ("error", 8), gone
        missing = await raises(ukc.services.get(uuid=group.uuid), NotFoundError)
        assert missing.absent is True
        deadline = time.monotonic() + 10
        while not refuses(ip, port) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert refuses(ip, port), "the deleted instance's app still listens"

        # Deleting what is gone: forgiven with missing_ok, NotFoundError without.
        assert await ukc.instances.get(uuid=created.uuid).delete(missing_ok=True) is None
        assert await ukc.instances.get(name=name).delete(missing_ok=True) is None
        missing = await raises(ukc.instances.get(uuid=created.uuid).delete(), NotFoundError)
        assert missing.absent is True

    run(scenario, shared_daemon)


def test_persistent_group_outlives_its_instance(shared_daemon: Daemon) -> None:
    port = dest_port()

    async def scenario(ukc: UnikraftCloud) -> None:
        group = await ukc.services.create(
            name=unique("sdk-persist"), services=[{"port": 443, "destination_port": port}]
        )
        assert group.persistent is True
        spec = server_spec(port)
        spec["service_group"] = {"name": group.name}
        inst = await ukc.instances.create(autostart=True, timeout_s=15, **spec)
        assert inst.state == "running"
        assert inst.service_group is not None and inst.service_group.uuid == group.uuid
        assert await get_app(inst.private_ip or "", port) == f"hello from {inst.name}"
        listed = await ukc.services.get(uuid=group.uuid)
        assert [i.uuid for i in listed.instances or []] == [inst.uuid]

        await ukc.instances.get(uuid=inst.uuid).delete()
        kept = await ukc.services.get(uuid=group.uuid)
        assert kept.uuid == group.uuid and kept.persistent is True
        assert kept.instances == []
        # ... and it can take a new instance, then be deleted itself once empty.
        second = await ukc.instances.create(autostart=True, timeout_s=15, **spec)
        assert second.service_group is not None and second.service_group.uuid == group.uuid
        await ukc.instances.get(uuid=second.uuid).delete()
        await ukc.services.get(uuid=group.uuid).delete()
        missing = await raises(ukc.services.get(uuid=group.uuid), NotFoundError)
        assert missing.absent is True

    run(scenario, shared_daemon)


# --- waits ------------------------------------------------------------------------------------


def test_a_wait_lasts_until_met_or_its_timeout(shared_daemon: Daemon) -> None:
    """A wait blocks until the state is reached or its timeout lapses (ukc-api §3.4), whatever
    the instance is doing: on a stopped instance it lapses at its timeout, not before, and one
    that somebody starts while the wait is under way satisfies it."""
    port = dest_port()

    async def scenario(ukc: UnikraftCloud) -> None:
        inst = await ukc.instances.create(autostart=True, timeout_s=15, **server_spec(port))
        try:
            await ukc.instances.get(uuid=inst.uuid).stop()
            await ukc.instances.get(uuid=inst.uuid).wait(state="stopped", timeout_seconds=15)

            began = time.monotonic()
            err = await raises(
                ukc.instances.get(uuid=inst.uuid).wait(state="running", timeout_seconds=2),
                WaitTimeoutError,
            )
            lapsed = time.monotonic() - began
            assert err.state == "stopped"
            assert 1.8 <= lapsed < 10, f"a 2 s wait answered after {lapsed:.2f} s"

            async def start_soon() -> None:
                await asyncio.sleep(0.5)
                await ukc.instances.get(uuid=inst.uuid).start()

            began = time.monotonic()
            starter = asyncio.create_task(start_soon())
            try:
                waited = await ukc.instances.get(uuid=inst.uuid).wait(
                    state="running", timeout_seconds=10
                )
            finally:
                await starter
            assert waited.state == "running", waited
            assert 0.4 < time.monotonic() - began < 10
        finally:
            await ukc.instances.get(uuid=inst.uuid).delete()

    run(scenario, shared_daemon)


def test_create_whose_wait_lapses_raises_wait_timeout(shared_daemon: Daemon) -> None:
    """An app that never opens its port: the create's wait lapses, the SDK raises
    WaitTimeoutError with the state the API last saw, and the instance exists (starting)."""
    port = dest_port()
    name = unique("sdk-slow")

    async def scenario(ukc: UnikraftCloud) -> None:
        began = time.monotonic()
        err = await raises(
            ukc.instances.create(
                name=name,
                image="host",
                args=["sleep", "60"],
                service_group={"services": [{"port": 443, "destination_port": port}]},
                autostart=True,
                timeout_s=1,
            ),
            WaitTimeoutError,
        )
        assert 0.9 < time.monotonic() - began < 10
        assert err.state == "starting"
        inst = await ukc.instances.get(name=name)
        assert inst.state == "starting"
        await ukc.instances.get(name=name).delete()

    run(scenario, shared_daemon)


def test_create_of_an_app_that_exits_raises_instance_stopped(shared_daemon: Daemon) -> None:
    name = unique("sdk-exits")
    port = dest_port()

    async def scenario(ukc: UnikraftCloud) -> None:
        err = await raises(
            ukc.instances.create(
                name=name,
                image="host",
                args=["/bin/sh", "-c", "echo bye; exit 3"],
                service_group={"services": [{"port": 443, "destination_port": port}]},
                autostart=True,
                timeout_s=10,
            ),
            InstanceStoppedError,
        )
        assert err.instance.name == name and err.instance.state == "stopped"
        assert err.instance.exit_code == 3
        assert err.instance.stop_reason == 3, "K|A: the app exited by itself"
        logs = await ukc.instances.get(name=name).logs()
        assert b"bye\n" in base64.b64decode(logs.output or "")
        await ukc.instances.get(name=name).delete()

    run(scenario, shared_daemon)


# --- update, logs, metrics, lists by tag ------------------------------------------------------


def test_update_logs_metrics_and_tags(shared_daemon: Daemon) -> None:
    port = dest_port()
    tag = unique("sdk-tag")

    async def scenario(ukc: UnikraftCloud) -> None:
        inst = await ukc.instances.create(
            autostart=True,
            timeout_s=15,
            env={"GREETING": "first"},
            tags=[tag],
            **server_spec(port),
        )
        handle = ukc.instances.get(uuid=inst.uuid)
        metrics = await ukc.instances.get(uuid=inst.uuid).metrics()
        assert metrics.uuid == inst.uuid
        assert (metrics.rss_bytes or 0) > 0 and metrics.cpu_time_ms is not None

        updated = await handle.update(env={"GREETING": "second"})
        assert updated.uuid == inst.uuid
        now = await ukc.instances.get(uuid=inst.uuid)
        assert now.env == {"GREETING": "first"}, "a running instance keeps its env until restart"
        assert [u.prop for u in now.updates or []] == ["env"]

        await ukc.instances.get(uuid=inst.uuid).stop()
        await ukc.instances.get(uuid=inst.uuid).wait(state="stopped", timeout_seconds=15)
        await ukc.instances.get(uuid=inst.uuid).start()
        await ukc.instances.get(uuid=inst.uuid).wait(state="running", timeout_seconds=15)
        now = await ukc.instances.get(uuid=inst.uuid)
        assert now.env == {"GREETING": "second"} and not now.updates
        logs = await ukc.instances.get(uuid=inst.uuid).logs()
        text = base64.b64decode(logs.output or "").decode()
        assert text.splitlines() == ["serving first", "serving second"], text
        tail = await ukc.instances.get(uuid=inst.uuid).logs(offset=-7)
        assert base64.b64decode(tail.output or "") == b"second\n"

        await ukc.instances.get(uuid=inst.uuid).edit().add(tags=["extra"]).apply()
        tagged = await ukc.instances.list(tags=[tag, "extra"])
        assert [i.uuid for i in tagged] == [inst.uuid]
        assert await ukc.instances.list(tags=[tag, "not-there"]) == []
        assert [i.uuid for i in await ukc.instances.each(tags=[tag]).refresh()] == [inst.uuid]
        await ukc.instances.each(tags=[tag]).delete()
        assert await ukc.instances.list(tags=[tag]) == []

    run(scenario, shared_daemon)
