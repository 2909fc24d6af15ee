"""Cgroups for the process driver: where they are on this host, and one run's cgroups.

Theory of operation. A run's processes are tracked and killed as a unit through a cgroup when the
host gives us one, because a process group or session is only a convention a process can leave
(setsid), while a cgroup is not. Hosts differ, so each facility is found separately:

- cgroup v2 (`cgroup2` mount): tracking (cgroup.procs), kill (cgroup.kill, Linux 5.14), freeze
  (cgroup.freeze, Linux 5.2) and, when the memory controller is bound to v2, memory.max.
- cgroup v1 `memory` hierarchy: memory.limit_in_bytes, when v2 has no memory controller (hybrid
  hosts such as the one this was written on).
- cgroup v1 `freezer` hierarchy: freezer.state, when v2 has no cgroup.freeze.
- none of them writable (not root): `Hierarchies.none()`; the driver falls back to the run's
  session (see process.py).

Naming: `<mount>/portway/<namespace>/<uuid>`, one namespace per daemon (a hash of its data dir),
so two daemons, e.g. parallel test runs, never touch each other's trees. In v2 the tree hangs
from the mount root, because v2 forbids enabling controllers below a cgroup that holds processes
(the daemon's own). In v1, which has no such rule, it hangs below the daemon's own cgroup, so
whatever limits the daemon's supervisor set on the daemon (a systemd unit, a sandbox) still
apply to the runs it starts.

Parsing is pure (`parse_*`) and tested without a host; the rest is thin file I/O.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: The directory below every mount that holds all portway namespaces.
ROOT_NAME = "portway"


# --- pure parsing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mounts:
    """The cgroup mounts of this host, as seen from the daemon."""

    v2: Path | None  # the cgroup2 mount point
    v1_memory: Path | None  # the daemon's own cgroup directory in the v1 memory hierarchy
    v1_freezer: Path | None  # the same in the v1 freezer hierarchy
    v2_own: Path | None = None  # the same in the cgroup2 hierarchy


def _unescape(field: str) -> str:
    """/proc/self/mountinfo escapes space, tab, newline and backslash as octal (`\\040`)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mounts(mountinfo: str, self_cgroup: str) -> Mounts:
    """Find the cgroup2 mount and the daemon's own v1 memory/freezer directories.

    `mountinfo` is /proc/self/mountinfo, `self_cgroup` is /proc/self/cgroup. A v1 mount may show
    only a subtree of its hierarchy (containers bind-mount their own cgroup), so the daemon's
    path from /proc/self/cgroup is taken relative to the mount's root field.
    """
    own: dict[str, str] = {}  # v1 controller ("" for cgroup2) -> the daemon's path in it
    for line in self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                own[controller] = parts[2]

    v2: Path | None = None
    v2_own: Path | None = None
    v1: dict[str, Path] = {}
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, mount_point, fstype = _unescape(fields[3]), Path(_unescape(fields[4])), tail[0]
        if fstype == "cgroup2" and v2 is None:
            v2 = mount_point
            v2_own = _own_dir(mount_point, root, own.get("", "/"))
        elif fstype == "cgroup":
            options = set(tail[2].split(","))
            for controller in ("memory", "freezer"):
                if controller in options and controller not in v1:
                    v1[controller] = _own_dir(mount_point, root, own.get(controller, "/"))
    return Mounts(v2=v2, v1_memory=v1.get("memory"), v1_freezer=v1.get("freezer"), v2_own=v2_own)


def _own_dir(mount_point: Path, mount_root: str, own_path: str) -> Path:
    """The directory of the daemon's own cgroup below a mount."""
    if mount_root != "/" and (own_path == mount_root or own_path.startswith(mount_root + "/")):
        own_path = own_path[len(mount_root) :]
    relative = own_path.strip("/")
    return mount_point / relative if relative else mount_point


def parse_keyed(text: str) -> dict[str, int]:
    """`key value` lines (cgroup.events, memory.events, memory.oom_control) as a dict."""
    result: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            result[key] = int(value)
        except ValueError:
            continue
    return result


