"""bench/gateway.py refuses a bad argument at once, naming it: a run takes minutes, and a typo
must not cost one or be measured with a limit nobody asked for."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def gateway_bench() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # for its `_daemon` import, as when run as a script
    try:
        spec = importlib.util.spec_from_file_location("bench_gateway", BENCH / "gateway.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


@pytest.mark.parametrize("value", ["-1", "100.5", "nan"])
def test_a_steal_limit_that_is_not_a_percentage_is_refused(
    gateway_bench: ModuleType, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        gateway_bench.parse_args(["--max-steal", value])
    assert stopped.value.code == 2
    assert "--max-steal must be a percentage, between 0 and 100" in capsys.readouterr().err


def test_a_steal_limit_from_0_to_100_is_taken_and_5_is_the_default(
    gateway_bench: ModuleType,
) -> None:
    assert gateway_bench.parse_args([]).max_steal == 5.0
    assert gateway_bench.parse_args(["--max-steal", "0"]).max_steal == 0.0
    assert gateway_bench.parse_args(["--max-steal", "100"]).max_steal == 100.0
