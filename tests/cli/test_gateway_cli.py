"""`portway ca` and the gateway options of `portway up`: what a user types first."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509
from typer.testing import CliRunner

from portway.cli.main import app

runner = CliRunner()


def test_ca_prints_the_certificate_the_daemon_will_use(tmp_path: Path) -> None:
    data = tmp_path / "data"
    pem = runner.invoke(app, ["ca", "--data-dir", str(data)])
    assert pem.exit_code == 0, pem.output
    cert = x509.load_pem_x509_certificate(pem.output.encode())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    path = runner.invoke(app, ["ca", "--path", "--data-dir", str(data)])
    assert path.exit_code == 0
    ca_file = Path(path.output.strip())
    assert ca_file.read_text() == pem.output  # the same CA, made once
    assert (ca_file.parent / "ca.key").stat().st_mode & 0o777 == 0o600
    ssl.create_default_context(cafile=str(ca_file))  # usable as a trust store


def test_up_refuses_a_port_offset_out_of_range(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["up", "--data-dir", str(tmp_path), "--port", "0", "--port-offset", "65500"]
    )
    assert result.exit_code == 1
    assert "port offset 65500 is out of range" in result.output


@pytest.mark.parametrize("timeout", ["0", "-1", "3601"])
def test_up_refuses_a_wake_timeout_out_of_range(tmp_path: Path, timeout: str) -> None:
    result = runner.invoke(
        app, ["up", "--data-dir", str(tmp_path), "--port", "0", "--wake-timeout", timeout]
    )
    assert result.exit_code == 1
    assert f"wake timeout {float(timeout)} s is out of range" in result.output


@pytest.mark.parametrize(
    ("variable", "value"), [("PORTWAY_WAKE_TIMEOUT_S", "soon"), ("PORTWAY_PORT_OFFSET", "8k")]
)
def test_up_refuses_a_setting_that_is_not_a_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    result = runner.invoke(app, ["up", "--data-dir", str(tmp_path), "--port", "0"])
    assert result.exit_code == 1
    assert f"{variable}='{value}' is not a number" in result.output
