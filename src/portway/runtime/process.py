"""The process driver: each run of an instance is a process tree on this host.

Theory of operation.

Start. The daemon has threads, so nothing may run in the child between fork and exec (no
preexec_fn). The child is therefore a tiny shell that writes its own pid into the run's
cgroup.procs files and then execs the command, so the process is in its cgroups before a single
instruction of app code runs and every process it forks is tracked. The shell is dash where
present: it is fast (about 1 ms) and, apart from the variables listed in `_SHELL_MANAGED`,
passes its environment on untouched; those, and names that are not shell identifiers (which a
shell drops), are handed to the command through env(1) instead, so the app sees exactly
`spec.env`. The child's stdout and stderr are the log file itself, opened O_APPEND by the daemon
and inherited: no pipe runs through the daemon, so the app keeps running and logging if the
daemon dies. The command is looked up before spawning (PATH from spec.env, relative names from
the workdir), so a missing binary is an error of `start` and never a run that looks alive.

Tracking. A run is its cgroup (see cgroups.py). Without cgroups it is the session the child
leads (start_new_session): every process whose session id is the main pid. A session can be
left with setsid, a cgroup cannot; that is the price of running without cgroups.

Identity across a daemon restart. `<state_dir>/<uuid>.json` holds the main pid and its start
time (/proc/<pid>/stat field 22, clock ticks since boot). A pid whose start time differs is a
different process that reused the number, so `adopt` never attaches to a stranger.

Exit. For a run this driver started, the main process is its child: a pidfd (Linux 5.3) becomes
readable when it exits, and the event loop watches it (no thread, no SIGCHLD handler), then
Popen.poll() reaps it for its status. An adopted run has another parent, so only the fact of its
exit can be known. Either way, once the main process is gone, whatever is left of the tree is
killed before `wait` resolves: a run is over when its main process is. For the same reason
`start` kills what an earlier run of the uuid left behind, and `adopt` what a run that ended
while no daemon watched it left behind.

Limits. The lookup cannot see every failure of exec: a script whose interpreter is missing still
ends as exit 127 (126: not executable) through `wait`, and a file without a #! line is run by the
shell as a script, as execvp(3) does. Entering a cgroup that refuses the pid ends the run with
ENTER_FAILED and a line in the log. Without dash, a bash /bin/sh adds SHLVL to the environment.

Every wait here is bounded except `wait` itself, whose length is the app's lifetime; its caller
bounds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .base import Exit, LaunchSpec, Liveness, RuntimeError_, Usage
from .cgroups import CgroupBusy, Hierarchies, RunCgroup, detect

#: After SIGKILL only the kernel's teardown remains; longer means a task stuck in the kernel (D).
KILL_TIMEOUT_S = 5.0
#: Freezing completes once every task reaches a safe point; a task in D state can delay it.
FREEZE_TIMEOUT_S = 5.0

_SHELL = "/bin/dash" if os.path.exists("/bin/dash") else "/bin/sh"
_ENV_BIN = shutil.which("env", path="/usr/bin:/bin") or "/usr/bin/env"

#: Variables the shell rewrites or refuses on import (dash: IFS reset, OPTIND must be a number,
#: PPID and PWD replaced; bash as /bin/sh: SHLVL and _). They reach the app through env(1).
_SHELL_MANAGED = frozenset({"IFS", "OPTIND", "PPID", "PWD", "SHLVL", "_"})
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

#: Exit code of the entry shell when it could not enter a cgroup (the app never ran; the reason
#: is in the log).
ENTER_FAILED = 125

# sh -c _ENTER sh <n> <cgroup.procs x n> <command> <args>...
# `echo` is a builtin: entering the cgroups costs no fork. PWD is unset because the shell exports
# one of its own; if spec.env has PWD, env(1) sets it back.
_ENTER = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do '
    f'echo $$ > "$1" || {{ echo "portway: cannot enter cgroup $1" >&2; exit {ENTER_FAILED}; }}; '
    "shift; n=$((n - 1)); done; "
    'unset PWD; exec "$@"'
)


# --- /proc --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat this driver uses (field numbers as in proc(5))."""

    state: str  # 3
    pgrp: int  # 5
    session: int  # 6
    cpu_ticks: int  # 14-17: utime + stime + cutime + cstime
    start_time: int  # 22: clock ticks after boot


