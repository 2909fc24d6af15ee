"""`portway image build|list|remove` against the fake daemon of test_instance_cli: the tar
upload, the manifest the flags write, and what the verbs print."""

from __future__ import annotations

import io
import json
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest

from portway.cli.image import image_manifest, parse_image
from portway.cli.service import BadArgument
from tests.cli.test_instance_cli import (
    FakeApi,
    bad_request,
    envelope,
    install_fake,
    ok,
    one_line_error,
    run,
)

DIGEST = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    return install_fake(monkeypatch)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "shop"
    directory.mkdir()
    (directory / "server.py").write_text("print('hi')\n")
    (directory / "portway.toml").write_text('command = ["python3", "server.py"]\n')
    return directory


def image_item(name: str = "shop", tag: str = "latest", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "status": "success",
        "name": name,
        "tag": tag,
        "digest": DIGEST,
        "ref": f"{name}:{tag}@{DIGEST}",
        "size_in_bytes": 2048,
        "args": ["python3", "server.py"],
        "env": {},
        "port": 8080,
        "created_at": "2026-05-28T13:53:40Z",
    }
    return {**base, **fields}


def images(*items: dict[str, Any]) -> httpx.Response:
    return envelope("images", list(items))


def uploaded_files(content: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(content)) as tar:
        files = {}
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            if handle is not None:
                files[member.name] = handle.read()
        return files


# --- pure ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"), [("app", ("app", "latest")), ("app:v2", ("app", "v2"))]
)
def test_parse_image(text: str, parsed: tuple[str, str]) -> None:
    assert parse_image(text) == parsed


@pytest.mark.parametrize("text", ["", ":v1", "app:"])
def test_parse_image_refuses(text: str) -> None:
    with pytest.raises(BadArgument, match="use NAME or NAME:TAG"):
        parse_image(text)


def test_manifest_is_none_without_flags() -> None:
    assert image_manifest(None, None, {}) is None


@pytest.mark.parametrize(
    ("command", "port", "problem"),
    [
        ("", None, "--command needs a command"),
        ("python3 'unclosed", None, "No closing quotation"),
        (None, 0, "--port 0 is out of range 1-65535"),
        (None, 70000, "--port 70000 is out of range"),
    ],
)
def test_manifest_refuses(command: str | None, port: int | None, problem: str) -> None:
    with pytest.raises(BadArgument, match=problem):
        image_manifest(command, port, {})


# --- build ---------------------------------------------------------------------------------------


def test_build_uploads_the_directory_as_a_tar(api: FakeApi, app_dir: Path) -> None:
    api.on("POST", "/images", images(image_item()))
    out = ok(run("image", "build", str(app_dir)))
    [upload] = api.requests("POST", "/images")
    # the name comes from the directory, the tag defaults to latest
    assert upload.params == [("name", "shop"), ("tag", "latest")]
    assert upload.content_type == "application/x-tar"
    assert uploaded_files(upload.content) == {
        "portway.toml": b'command = ["python3", "server.py"]\n',
        "server.py": b"print('hi')\n",
    }
    assert out.splitlines() == [
        "name: shop:latest",
        f"digest: {DIGEST}",
        "size: 2.0 KiB",
        "args: python3 server.py",
        "port: 8080",
        "created at: 2026-05-28T13:53:40Z",
        f"ref: shop:latest@{DIGEST}",
        "env: ",
    ]


def test_build_flags_replace_the_manifest(api: FakeApi, app_dir: Path) -> None:
    api.on("POST", "/images", images(image_item("web", "v2")))
    out = ok(
        run(
            "image", "build", str(app_dir), "-t", "web:v2",
            "--command", "python3 server.py --greeting 'hello there'",
            "--port", "8080", "-e", "MODE=prod", "-o", "json",
        )
    )  # fmt: skip
    assert json.loads(out) == [image_item("web", "v2")]
    [upload] = api.requests("POST", "/images")
    assert upload.params == [("name", "web"), ("tag", "v2")]
    manifest = tomllib.loads(uploaded_files(upload.content)["portway.toml"].decode())
    assert manifest == {
        "command": ["python3", "server.py", "--greeting", "hello there"],
        "port": 8080,
        "env": {"MODE": "prod"},
    }


def test_build_a_bad_manifest_is_the_daemons_one_line(api: FakeApi, app_dir: Path) -> None:
    api.on("POST", "/images", bad_request("portway.toml: port must be an integer"))
    assert one_line_error(run("image", "build", str(app_dir))) == (
        "portway: portway.toml: port must be an integer"
    )


def test_build_a_file_is_one_line_before_sending(api: FakeApi, app_dir: Path) -> None:
    line = one_line_error(run("image", "build", str(app_dir / "server.py")))
    assert line == f"portway: {app_dir / 'server.py'}: not a directory"
    assert api.sent == []


def test_build_bad_tag_is_one_line(api: FakeApi, app_dir: Path) -> None:
    assert one_line_error(run("image", "build", str(app_dir), "-t", "web:")) == (
        "portway: image 'web:': use NAME or NAME:TAG"
    )


# --- list and remove -----------------------------------------------------------------------------


def test_list_is_a_table(api: FakeApi) -> None:
    api.on("GET", "/images", images(image_item(), image_item("web", "v2", port=None, args=[])))
    lines = ok(run("image", "ls")).splitlines()
    assert lines[0].split() == ["NAME", "DIGEST", "SIZE", "ARGS", "PORT", "CREATED", "AT"]
    assert lines[1].startswith("shop:latest  sha256:0123456789ab  2.0 KiB  python3 server.py  8080")
    assert lines[2].startswith("web:v2       sha256:0123456789ab  2.0 KiB")


def test_list_prints_json_with_o(api: FakeApi) -> None:
    api.on("GET", "/images", images(image_item()))
    assert json.loads(ok(run("image", "list", "-o", "json"))) == [image_item()]


def test_remove_sends_name_and_tag(api: FakeApi) -> None:
    done = [{"status": "success", "name": n, "digest": DIGEST} for n in ("shop:latest", "web:v2")]
    api.on("DELETE", "/images", images(*done))
    assert ok(run("image", "rm", "shop", "web:v2")) == "removed shop:latest\nremoved web:v2\n"
    assert api.bodies("DELETE", "/images") == [[{"name": "shop:latest"}, {"name": "web:v2"}]]


def test_remove_reports_removed_before_the_failure(api: FakeApi) -> None:
    answer: list[dict[str, Any]] = [
        {"status": "success", "name": "shop:latest", "digest": DIGEST},
        {"status": "error", "name": "nope:latest", "message": "No image 'nope:latest'", "error": 8},
    ]
    api.on("DELETE", "/images", envelope("images", answer, status="partial_success"))
    result = run("image", "remove", "shop", "nope")
    assert result.exit_code == 1
    assert result.stdout == "removed shop:latest\n"
    assert result.stderr == "portway: No image 'nope:latest'\n"
