"""The client's packer: what goes into the archive, reproducibility, and the portway.toml writer."""

from __future__ import annotations

import io
import os
import tarfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portway.client.tarball import PackError, iter_pack, pack, render_manifest


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def read(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        extracted = tar.extractfile(name)
        assert extracted is not None
        return extracted.read()


@pytest.fixture
def app(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "server.py").write_text("print('hi')\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "sub" / "deeper" / "data.json").write_text("{}")
    (root / "sub" / "to-server").symlink_to("../server.py")
    return root


def test_paths_are_relative_sorted_and_directories_come_first(app: Path) -> None:
    names = [m.name for m in members(pack(app))]
    assert names == [
        "run.sh",
        "server.py",
        "sub",
        "sub/deeper",
        "sub/deeper/data.json",
        "sub/to-server",
    ]


def test_modes_content_and_symlinks_are_kept(app: Path) -> None:
    data = pack(app)
    by_name = {m.name: m for m in members(data)}
    assert by_name["run.sh"].mode == 0o755 and by_name["run.sh"].isreg()
    assert by_name["server.py"].mode == 0o644
    assert by_name["sub"].isdir()
    assert by_name["sub/to-server"].issym()
    assert by_name["sub/to-server"].linkname == "../server.py"
    assert read(data, "server.py") == b"print('hi')\n"


def test_owner_and_time_are_fixed(app: Path) -> None:
    for m in members(pack(app)):
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0)


def test_packing_twice_gives_identical_bytes(app: Path) -> None:
    first = pack(app)
    os.utime(app / "server.py", (12345, 12345))
    assert pack(app) == first


def test_streaming_gives_the_same_archive_in_bounded_pieces(app: Path) -> None:
    (app / "big.bin").write_bytes(os.urandom(3 << 20))
    pieces = list(iter_pack(app))
    assert b"".join(pieces) == pack(app)
    assert max(len(p) for p in pieces) <= 1 << 20
    assert len(b"".join(pieces)) % tarfile.RECORDSIZE == 0


@pytest.mark.parametrize("name", [".git", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache"])
def test_skipped_names_are_left_out_at_any_depth(app: Path, name: str) -> None:
    for where in (app, app / "sub"):
        (where / name).mkdir()
        (where / name / "inside").write_text("x")
    assert all(name not in m.name.split("/") for m in members(pack(app)))


def test_node_modules_is_kept(app: Path) -> None:
    (app / "node_modules" / "left-pad").mkdir(parents=True)
    assert "node_modules/left-pad" in [m.name for m in members(pack(app))]


def test_special_files_are_left_out_and_hard_links_become_files(app: Path) -> None:
    os.mkfifo(app / "pipe")
    os.link(app / "server.py", app / "also-server.py")
    by_name = {m.name: m for m in members(pack(app))}
    assert "pipe" not in by_name
    assert by_name["also-server.py"].isreg()


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside", "sub/../../outside"])
def test_symlink_leaving_the_directory_is_an_error(app: Path, target: str) -> None:
    (app / "bad").symlink_to(target)
    with pytest.raises(PackError, match="bad"):
        pack(app)


def test_symlink_that_climbs_but_stays_inside_is_fine(app: Path) -> None:
    (app / "sub" / "deeper" / "up").symlink_to("../../server.py")
    assert "sub/deeper/up" in [m.name for m in members(pack(app))]


def test_missing_directory_and_file_are_errors_at_the_call(tmp_path: Path) -> None:
    with pytest.raises(PackError, match="no such directory"):
        iter_pack(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(PackError, match="not a directory"):
        iter_pack(tmp_path / "file")
    assert issubclass(PackError, ValueError)


def test_non_ascii_and_long_names_survive(app: Path) -> None:
    long_dir = app / ("d" * 120) / ("e" * 120)
    long_dir.mkdir(parents=True)
    (long_dir / "héllo wörld.txt").write_text("x")
    names = [m.name for m in members(pack(app))]
    assert f"{'d' * 120}/{'e' * 120}/héllo wörld.txt" in names


def test_extra_manifest_replaces_the_directorys_own(app: Path) -> None:
    (app / "portway.toml").write_text('command = ["old"]\nport = 1\n')
    extra = {"command": ["python3", "server.py"], "env": {"A": "b"}}
    data = pack(app, extra)
    assert [m.name for m in members(data)].count("portway.toml") == 1
    assert tomllib.loads(read(data, "portway.toml").decode()) == extra
    assert pack(app, extra) == data


def test_without_extra_manifest_the_directorys_own_is_kept(app: Path) -> None:
    (app / "portway.toml").write_text("port = 1\n")
    assert read(pack(app), "portway.toml") == b"port = 1\n"


# --- the TOML writer ----------------------------------------------------------------------------


def test_render_manifest_writes_scalars_before_tables() -> None:
    text = render_manifest({"env": {"A": "1"}, "command": ["a b", "c"], "port": 8080})
    assert text == '\ncommand = ["a b", "c"]\nport = 8080\n\n[env]\nA = "1"\n'.lstrip("\n")


@pytest.mark.parametrize(
    "text",
    ['say "hi"', "back\\slash", "line\nbreak", "tab\there", "\x00\x01\x1f\x7f", "ünïcødé ☃ 🎉", ""],
)
def test_render_manifest_escapes_strings(text: str) -> None:
    manifest = {"command": [text, "x"], "env": {text or "K": text, "a.b": text}}
    assert tomllib.loads(render_manifest(manifest)) == manifest


unicode_text = st.text(st.characters(exclude_categories=["Cs"]))


@given(
    command=st.lists(unicode_text),
    env=st.dictionaries(unicode_text, unicode_text),
    port=st.integers(-(2**63), 2**63 - 1),
)
def test_render_manifest_round_trips_through_tomllib(
    command: list[str], env: dict[str, str], port: int
) -> None:
    manifest = {"command": command, "port": port, "env": env, "flag": True}
    assert tomllib.loads(render_manifest(manifest)) == manifest


@pytest.mark.parametrize(
    "manifest",
    [{"port": 1.5}, {"command": [1, 2]}, {"command": None}, {"env": {"A": [1]}}, {"x": "\ud800"}],
)
def test_render_manifest_refuses_what_it_cannot_write(manifest: dict[str, object]) -> None:
    with pytest.raises(PackError, match=r"portway\.toml"):
        render_manifest(manifest)
