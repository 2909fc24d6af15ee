"""`portway deploy`, `instance ...` and `image ...` against a real daemon running real processes.

TODO(instances-api): written while the daemon's /v1/instances and /v1/images were being built;
they pass against the working tree's daemon, not yet against a committed one. Fold them into
test_instance_cli.py once that API is committed. The exact request bodies and renderings they
do not pin are pinned by the fake-daemon tests in test_instance_cli.py, test_deploy_cli.py and
test_image_cli.py, which use a fake only for what a real daemon cannot show deterministically.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from portway.cli.main import app as main_app
from tests.cli.test_instance_cli import ok, one_line_error, portway_app
from tests.daemon import Daemon

pytestmark = pytest.mark.e2e

Env = Mapping[str, str | None]

# A web server on the instance's own private address and port, so instances never collide.
# It logs before it listens: once the daemon sees the port open, the line is in the log.
# Each test publishes its own destination port, since the daemons of parallel test workers hand
# out the same loopback addresses and one's server could make another's instance look ready.
SERVER = textwrap.dedent(
    """\
    import http.server, os
    address = (os.environ["PORTWAY_PRIVATE_IP"], int(os.environ["PORT"]))
    print("serving on", address, flush=True)
    http.server.HTTPServer(address, http.server.SimpleHTTPRequestHandler).serve_forever()
    """
)


def cli(env: Env, *args: str) -> Result:
    return CliRunner().invoke(portway_app(), list(args), env=dict(env))


def service_cli(env: Env, *args: str) -> Result:
    return CliRunner().invoke(main_app, ["service", *args], env=dict(env))


def env_for(daemon: Daemon) -> dict[str, str | None]:
    return {"UKC_METRO": daemon.url, "UKC_TOKEN": daemon.token, "PORTWAY_DATA_DIR": "/nonexistent"}


def as_json(result: Result) -> list[dict[str, Any]]:
    doc = json.loads(ok(result))
    assert isinstance(doc, list)
    return doc


def tree(result: Result) -> dict[str, str]:
    """The deploy summary's `key: value` branches."""
    out = ok(result)
    assert out.startswith("[●] Deployed successfully!\n │\n"), out
    pairs = (line.lstrip(" ├└─").split(": ", 1) for line in out.splitlines()[2:])
    return {key: value for key, value in pairs}


@pytest.fixture
def env(shared_daemon: Daemon) -> dict[str, str | None]:
    return env_for(shared_daemon)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    directory = tmp_path / "e2e-site"
    directory.mkdir()
    (directory / "server.py").write_text(SERVER)
    (directory / "portway.toml").write_text('command = ["python3", "server.py"]\nport = 8102\n')
    return directory


def test_deploy_a_host_command_then_manage_it(env: Env) -> None:
    shown = tree(cli(env, "deploy", "-p", "443:8101", "-n", "e2e-host", "--", "python3", "-c",
                     SERVER))  # fmt: skip
    assert shown["name"] == "e2e-host" and shown["state"] == "running"
    assert shown["url"].startswith("https://")
    assert shown["private fqdn"] == "e2e-host.internal"
    assert shown["args"].startswith("python3 -c ")

    [read] = as_json(cli(env, "instance", "get", "e2e-host", "-o", "json"))
    assert read["state"] == "running" and read["image"].startswith("host")
    assert "serving on" in ok(cli(env, "instance", "logs", "e2e-host"))
    assert "e2e-host" in ok(cli(env, "instance", "list"))

    assert ok(cli(env, "instance", "stop", "e2e-host", "-w")) == "e2e-host: stopped\n"
    assert ok(cli(env, "instance", "remove", "e2e-host")) == "removed e2e-host\n"
    assert one_line_error(cli(env, "instance", "get", "e2e-host")) == (
        "portway: No instance with name 'e2e-host'"
    )


def test_deploy_a_directory(env: Env, site: Path) -> None:
    shown = tree(cli(env, "deploy", "-p", "443:8102", "-n", "e2e-site", str(site)))
    assert shown["image"].startswith("e2e-site:latest@sha256:")
    assert shown["args"] == "python3 server.py"
    names = [f"{i['name']}:{i['tag']}" for i in as_json(cli(env, "image", "list", "-o", "json"))]
    assert "e2e-site:latest" in names
    ok(cli(env, "instance", "rm", "e2e-site"))


def test_deploy_attaches_to_an_existing_group(env: Env) -> None:
    ok(service_cli(env, "create", "9700/tls", "-n", "e2e-group"))
    shown = tree(
        cli(env, "deploy", "--service", "e2e-group", "-n", "e2e-member", "--", "python3", "-c",
            SERVER)
    )  # fmt: skip
    assert shown["service"] == "e2e-group"
    assert "url" not in shown and "domain" in shown  # 9700 is not 443
    ok(cli(env, "instance", "rm", "e2e-member"))


def test_a_deploy_that_exits_shows_why(env: Env) -> None:
    crash = "print('about to fail', flush=True); raise SystemExit(3)"
    # With a port to publish, the instance only counts as running once something listens there.
    result = cli(env, "deploy", "-p", "443:8931", "-n", "e2e-crash", "--", "python3", "-c", crash)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("[✗] Deployment failed\n")
    assert "state: stopped" in result.stderr
    assert "with code 3" in result.stderr
    assert "   about to fail\n" in result.stderr
    ok(cli(env, "instance", "rm", "e2e-crash"))


def test_logs_follow_ends_when_the_instance_stops(env: Env) -> None:
    script = "import time; print('first', flush=True); time.sleep(1); print('last', flush=True)"
    ok(cli(env, "deploy", "-n", "e2e-follow", "--", "python3", "-c", script))
    assert ok(cli(env, "instance", "logs", "-f", "e2e-follow")) == "first\nlast\n"
    assert ok(cli(env, "instance", "logs", "e2e-follow", "--tail", "1")) == "last\n"
    ok(cli(env, "instance", "rm", "e2e-follow"))


def test_create_start_stop_remove_all(daemon: Daemon) -> None:
    env = env_for(daemon)
    out = ok(cli(env, "instance", "create", "host", "-n", "idle", "--", "sleep", "300"))
    assert out.startswith("[●] Created successfully!\n") and "state: stopped" in out
    assert ok(cli(env, "instance", "start", "idle", "-w")) == "idle: running\n"
    assert ok(cli(env, "instance", "stop", "--all", "-w")) == "idle: stopped\n"
    assert ok(cli(env, "instance", "rm", "--all")) == "removed idle\n"
    assert as_json(cli(env, "instance", "list", "-o", "json")) == []


def test_image_build_list_remove(env: Env, site: Path) -> None:
    built = ok(cli(env, "image", "build", str(site), "-t", "e2e-img:v1", "--port", "9000",
                   "--command", "python3 server.py --flag"))  # fmt: skip
    assert "name: e2e-img:v1\n" in built
    assert "args: python3 server.py --flag\n" in built and "port: 9000\n" in built
    assert "e2e-img:v1" in ok(cli(env, "image", "list"))
    assert ok(cli(env, "image", "rm", "e2e-img:v1")) == "removed e2e-img:v1\n"
    assert "e2e-img:v1" in one_line_error(cli(env, "image", "rm", "e2e-img:v1"))


def test_unknown_image_is_one_line(env: Env) -> None:
    line = one_line_error(cli(env, "instance", "create", "no-such-image:latest", "-S"))
    assert "no-such-image" in line