def parse_pids(text: str) -> list[int]:
    return [int(word) for word in text.split()]


# --- thin file I/O ------------------------------------------------------------------------------


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def _write(path: Path, text: str) -> None:
    # One write(2) per value: cgroup files act on each write, and a buffered writer could split it.
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _try_makedirs(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path / "cgroup.procs", os.W_OK)


def _enable_v2_memory(mount: Path, namespace_dir: Path) -> bool:
    """Enable the memory controller from the v2 root down to the namespace directory, so that each
    run's cgroup (a leaf below it) gets memory.max. False if the controller is not bound to v2
    (hybrid hosts) or cannot be enabled (e.g. a level holds processes)."""
    levels = [mount, *(mount / part for part in _prefixes(namespace_dir.relative_to(mount)))]
    for level in levels:
        try:
            if "memory" not in _read(level / "cgroup.controllers").split():
                return False
            if "memory" not in _read(level / "cgroup.subtree_control").split():
                _write(level / "cgroup.subtree_control", "+memory")
        except OSError:
            return False
    return True


def _prefixes(relative: Path) -> Iterator[Path]:
    """portway/ns -> portway, portway/ns (the levels whose subtree_control must list memory)."""
    parts = relative.parts
    for i in range(1, len(parts) + 1):
        yield Path(*parts[:i])


@dataclass(frozen=True)
class Hierarchies:
    """The namespace's directory in each usable cgroup facility (None: not usable here)."""

    v2: Path | None
    v2_memory: bool  # memory.max is available below `v2`
    v1_memory: Path | None
    v1_freezer: Path | None
    # The daemon's own cgroup directory in one of the hierarchies above (see prime_migration).
    own: Path | None = None

    @staticmethod
    def none() -> Hierarchies:
        """No cgroups at all: the driver tracks runs by their session instead."""
        return Hierarchies(v2=None, v2_memory=False, v1_memory=None, v1_freezer=None)

    @property
    def enforces_memory(self) -> bool:
        return self.v2_memory or self.v1_memory is not None

    @property
    def tracking(self) -> Path | None:
        """The namespace directory whose children's cgroup.procs list each run's processes."""
        return self.v2 or self.v1_freezer or self.v1_memory

    def dirs(self) -> list[Path]:
        return [d for d in (self.v2, self.v1_memory, self.v1_freezer) if d is not None]

    def run(self, uuid: str) -> RunCgroup:
        return RunCgroup(
            v2=self.v2 / uuid if self.v2 else None,
            v2_memory=self.v2_memory,
            v1_memory=self.v1_memory / uuid if self.v1_memory else None,
            v1_freezer=self.v1_freezer / uuid if self.v1_freezer else None,
        )

    def prime_migration(self) -> bool:
        """Move the daemon into the cgroup it is already in: a move that changes nothing, made
        for its side effect. The first cgroup migration after a quiet spell waits for an RCU
        grace period (~10 ms measured) while the kernel puts forks on their slow path; the
        next ones within about a grace period do not wait. A cold wake calls this (on a
        thread) before its bookkeeping, so that the new process's own joining of its cgroups
        finds the wait over or under way instead of starting it (bench/wake.py: 4-6 ms less).
        False if there was nothing to do it with, or the daemon is not listed where expected
        (then nothing is written: a wrong path must never move the daemon)."""
        if self.own is None:
            return False
        procs = self.own / "cgroup.procs"
        pid = str(os.getpid())
        try:
            if pid not in _read(procs).split():
                return False
            _write(procs, pid)
        except OSError:
            return False
        return True

    def populated_uuids(self) -> set[str]:
        """The uuids whose tracking cgroup holds at least one process, read from the host."""
        root = self.tracking
        if root is None:
            return set()
        found: set[str] = set()
        try:
            children = list(os.scandir(root))
        except FileNotFoundError:
            return found
        for entry in children:
            if entry.is_dir(follow_symlinks=False):
                try:
                    if _read(Path(entry.path) / "cgroup.procs").strip():
                        found.add(entry.name)
                except FileNotFoundError:
                    continue  # removed while we looked
        return found

    def release(self) -> None:
        """Remove the namespace directories, and any empty run cgroups left in them. Populated
        run cgroups (trees that outlive the daemon, to be adopted later) stay, and so do their
        namespace directories. `portway/` itself is shared with other daemons and stays."""
        for ns_dir in self.dirs():
            try:
                children = [Path(e.path) for e in os.scandir(ns_dir) if e.is_dir()]
            except FileNotFoundError:
                continue
            for child in children:
                _try_rmdir(child)
            _try_rmdir(ns_dir)


