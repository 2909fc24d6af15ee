"""`portway deploy` against the fake daemon of test_instance_cli: the build upload, the create
body, the summary tree, the failure report and the one-line errors."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from portway.cli.deploy import deploy, deploy_source, split_command
from portway.cli.image import image_name_for
from portway.cli.service import BadArgument
from tests.cli.test_instance_cli import (
    GROUP_UUID,
    HTTPS_PAIR,
    UUID_A,
    FakeApi,
    bad_request,
    created_and_read,
    envelope,
    install_fake,
    instance_item,
    log_item,
    ok,
    one_line_error,
    run,
)

DIGEST = "sha256:269192f523dca7498423bc54676ab08e415e9c7442d1bd3d65f07ab5e50a43d"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    return install_fake(monkeypatch)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A directory such as a user deploys: an app and its manifest."""
    directory = tmp_path / "My App_2"
    directory.mkdir()
    (directory / "server.py").write_text("print('hi')\n")
    (directory / "portway.toml").write_text('command = ["python3", "server.py"]\nport = 8080\n')
    return directory


def built(name: str) -> httpx.Response:
    image = {
        "status": "success",
        "name": name,
        "tag": "latest",
        "digest": DIGEST,
        "ref": f"{name}:latest@{DIGEST}",
        "size_in_bytes": 123,
        "args": ["python3", "server.py"],
        "env": {},
        "port": 8080,
        "created_at": "2026-05-28T13:53:40Z",
    }
    return envelope("images", [image])


def members(content: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(content)) as tar:
        return {
            m.name: (tar.extractfile(m) or io.BytesIO()).read()
            for m in tar.getmembers()
            if m.isfile()
        }


# --- pure ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "image"),
    [("My App_2", "my-app-2"), ("api.v2", "api-v2"), ("--x--", "x"), ("___", "app"),
     ("host", "host-app"), ("a" * 80, "a" * 57)],
)  # fmt: skip
def test_image_name_for(tmp_path: Path, name: str, image: str) -> None:
    assert image_name_for(tmp_path / name) == image


def test_split_command_keeps_what_follows_the_first_dashes() -> None:
    assert split_command(["-p", "80", "--", "sh", "--", "x"]) == (["-p", "80"], ["sh", "--", "x"])
    assert split_command(["dir"]) == (["dir"], None)


@pytest.mark.parametrize(
    ("directory", "command", "source"),
    [
        (None, None, (Path("."), [])),
        (None, ["python3", "-m", "http.server"], (None, ["python3", "-m", "http.server"])),
        (Path("app"), ["python3", "alt.py"], (Path("app"), ["python3", "alt.py"])),
    ],
)
def test_deploy_source(
    directory: Path | None, command: list[str] | None, source: tuple[Path | None, list[str]]
) -> None:
    assert deploy_source(directory, command) == source


def test_deploy_source_refuses_an_empty_command() -> None:
    with pytest.raises(BadArgument, match="name the command after --"):
        deploy_source(None, [])


# --- deploy a directory --------------------------------------------------------------------------


def test_deploy_builds_then_creates_and_prints_the_tree(api: FakeApi, app_dir: Path) -> None:
    api.on("POST", "/images", built("my-app-2"))
    created_and_read(api, instance_item(), ports=[443, 80])
    out = ok(run("deploy", "-p", "443:8080", "-e", "MODE=prod", str(app_dir)))

    [upload] = api.requests("POST", "/images")
    assert upload.params == [("name", "my-app-2"), ("tag", "latest")]
    assert upload.content_type == "application/x-tar"
    files = members(upload.content)
    assert files["server.py"] == b"print('hi')\n"
    assert b"server.py" in files["portway.toml"]  # the directory's own manifest, untouched

    assert api.bodies("POST", "/instances") == [
        {
            "image": f"my-app-2:latest@{DIGEST}",  # pinned to what was just built
            "env": {"MODE": "prod"},
            "service_group": {"services": HTTPS_PAIR},
            "autostart": True,
            "timeout_s": 60,
        }
    ]
    assert api.requests("GET", "/instances")[0].params == [("uuid", UUID_A)]
    assert api.requests("GET", "/services")[0].params == [("uuid", GROUP_UUID)]
    assert out == (
        "[●] Deployed successfully!\n"
        " │\n"
        " ├────────── name: app-8ujeu\n"
        f" ├────────── uuid: {UUID_A}\n"
        " ├───────── state: running\n"
        " ├─────────── url: https://wandering-shape-n6mhimgn.portway.localhost\n"
        " ├───────── image: app:latest@sha256:269192f523dca7498423bc54676ab08e\n"
        " ├───── boot time: 20.18 ms\n"
        " ├──────── memory: 128 MiB\n"
        " ├─────── service: wandering-shape-n6mhimgn\n"
        " ├── private fqdn: app-8ujeu.internal\n"
        " ├──── private ip: 127.64.0.2\n"
        " └────────── args: python3 server.py\n"
    )


