"""The compiled request path (src/portway/compiled.py): it runs when it is current, and a build
older than its source, or PORTWAY_PURE=1, gives the pure-Python modules instead."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from portway import compiled

SRC = Path(compiled.__file__).resolve().parents[1]
DIGESTS = {p: f"d{i}" for i, p in enumerate(compiled.MODULES)}
ALL_BUILT = [True] * len(compiled.MODULES)


def test_current_build_runs_compiled() -> None:
    assert compiled.choose(ALL_BUILT, DIGESTS, DIGESTS, "") == compiled.COMPILED


def test_no_build_is_pure() -> None:
    none = [False] * len(compiled.MODULES)
    assert compiled.choose(none, None, {}, "") == compiled.PURE_UNBUILT
    assert compiled.choose(none, None, {}, "1") == compiled.PURE_UNBUILT


def test_pure_when_asked() -> None:
    assert compiled.choose(ALL_BUILT, DIGESTS, DIGESTS, "1") == compiled.PURE_ASKED


@pytest.mark.parametrize(
    ("built", "recorded", "why"),
    [
        (ALL_BUILT, {**DIGESTS, "gateway/http/proxy.py": "edited"}, "one source changed"),
        (ALL_BUILT, None, "no record of what was compiled"),
        ([True] + [False] * (len(compiled.MODULES) - 1), DIGESTS, "part of the build is gone"),
    ],
)
def test_a_stale_build_is_never_run(
    built: list[bool], recorded: dict[str, str] | None, why: str
) -> None:
    assert compiled.choose(built, recorded, DIGESTS, "") == compiled.PURE_STALE, why


def test_the_test_suite_runs_what_users_run() -> None:
    """`make` builds the compiled modules; if the build fell back to pure Python (no compiler),
    the figures and these tests would no longer describe what ships."""
    import portway.gateway.http.proxy as proxy

    if os.environ.get(compiled.PURE_ENV) == "1":  # the second, pure-Python pass of `make test`
        assert compiled.mode == compiled.PURE_ASKED
        assert proxy.__file__.endswith(".py")
    else:
        assert compiled.mode == compiled.COMPILED, f"the gateway was not compiled: {compiled.mode}"
        assert not proxy.__file__.endswith(".py")


def _proxy_file_and_mode(src: Path, env: dict[str, str]) -> list[str]:
    code = (
        "import portway.compiled as c, portway.gateway.http.proxy as p, "
        "portway.gateway.http.head as h; print(c.mode); print(p.__file__); print(h.__file__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(src), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


@pytest.mark.skipif(compiled.mode != compiled.COMPILED, reason="needs the compiled build")
def test_an_edited_source_runs_instead_of_its_old_build(tmp_path: Path) -> None:
    """A copy of the built package; one compiled source edited: every module comes from its
    `.py` (all or none), and the edit is what runs."""
    copy = tmp_path / "src"
    shutil.copytree(SRC / "portway", copy / "portway")
    for shared in SRC.glob("portway_gateway__mypyc*"):
        shutil.copy(shared, copy / shared.name)
    mode, proxy, head = _proxy_file_and_mode(copy, {})
    assert mode == compiled.COMPILED and not proxy.endswith(".py")

    edited = copy / "portway/gateway/http/proxy.py"
    edited.write_text(edited.read_text() + "\nEDITED = True\n")
    mode, proxy, head = _proxy_file_and_mode(copy, {})
    assert mode == compiled.PURE_STALE
    assert proxy == str(edited) and head.endswith("head.py")

    mode, proxy, head = _proxy_file_and_mode(copy, {compiled.PURE_ENV: "1"})
    assert mode == compiled.PURE_ASKED and proxy.endswith(".py")
