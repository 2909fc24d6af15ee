"""Helpers shared by the runtime tests: real drivers on a private namespace, bounded waits.

Every ProcessDriver a test makes comes from a `ProcessHost`, whose `cleanup()` (run in a
finally) kills whatever is left, removes the namespace's cgroups and checks that nothing of
them remains on the host.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid as uuids
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from portway.runtime.base import LaunchSpec
from portway.runtime.cgroups import Hierarchies, detect
from portway.runtime.process import ProcessDriver

T = TypeVar("T")

#: How the process driver is exercised: whatever the host offers, cgroup v1 only, no cgroups.
MODES = ("auto", "v1", "none")
PATH = "/usr/local/bin:/usr/bin:/bin"
PY = sys.executable


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run one test body on a fresh event loop, bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def eventually(check: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll a no-argument callable until it returns truthy, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def log_contains(path: Path, text: str, timeout: float = 10.0) -> None:
    def found() -> bool:
        return path.exists() and text.encode() in path.read_bytes()

    await eventually(found, timeout, f"{text!r} in {path}")


def new_uuid() -> str:
    return str(uuids.uuid4())


class ProcessHost:
    """One namespace and state dir on this host; each `driver()` is a daemon (re)start."""

    def __init__(self, tmp_path: Path, mode: str = "auto") -> None:
        self.tmp_path = tmp_path
        self.mode = mode
        self.namespace = uuids.uuid4().hex[:16]
        self.state_dir = tmp_path / "state"
        self.drivers: list[ProcessDriver] = []

    def hierarchies(self) -> Hierarchies:
        if self.mode == "none":
            return Hierarchies.none()
        return detect(self.namespace, use_v2=self.mode != "v1")

    def driver(self) -> ProcessDriver:
        d = ProcessDriver(self.namespace, self.state_dir, cgroups=self.hierarchies())
        self.drivers.append(d)
        return d

    def spec(
        self,
        argv: Sequence[str],
        *,
        uuid: str | None = None,
        env: Mapping[str, str] | None = None,
        memory_mb: int = 256,
    ) -> LaunchSpec:
        uuid = uuid or new_uuid()
        workdir = self.tmp_path / "work" / uuid
        workdir.mkdir(parents=True, exist_ok=True)
        return LaunchSpec(
            uuid=uuid,
            argv=list(argv),
            workdir=workdir,
            env=dict(env) if env is not None else {"PATH": PATH},
            memory_mb=memory_mb,
            log_path=self.tmp_path / "logs" / f"{uuid}.log",
        )

    def cleanup(self) -> None:
        """Kill and remove everything of the namespace, then check the host is clean."""
        survivor = self.driver()
        leftovers = survivor.running()
        for path in self.state_dir.glob("*.json"):
            leftovers.add(path.stem)

        async def remove_all() -> None:
            for uuid in leftovers:
                await survivor.remove(uuid)

        run(remove_all(), timeout=30)
        for d in self.drivers:
            d.close()
        dirs = survivor.cgroups.dirs()
        assert not [d for d in dirs if d.exists()], f"cgroup dirs left behind: {dirs}"
        assert not survivor.running()