def test_deploy_dir_with_a_command_overrides_the_args(api: FakeApi, app_dir: Path) -> None:
    api.on("POST", "/images", built("my-app-2"))
    created_and_read(api, instance_item())
    ok(run("deploy", "--timeout", "5", str(app_dir), "--", "python3", "alt.py", "--fast"))
    [body] = api.bodies("POST", "/instances")
    assert body["args"] == ["python3", "alt.py", "--fast"]
    assert body["timeout_s"] == 5 and "service_group" not in body


def test_deploy_defaults_to_the_current_directory(
    api: FakeApi, app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(app_dir)
    api.on("POST", "/images", built("my-app-2"))
    created_and_read(api, instance_item())
    ok(run("deploy"))
    assert api.requests("POST", "/images")[0].params == [("name", "my-app-2"), ("tag", "latest")]


def test_deploy_a_missing_directory_is_one_line(api: FakeApi, tmp_path: Path) -> None:
    line = one_line_error(run("deploy", str(tmp_path / "nope")))
    assert line == f"portway: {tmp_path / 'nope'}: no such directory"
    assert api.sent == []


def test_deploy_a_bad_manifest_is_the_daemons_one_line(api: FakeApi, app_dir: Path) -> None:
    api.on("POST", "/images", bad_request("portway.toml: 'command' must be a list of strings"))
    assert one_line_error(run("deploy", str(app_dir))) == (
        "portway: portway.toml: 'command' must be a list of strings"
    )
    assert api.requests("POST", "/instances") == []


# --- deploy a host command -----------------------------------------------------------------------


def test_deploy_a_host_command_uses_the_host_image(api: FakeApi) -> None:
    created_and_read(api, instance_item(image="host", args=["python3", "-m", "http.server"]))
    out = ok(
        run("deploy", "-p", "8443:8000/tls", "-n", "web", "--", "python3", "-m", "http.server")
    )
    assert api.requests("POST", "/images") == []
    assert api.bodies("POST", "/instances") == [
        {
            "image": "host",
            "name": "web",
            "args": ["python3", "-m", "http.server"],
            "service_group": {
                "services": [{"port": 8443, "destination_port": 8000, "handlers": ["tls"]}]
            },
            "autostart": True,
            "timeout_s": 60,
        }
    ]
    assert " └────────── args: python3 -m http.server\n" in out


def test_without_443_the_tree_names_the_domain_not_a_url(api: FakeApi) -> None:
    created_and_read(api, instance_item(boot_time_us=None, private_ip=None), ports=[8443])
    out = ok(run("deploy", "-p", "8443:8080/tls", "--", "sleep", "60"))
    assert " domain: wandering-shape-n6mhimgn.portway.localhost\n" in out
    assert "url:" not in out and "boot time" not in out and "private ip" not in out


def test_every_flag_reaches_the_request(api: FakeApi) -> None:
    created_and_read(api, instance_item())
    ok(
        run(
            "deploy", "-p", "443:8080", "-d", "www.example.com", "-s", "shop", "-l", "2",
            "-L", "9", "-M", "512", "-R", "2", "--restart", "always", "--scale-to-zero",
            "idle", "--scale-to-zero-cooldown", "2000", "-n", "web", "--", "sleep", "1",
        )
    )  # fmt: skip
    [body] = api.bodies("POST", "/instances")
    assert body == {
        "image": "host",
        "name": "web",
        "args": ["sleep", "1"],
        "memory_mb": 512,
        "replicas": 2,
        "restart_policy": "always",
        "service_group": {
            "services": HTTPS_PAIR,
            "domains": [{"name": "www.example.com."}, {"name": "shop"}],
            "soft_limit": 2,
            "hard_limit": 9,
        },
        "scale_to_zero": {"policy": "idle", "cooldown_time_ms": 2000},
        "autostart": True,
        "timeout_s": 60,
    }


def test_no_start_creates_without_waiting(api: FakeApi) -> None:
    created_and_read(api, instance_item(state="stopped"))
    out = ok(run("deploy", "-S", "--", "sleep", "1"))
    [body] = api.bodies("POST", "/instances")
    assert body["autostart"] is False and "timeout_s" not in body
    assert out.startswith("[●] Created successfully!\n")


def test_replicas_print_one_tree_each(api: FakeApi) -> None:
    second = instance_item(uuid="06c972a6-a117-4b07-8eba-9389b4cccb42", name="app-djta3")
    created_and_read(api, instance_item(), second)
    out = ok(run("deploy", "-R", "1", "--", "sleep", "60"))
    assert out.count("[●] Deployed successfully!") == 2
    assert "name: app-8ujeu\n" in out and "name: app-djta3\n" in out
    assert len(api.requests("GET", "/services")) == 1  # the shared group is read once


# --- failures ------------------------------------------------------------------------------------


def test_service_with_ports_is_refused_before_anything_is_sent(api: FakeApi, app_dir: Path) -> None:
    line = one_line_error(run("deploy", "--service", "web", "-p", "443:8080", str(app_dir)))
    assert "--service attaches to an existing service group; it cannot be combined" in line
    assert api.sent == []  # not even the image upload


def test_an_instance_that_stops_instead_of_running_is_reported(api: FakeApi) -> None:
    stopped = {
        "status": "error",
        "uuid": UUID_A,
        "name": "app-8ujeu",
        "state": "stopped",
        "message": "Instance 'app-8ujeu' stopped before it was running (exit code 1); see its log",
    }
    api.on(
        "POST",
        "/instances",
        envelope("instances", [stopped], status="error", message=stopped["message"]),
    )
    read = instance_item(state="stopped", stop_reason=3, exit_code=1, boot_time_us=None)
    api.on("GET", "/instances", envelope("instances", [read]))
    log = b"".join(f"line {n}\n".encode() for n in range(30)) + b"Traceback: boom\n"
    api.on("GET", "/instances/log", log_item(log, 0, len(log), state="stopped"))

    result = run("deploy", "-p", "443:8080", "--", "python3", "crash.py")
    assert result.exit_code == 1
    assert result.stdout == ""
    report = result.stderr.splitlines()
    assert report[:2] == ["[✗] Deployment failed", " │"]
    # keys align on the longest one shown ("stop reason" here)
    assert " ├──────── state: stopped" in report
    assert " ├── stop reason: the app exited with code 1 (3)" in report
    assert report[-21:] == [" last 20 log lines:"] + [
        f"   line {n}" for n in range(11, 30)
    ] + ["   Traceback: boom"]  # fmt: skip
    [log_request] = api.bodies("GET", "/instances/log")
    assert log_request == [{"uuid": UUID_A, "offset": -16384, "limit": 16384}]


def test_a_stopped_read_after_a_successful_wait_is_a_failure_too(api: FakeApi) -> None:
    created_and_read(api, instance_item(state="stopped", stop_reason=1))
    api.on("GET", "/instances/log", log_item(b"", 0, 0, state="stopped"))
    result = run("deploy", "--", "false")
    assert result.exit_code == 1
    assert "[✗] Deployment failed" in result.stderr
    assert "stop reason: the instance crashed (1)" in result.stderr


def test_an_error_item_is_one_line(api: FakeApi) -> None:
    taken = {"status": "error", "name": "web", "message": "Instance 'web' already exists",
             "error": 23}  # fmt: skip
    api.on("POST", "/instances", envelope("instances", [taken], status="error"))
    assert one_line_error(run("deploy", "-n", "web", "--", "sleep", "1")) == (
        "portway: Instance 'web' already exists"
    )


def test_an_http_400_is_one_line(api: FakeApi) -> None:
    api.on("POST", "/instances", bad_request("service_group: unknown service group 'web'"))
    assert one_line_error(run("deploy", "--service", "web", "--", "sleep", "1")) == (
        "portway: service_group: unknown service group 'web'"
    )


def test_the_url_line_is_left_out_if_the_group_cannot_be_read(api: FakeApi) -> None:
    created_and_read(api, instance_item())
    missing: dict[str, Any] = {"status": "error", "uuid": GROUP_UUID, "message": "gone", "error": 8}
    api.on("GET", "/services", envelope("service_groups", [missing]))
    out = ok(run("deploy", "--", "sleep", "60"))
    assert "url:" not in out
    assert " domain: wandering-shape-n6mhimgn.portway.localhost\n" in out


def test_deploy_registered_without_its_command_class_fails_loudly() -> None:
    app = typer.Typer()
    app.command("deploy")(deploy)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["deploy"])
    assert isinstance(result.exception, RuntimeError)
    assert "cls=DeployCommand" in str(result.exception)


def test_a_multi_line_script_stays_on_its_branch(api: FakeApi) -> None:
    script = "import time\ntime.sleep(60)"
    created_and_read(api, instance_item(args=["python3", "-c", script]))
    out = ok(run("deploy", "--", "python3", "-c", script))
    assert out.endswith(" └────────── args: python3 -c 'import time\\ntime.sleep(60)'\n")
    [body] = api.bodies("POST", "/instances")
    assert body["args"] == ["python3", "-c", script]  # only the display escapes it


def test_without_own_args_the_tree_shows_the_images_command(api: FakeApi, app_dir: Path) -> None:
    api.on("POST", "/images", built("my-app-2"))  # its args: python3 server.py
    created_and_read(api, instance_item(args=[]))
    assert ok(run("deploy", str(app_dir))).endswith(" └────────── args: python3 server.py\n")
    # -o shows the read as the daemon gave it
    created_and_read(api, instance_item(args=[]))
    [shown] = json.loads(ok(run("deploy", str(app_dir), "-o", "json")))
    assert shown["args"] == []
