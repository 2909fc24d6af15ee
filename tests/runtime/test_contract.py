"""The RuntimeDriver contract: one suite, run against every driver (architecture.md, rule 6).

Each driver comes with a harness that knows how to make its run end on request: the process
driver runs a small app that exits with the code written to a file in its workdir, the fake is
told directly. A "restart" is a new driver object on the same host (same namespace and state
dir, or the same FakeHost), as after a daemon restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from portway.runtime.base import Exit, LaunchSpec, Liveness, RuntimeDriver, RuntimeError_
from portway.runtime.fake import FakeDriver, FakeHost
from tests.runtime import MODES, PATH, PY, ProcessHost, log_contains, new_uuid, run

# Runs until a file named `exit-code` appears in its workdir, then exits with that code.
APP = (
    "import os, sys, time\n"
    "print('ready', flush=True)\n"
    "while not os.path.exists('exit-code'):\n"
    "    time.sleep(0.005)\n"
    "sys.exit(int(open('exit-code').read()))\n"
)


class Harness(Protocol):
    driver: RuntimeDriver

    def restart(self) -> RuntimeDriver: ...

    def spec(self, argv: list[str] | None = None) -> LaunchSpec: ...

    async def ready(self, spec: LaunchSpec) -> None: ...

    def tell_exit(self, spec: LaunchSpec, code: int) -> None: ...


class ProcessHarness:
    def __init__(self, host: ProcessHost) -> None:
        self.host = host
        self.driver: RuntimeDriver = host.driver()

    def restart(self) -> RuntimeDriver:
        return self.host.driver()

    def spec(self, argv: list[str] | None = None) -> LaunchSpec:
        return self.host.spec(argv or [PY, "-c", APP])

    async def ready(self, spec: LaunchSpec) -> None:
        await log_contains(spec.log_path, "ready")

    def tell_exit(self, spec: LaunchSpec, code: int) -> None:
        tmp = spec.workdir / "exit-code.tmp"
        tmp.write_text(str(code))
        os.replace(tmp, spec.workdir / "exit-code")  # atomic: the app never reads half a file


class FakeHarness:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.host = FakeHost()
        self.driver: RuntimeDriver = FakeDriver(self.host, check_commands=True)

    def restart(self) -> RuntimeDriver:
        return FakeDriver(self.host, check_commands=True)

    def spec(self, argv: list[str] | None = None) -> LaunchSpec:
        uuid = new_uuid()
        return LaunchSpec(
            uuid=uuid,
            argv=argv or [PY, "-c", APP],
            workdir=self.tmp_path,
            env={"PATH": PATH},
            memory_mb=64,
            log_path=self.tmp_path / f"{uuid}.log",
        )

    async def ready(self, spec: LaunchSpec) -> None:
        return None

    def tell_exit(self, spec: LaunchSpec, code: int) -> None:
        self.host.runs[spec.uuid].end(Exit(code=code, signal=None))


@pytest.fixture(params=["fake", *(f"process-{m}" for m in MODES)])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "fake":
        yield FakeHarness(tmp_path)
        return
    host = ProcessHost(tmp_path, mode=request.param.removeprefix("process-"))
    try:
        yield ProcessHarness(host)
    finally:
        host.cleanup()


def test_a_run_ends_with_its_exit_code(harness: Harness) -> None:
    async def body() -> None:
        d, spec = harness.driver, harness.spec()
        pid = await d.start(spec)
        assert pid > 0
        assert spec.uuid in d.running()
        usage = d.usage(spec.uuid)
        assert usage.liveness is Liveness.RUNNING and pid in usage.pids
        await harness.ready(spec)
        harness.tell_exit(spec, 3)
        assert await d.wait(spec.uuid) == Exit(code=3, signal=None, oom_killed=False)
        assert await d.wait(spec.uuid) == Exit(code=3, signal=None)  # asked again: same answer
        assert spec.uuid not in d.running()
        assert d.usage(spec.uuid).liveness is Liveness.GONE

    run(body())


def test_stop_ends_the_run_with_sigterm_and_is_idempotent(harness: Harness) -> None:
    async def body() -> None:
        d, spec = harness.driver, harness.spec()
        await d.start(spec)
        await harness.ready(spec)
        await d.stop(spec.uuid, grace_s=5)
        assert spec.uuid not in d.running()
        assert d.usage(spec.uuid).liveness is Liveness.GONE
        assert await d.wait(spec.uuid) == Exit(code=None, signal=signal.SIGTERM)
        await d.stop(spec.uuid, grace_s=5)  # nothing running: a no-op

    run(body())


def test_wait_and_stop_together(harness: Harness) -> None:
    async def body() -> None:
        d, spec = harness.driver, harness.spec()
        await d.start(spec)
        await harness.ready(spec)
        waited, _ = await asyncio.gather(d.wait(spec.uuid), d.stop(spec.uuid, grace_s=5))
        assert waited.signal == signal.SIGTERM
        assert spec.uuid not in d.running()

    run(body())


def test_unknown_uuids(harness: Harness) -> None:
    async def body() -> None:
        d, uuid = harness.driver, new_uuid()
        await d.stop(uuid, grace_s=1)  # a no-op
        assert d.usage(uuid).liveness is Liveness.GONE
        assert not d.adopt(uuid)
        assert uuid not in d.running()
        with pytest.raises(RuntimeError_):
            await d.wait(uuid)
        with pytest.raises(RuntimeError_):
            await d.freeze(uuid)
        await d.remove(uuid)  # nothing to release: fine
        d.expect_start(uuid)  # a hint: never fails, starts nothing
        assert uuid not in d.running()

    run(body())


def test_a_start_expected_then_made(harness: Harness) -> None:
    async def body() -> None:
        d, spec = harness.driver, harness.spec()
        d.expect_start(spec.uuid)
        await d.start(spec)
        await harness.ready(spec)
        harness.tell_exit(spec, 0)
        assert (await d.wait(spec.uuid)).code == 0

    run(body())


def test_a_missing_command_is_an_error_of_start(harness: Harness) -> None:
    async def body() -> None:
        d, spec = harness.driver, harness.spec(["portway-no-such-command", "x"])
        with pytest.raises(RuntimeError_, match="portway-no-such-command"):
            await d.start(spec)
        assert spec.uuid not in d.running()
        assert d.usage(spec.uuid).liveness is Liveness.GONE

    run(body())


def test_one_run_per_uuid_at_a_time(harness: Harness) -> None:
    async def body() -> None:
        d, spec = harness.driver, harness.spec()
        first = await d.start(spec)
        with pytest.raises(RuntimeError_, match="already running"):
            await d.start(spec)
        await harness.ready(spec)
        harness.tell_exit(spec, 0)
        assert (await d.wait(spec.uuid)).code == 0
        (spec.workdir / "exit-code").unlink(missing_ok=True)
        second = await d.start(spec)  # the previous run is over: a new one may begin
        assert second != first
        await harness.ready(spec)
        harness.tell_exit(spec, 4)
        assert (await d.wait(spec.uuid)).code == 4

    run(body())


def test_freeze_and_thaw(harness: Harness) -> None:
    async def body() -> None:
        d, spec = harness.driver, harness.spec()
        await d.start(spec)
        await harness.ready(spec)
        await d.freeze(spec.uuid)
        assert d.usage(spec.uuid).liveness is Liveness.FROZEN
        assert spec.uuid in d.running()  # frozen is still running: memory and sockets are kept
        await d.thaw(spec.uuid)
        assert d.usage(spec.uuid).liveness is Liveness.RUNNING
        harness.tell_exit(spec, 5)
        assert (await d.wait(spec.uuid)).code == 5

    run(body())


def test_stop_of_a_frozen_run(harness: Harness) -> None:
    async def body() -> None:
        d, spec = harness.driver, harness.spec()
        await d.start(spec)
        await harness.ready(spec)
        await d.freeze(spec.uuid)
        await d.stop(spec.uuid, grace_s=5)
        assert (await d.wait(spec.uuid)).signal == signal.SIGTERM  # thawed, then SIGTERM

    run(body())


def test_a_restarted_driver_adopts_a_surviving_run(harness: Harness) -> None:
    async def body() -> None:
        spec = harness.spec()
        await harness.driver.start(spec)
        await harness.ready(spec)
        d2 = harness.restart()
        assert spec.uuid in d2.running()  # found from the host, before any adopt
        assert d2.adopt(spec.uuid)
        assert d2.usage(spec.uuid).liveness is Liveness.RUNNING
        harness.tell_exit(spec, 7)
        # No parent relationship after a restart: how it ended is unknown, that it ended is not.
        assert await d2.wait(spec.uuid) == Exit(code=None, signal=None, oom_killed=False)
        assert spec.uuid not in d2.running()
        assert not d2.adopt(spec.uuid)

    run(body())


def test_a_restarted_driver_stops_an_adopted_run(harness: Harness) -> None:
    async def body() -> None:
        spec = harness.spec()
        await harness.driver.start(spec)
        await harness.ready(spec)
        d2 = harness.restart()
        assert d2.adopt(spec.uuid)
        await d2.stop(spec.uuid, grace_s=5)
        assert spec.uuid not in d2.running()
        assert await d2.wait(spec.uuid) == Exit(code=None, signal=None)

    run(body())


def test_remove_kills_and_forgets(harness: Harness) -> None:
    async def body() -> None:
        d, spec = harness.driver, harness.spec()
        await d.start(spec)
        await d.remove(spec.uuid)
        assert spec.uuid not in d.running()
        assert d.usage(spec.uuid).liveness is Liveness.GONE
        assert not harness.restart().adopt(spec.uuid)

    run(body())


# --- the fake's own controls (what control tests steer it with) ---------------------------------


def test_fake_controls(tmp_path: Path) -> None:
    async def body() -> None:
        fake = FakeDriver()
        harness = FakeHarness(tmp_path)
        spec = harness.spec(["made-up-command"])  # not looked up unless check_commands
        pid = await fake.start(spec)
        assert fake.usage(spec.uuid).pids == (pid,)
        assert fake.spec(spec.uuid) is spec
        fake.finish(spec.uuid, signal=signal.SIGSEGV, oom_killed=True)
        assert await fake.wait(spec.uuid) == Exit(None, signal.SIGSEGV, oom_killed=True)
        with pytest.raises(KeyError):
            fake.finish(spec.uuid, 0)  # already over

        await fake.start(spec)
        fake.ignore_sigterm(spec.uuid)
        began = time.monotonic()
        await asyncio.wait_for(fake.stop(spec.uuid, grace_s=0.1), 5)
        assert time.monotonic() - began >= 0.1
        assert await fake.wait(spec.uuid) == Exit(None, signal.SIGKILL)
        assert [c for c, _ in fake.calls] == ["start", "wait", "start", "stop", "wait"]

    run(body())
