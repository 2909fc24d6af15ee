"""A real `portway up` for the benchmarks, and what they read of the processes it runs.

The benchmarks run as scripts (`.venv/bin/python bench/api.py`), so this directory is first on
sys.path and they import this module as `_daemon`.

The daemon gets a fresh data directory and API port 0; it is ready once its banner shows the
`export UKC_METRO=...` and `export UKC_TOKEN=...` lines, and it is stopped with SIGTERM (SIGKILL
if it hangs) whatever happens. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 20.0  # from spawning the daemon to its banner
STOP_TIMEOUT_S = 30.0  # after SIGTERM (the daemon stops its instances first), again after SIGKILL
LOG_TAIL_CHARS = 2000  # of the daemon's output, in the error when it did not become ready
BANNER_KEYS = ("UKC_METRO", "UKC_TOKEN")


class DaemonError(Exception):
    """The daemon did not become ready, or a process of the run could not be read."""


@dataclass(frozen=True)
class Daemon:
    url: str  # ends in /v1
    token: str
    pid: int


@contextmanager
def running_daemon(
    data_dir: Path, *extra_args: str, stop_timeout_s: float = STOP_TIMEOUT_S
) -> Iterator[Daemon]:
    """`portway up --data-dir DATA_DIR --port 0 EXTRA_ARGS...`, its output in `portway.log`
    next to DATA_DIR; stopped with SIGTERM (SIGKILL after `stop_timeout_s`) whatever happens."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in BANNER_KEYS:
        env.pop(name, None)
    argv = [sys.executable, "-m", "portway", "up", "--data-dir", str(data_dir), "--port", "0"]
    # Output goes to a file, not a pipe: nobody reads a pipe during the run, and a full pipe
    # would stall the daemon and the figures with it.
    log_path = data_dir.parent / "portway.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([*argv, *extra_args], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        yield wait_ready(proc, log_path)
    finally:
        stop(proc, stop_timeout_s)


def free_port_offset(public_ports: tuple[int, ...], first: int) -> int:
    """A `--port-offset` at which none of `public_ports` answers on loopback yet."""
    for offset in range(first, 40000, 17):
        if not any(_answers(port + offset) for port in public_ports):
            return offset
    raise DaemonError(f"no free port offset for {public_ports} from {first}")


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_ready(proc: subprocess.Popen[bytes], log_path: Path) -> Daemon:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        values = banner_values(log_path.read_text())
        if "UKC_TOKEN" in values:
            return Daemon(values["UKC_METRO"], values["UKC_TOKEN"], proc.pid)
        time.sleep(0.02)
    tail = log_path.read_text()[-LOG_TAIL_CHARS:]
    raise DaemonError("portway up did not become ready:\n" + tail)


def banner_values(text: str) -> dict[str, str]:
    """`export UKC_METRO=...` lines of the banner, as a dict."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.strip().removeprefix("export ").partition("=")
        if sep and key in BANNER_KEYS:
            values[key] = value
    return values


def stop(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if the daemon outlives `timeout_s`; each wait bounded by it."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout_s)


def rss_mb(pid: int) -> float:
    """VmRSS of process `pid`, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise DaemonError(f"no VmRSS for pid {pid}")


def processes_of(uuids: set[str]) -> list[int]:
    """Live processes whose environment names one of `uuids` (the daemon sets PORTWAY_UUID)."""
    wanted = {f"PORTWAY_UUID={u}".encode() for u in uuids}
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                    continue
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                if wanted & set(f.read().split(b"\0")):
                    found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


def kill_processes_of(uuids: set[str]) -> int:
    """SIGKILL every live process of `processes_of(uuids)`; how many there were."""
    left = processes_of(uuids)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(left)
