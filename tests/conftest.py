from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A fresh `portway up` process with its own data directory, stopped after the test."""
    d = Daemon(tmp_path / "data").start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for a whole module, for tests that only add their own resources."""
    d = Daemon(tmp_path_factory.mktemp("data")).start()
    try:
        yield d
    finally:
        d.stop()
