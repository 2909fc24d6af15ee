"""The process driver on this host: real processes, real cgroups where the host has them.

Behaviour every driver shares is in test_contract.py; this file covers what only real processes
show (environment, logs, process trees, timing, freezing, OOM, pid reuse) and the pure parsers.
Most tests run in each mode of `MODES`: whatever the host offers, cgroup v1 only, no cgroups.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portway.runtime.base import Exit, Liveness, RuntimeError_
from portway.runtime.cgroups import Hierarchies, Mounts, parse_keyed, parse_mounts
from portway.runtime.process import ProcessDriver, ProcId, parse_stat, read_stat, resolve_command
from tests.runtime import MODES, PATH, PY, ProcessHost, eventually, log_contains, run

SLEEP = "/bin/sleep"


@pytest.fixture(params=MODES)
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessHost]:
    h = ProcessHost(tmp_path, mode=request.param)
    try:
        yield h
    finally:
        h.cleanup()


@pytest.fixture
def auto_host(tmp_path: Path) -> Iterator[ProcessHost]:
    h = ProcessHost(tmp_path, mode="auto")
    try:
        yield h
    finally:
        h.cleanup()


def tracked(host: ProcessHost) -> bool:
    return host.mode != "none" and host.hierarchies().tracking is not None


async def started_process(pid_file: Path) -> ProcId:
    """The identity of a process whose pid an app writes to `pid_file` (once it is written)."""

    def written() -> bool:
        return pid_file.exists() and pid_file.read_text().endswith("\n")

    await eventually(written, what=f"a pid in {pid_file}")
    pid = int(pid_file.read_text())
    stat = read_stat(pid)
    assert stat is not None, f"process {pid} is already gone"
    return ProcId(pid, stat.start_time)


# --- start --------------------------------------------------------------------------------------


def test_exit_by_signal_is_reported_as_the_signal(host: ProcessHost) -> None:
    async def body() -> None:
        d = host.driver()
        spec = host.spec(["/bin/sh", "-c", "kill -USR1 $$"])
        await d.start(spec)
        assert await d.wait(spec.uuid) == Exit(code=None, signal=signal.SIGUSR1)

    run(body())


def test_the_environment_is_exactly_spec_env(host: ProcessHost) -> None:
    # Names a shell would drop or rewrite are among them, and PWD is absent in one case.
    env = {
        "PATH": PATH,
        "EMPTY": "",
        "MULTI": "a\nb",
        "IFS": "x",
        "OPTIND": "not-a-number",
        "PPID": "7",
        "SHLVL": "9",
        "_": "underscore",
        "spring.profiles.active": "prod",
        "my-var": "2",
        "UNICODE": "é",
    }

    async def body() -> None:
        d = host.driver()
        for variant in (env, {**env, "PWD": "/not/the/workdir"}):
            spec = host.spec(["env", "-0"], env=variant)
            await d.start(spec)
            assert (await d.wait(spec.uuid)).code == 0
            printed = spec.log_path.read_bytes().decode().split("\0")[:-1]
            assert dict(item.split("=", 1) for item in printed) == variant

    os.environ["PORTWAY_TEST_LEAK"] = "1"  # nothing of the daemon's own environment may leak
    try:
        run(body())
    finally:
        del os.environ["PORTWAY_TEST_LEAK"]


def test_cwd_stdin_and_cgroup_before_app_code(host: ProcessHost) -> None:
    async def body() -> None:
        d = host.driver()
        script = (
            "import os, sys\n"
            "print(open('/proc/self/cgroup').read())\n"  # the app's very first act
            "print('cwd', os.getcwd())\n"
            "print('stdin', repr(sys.stdin.read()))\n"
        )
        spec = host.spec([PY, "-c", script])
        await d.start(spec)
        assert (await d.wait(spec.uuid)).code == 0
        log = spec.log_path.read_text()
        assert f"cwd {spec.workdir}" in log
        assert "stdin ''" in log  # /dev/null
        if tracked(host):
            assert f"/portway/{host.namespace}/{spec.uuid}" in log

    run(body())


def test_commands_are_found_through_spec_env_and_the_workdir(host: ProcessHost) -> None:
    async def body() -> None:
        d = host.driver()
        spec = host.spec(["./app.sh"])
        script = spec.workdir / "app.sh"
        script.write_text("#!/bin/sh\necho from-workdir\n")
        with pytest.raises(RuntimeError_, match=r"app\.sh"):
            await d.start(spec)  # not executable yet
        script.chmod(0o755)
        await d.start(spec)
        assert (await d.wait(spec.uuid)).code == 0
        assert "from-workdir" in spec.log_path.read_text()

        # PATH comes from the spec: `sleep` is not found without one that has /bin.
        no_path = host.spec(["sleep", "1"], env={"PATH": "/nonexistent"})
        with pytest.raises(RuntimeError_, match="command not found: 'sleep'"):
            await d.start(no_path)
        assert no_path.uuid not in d.running()

    run(body())


def test_resolve_command_rules(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert resolve_command(["tool"], {"PATH": "bin"}, tmp_path) == str(tool)  # relative entry
    assert resolve_command(["bin/tool"], {}, tmp_path) == str(tool)
    assert resolve_command(["/bin/sh"], {}, tmp_path) == "/bin/sh"
    with pytest.raises(RuntimeError_, match="empty"):
        resolve_command([], {}, tmp_path)
    with pytest.raises(RuntimeError_, match="not found"):
        resolve_command(["tool"], {"PATH": "/usr/bin"}, tmp_path)


# --- logs ---------------------------------------------------------------------------------------


def test_the_log_has_stdout_and_stderr_and_outlives_the_driver(host: ProcessHost) -> None:
    app = "echo to-stdout; echo to-stderr >&2; while :; do echo tick; sleep 0.02; done"

    async def body() -> None:
        d = host.driver()
        spec = host.spec(["/bin/sh", "-c", app])
        await d.start(spec)
        await log_contains(spec.log_path, "tick")
        text = spec.log_path.read_text()
        assert "to-stdout" in text and "to-stderr" in text

        # The daemon-side objects go away (as when the daemon dies); the app keeps logging.
        host.drivers.remove(d)
        del d
        gc.collect()
        size = spec.log_path.stat().st_size
        await eventually(lambda: spec.log_path.stat().st_size > size + 20, what="more ticks")

        d2 = host.driver()
        assert d2.adopt(spec.uuid)
        await d2.stop(spec.uuid, grace_s=2)
        assert spec.uuid not in d2.running()

    run(body())


# --- stop and process trees ---------------------------------------------------------------------

TRAPS_TERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)
IGNORES_TERM = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)


def test_stop_lets_a_process_exit_cleanly_within_the_grace(host: ProcessHost) -> None:
    async def body() -> None:
        d = host.driver()
        spec = host.spec([PY, "-c", TRAPS_TERM])
        await d.start(spec)
        await log_contains(spec.log_path, "ready")
        began = time.monotonic()
        await d.stop(spec.uuid, grace_s=5)
        assert time.monotonic() - began < 2.0  # it left on SIGTERM, long before the grace
        assert await d.wait(spec.uuid) == Exit(code=0, signal=None)

    run(body())


def test_stop_kills_a_process_that_ignores_sigterm_after_the_grace(host: ProcessHost) -> None:
    async def body() -> None:
        d = host.driver()
        spec = host.spec([PY, "-c", IGNORES_TERM])
        await d.start(spec)
        await log_contains(spec.log_path, "ready")
        began = time.monotonic()
        await d.stop(spec.uuid, grace_s=0.5)
        elapsed = time.monotonic() - began
        assert 0.5 <= elapsed < 1.5, elapsed
        assert await d.wait(spec.uuid) == Exit(code=None, signal=signal.SIGKILL)
        assert d.usage(spec.uuid).liveness is Liveness.GONE

    run(body())


COUNTS_TERM = (
    "import signal, sys, time\n"
    "count = 0\n"
    "def on_term(*_):\n"
    "    global count\n"
    "    count += 1\n"
    "    print('term', count, flush=True)\n"
    "signal.signal(signal.SIGTERM, on_term)\n"
    "print('ready', flush=True)\n"
    "while count == 0: time.sleep(0.01)\n"
    "time.sleep(0.3)\n"  # a clean shutdown that takes a moment
    "sys.exit(0)\n"
)


def test_concurrent_stops_send_sigterm_once(host: ProcessHost) -> None:
    async def body() -> None:
        d = host.driver()
        spec = host.spec([PY, "-c", COUNTS_TERM])
        await d.start(spec)
        await log_contains(spec.log_path, "ready")
        await asyncio.gather(d.stop(spec.uuid, grace_s=5), d.stop(spec.uuid, grace_s=5))
        ended = await d.wait(spec.uuid)
        log = spec.log_path.read_text()  # in the messages: it failed once, with exit code 1
        assert ended == Exit(code=0, signal=None), log
        assert log.count("term") == 1, log

    run(body())


def test_under_uvloop(auto_host: ProcessHost) -> None:
    """The daemon runs on uvloop: the pidfd watch must work there too."""
    import uvloop

    async def body() -> None:
        d = auto_host.driver()
        spec = auto_host.spec(["/bin/sh", "-c", "sleep 0.2; exit 6"])
        await d.start(spec)
        assert await asyncio.wait_for(d.wait(spec.uuid), 10) == Exit(code=6, signal=None)
        spec2 = auto_host.spec([SLEEP, "600"])
        await d.start(spec2)
        await asyncio.wait_for(d.stop(spec2.uuid, grace_s=2), 10)
        assert await asyncio.wait_for(d.wait(spec2.uuid), 10) == Exit(None, signal.SIGTERM)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(body())


# The main process starts a grandchild that would outlive it, then exits (or waits).
FORKS = "sleep 600 & echo $! > grandchild.pid; {rest}"


def test_wait_kills_what_the_main_process_leaves_behind(host: ProcessHost) -> None:
    async def body() -> None:
        d = host.driver()
        spec = host.spec(["/bin/sh", "-c", FORKS.format(rest="sleep 0.3; exit 0")])
        await d.start(spec)
        grandchild = await started_process(spec.workdir / "grandchild.pid")
        assert grandchild.pid in d.usage(spec.uuid).pids
        assert await d.wait(spec.uuid) == Exit(code=0, signal=None)
        assert not grandchild.alive()
        assert spec.uuid not in d.running()

    run(body())


def test_stop_leaves_no_process_of_the_tree(host: ProcessHost) -> None:
    async def body() -> None:
        d = host.driver()
        spec = host.spec(["/bin/sh", "-c", FORKS.format(rest="wait")])
        await d.start(spec)
        grandchild = await started_process(spec.workdir / "grandchild.pid")
        await d.stop(spec.uuid, grace_s=2)
        assert not grandchild.alive()
        assert d.usage(spec.uuid).liveness is Liveness.GONE

    run(body())


def test_a_grandchild_that_ignores_sigterm_is_killed_after_the_grace(
    host: ProcessHost,
) -> None:
    # The main process leaves on SIGTERM at once; its child does not, and gets the grace.
    app = f'{PY} -c "{IGNORES_TERM}" & echo $! > grandchild.pid; wait'

    async def body() -> None:
        d = host.driver()
        spec = host.spec(["/bin/sh", "-c", app])
        await d.start(spec)
        await log_contains(spec.log_path, "ready")
        grandchild = await started_process(spec.workdir / "grandchild.pid")
        began = time.monotonic()
        await d.stop(spec.uuid, grace_s=0.5)
        assert 0.5 <= time.monotonic() - began < 1.5
        assert not grandchild.alive()

    run(body())


@pytest.fixture(params=[m for m in MODES if m != "none"])
def cgroup_host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessHost]:
    """The modes with cgroups: what only they promise is tested only in them (without
    cgroups a process can leave the tree with setsid, and memory is reported, not enforced;
    test_without_cgroups_memory_is_reported_not_enforced checks that side)."""
    h = ProcessHost(tmp_path, mode=request.param)
    try:
        yield h
    finally:
        h.cleanup()


def test_a_grandchild_that_leaves_the_session_is_still_caught_by_the_cgroup(
    cgroup_host: ProcessHost,
) -> None:
    host = cgroup_host
    assert tracked(host), "this host offers cgroup tracking (checked: v2 is mounted)"

    async def body() -> None:
        d = host.driver()
        app = "setsid sleep 600 & echo $! > grandchild.pid; sleep 0.3; exit 0"
        spec = host.spec(["/bin/sh", "-c", app])
        await d.start(spec)
        grandchild = await started_process(spec.workdir / "grandchild.pid")
        assert (await d.wait(spec.uuid)).code == 0
        assert not grandchild.alive()

    run(body())


# --- freeze -------------------------------------------------------------------------------------

BURNS_CPU = "print('ready', flush=True)\nwhile True: pass\n"


def test_freeze_stops_cpu_use_and_thaw_resumes_it(host: ProcessHost) -> None:
    async def body() -> None:
        d = host.driver()
        spec = host.spec([PY, "-c", BURNS_CPU])
        pid = await d.start(spec)
        await log_contains(spec.log_path, "ready")
        await d.freeze(spec.uuid)
        usage = d.usage(spec.uuid)
        assert usage.liveness is Liveness.FROZEN
        stat = read_stat(pid)
        assert stat is not None
        # Stopped by SIGSTOP shows as T; the cgroup freezer parks tasks in a sleep instead.
        assert stat.state == "T" or d.cgroups.run(spec.uuid).frozen()
        await asyncio.sleep(0.3)
        assert d.usage(spec.uuid).cpu_time_ms == usage.cpu_time_ms

        await d.thaw(spec.uuid)
        assert d.usage(spec.uuid).liveness is Liveness.RUNNING
        before = d.usage(spec.uuid).cpu_time_ms
        await eventually(lambda: d.usage(spec.uuid).cpu_time_ms > before + 50, what="cpu use")
        await d.stop(spec.uuid, grace_s=2)

    run(body())


def test_usage_reports_memory_and_cpu(host: ProcessHost) -> None:
    app = "b = b'x' * (40 << 20)\nprint('ready', flush=True)\nimport time\ntime.sleep(600)\n"

    async def body() -> None:
        d = host.driver()
        spec = host.spec([PY, "-c", app])
        pid = await d.start(spec)
        await log_contains(spec.log_path, "ready")
        usage = d.usage(spec.uuid)
        assert usage.liveness is Liveness.RUNNING
        assert usage.pids == (pid,)
        assert usage.rss_bytes > 40 << 20
        assert usage.cpu_time_ms > 0
        await d.stop(spec.uuid, grace_s=2)

    run(body())


# --- adoption -----------------------------------------------------------------------------------


def test_adopt_refuses_a_reused_pid(host: ProcessHost) -> None:
    async def body() -> None:
        d = host.driver()
        spec = host.spec([SLEEP, "600"])
        pid = await d.start(spec)
        state_file = host.state_dir / f"{spec.uuid}.json"
        recorded = json.loads(state_file.read_text())
        assert recorded["pid"] == pid
        assert host.driver().adopt(spec.uuid)
        # Same pid, other start time: the pid now names another process, so ours is gone.
        state_file.write_text(json.dumps({**recorded, "start_time": recorded["start_time"] + 1}))
        assert not host.driver().adopt(spec.uuid)
        await d.remove(spec.uuid)

    run(body())


def test_a_run_that_ended_unwatched_is_not_adopted_and_its_leftovers_go(
    host: ProcessHost,
) -> None:
    """The main process dies while no daemon runs; a grandchild lives on. The restarted daemon
    does not adopt the run, kills the grandchild, and can start the uuid again."""

    async def body() -> None:
        d = host.driver()
        spec = host.spec(["/bin/sh", "-c", FORKS.format(rest="wait")])
        pid = await d.start(spec)
        grandchild = await started_process(spec.workdir / "grandchild.pid")
        main_stat = read_stat(pid)
        assert main_stat is not None
        main = ProcId(pid, main_stat.start_time)
        host.drivers.remove(d)
        del d  # the daemon dies...
        os.kill(pid, signal.SIGKILL)  # ...and then so does the main process
        await eventually(lambda: not main.alive(), what="the main process dead")

        d2 = host.driver()
        assert spec.uuid in d2.running()  # the grandchild is still ours, and still there
        assert not d2.adopt(spec.uuid)
        await eventually(lambda: not grandchild.alive(), what="the grandchild killed")
        assert spec.uuid not in d2.running()
        await d2.start(host.spec([SLEEP, "600"], uuid=spec.uuid))
        await d2.stop(spec.uuid, grace_s=2)

    run(body())


def test_adopt_after_the_main_process_died_is_false(host: ProcessHost) -> None:
    async def body() -> None:
        d = host.driver()
        spec = host.spec([SLEEP, "600"])
        pid = await d.start(spec)
        os.kill(pid, signal.SIGKILL)
        assert (await d.wait(spec.uuid)).signal == signal.SIGKILL
        assert not host.driver().adopt(spec.uuid)

    run(body())


def test_namespaces_do_not_see_each_other(tmp_path: Path) -> None:
    a, b = ProcessHost(tmp_path / "a"), ProcessHost(tmp_path / "b")
    try:

        async def body() -> None:
            da, db = a.driver(), b.driver()
            spec = a.spec([SLEEP, "600"])
            await da.start(spec)
            assert spec.uuid in da.running()
            assert spec.uuid not in db.running()
            await db.stop(spec.uuid, grace_s=1)  # not its run: a no-op
            assert spec.uuid in da.running()
            await da.stop(spec.uuid, grace_s=1)

        run(body())
    finally:
        a.cleanup()
        b.cleanup()


# --- memory -------------------------------------------------------------------------------------


def test_without_cgroups_memory_is_reported_not_enforced(tmp_path: Path) -> None:
    host = ProcessHost(tmp_path, mode="none")
    try:
        assert host.driver().enforces_memory is False
    finally:
        host.cleanup()


def test_the_memory_limit_is_enforced_with_an_oom_kill(cgroup_host: ProcessHost) -> None:
    host = cgroup_host
    d = host.driver()
    assert d.enforces_memory, "this host has a writable memory cgroup (v1 memory here)"
    app = "b = b'x' * (256 << 20)\nprint('survived', flush=True)\n"

    async def body() -> None:
        spec = host.spec([PY, "-c", app], memory_mb=64)
        await d.start(spec)
        assert await d.wait(spec.uuid) == Exit(code=None, signal=signal.SIGKILL, oom_killed=True)
        assert "survived" not in spec.log_path.read_text()

        # The same uuid again, within its limit: a fresh cgroup, so no OOM is carried over.
        again = host.spec([PY, "-c", "b = b'x' * (8 << 20)"], uuid=spec.uuid, memory_mb=64)
        await d.start(again)
        assert await d.wait(spec.uuid) == Exit(code=0, signal=None, oom_killed=False)

    run(body())


def test_this_host_enforces_memory_when_it_has_a_memory_cgroup(auto_host: ProcessHost) -> None:
    """The OOM test above may skip only where the host has no writable memory cgroup: a host
    that has one (v2 with the memory controller, or v1 memory) and lets us write must enforce."""
    mounts = parse_mounts(
        Path("/proc/self/mountinfo").read_text(), Path("/proc/self/cgroup").read_text()
    )
    v2_memory = mounts.v2 is not None and "memory" in (
        (mounts.v2 / "cgroup.controllers").read_text().split()
    )
    writable = [m for m in (mounts.v2 if v2_memory else None, mounts.v1_memory) if m is not None]
    if not any(os.access(m, os.W_OK) for m in writable):
        pytest.skip("no writable memory cgroup on this host: memory cannot be enforced here")
    assert auto_host.driver().enforces_memory


def test_priming_migrations_leaves_the_daemon_where_it_is(auto_host: ProcessHost) -> None:
    """prime_migration writes the daemon's pid into its own cgroup: on a host with cgroups
    it does so (the write is allowed), and the daemon is in the same cgroups after."""
    hierarchies = auto_host.hierarchies()
    try:
        if hierarchies.own is None:
            pytest.skip("no cgroup hierarchy usable on this host: nothing to prime with")
        before = Path("/proc/self/cgroup").read_text()
        assert hierarchies.prime_migration()
        assert Path("/proc/self/cgroup").read_text() == before
        # A directory that does not list the daemon is never written to.
        elsewhere = Hierarchies(None, False, None, None, own=auto_host.tmp_path)
        (auto_host.tmp_path / "cgroup.procs").write_text("1\n")
        assert not elsewhere.prime_migration()
        assert (auto_host.tmp_path / "cgroup.procs").read_text() == "1\n"
    finally:
        hierarchies.release()


# --- measurement --------------------------------------------------------------------------------


def test_start_overhead(auto_host: ProcessHost, capsys: pytest.CaptureFixture[str]) -> None:
    """start() of `true`, and of a sleep from call to pid; bounds are loose (shared CI hosts),
    the figures are printed (pytest -s) for the record."""

    async def measure(argv: list[str], n: int) -> list[float]:
        d = auto_host.driver()
        times = []
        for _ in range(n):
            spec = auto_host.spec(argv)
            began = time.perf_counter()
            await d.start(spec)
            times.append((time.perf_counter() - began) * 1000)
            await d.remove(spec.uuid)  # kills the sleep; `true` may be done already
        return times

    async def body() -> tuple[list[float], list[float]]:
        await measure(["/bin/true"], 3)  # warm up
        return await measure(["/bin/true"], 30), await measure([SLEEP, "600"], 30)

    true_ms, sleep_ms = run(body())
    with capsys.disabled():
        for name, ms in (("true", true_ms), ("sleep", sleep_ms)):
            print(
                f"\nstart({name}) ms: median {statistics.median(ms):.2f} "
                f"p90 {sorted(ms)[int(len(ms) * 0.9)]:.2f} max {max(ms):.2f}"
            )
    assert statistics.median(true_ms) < 20


# --- pure parsing -------------------------------------------------------------------------------

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_SELF = "6:freezer:/\n4:memory:/sandbox/abc\n2:cpu,cpuacct:/\n0::/\n"


def test_parse_mounts_hybrid() -> None:
    assert parse_mounts(HYBRID, HYBRID_SELF) == Mounts(
        v2=Path("/sys/fs/cgroup/unified"),
        v1_memory=Path("/sys/fs/cgroup/memory/sandbox/abc"),
        v1_freezer=Path("/sys/fs/cgroup/freezer"),
        v2_own=Path("/sys/fs/cgroup/unified"),
    )


def test_parse_mounts_pure_v2_and_container_bind_mounts() -> None:
    pure = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    assert parse_mounts(pure, "0::/system.slice/portway.service\n") == Mounts(
        v2=Path("/sys/fs/cgroup"),
        v1_memory=None,
        v1_freezer=None,
        v2_own=Path("/sys/fs/cgroup/system.slice/portway.service"),
    )
    # A container sees only its own subtree of the hierarchy, mounted at the usual place.
    bound = "40 31 0:32 /docker/c1 /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    mounts = parse_mounts(bound, "4:memory:/docker/c1/app\n")
    assert mounts.v1_memory == Path("/sys/fs/cgroup/memory/app")
    spaced = r"40 31 0:32 / /mnt/my\040cg rw - cgroup2 cgroup2 rw" + "\n"
    assert parse_mounts(spaced, "").v2 == Path("/mnt/my cg")


def test_parse_stat_and_keyed_files() -> None:
    line = "42 (a (weird) name) S 1 41 42 0 -1 4194560 1 0 0 0 7 3 2 1 20 0 1 0 12345 0 0"
    stat = parse_stat(line)
    assert (stat.state, stat.pgrp, stat.session, stat.cpu_ticks) == ("S", 41, 42, 13)
    assert stat.start_time == 12345
    assert parse_keyed("populated 1\nfrozen 0\n") == {"populated": 1, "frozen": 0}
    assert parse_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")["oom_kill"] == 2


def test_invalid_namespace_and_uuid(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ProcessDriver("../escape", tmp_path)
    d = ProcessDriver("ns-ok", tmp_path, cgroups=Hierarchies.none())
    with pytest.raises(RuntimeError_, match="invalid uuid"):
        d.usage("../../etc")
