"""FakeDriver: an in-memory RuntimeDriver for unit tests of control code.

Nothing runs. `start` hands out a fake pid and the run stays "running" until the test says how
it ends (`finish`), the control code stops it, or it is removed. Runs live on a `FakeHost`, which
stands for the machine: a second FakeDriver on the same host is a restarted daemon, and it
finds the runs again with `adopt` and `running`, as the process driver does through cgroups and
state files. The contract suite (tests/runtime/test_contract.py) holds it to the same behaviour
as the process driver wherever the two can agree.

What a test can steer: `finish(uuid, code=..., signal=..., oom_killed=...)` ends a run;
`ignore_sigterm(uuid)` makes `stop` need its SIGKILL after the grace; `calls` records every
driver call in order; `check_commands=True` makes `start` look the command up as the process
driver does (off by default, so control tests can use made-up commands).
"""

from __future__ import annotations

import asyncio
import itertools
import signal as signals
from dataclasses import dataclass, field

from .base import Exit, LaunchSpec, Liveness, RuntimeError_, Usage
from .process import check_uuid, resolve_command


@dataclass
class FakeRun:
    spec: LaunchSpec
    pid: int
    frozen: bool = False
    ignores_sigterm: bool = False
    exit: Exit | None = None
    waiters: list[asyncio.Future[None]] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.exit is None

    def end(self, exit_: Exit) -> None:
        if self.exit is not None:
            return  # a run ends once; later signals find nothing
        self.exit = exit_
        self.frozen = False
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()


class FakeHost:
    """The machine the fake runs live on, shared by every FakeDriver of one test."""

    def __init__(self, first_pid: int = 40_000) -> None:
        self.runs: dict[str, FakeRun] = {}
        self._pids = itertools.count(first_pid)

    def next_pid(self) -> int:
        return next(self._pids)


class FakeDriver:
    def __init__(
        self,
        host: FakeHost | None = None,
        *,
        enforces_memory: bool = True,
        check_commands: bool = False,
    ) -> None:
        self.host = host if host is not None else FakeHost()
        self.enforces_memory = enforces_memory
        self.check_commands = check_commands
        self.calls: list[tuple[str, str]] = []  # (method, uuid), in call order
        self._started: set[str] = set()  # runs this driver started: it knows their exit status
        self._adopted: set[str] = set()

    # -- test controls --

    def finish(
        self,
        uuid: str,
        code: int | None = 0,
        *,
        signal: int | None = None,
        oom_killed: bool = False,
    ) -> None:
        """End the run of `uuid` as if its main process exited with `code` (or by `signal`)."""
        run = self.host.runs.get(uuid)
        if run is None or not run.alive:
            raise KeyError(f"no running fake run {uuid}")
        run.end(
            Exit(code=None if signal is not None else code, signal=signal, oom_killed=oom_killed)
        )

    def ignore_sigterm(self, uuid: str) -> None:
        self.host.runs[uuid].ignores_sigterm = True

    def frozen(self, uuid: str) -> bool:
        run = self.host.runs.get(uuid)
        return run is not None and run.frozen

    def spec(self, uuid: str) -> LaunchSpec:
        return self.host.runs[uuid].spec

    # -- the protocol --

    async def start(self, spec: LaunchSpec) -> int:
        self.calls.append(("start", spec.uuid))
        check_uuid(spec.uuid)
        current = self.host.runs.get(spec.uuid)
        if current is not None and current.alive:
            raise RuntimeError_(f"{spec.uuid} is already running (pid {current.pid})")
        if not spec.argv or not spec.argv[0]:
            raise RuntimeError_("the command is empty")
        if self.check_commands:
            resolve_command(spec.argv, spec.env, spec.workdir)
        run = FakeRun(spec=spec, pid=self.host.next_pid())
        self.host.runs[spec.uuid] = run
        self._started.add(spec.uuid)
        self._adopted.discard(spec.uuid)
        return run.pid

    async def wait(self, uuid: str) -> Exit:
        self.calls.append(("wait", uuid))
        run = self.host.runs.get(uuid)
        if run is None or uuid not in self._started | self._adopted:
            raise RuntimeError_(f"no run of {uuid} was started or adopted by this driver")
        if run.exit is None:
            waiter = asyncio.get_running_loop().create_future()
            run.waiters.append(waiter)
            await waiter
        assert run.exit is not None
        if uuid in self._adopted:  # no parent to report how it ended, as for real adopted runs
            return Exit(code=None, signal=None, oom_killed=run.exit.oom_killed)
        return run.exit

    async def stop(self, uuid: str, grace_s: float) -> None:
        self.calls.append(("stop", uuid))
        run = self.host.runs.get(uuid)
        if run is None or not run.alive:
            return
        run.frozen = False  # thawed first, as a frozen process cannot act on SIGTERM
        if not run.ignores_sigterm:
            run.end(Exit(code=None, signal=signals.SIGTERM))
            return
        await asyncio.sleep(max(grace_s, 0.0))
        run.end(Exit(code=None, signal=signals.SIGKILL))

    async def freeze(self, uuid: str) -> None:
        self.calls.append(("freeze", uuid))
        self._running(uuid).frozen = True

    async def thaw(self, uuid: str) -> None:
        self.calls.append(("thaw", uuid))
        self._running(uuid).frozen = False

    def expect_start(self, uuid: str) -> None:
        self.calls.append(("expect_start", uuid))

    def notify(self, uuid: str) -> bool:
        self.calls.append(("notify", uuid))
        run = self.host.runs.get(uuid)
        return run is not None and run.alive

    def usage(self, uuid: str) -> Usage:
        run = self.host.runs.get(uuid)
        if run is None or not run.alive:
            return Usage(liveness=Liveness.GONE, pids=(), rss_bytes=0, cpu_time_ms=0)
        liveness = Liveness.FROZEN if run.frozen else Liveness.RUNNING
        return Usage(liveness=liveness, pids=(run.pid,), rss_bytes=0, cpu_time_ms=0)

    def adopt(self, uuid: str) -> bool:
        self.calls.append(("adopt", uuid))
        run = self.host.runs.get(uuid)
        if run is None or not run.alive:
            return False
        if uuid not in self._started:
            self._adopted.add(uuid)
        return True

    def running(self) -> set[str]:
        return {uuid for uuid, run in self.host.runs.items() if run.alive}

    async def remove(self, uuid: str) -> None:
        self.calls.append(("remove", uuid))
        run = self.host.runs.pop(uuid, None)
        if run is not None:
            run.end(Exit(code=None, signal=signals.SIGKILL))
        self._started.discard(uuid)
        self._adopted.discard(uuid)

    def _running(self, uuid: str) -> FakeRun:
        run = self.host.runs.get(uuid)
        if run is None or not run.alive:
            raise RuntimeError_(f"nothing of {uuid} is running")
        return run
