"""Races between API calls and the supervisor task in control/instances.py, on the in-memory
FakeDriver and a real SQLite file.

Every test here shows a bug found in review and should pass once it is fixed. All but one fail
against the file as reviewed; test_a_stop_racing_the_exit_keeps_the_exit_on_record fails
against the later working copy (the stale-status hazard it shows is in both). The
interleavings come from the order in which store calls reach the controller's single store
thread, so they are reproducible without sleeps between steps; where a driver call must take
time, a small FakeDriver subclass holds it open.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from portway.control.controller import Controller
from portway.control.instances import CreateRequest, InstanceController, StopRequest, Waited
from portway.control.users import User
from portway.model.errors import ItemError
from portway.model.instance import Instance, State
from portway.model.instance_patch import InstancePatch
from portway.model.refs import Ref
from portway.runtime.base import LaunchSpec
from portway.runtime.fake import FakeDriver, FakeHost
from portway.runtime.images import ImageFiles
from portway.store.sqlite import SQLiteStore

T = TypeVar("T")
ALICE = User("alice")
APP = CreateRequest(image="host", args=["app"])


class Env:
    def __init__(self, tmp_path: Path, driver: FakeDriver) -> None:
        self.tmp_path = tmp_path
        self.driver = driver
        store = SQLiteStore(tmp_path / "p.db")
        self.groups = Controller(store, platform_domain="apps.test", rng=random.Random(1))
        self.ctl = InstanceController(
            self.groups,
            store,
            driver,
            ImageFiles(tmp_path / "images"),
            tmp_path,
            platform_domain="apps.test",
            rng=random.Random(1),
        )

    async def create(self, **changes: object) -> Instance:
        [instance], _ = await self.ctl.create(ALICE, replace(APP, **changes))  # type: ignore[arg-type]
        return instance

    async def read(self, instance: Instance) -> Instance:
        [found] = await self.ctl.get(ALICE, [Ref(uuid=instance.uuid)])
        assert isinstance(found, Instance), found
        return found

    def alive(self, instance: Instance) -> bool:
        return instance.uuid in self.driver.running()


def run(tmp_path: Path, body: Callable[[Env], Awaitable[T]], driver: FakeDriver | None = None) -> T:
    async def main() -> T:
        env = Env(tmp_path, driver or FakeDriver())
        try:
            return await body(env)
        finally:
            await env.ctl.close()
            env.groups.close()

    return asyncio.run(main())


async def settle(rounds: int = 40) -> None:
    """Let every task run until nothing is left to do (store calls take a thread hop each)."""
    for _ in range(rounds):
        await asyncio.sleep(0.005)


async def consistent(env: Env, instance: Instance) -> Instance:
    """The instance once things settle, checked against the driver: what the store says runs
    runs, and what it says is stopped is not running (and nothing is stuck half-way)."""
    await settle()
    current = await env.read(instance)
    assert current.state in (State.RUNNING, State.STOPPED), current.state
    assert env.alive(instance) == (current.state is State.RUNNING), (
        current.state,
        env.alive(instance),
    )
    assert current.desired == ("running" if current.state is State.RUNNING else "stopped")
    return current


# --- two concurrent starts ------------------------------------------------------------------


def test_two_concurrent_starts_run_the_instance_once(tmp_path: Path) -> None:
    """Two start requests for a stopped instance at once: both pass `uuid not in _runs` before
    either registers its task, so two supervisors run. The second driver.start fails ('already
    running'), its supervisor records exit 127 and desired=stopped while the first one's
    process keeps running untracked (or the second call dies on IllegalTransition)."""

    async def body(env: Env) -> None:
        instance = await env.create()
        ref = Ref(uuid=instance.uuid)
        results = await asyncio.gather(
            env.ctl.start(ALICE, [ref]), env.ctl.start(ALICE, [ref]), return_exceptions=True
        )
        assert not [r for r in results if isinstance(r, BaseException)], results
        current = await consistent(env, instance)
        assert current.state is State.RUNNING
        assert current.status.exit_code is None
        assert [c for c in env.driver.calls if c[0] == "start"] == [("start", instance.uuid)]

    run(tmp_path, body)


# --- stop racing a start --------------------------------------------------------------------


def test_stop_racing_a_start_leaves_a_consistent_instance(tmp_path: Path) -> None:
    """start and stop at once: the stop reads `stopped` and only sets desired=stopped, the start
    then moves the instance to `starting` and spawns a supervisor that sees desired=stopped and
    returns before running anything. The instance stays `starting` forever with no supervisor
    (and its uuid stays in `_starting`)."""

    async def body(env: Env) -> None:
        instance = await env.create()
        ref = Ref(uuid=instance.uuid)
        await asyncio.gather(env.ctl.start(ALICE, [ref]), env.ctl.stop(ALICE, [StopRequest(ref)]))
        await consistent(env, instance)

    run(tmp_path, body)


class SlowStart(FakeDriver):
    """A driver whose start takes until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def start(self, spec: LaunchSpec) -> int:
        self.entered.set()
        await self.release.wait()
        return await super().start(spec)


def test_stop_while_the_run_is_being_started_stops_it(tmp_path: Path) -> None:
    """A stop while the supervisor is between `starting` and a started process: the stop's
    driver.stop finds nothing to stop, the supervisor then starts the process anyway, and the
    instance stays `stopping` with its process running; a wait for `stopped` never ends."""
    driver = SlowStart()

    async def body(env: Env) -> None:
        instance = await env.create(autostart=True)
        ref = Ref(uuid=instance.uuid)
        await driver.entered.wait()
        await env.ctl.stop(ALICE, [StopRequest(ref)])
        driver.release.set()
        [waited] = await env.ctl.wait(ALICE, [(ref, State.STOPPED, 2)])
        assert isinstance(waited, Waited) and waited.reached, waited
        assert not env.alive(instance)

    run(tmp_path, body, driver)


# --- stop racing the app's own exit ---------------------------------------------------------


def test_stop_as_the_app_exits(tmp_path: Path) -> None:
    """The app exits just as a user stops it. Depending on the interleaving the stop either
    raises IllegalTransition ('cannot stop an instance that is stopped': a 500), or writes
    `stopping` over the supervisor's `stopped` (stuck; the next start raises 'cannot start an
    instance that is stopping'). Either way it leaves its StopCause in `_causes`."""

    async def body(env: Env) -> None:
        for yields in range(4):
            instance = await env.create(name=f"app-{yields}", autostart=True)
            ref = Ref(uuid=instance.uuid)
            await settle()
            env.driver.finish(instance.uuid, 0)
            for _ in range(yields):
                await asyncio.sleep(0)
            await env.ctl.stop(ALICE, [StopRequest(ref)])
            current = await consistent(env, instance)
            assert current.state is State.STOPPED
            await env.ctl.start(ALICE, [ref])
            current = await consistent(env, instance)
            assert current.state is State.RUNNING

    run(tmp_path, body)


def test_a_stop_racing_the_exit_keeps_the_exit_on_record(tmp_path: Path) -> None:
    """The stop builds `status` from the instance it read before the supervisor recorded the
    exit, and writes it back whole: stop_reason, exit_code and stopped_at are wiped."""

    async def body(env: Env) -> None:
        for yields in range(4):
            instance = await env.create(name=f"app-{yields}", autostart=True)
            await settle()
            env.driver.finish(instance.uuid, 7)
            for _ in range(yields):
                await asyncio.sleep(0)
            # The stop may raise (test_stop_as_the_app_exits); this test is about the record.
            with contextlib.suppress(Exception):
                await env.ctl.stop(ALICE, [StopRequest(Ref(uuid=instance.uuid))])
            await settle()
            current = await env.read(instance)
            assert current.status.exit_code == 7, (yields, current.status)
            assert current.status.stop_reason is not None and current.status.stop_reason & 3 == 3
            assert current.status.stopped_at is not None

    run(tmp_path, body)


def test_a_stale_stop_cause_does_not_restart_a_never_instance(tmp_path: Path) -> None:
    """After a stop that raced the app's exit left its cause behind, the next run's crash is
    recorded as a user stop (13) and, because a cause is present, the supervisor `continue`s:
    an instance with restart_policy `never` is restarted."""

    async def body(env: Env) -> None:
        instance = await env.create(autostart=True)
        ref = Ref(uuid=instance.uuid)
        await settle()
        env.driver.finish(instance.uuid, 0)
        await asyncio.sleep(0)
        # The stop may raise (test_stop_as_the_app_exits); this test is about what it leaves.
        with contextlib.suppress(Exception):
            await env.ctl.stop(ALICE, [StopRequest(ref)])
        await settle()
        await env.ctl.start(ALICE, [ref])
        await settle()
        starts = (await env.read(instance)).status.start_count
        env.driver.finish(instance.uuid, None, signal=11)  # a crash
        current = await consistent(env, instance)
        assert current.state is State.STOPPED
        assert current.status.start_count == starts
        assert current.status.stop_reason == 1  # K: a crash, nobody asked

    run(tmp_path, body)


# --- PATCH during a run ---------------------------------------------------------------------


def test_patch_while_the_app_exits_does_not_revert_the_state(tmp_path: Path) -> None:
    """patch() reads the instances once and saves whole rows at the end: a run that ended in
    between is written back as `running` (desired running, no stop_reason), with nothing
    running and no supervisor."""

    async def body(env: Env) -> None:
        instance = await env.create(autostart=True)
        ref = Ref(uuid=instance.uuid)
        await settle()
        env.driver.finish(instance.uuid, 0)
        await env.ctl.patch(ALICE, [InstancePatch(ref, "image", "set", "host") for _ in range(3)])
        current = await consistent(env, instance)
        assert current.state is State.STOPPED
        assert current.status.exit_code == 0

    run(tmp_path, body)


# --- wait -----------------------------------------------------------------------------------


def test_wait_on_an_instance_deleted_meanwhile_answers_every_item(tmp_path: Path) -> None:
    """Deleted between wait's get() and its first read: _wait_for raises not_found out of the
    gather, so the whole call fails (a 500 at the API) and the other item's answer is lost."""

    async def body(env: Env) -> None:
        b = await env.create(name="b")
        for attempt in range(12):  # the window is one store call wide: try a few interleavings
            a = await env.create(name=f"a-{attempt}")

            async def delete_a(ref: Ref = Ref(uuid=a.uuid), yields: int = attempt % 4) -> None:
                for _ in range(yields):
                    await asyncio.sleep(0)
                await env.ctl.delete(ALICE, [(ref, None)])

            waited, _ = await asyncio.gather(
                env.ctl.wait(
                    ALICE,
                    [
                        (Ref(uuid=a.uuid), State.RUNNING, 0.05),
                        (Ref(uuid=b.uuid), State.STOPPED, 0.05),
                    ],
                ),
                delete_a(),
            )
            assert all(isinstance(w, Waited | ItemError) for w in waited)
            assert isinstance(waited[1], Waited) and waited[1].reached

    run(tmp_path, body)


# --- restart back-off -----------------------------------------------------------------------


def test_a_stop_resets_the_restart_sequence(tmp_path: Path) -> None:
    """ukc-api §3.6: a manual start *or stop* aborts the sequence and resets the back-off."""

    async def body(env: Env) -> None:
        instance = await env.create(autostart=True, restart_policy="always")
        await settle()
        env.driver.finish(instance.uuid, 1)
        await settle()
        env.driver.finish(instance.uuid, 1)
        await settle()
        # One restart happened (immediately); the second waits out 5 s: restart.attempt
        # counts restarts that happened (ukc-api §3.6), so it is 1 during that back-off.
        assert (await env.read(instance)).status.restart_attempt == 1
        await env.ctl.stop(ALICE, [StopRequest(Ref(uuid=instance.uuid))])
        await settle()
        current = await env.read(instance)
        assert current.state is State.STOPPED
        assert current.status.restart_attempt == 0

    run(tmp_path, body)


# --- leaks ----------------------------------------------------------------------------------


def test_log_trimming_survives_runs_coming_and_going(tmp_path: Path) -> None:
    """trim_logs iterates `_runs` in a worker thread (run_log_trimmer uses to_thread) while the
    event loop adds and removes runs: 'dictionary changed size during iteration', which ends
    the log-trimmer task and with it the daemon's TaskGroup (seen on a real daemon)."""

    async def body(env: Env) -> None:
        instances, _ = await env.ctl.create(ALICE, replace(APP, autostart=True, replicas=63))
        await settle()
        for i in instances:
            env.ctl.paths(i.uuid)[1].write_text("x" * 100)
        refs = [Ref(uuid=i.uuid) for i in instances[:10]]

        async def churn() -> None:
            while True:
                for ref in refs:
                    await env.ctl.stop(ALICE, [StopRequest(ref, force=True)])
                await settle(2)
                await env.ctl.start(ALICE, refs)

        churning = asyncio.create_task(churn())
        try:
            for _ in range(150):
                await asyncio.to_thread(env.ctl.trim_logs)
        finally:
            churning.cancel()

    run(tmp_path, body)


def test_a_teardown_cancelled_before_it_starts_leaves_no_unawaited_stop(tmp_path: Path) -> None:
    """A stop's teardown task cancelled before its first step (the controller closing right
    after the stop) never awaited the driver's stop coroutine, which then warned "never
    awaited" when collected (seen once in a full run). It is closed instead."""
    import inspect

    async def body(env: Env) -> None:
        [instance], _ = await env.ctl.create(ALICE, replace(APP, autostart=True))
        await settle()
        stop = env.driver.stop(instance.uuid, 1.0)
        env.ctl._spawn_teardown(instance.uuid, stop)
        task = env.ctl._teardowns[instance.uuid]
        task.cancel()  # before the loop gave it a step
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert inspect.getcoroutinestate(stop) == inspect.CORO_CLOSED
        assert env.alive(instance)  # the stop was dropped, not run

    run(tmp_path, body)


def test_finished_deletes_leave_no_tasks_behind(tmp_path: Path) -> None:
    """_delete_one stores its teardown task in `_teardowns` and nothing ever removes it."""

    async def body(env: Env) -> None:
        instances, _ = await env.ctl.create(ALICE, replace(APP, autostart=True, replicas=4))
        await settle()
        await env.ctl.delete(ALICE, [(Ref(uuid=i.uuid), -1) for i in instances])
        await settle()
        assert env.ctl._teardowns == {}
        assert env.ctl._runs == {}

    run(tmp_path, body)


# --- reconcile ------------------------------------------------------------------------------


def test_the_reconciler_forgets_supervisors_that_ended(tmp_path: Path) -> None:
    """_spawn_supervisor registers its task in `_runs` without the done callback that
    _begin_run adds: an adopted run that ends stays in `_runs` for good."""
    host = FakeHost()

    async def body(env: Env) -> None:
        instance = await env.create(autostart=True)
        await settle()
        for task in list(env.ctl._runs.values()):
            task.cancel()  # the daemon dies (kill -9): the run survives on the host
        await settle()
        after = Env(tmp_path, FakeDriver(host))
        try:
            await after.ctl.reconcile()
            await settle()
            assert after.alive(instance)
            after.driver.finish(instance.uuid, 0)
            await settle()
            assert (await after.read(instance)).state is State.STOPPED
            assert after.ctl._runs == {}
        finally:
            await after.ctl.close()
            after.groups.close()

    run(tmp_path, body, FakeDriver(host))


def test_the_reconciler_stops_a_tree_of_a_stopped_instance(tmp_path: Path) -> None:
    """A tree still runs for an instance the store has as stopped/desired stopped (what the
    concurrent-start bug leaves behind). The reconciler only removes trees of unknown uuids, so
    this one runs on, owned by nobody, and every later start of the instance fails with exit
    127 ('already running')."""
    host = FakeHost()

    async def body(env: Env) -> None:
        instance = await env.create()
        root, log = env.ctl.paths(instance.uuid)
        await env.driver.start(LaunchSpec(instance.uuid, ("app",), root, {}, 128, log))
        after = Env(tmp_path, FakeDriver(host))
        try:
            await after.ctl.reconcile()
            await settle()
            assert not after.alive(instance)
            await after.ctl.start(ALICE, [Ref(uuid=instance.uuid)])
            current = await consistent(after, instance)
            assert current.state is State.RUNNING
        finally:
            await after.ctl.close()
            after.groups.close()

    run(tmp_path, body, FakeDriver(host))
