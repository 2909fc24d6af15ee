"""Static settings, loaded once at start: flags win over PORTWAY_* variables, which win over
the embedded defaults (so `portway up` with nothing else works)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 7420
# *.localhost resolves to the loopback address in curl and browsers (RFC 6761), so generated
# FQDNs work on the machine that runs Portway with no DNS set-up.
DEFAULT_DOMAIN = "portway.localhost"
DATABASE_FILE = "portway.db"
CLIENT_FILE = "client.json"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    api_host: str = DEFAULT_API_HOST
    api_port: int = DEFAULT_API_PORT
    platform_domain: str = DEFAULT_DOMAIN

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


def load(
    data_dir: Path | None = None,
    api_host: str | None = None,
    api_port: int | None = None,
    platform_domain: str | None = None,
) -> Settings:
    env = os.environ
    port = api_port if api_port is not None else int(env.get("PORTWAY_API_PORT", DEFAULT_API_PORT))
    return Settings(
        data_dir=(data_dir or default_data_dir()).expanduser().resolve(),
        api_host=api_host or env.get("PORTWAY_API_HOST", DEFAULT_API_HOST),
        api_port=port,
        platform_domain=(platform_domain or env.get("PORTWAY_DOMAIN", DEFAULT_DOMAIN)).lower(),
    )
