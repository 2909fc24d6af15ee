"""The gateway's request path, compiled by mypyc, and the guard that never runs a stale build.

Why: the gateway is a data plane written in Python. Compiled by mypyc (native classes, direct
calls between them, attributes in C structs), the same modules cost about 40% less CPU per
request (bench/gateway.py, "cpu us/req"). Nothing is written twice: the compiled modules are
built from these very `.py` files, which stay the pure-Python modules.

How it fits together:
* `setup.py` compiles MODULES when the package is built (`pip install`, `make`), unless
  `PORTWAY_PURE=1` is set at build time or no C compiler works, and writes RECORD: each
  source's SHA-256 as it was compiled.
* Python imports an extension module before a `.py` of the same name, so after an edit the
  old build would run instead of the new source. `select()` (called by `portway/__init__.py`,
  before any of MODULES is imported) compares the sources with RECORD. When one differs, when
  RECORD is missing, or when `PORTWAY_PURE=1` is set, every module of MODULES is loaded from its
  `.py` instead: all or none, because a pure module cannot subclass a compiled class.
* `mode` says which one runs; `portway up` prints it.

This module is loaded by `setup.py` too, by path and outside the package: standard library only.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Final

# The modules compiled, as paths under the `portway` package: the HTTP and TCP request paths
# and what they call per request or per connection.
MODULES: Final = (
    "gateway/http/head.py",
    "gateway/http/proxy.py",
    "gateway/http/responses.py",
    "gateway/balancer.py",
    "gateway/context.py",
    "gateway/activity.py",
    "gateway/accesslog.py",
    "gateway/tcp.py",
    "gateway/tlsconn.py",
    "gateway/wake.py",
    "model/snapshot.py",  # Endpoint and Route: read on every request
)
RECORD: Final = "compiled.json"  # beside this file: {module path: SHA-256 of the source}
PURE_ENV: Final = "PORTWAY_PURE"

PACKAGE_DIR: Final = Path(__file__).resolve().parent

COMPILED: Final = "compiled"
PURE_ASKED: Final = f"pure Python ({PURE_ENV}=1)"
PURE_UNBUILT: Final = "pure Python (not compiled)"
PURE_STALE: Final = "pure Python (compiled build is older than the source: reinstall to rebuild)"

mode = PURE_UNBUILT  # set by select()


def module_name(path: str) -> str:
    """`gateway/http/proxy.py` → `portway.gateway.http.proxy`."""
    return "portway." + path.removesuffix(".py").replace("/", ".")


def digest(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()


def sources(package_dir: Path) -> dict[str, str]:
    """The SHA-256 of each module's source as it is now (what RECORD holds after a build)."""
    return {path: digest((package_dir / path).read_bytes()) for path in MODULES}


def is_built(package_dir: Path, path: str) -> bool:
    """Whether an extension module was built beside the source."""
    stem = package_dir / path.removesuffix(".py")
    return any(
        stem.with_name(stem.name + suffix).exists()
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    )


def choose(
    built: Sequence[bool], recorded: Mapping[str, str] | None, now: Mapping[str, str], env: str
) -> str:
    """Which modules to run (the policy, without I/O): `built` says per module whether an
    extension exists, `recorded` is RECORD (None if absent), `now` the sources' digests,
    `env` the value of PORTWAY_PURE."""
    if not any(built):
        return PURE_UNBUILT
    if env == "1":
        return PURE_ASKED
    if recorded is None or not all(built) or any(recorded.get(p) != d for p, d in now.items()):
        return PURE_STALE
    return COMPILED


class SourceFirst:
    """A meta path finder that loads MODULES from their `.py`, ahead of the extension that
    Python's own finder would pick."""

    def __init__(self, package_dir: Path) -> None:
        self.files = {module_name(p): package_dir / p for p in MODULES}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        return importlib.util.spec_from_file_location(fullname, file)


def select(package_dir: Path = PACKAGE_DIR) -> str:
    """Decide once, before any of MODULES is imported, which ones run; returns the mode."""
    global mode
    built = [is_built(package_dir, p) for p in MODULES]
    recorded: dict[str, str] | None = None
    now: dict[str, str] = {}
    if any(built):
        try:
            recorded = json.loads((package_dir / RECORD).read_text())
        except (OSError, ValueError):
            recorded = None
        now = sources(package_dir)
    mode = choose(built, recorded, now, os.environ.get(PURE_ENV, ""))
    if mode != COMPILED and any(built):
        sys.meta_path.insert(0, SourceFirst(package_dir))
    return mode


if __name__ == "__main__":
    # The Makefile's list of what the build depends on: the same MODULES, not a copy of them.
    print(*(PACKAGE_DIR / p for p in MODULES))