def _try_rmdir(path: Path) -> None:
    # Populated (EBUSY), not empty, or already gone: all mean "leave it".
    with contextlib.suppress(OSError):
        path.rmdir()


def detect(namespace: str, *, use_v2: bool = True, use_v1: bool = True) -> Hierarchies:
    """Find and create this namespace's cgroup directories on this host.

    `use_v2`/`use_v1` exist so tests can exercise the v1-only path on a hybrid host.
    """
    try:
        mounts = parse_mounts(_read(Path("/proc/self/mountinfo")), _read(Path("/proc/self/cgroup")))
    except OSError:
        return Hierarchies.none()

    v2: Path | None = None
    v2_memory = False
    if use_v2 and mounts.v2 is not None:
        candidate = mounts.v2 / ROOT_NAME / namespace
        if _try_makedirs(candidate):
            v2 = candidate
            v2_memory = _enable_v2_memory(mounts.v2, candidate)

    v1_memory: Path | None = None
    if use_v1 and not v2_memory and mounts.v1_memory is not None:
        candidate = mounts.v1_memory / ROOT_NAME / namespace
        v1_memory = candidate if _try_makedirs(candidate) else None

    v1_freezer: Path | None = None
    v2_freezes = v2 is not None and (v2 / "cgroup.freeze").exists()
    if use_v1 and not v2_freezes and mounts.v1_freezer is not None:
        candidate = mounts.v1_freezer / ROOT_NAME / namespace
        v1_freezer = candidate if _try_makedirs(candidate) else None

    # The daemon's own cgroup in a hierarchy the runs use: its cgroup.procs lists the daemon.
    own = mounts.v1_memory if v1_memory else mounts.v1_freezer if v1_freezer else None
    if own is None and v2 is not None:
        own = mounts.v2_own
    return Hierarchies(
        v2=v2, v2_memory=v2_memory, v1_memory=v1_memory, v1_freezer=v1_freezer, own=own
    )


# --- one run's cgroups --------------------------------------------------------------------------


class CgroupBusy(OSError):
    """A run's cgroup still holds processes of an earlier run."""


