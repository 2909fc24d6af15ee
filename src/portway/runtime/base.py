"""The runtime driver protocol: how the control plane runs instances, whatever runs them.

The process driver (process.py) runs an instance as a process tree on this host; a
network-namespace driver and freeze/thaw for scale-to-zero slot in behind the same calls, so
the callers (control/) never change. Every driver is checked by one contract suite.

Identity: an instance is known to a driver only by its uuid. A driver keeps whatever it needs
(cgroup, process group, pid and start time) where a restarted daemon can find it again, so
that `adopt` re-attaches to trees that survived a crash of the daemon (kill -9).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start one run of an instance."""

    uuid: str
    argv: Sequence[str]  # the command and its arguments, already resolved from image and request
    workdir: Path  # the instance's own writable copy of its image's files
    env: Mapping[str, str]  # the complete environment (nothing is inherited from the daemon)
    memory_mb: int  # enforced where the host allows it (cgroups), always reported
    log_path: Path  # stdout and stderr are appended here, by the process itself


class Liveness(enum.Enum):
    RUNNING = "running"
    FROZEN = "frozen"
    GONE = "gone"


@dataclass(frozen=True)
class Exit:
    """How a run ended. `code`/`signal` are None when they cannot be known (a tree adopted after
    a daemon restart has no parent to report them)."""

    code: int | None
    signal: int | None
    oom_killed: bool = False


@dataclass(frozen=True)
class Usage:
    """Point-in-time figures for a run (for the metrics endpoint)."""

    liveness: Liveness
    pids: tuple[int, ...]
    rss_bytes: int
    cpu_time_ms: int


class RuntimeError_(Exception):
    """A driver could not do what was asked; the message says what and why (e.g. the command
    does not exist). Named with a trailing underscore to avoid shadowing the builtin."""


class RuntimeDriver(Protocol):
    #: Whether memory limits are enforced on this host (reads report it).
    enforces_memory: bool

    async def start(self, spec: LaunchSpec) -> int:
        """Start the run and return the main pid once the process exists (not when it is
        ready). Raises RuntimeError_ if it cannot be started (missing command, bad workdir)."""

    async def wait(self, uuid: str) -> Exit:
        """Resolve when the main process of the current run has exited and every other process
        of its tree is gone (the driver kills leftovers). Works for adopted runs too."""

    async def stop(self, uuid: str, grace_s: float) -> None:
        """SIGTERM to the whole tree, SIGKILL to whatever is left after `grace_s`; return when
        nothing of it runs. A no-op for a uuid with nothing running."""

    async def freeze(self, uuid: str) -> None:
        """Stop the tree from being scheduled, keeping memory and sockets (scale to zero)."""

    async def thaw(self, uuid: str) -> None: ...

    def expect_start(self, uuid: str) -> None:
        """A start of `uuid` is coming with work waiting on it (a cold wake): prepare the host
        in the background so the start waits less. Never fails; may do nothing."""

    def notify(self, uuid: str) -> bool:
        """Tell the tree it is about to be scaled to zero: SIGWINCH to every process (its
        default action is nothing, so an app that does not listen is not harmed). False if
        nothing runs."""

    def usage(self, uuid: str) -> Usage: ...

    def adopt(self, uuid: str) -> bool:
        """After a daemon restart: re-attach to a tree of this uuid that survived. False if
        nothing of it runs."""

    def running(self) -> set[str]:
        """The uuids of every tree this daemon's driver has running now (found from the host,
        not from memory), so the reconciler can kill what no instance owns."""

    async def remove(self, uuid: str) -> None:
        """Kill anything left of the uuid and release what the driver holds for it."""
