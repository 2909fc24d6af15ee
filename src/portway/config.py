"""Static settings, loaded once at start: flags win over PORTWAY_* variables, which win over
the embedded defaults (so `portway up` with nothing else works)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import platformdirs

T = TypeVar("T")

DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 7420
# *.localhost resolves to the loopback address in curl and browsers (RFC 6761), so generated
# FQDNs work on the machine that runs Portway with no DNS set-up.
DEFAULT_DOMAIN = "portway.localhost"
DEFAULT_GATEWAY_HOST = "127.0.0.1"
# Without the right to bind ports below 1024, public port P listens on P + 8000 (443 → 8443,
# 80 → 8080), and every URL Portway prints says so.
UNPRIVILEGED_PORT_OFFSET = 8000
DATABASE_FILE = "portway.db"
CLIENT_FILE = "client.json"
# Work held for an instance waking from standby fails after this long (503 / close).
DEFAULT_WAKE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    api_host: str = DEFAULT_API_HOST
    api_port: int = DEFAULT_API_PORT
    platform_domain: str = DEFAULT_DOMAIN
    gateway_host: str = DEFAULT_GATEWAY_HOST
    port_offset: int = 0
    wake_timeout_s: float = DEFAULT_WAKE_TIMEOUT_S

    @property
    def database(self) -> Path:
        return self.data_dir / DATABASE_FILE

    @property
    def client_file(self) -> Path:
        return self.data_dir / CLIENT_FILE


def default_data_dir() -> Path:
    env = os.environ.get("PORTWAY_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("portway", appauthor=False))


def default_port_offset() -> int:
    """0 where the daemon may bind low ports (root, or CAP_NET_BIND_SERVICE via sysctl)."""
    try:
        lowest = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        lowest = 1024
    return 0 if os.geteuid() == 0 or lowest <= 80 else UNPRIVILEGED_PORT_OFFSET


def load(
    data_dir: Path | None = None,
    api_host: str | None = None,
    api_port: int | None = None,
    platform_domain: str | None = None,
    gateway_host: str | None = None,
    port_offset: int | None = None,
    wake_timeout_s: float | None = None,
) -> Settings:
    env = os.environ
    port = api_port if api_port is not None else int(env.get("PORTWAY_API_PORT", DEFAULT_API_PORT))
    if port_offset is None:
        raw = env.get("PORTWAY_PORT_OFFSET")
        port_offset = _env_number("PORTWAY_PORT_OFFSET", raw, int) if raw else None
        port_offset = default_port_offset() if port_offset is None else port_offset
    if not 0 <= port_offset <= 65535 - 443:
        raise ValueError(f"port offset {port_offset} is out of range (0-{65535 - 443})")
    if wake_timeout_s is None:
        raw = env.get("PORTWAY_WAKE_TIMEOUT_S")
        wake_timeout_s = _env_number("PORTWAY_WAKE_TIMEOUT_S", raw, float) if raw else None
        wake_timeout_s = DEFAULT_WAKE_TIMEOUT_S if wake_timeout_s is None else wake_timeout_s
    if not 0 < wake_timeout_s <= 3600:
        raise ValueError(f"wake timeout {wake_timeout_s} s is out of range (0-3600 s)")
    return Settings(
        data_dir=(data_dir or default_data_dir()).expanduser().resolve(),
        api_host=api_host or env.get("PORTWAY_API_HOST", DEFAULT_API_HOST),
        api_port=port,
        platform_domain=(platform_domain or env.get("PORTWAY_DOMAIN", DEFAULT_DOMAIN)).lower(),
        gateway_host=gateway_host or env.get("PORTWAY_GATEWAY_HOST", DEFAULT_GATEWAY_HOST),
        port_offset=port_offset,
        wake_timeout_s=wake_timeout_s,
    )


def _env_number(name: str, raw: str, kind: Callable[[str], T]) -> T:
    """`raw` (the value of variable `name`) as a number, or an error that names the variable."""
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