def parse_stat(text: str) -> ProcStat:
    # comm (field 2) may hold spaces and parentheses: split after its last ')'.
    rest = text[text.rindex(")") + 2 :].split()
    return ProcStat(
        state=rest[0],
        pgrp=int(rest[2]),
        session=int(rest[3]),
        cpu_ticks=sum(int(v) for v in rest[11:15]),
        start_time=int(rest[19]),
    )


def read_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return parse_stat(f.read())
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0  # gone, or a zombie (no VmRSS line)


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcId:
    """A process, told apart from a later one that reuses its pid by its start time."""

    pid: int
    start_time: int

    def stat(self) -> ProcStat | None:
        stat = read_stat(self.pid)
        return stat if stat is not None and stat.start_time == self.start_time else None

    def alive(self) -> bool:
        stat = self.stat()
        return stat is not None and stat.state not in ("Z", "X")


def _session_members(leader: ProcId) -> list[int]:
    """Live processes of the session `leader` created (start_new_session), leader included.

    The kernel does not hand out a pid while it still names a live session, so if another
    process now holds the leader's pid, our session is over and its members are all gone;
    the check keeps us from taking a stranger's new session for ours."""
    occupant = read_stat(leader.pid)
    if occupant is not None and occupant.start_time != leader.start_time:
        return []
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = read_stat(int(entry.name))
        if stat is not None and stat.session == leader.pid and stat.state not in ("Z", "X"):
            members.append(int(entry.name))
    return members


# --- command lookup -----------------------------------------------------------------------------


def resolve_command(argv: Sequence[str], env: Mapping[str, str], workdir: Path) -> str:
    """The absolute path the run will exec, as the app's own environment would find it: PATH
    from `env` (the daemon's is irrelevant), relative paths and PATH entries from `workdir`.
    Raises RuntimeError_ naming the command when there is none."""
    if not argv or not argv[0]:
        raise RuntimeError_("the command is empty")
    name = argv[0]
    if "/" in name:
        candidates = [workdir / name]
    else:
        search = env.get("PATH", os.defpath)
        candidates = [workdir / (d or ".") / name for d in search.split(":")]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)
    where = f"in PATH={env.get('PATH', os.defpath)!r}" if "/" not in name else f"in {workdir}"
    raise RuntimeError_(f"command not found: {name!r} ({where})")


def check_uuid(uuid: str) -> None:
    """A uuid names a cgroup directory and a state file: it must be one plain path component."""
    if not _SAFE_NAME.fullmatch(uuid):
        raise RuntimeError_(f"invalid uuid for the process driver: {uuid!r}")


