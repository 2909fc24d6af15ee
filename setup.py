"""Builds the gateway's request path with mypyc (see src/portway/compiled.py); everything else
about the package is in pyproject.toml.

`PORTWAY_PURE=1 pip install .` skips compiling; so does a machine without a working C
compiler (with a warning): Portway then runs the same modules as pure Python, slower.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "src" / "portway"


def load_compiled() -> Any:
    """src/portway/compiled.py by path: importing the package here would run its guard."""
    spec = importlib.util.spec_from_file_location("portway_compiled", PACKAGE / "compiled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class OptionalBuildExt(build_ext):
    """A failed compile leaves the pure-Python modules in place instead of failing the install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as err:  # the compiler is missing or broken: CCompilerError and kin
            print(f"portway: not compiled ({err}); running as pure Python", file=sys.stderr)


def ext_modules() -> list[Any]:
    if os.environ.get("PORTWAY_PURE") == "1":
        return []
    compiled = load_compiled()
    from mypyc.build import mypycify

    # What the build knows of the sources: only these digests count as compiled.
    (PACKAGE / compiled.RECORD).write_text(json.dumps(compiled.sources(PACKAGE), indent=1))
    paths = [str(Path("src/portway") / p) for p in compiled.MODULES]
    # The build environment has neither the project's mypy plugins nor its dependencies:
    # a neutral configuration, and imports it cannot find typed as Any.
    flags = ["--config-file", "", "--ignore-missing-imports"]
    return mypycify([*flags, *paths], opt_level="3", group_name="portway_gateway")


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