@dataclass(frozen=True)
class RunCgroup:
    """The cgroups of one uuid: `<namespace dir>/<uuid>` in each usable facility."""

    v2: Path | None
    v2_memory: bool
    v1_memory: Path | None
    v1_freezer: Path | None

    def dirs(self) -> list[Path]:
        return [d for d in (self.v2, self.v1_memory, self.v1_freezer) if d is not None]

    @property
    def tracking(self) -> Path | None:
        return self.v2 or self.v1_freezer or self.v1_memory

    @property
    def tracked(self) -> bool:
        return self.tracking is not None

    def create(self, memory_mb: int) -> None:
        """Fresh cgroups for a new run. An existing empty one is recreated rather than reused, so
        OOM counters and freezer state of the previous run cannot leak into this one."""
        for d in self.dirs():
            if d.exists():
                if _read(d / "cgroup.procs").strip():
                    raise CgroupBusy(errno.EBUSY, "cgroup still holds processes", str(d))
                d.rmdir()
            d.mkdir()
        self._limit_memory(memory_mb)

    def _limit_memory(self, memory_mb: int) -> None:
        limit = str(memory_mb * 1024 * 1024)
        if self.v2 is not None and self.v2_memory:
            _write(self.v2 / "memory.max", limit)
            # Without this the limit only moves the excess to swap, and nothing is enforced.
            if (self.v2 / "memory.swap.max").exists():
                _write(self.v2 / "memory.swap.max", "0")
        elif self.v1_memory is not None:
            _write(self.v1_memory / "memory.limit_in_bytes", limit)
            # memsw (memory+swap) must be >= the memory limit, so it is set after it. It exists
            # only when swap accounting is on.
            if (self.v1_memory / "memory.memsw.limit_in_bytes").exists():
                _write(self.v1_memory / "memory.memsw.limit_in_bytes", limit)

    def join_files(self) -> list[Path]:
        """The cgroup.procs files a new process writes its own pid to, before it runs app code."""
        return [d / "cgroup.procs" for d in self.dirs()]

    def pids(self) -> list[int]:
        """Live processes of the run (zombies are not listed by the kernel)."""
        tracking = self.tracking
        if tracking is None:
            return []
        try:
            return parse_pids(_read(tracking / "cgroup.procs"))
        except FileNotFoundError:
            return []

    def kill(self) -> bool:
        """SIGKILL every process at once through cgroup.kill, which also catches processes
        forked while it runs. False when the kernel has no cgroup.kill (the caller signals pids)."""
        if self.v2 is None or not (self.v2 / "cgroup.kill").exists():
            return False
        with contextlib.suppress(FileNotFoundError):  # already removed: nothing to kill
            _write(self.v2 / "cgroup.kill", "1")
        return True

    @property
    def can_freeze(self) -> bool:
        return (self.v2 is not None and (self.v2 / "cgroup.freeze").exists()) or (
            self.v1_freezer is not None
        )

    def set_frozen(self, frozen: bool) -> None:
        """Ask the kernel to freeze or thaw; it completes asynchronously (see `frozen`)."""
        if self.v2 is not None and (self.v2 / "cgroup.freeze").exists():
            _write(self.v2 / "cgroup.freeze", "1" if frozen else "0")
        elif self.v1_freezer is not None:
            _write(self.v1_freezer / "freezer.state", "FROZEN" if frozen else "THAWED")

    def frozen(self) -> bool:
        """True once every process of the run is frozen (not merely asked to be)."""
        try:
            if self.v2 is not None and (self.v2 / "cgroup.freeze").exists():
                return parse_keyed(_read(self.v2 / "cgroup.events")).get("frozen") == 1
            if self.v1_freezer is not None:
                return _read(self.v1_freezer / "freezer.state").strip() == "FROZEN"
        except FileNotFoundError:
            pass
        return False

    def freeze_requested(self) -> bool:
        """Whether a freeze was asked for (even if not complete): what thaw must undo."""
        try:
            if self.v2 is not None and (self.v2 / "cgroup.freeze").exists():
                return _read(self.v2 / "cgroup.freeze").strip() == "1"
            if self.v1_freezer is not None:
                return _read(self.v1_freezer / "freezer.state").strip() != "THAWED"
        except FileNotFoundError:
            pass
        return False

    def oom_killed(self) -> bool:
        """Whether the kernel OOM-killed a process of this run (counters are per cgroup, and the
        cgroup is recreated for each run)."""
        try:
            if self.v2 is not None and self.v2_memory:
                return parse_keyed(_read(self.v2 / "memory.events")).get("oom_kill", 0) > 0
            if self.v1_memory is not None:
                control = parse_keyed(_read(self.v1_memory / "memory.oom_control"))
                if "oom_kill" in control:  # Linux >= 4.13
                    return control["oom_kill"] > 0
                # Older kernels only count hitting the limit; with no swap that ends in a kill.
                return int(_read(self.v1_memory / "memory.failcnt")) > 0
        except (FileNotFoundError, ValueError):
            pass
        return False

    def remove(self) -> None:
        """Delete the run's cgroups. Raises OSError (EBUSY) while a process is still in one: the
        kernel may need a moment after SIGKILL, so the caller retries, bounded."""
        for d in self.dirs():
            try:
                d.rmdir()
            except FileNotFoundError:
                continue