def _split_env(env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The part of `env` the entry shell can carry unchanged, and NAME=VALUE words for env(1)."""
    shell_env: dict[str, str] = {}
    through_env: list[str] = []
    for name, value in env.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise RuntimeError_(f"invalid environment variable {name!r}")
        if _SHELL_NAME.fullmatch(name) and name not in _SHELL_MANAGED:
            shell_env[name] = value
        else:
            through_env.append(f"{name}={value}")
    return shell_env, through_env


# --- waiting ------------------------------------------------------------------------------------


# The scale-to-zero notice (`notify_time_ms`): documented in docs/, given to apps in
# PORTWAY_STANDBY_SIGNAL. Ignored by default, unlike SIGUSR1/2 which would end an app.
STANDBY_SIGNAL: Final = signal.SIGWINCH


async def _until(condition: Callable[[], bool], deadline: float) -> bool:
    """Poll `condition` until it holds (True) or `deadline` (monotonic) passes (False). Used
    only for short kernel-side transitions (teardown, freezing), so it starts at 1 ms."""
    delay = 0.001
    while not condition():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.025)
    return True


async def _pidfd_readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    readable = loop.create_future()

    def on_readable() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await readable
    finally:
        loop.remove_reader(fd)


# --- the driver ---------------------------------------------------------------------------------


@dataclass
class _Run:
    """What the driver holds for one run of a uuid."""

    uuid: str
    main: ProcId | None  # None: a cgroup with processes but no state file (crash while starting)
    cgroup: RunCgroup
    popen: subprocess.Popen[bytes] | None = None  # None when adopted: not our child
    exit: Exit | None = None


class ProcessDriver:
    """Runs instances as process trees on this host (see the module docstring)."""

    def __init__(
        self, namespace: str, state_dir: Path, *, cgroups: Hierarchies | None = None
    ) -> None:
        """`namespace` keeps this daemon's cgroups apart from any other's (the daemon passes a
        short hash of its data dir); `state_dir` is where run identities persist across a
        restart. `cgroups` overrides detection (tests use it to force the fallbacks)."""
        if not _SAFE_NAME.fullmatch(namespace):
            raise ValueError(f"invalid namespace {namespace!r}")
        self.namespace = namespace
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.cgroups = cgroups if cgroups is not None else detect(namespace)
        self.enforces_memory: bool = self.cgroups.enforces_memory
        self._runs: dict[str, _Run] = {}
        self._stop_locks: dict[str, asyncio.Lock] = {}

    def close(self) -> None:
        """Give back the namespace's empty cgroup directories (trees still running stay, for a
        later `adopt`). For a clean shutdown and for tests; the driver is unusable afterwards."""
        self.cgroups.release()

    # -- start --

    async def start(self, spec: LaunchSpec) -> int:
        check_uuid(spec.uuid)
        existing = self._handle(spec.uuid)
        if existing is not None and not self._main_exited(existing):
            raise RuntimeError_(f"{spec.uuid} is already running (pid {self._pid_of(existing)})")
        # A run is over when its main process is (see wait), so what it left behind is killed
        # rather than let into the new run's cgroup. (Usually nothing is left: no await then.)
        if (
            existing is not None
            and self._tree_pids(existing)
            and not await self._killed_by(existing, time.monotonic() + KILL_TIMEOUT_S)
        ):
            raise RuntimeError_(f"leftovers of an earlier run of {spec.uuid} survived SIGKILL")
        if not spec.workdir.is_dir():
            raise RuntimeError_(f"workdir {spec.workdir} is not a directory")
        if spec.memory_mb < 1:
            raise RuntimeError_(f"memory_mb must be at least 1, not {spec.memory_mb}")
        command = resolve_command(spec.argv, spec.env, spec.workdir)
        shell_env, through_env = _split_env(spec.env)

        cgroup = self.cgroups.run(spec.uuid)
        try:
            cgroup.create(spec.memory_mb)
        except CgroupBusy as e:
            raise RuntimeError_(
                f"processes of an earlier run of {spec.uuid} are still in {e.filename}; "
                "remove() it first"
            ) from e
        except OSError as e:
            raise RuntimeError_(f"cannot set up cgroups for {spec.uuid}: {e}") from e

        joins = [str(p) for p in cgroup.join_files()]
        prefix = [_ENV_BIN, "--", *through_env] if through_env else []
        argv = [_SHELL, "-c", _ENTER, "sh", str(len(joins)), *joins, *prefix]
        argv += [command, *spec.argv[1:]]
        popen = self._spawn(spec, argv, shell_env, cgroup)

        # The child is unreaped until we poll it, so its /proc entry (and start time) exists.
        stat = read_stat(popen.pid)
        main = ProcId(popen.pid, stat.start_time if stat else 0)
        run = self._runs[spec.uuid] = _Run(spec.uuid, main, cgroup, popen)
        try:
            self._save_identity(spec.uuid, main)
        except OSError as e:
            # A run nobody could find again after a restart must not be left running.
            self._kill_tree(run)
            raise RuntimeError_(f"cannot record {spec.uuid} in {self.state_dir}: {e}") from e
        return popen.pid

    def _spawn(
        self, spec: LaunchSpec, argv: list[str], env: dict[str, str], cgroup: RunCgroup
    ) -> subprocess.Popen[bytes]:
        log_fd = _open_log(spec.log_path)
        try:
            return subprocess.Popen(
                argv,
                cwd=spec.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,  # its own session and process group: the no-cgroup tree
                close_fds=True,
            )
        except (OSError, ValueError) as e:
            with contextlib.suppress(OSError):
                cgroup.remove()
            raise RuntimeError_(f"cannot start {spec.uuid}: {e}") from e
        finally:
            os.close(log_fd)  # the child holds its own copy

    # -- identity on disk --

    def _state_file(self, uuid: str) -> Path:
        return self.state_dir / f"{uuid}.json"

    def _save_identity(self, uuid: str, main: ProcId) -> None:
        # Written then renamed, so a daemon killed mid-write leaves the old file or the new one.
        # No fsync: the runs do not survive a host crash either, only a daemon crash.
        path = self._state_file(uuid)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": main.pid, "start_time": main.start_time}))
        os.replace(tmp, path)

    def _load_identity(self, uuid: str) -> ProcId | None:
        try:
            data = json.loads(self._state_file(uuid).read_text())
            return ProcId(int(data["pid"]), int(data["start_time"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # -- finding a run --

    def _handle(self, uuid: str) -> _Run | None:
        """The run of `uuid`: the one held in memory, else one rebuilt from the host (state file
        and cgroup) without adopting it, so stop/remove/usage work on any tree of ours."""
        run = self._runs.get(uuid)
        if run is not None:
            return run
        cgroup = self.cgroups.run(uuid)
        main = self._load_identity(uuid)
        if main is None and not cgroup.pids():
            return None
        return _Run(uuid, main, cgroup)

    def _require(self, uuid: str) -> _Run:
        check_uuid(uuid)
        run = self._handle(uuid)
        if run is None or not self._tree_alive(run):
            raise RuntimeError_(f"nothing of {uuid} is running")
        return run

    @staticmethod
    def _pid_of(run: _Run) -> int | None:
        return run.main.pid if run.main else None

    # -- the tree --

    def _main_exited(self, run: _Run) -> bool:
        if run.popen is not None:
            return run.popen.poll() is not None  # also reaps it
        return run.main is None or not run.main.alive()

    def _tree_pids(self, run: _Run) -> list[int]:
        """Live processes of the run. The main process counts even before it appears in its
        cgroup: start() returns before the entry shell has written itself there."""
        if run.cgroup.tracked:
            pids = set(run.cgroup.pids())
        elif run.main is not None:
            pids = set(_session_members(run.main))
        else:
            pids = set()
        if run.main is not None and run.main.alive():
            pids.add(run.main.pid)
        return sorted(pids)

    def _tree_alive(self, run: _Run) -> bool:
        return not self._main_exited(run) or bool(self._tree_pids(run))

    def _gone(self, run: _Run) -> bool:
        return self._main_exited(run) and not self._tree_pids(run)

    def _signal_tree(self, run: _Run, sig: signal.Signals) -> None:
        """Send `sig` once to every process of the tree (twice would matter: many apps take a
        second SIGTERM as "quit now, skip the clean shutdown")."""
        pids = self._tree_pids(run)
        if not run.cgroup.tracked and run.main is not None and run.main.pid in pids:
            # The main process's group by killpg, which also reaches a child forked since the
            # /proc scan; the session's other groups one process at a time.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.main.pid, sig)
            pids = [p for p in pids if (s := read_stat(p)) is not None and s.pgrp != run.main.pid]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _kill_tree(self, run: _Run) -> None:
        """SIGKILL everything. A v1-frozen task cannot die until thawed, so thaw first."""
        if run.cgroup.freeze_requested():
            run.cgroup.set_frozen(False)
        # cgroup.kill is atomic where the kernel has it; the signals cover older kernels, and a
        # main process whose entry shell has not yet written itself into its cgroup.
        run.cgroup.kill()
        self._signal_tree(run, signal.SIGKILL)

    async def _killed_by(self, run: _Run, deadline: float) -> bool:
        """SIGKILL until nothing is left (repeated: a process may fork between listing and
        signalling when there is no cgroup.kill)."""

        def gone_or_kill() -> bool:
            if self._gone(run):
                return True
            self._kill_tree(run)
            return False

        return await _until(gone_or_kill, deadline)

    async def _await_main_exit(self, run: _Run) -> None:
        """Return once the main process has exited (reaped, if it is our child)."""
        if run.main is None or self._main_exited(run):
            return
        try:
            fd = os.pidfd_open(run.main.pid)
        except ProcessLookupError:
            return  # exited and reaped between the check and the open
        except OSError:  # no pidfd (Linux < 5.3, seccomp): poll, every 50 ms at most
            while not self._main_exited(run):
                await asyncio.sleep(0.05)
            return
        try:
            # The pidfd pins the pid: if it is still our process now, it is the one we watch.
            if not self._main_exited(run):
                await _pidfd_readable(fd)
        finally:
            os.close(fd)
        self._main_exited(run)  # reap our child now that it has exited

    def _exit_of(self, run: _Run) -> Exit:
        oom = run.cgroup.oom_killed()
        code = run.popen.returncode if run.popen is not None else None
        if code is None:
            return Exit(code=None, signal=None, oom_killed=oom)
        if code < 0:
            return Exit(code=None, signal=-code, oom_killed=oom)
        return Exit(code=code, signal=None, oom_killed=oom)

    # -- the protocol --

    async def wait(self, uuid: str) -> Exit:
        run = self._runs.get(uuid)
        if run is None:
            raise RuntimeError_(f"no run of {uuid} was started or adopted by this driver")
        if run.exit is None:
            await self._await_main_exit(run)
            if not await self._killed_by(run, time.monotonic() + KILL_TIMEOUT_S):
                raise RuntimeError_(f"processes of {uuid} survived SIGKILL: {self._tree_pids(run)}")
            if run.exit is None:
                run.exit = self._exit_of(run)  # reads the OOM counter: before the rmdir below
                if self._runs.get(uuid) is run:  # not a newer run's cgroup (no await since)
                    _removed(run.cgroup)  # the empty cgroup has no more use; a busy one waits
        return run.exit

    async def stop(self, uuid: str, grace_s: float) -> None:
        check_uuid(uuid)
        # One stop at a time per uuid: a second concurrent stop waits for the first instead of
        # sending a second SIGTERM (which many apps take as "quit now, skip the clean shutdown").
        async with self._stop_locks.setdefault(uuid, asyncio.Lock()):
            run = self._handle(uuid)
            if run is None or self._gone(run):
                return
            await self._thaw_run(run)  # a frozen process cannot act on SIGTERM
            self._signal_tree(run, signal.SIGTERM)
            grace_s = max(grace_s, 0.0)
            deadline = time.monotonic() + grace_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._await_main_exit(run), grace_s)
            if await _until(lambda: self._gone(run), deadline):
                return
            if not await self._killed_by(run, time.monotonic() + KILL_TIMEOUT_S):
                raise RuntimeError_(f"processes of {uuid} survived SIGKILL: {self._tree_pids(run)}")

    async def freeze(self, uuid: str) -> None:
        run = self._require(uuid)
        deadline = time.monotonic() + FREEZE_TIMEOUT_S
        if run.cgroup.can_freeze:
            run.cgroup.set_frozen(True)
            frozen = await _until(run.cgroup.frozen, deadline)
        else:
            self._signal_tree(run, signal.SIGSTOP)
            frozen = await _until(lambda: self._all_stopped(run), deadline)
        if not frozen:
            await self._thaw_run(run)  # half-frozen helps nobody: leave it running
            raise RuntimeError_(f"{uuid} did not freeze within {FREEZE_TIMEOUT_S} s")

    async def thaw(self, uuid: str) -> None:
        await self._thaw_run(self._require(uuid))

    def expect_start(self, uuid: str) -> None:
        # On a thread: the kernel makes the caller of the first migration wait (see there).
        threading.Thread(
            target=self.cgroups.prime_migration, name="cgroup-prime", daemon=True
        ).start()

    def notify(self, uuid: str) -> bool:
        check_uuid(uuid)
        run = self._handle(uuid)
        if run is None or self._gone(run):
            return False
        self._signal_tree(run, STANDBY_SIGNAL)
        return True

    async def _thaw_run(self, run: _Run) -> None:
        if run.cgroup.can_freeze:
            if run.cgroup.freeze_requested():
                run.cgroup.set_frozen(False)
                deadline = time.monotonic() + FREEZE_TIMEOUT_S
                if not await _until(lambda: not run.cgroup.freeze_requested(), deadline):
                    raise RuntimeError_(f"{run.uuid} did not thaw within {FREEZE_TIMEOUT_S} s")
        elif self._any_stopped(run):
            self._signal_tree(run, signal.SIGCONT)

    def _any_stopped(self, run: _Run) -> bool:
        return any((s := read_stat(pid)) and s.state == "T" for pid in self._tree_pids(run))

    def _all_stopped(self, run: _Run) -> bool:
        states = [read_stat(pid) for pid in self._tree_pids(run)]
        return all(s is None or s.state in ("T", "Z", "X") for s in states)

    def usage(self, uuid: str) -> Usage:
        check_uuid(uuid)
        run = self._handle(uuid)
        pids = tuple(self._tree_pids(run)) if run is not None else ()
        if run is None or not pids:
            return Usage(liveness=Liveness.GONE, pids=(), rss_bytes=0, cpu_time_ms=0)
        stats = [s for s in (read_stat(pid) for pid in pids) if s is not None]
        if run.cgroup.can_freeze:
            frozen = run.cgroup.frozen()
        else:
            frozen = bool(stats) and all(s.state == "T" for s in stats)
        # cutime/cstime are included: a reaped child's CPU time was still this instance's, and
        # it keeps the figure from falling when a short-lived child exits.
        ticks = sum(s.cpu_ticks for s in stats)
        return Usage(
            liveness=Liveness.FROZEN if frozen else Liveness.RUNNING,
            pids=pids,
            rss_bytes=sum(_rss_bytes(pid) for pid in pids),
            cpu_time_ms=ticks * 1000 // _TICKS_PER_S,
        )

    def adopt(self, uuid: str) -> bool:
        """Re-attach to the run recorded in the state file, if its main process (same pid and
        start time) still runs. A run whose main process died is not adopted, and whatever it
        left running is killed."""
        check_uuid(uuid)
        current = self._runs.get(uuid)
        if current is not None and not self._main_exited(current):
            return True
        main = self._load_identity(uuid)
        if main is None or not main.alive():
            # The run ended while no daemon watched it; what it left behind is killed now (as
            # wait would have), so that False holds: nothing of it runs, or will in a moment.
            leftovers = _Run(uuid, main, self.cgroups.run(uuid))
            if self._tree_pids(leftovers):
                self._kill_tree(leftovers)
            return False
        self._runs[uuid] = _Run(uuid, main, self.cgroups.run(uuid))
        return True

    def running(self) -> set[str]:
        found = self.cgroups.populated_uuids()
        # State files cover runs without cgroups, and a run whose entry shell has not yet
        # written itself into its cgroup.
        for path in self.state_dir.glob("*.json"):
            if path.stem in found:
                continue
            main = self._load_identity(path.stem)
            if main is None:
                continue
            if main.alive() or (not self.cgroups.tracking and _session_members(main)):
                found.add(path.stem)
        return found

    async def remove(self, uuid: str) -> None:
        check_uuid(uuid)
        run = self._handle(uuid)
        if run is not None and not await self._killed_by(run, time.monotonic() + KILL_TIMEOUT_S):
            raise RuntimeError_(f"processes of {uuid} survived SIGKILL: {self._tree_pids(run)}")
        cgroup = self.cgroups.run(uuid)
        # The kernel may report a cgroup busy for a moment after its last task died.
        if not await _until(lambda: _removed(cgroup), time.monotonic() + KILL_TIMEOUT_S):
            raise RuntimeError_(f"cannot remove the cgroups of {uuid}: {cgroup.dirs()}")
        self._state_file(uuid).unlink(missing_ok=True)
        self._runs.pop(uuid, None)
        self._stop_locks.pop(uuid, None)


def _removed(cgroup: RunCgroup) -> bool:
    try:
        cgroup.remove()
    except OSError:
        return False
    return True


def _open_log(path: Path) -> int:
    """The log file, for appending by the child (O_APPEND: offsets stay absolute, see logs.py)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o640)
    except OSError as e:
        raise RuntimeError_(f"cannot open the log {path}: {e}") from e
