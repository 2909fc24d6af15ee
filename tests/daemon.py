"""A real `portway up` process for end-to-end tests: port 0, a tmp data directory, bounded waits."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from portway.control.users import add_user

START_TIMEOUT_S = 20.0
# Public ports tests publish (80, 443, and a few in 1000-12000) land in 10000-32000 with these
# offsets: below the ephemeral range, so an outgoing connection never holds one.
OFFSETS = range(9000, 20000)


def free_offset(ports: tuple[int, ...] = (80, 443, 10000)) -> int:
    """A port offset under which the usual public ports are free right now (each daemon gets
    its own, so parallel tests' gateways never meet)."""
    rng = random.SystemRandom()
    for _ in range(100):
        offset = rng.choice(OFFSETS)
        try:
            for port in ports:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", offset + port))
        except OSError:
            continue
        return offset
    raise RuntimeError("no free port offset found")


class Daemon:
    def __init__(self, data_dir: Path, *extra_args: str) -> None:
        self.data_dir = data_dir
        self.extra_args = extra_args
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""  # ends in /v1, as UKC_METRO
        self.token = ""
        self.output: list[str] = []
        self._port = "0"
        self.port_offset = free_offset()

    def gateway(self, public_port: int) -> tuple[str, int]:
        """Where the gateway listens for a public port."""
        return ("127.0.0.1", public_port + self.port_offset)

    @property
    def base(self) -> str:
        """The URL without /v1, for raw HTTP calls."""
        return self.url.removesuffix("/v1")

    def start(self) -> Daemon:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("UKC_METRO", None)
        env.pop("UKC_TOKEN", None)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "portway",
                "up",
                "--data-dir",
                str(self.data_dir),
                "--port",
                self._port,
                "--port-offset",
                str(self.port_offset),
                *self.extra_args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if "UKC_METRO=" in line:
                self.url = line.split("UKC_METRO=", 1)[1].strip()
            if "UKC_TOKEN=" in line:
                self.token = line.split("UKC_TOKEN=", 1)[1].strip()
                # Keep the same port across restarts, as a user's config would.
                self._port = self.url.rsplit(":", 1)[1].split("/", 1)[0]
                self._drain()
                return self
        self.stop()
        raise RuntimeError("portway up did not become ready:\n" + "".join(self.output))

    def _drain(self) -> None:
        """Keep reading the daemon's output after start-up: a full pipe would block it."""
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            with contextlib.suppress(ValueError, OSError):
                for line in stdout:
                    self.output.append(line)

        threading.Thread(target=pump, name="daemon-output", daemon=True).start()

    def add_user(self, name: str) -> str:
        return add_user(self.data_dir, name)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=25)
        except subprocess.TimeoutExpired:
            # A daemon that does not stop fails the test, and is not left running.
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise
        self._close()
        return code

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            self._close()
            return None if self.proc is None else self.proc.returncode
        return self.kill(signal.SIGTERM)

    def _close(self) -> None:
        # The pump thread owns reading; it ends when the pipe reaches EOF with the process.
        return
