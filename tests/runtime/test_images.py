"""Image files: content addressing, the manifest, the tar security boundary, copies, removal."""

from __future__ import annotations

import io
import itertools
import os
import stat
import tarfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from portway.client.tarball import pack
from portway.model.errors import ErrorCode, Invalid, ItemError
from portway.runtime import images as images_module
from portway.runtime.images import (
    HOST_DIGEST,
    ImageFiles,
    Manifest,
    parse_manifest,
)

Entry = tuple[tarfile.TarInfo, bytes | None]


# --- building archives --------------------------------------------------------------------------


def member(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    data: bytes = b"",
    mode: int = 0o644,
    linkname: str = "",
    **attrs: Any,
) -> Entry:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    for key, value in attrs.items():
        setattr(info, key, value)
    if kind in (tarfile.REGTYPE, tarfile.AREGTYPE):
        info.size = len(data)
        return info, data
    return info, None


def directory(name: str, mode: int = 0o755, **attrs: Any) -> Entry:
    return member(name, tarfile.DIRTYPE, mode=mode, **attrs)


def symlink(name: str, target: str) -> Entry:
    return member(name, tarfile.SYMTYPE, mode=0o777, linkname=target)


def hardlink(name: str, target: str) -> Entry:
    return member(name, tarfile.LNKTYPE, linkname=target)


def make_tar(
    entries: Iterable[Entry], fmt: int = tarfile.PAX_FORMAT, compression: str = ""
) -> bytes:
    buffer = io.BytesIO()
    mode = f"w:{compression}" if compression else "w"
    with tarfile.open(fileobj=buffer, mode=mode, format=fmt) as tar:  # type: ignore[call-overload]
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


class GeneratedStream(io.RawIOBase):
    """A non-seekable stream produced piece by piece, so a test can claim gigabytes without
    holding or writing them; `consumed` says how much the reader actually took."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._pending = b""
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._pending = piece
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self.consumed += n
        return n


def zeros_forever() -> Iterator[bytes]:
    return itertools.repeat(b"\0" * 65536)


# The directory most digest tests start from.
def app_entries() -> list[Entry]:
    return [
        directory("empty"),
        symlink("link", "sub/a.txt"),
        member("run.sh", data=b"#!/bin/sh\necho hi\n", mode=0o755),
        directory("sub"),
        member("sub/a.txt", data=b"alpha\n"),
        member("sub/b.txt", data=b"beta\n", mode=0o640),
    ]


def digest_of(images: ImageFiles, data: bytes) -> str:
    return images.add_tar(io.BytesIO(data)).digest


@pytest.fixture
def images(tmp_path: Path) -> ImageFiles:
    return ImageFiles(tmp_path / "images")


def leftovers(images: ImageFiles) -> list[str]:
    return sorted(os.listdir(images.root))


def tree(top: Path) -> dict[str, tuple[str, int | None, bytes]]:
    """A comparable picture of a tree: path -> (kind, mode bits for files, content or target)."""
    found: dict[str, tuple[str, int | None, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(top))
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("symlink", None, os.readlink(path).encode())
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", None, b"")
            else:
                found[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return found


# --- content addressing -------------------------------------------------------------------------


def _reordered(entries: list[Entry]) -> list[Entry]:
    return list(reversed(entries))  # directories after their contents


def _restamped(entries: list[Entry]) -> list[Entry]:
    out = []
    for info, data in entries:
        info = info.replace(mtime=1_700_000_000, uid=1234, gid=99, uname="alice", gname="staff")
        out.append((info, data))
    return out


def _dot_prefixed(entries: list[Entry]) -> list[Entry]:
    return [directory("."), *[(i.replace(name="./" + i.name), d) for i, d in entries]]


def _implicit_dirs(entries: list[Entry]) -> list[Entry]:
    return [(i, d) for i, d in entries if not (i.isdir() and i.name == "sub")]


@pytest.mark.parametrize(
    ("variant", "fmt", "compression"),
    [
        (_reordered, tarfile.PAX_FORMAT, ""),
        (_restamped, tarfile.PAX_FORMAT, ""),
        (_dot_prefixed, tarfile.PAX_FORMAT, ""),
        (_implicit_dirs, tarfile.PAX_FORMAT, ""),
        (list, tarfile.GNU_FORMAT, ""),
        (list, tarfile.USTAR_FORMAT, ""),
        (list, tarfile.PAX_FORMAT, "gz"),
        (list, tarfile.PAX_FORMAT, "xz"),
        (list, tarfile.PAX_FORMAT, "bz2"),
    ],
    ids=[
        "order",
        "owners-mtimes",
        "dot-prefix",
        "implicit-dirs",
        "gnu",
        "ustar",
        "gz",
        "xz",
        "bz2",
    ],
)
def test_same_directory_same_digest_however_tarred(
    images: ImageFiles, variant: Any, fmt: int, compression: str
) -> None:
    reference = digest_of(images, make_tar(app_entries()))
    assert digest_of(images, make_tar(variant(app_entries()), fmt, compression)) == reference


def _with(entries: list[Entry], name: str, replacement: Entry | None) -> list[Entry]:
    out = [e for e in entries if e[0].name != name]
    return out + ([replacement] if replacement else [])


@pytest.mark.parametrize(
    "changed",
    [
        _with(app_entries(), "sub/a.txt", member("sub/a.txt", data=b"alpha!\n")),
        _with(app_entries(), "sub/a.txt", member("sub/a.txt", data=b"alpha\n", mode=0o755)),
        _with(app_entries(), "sub/b.txt", member("sub/b.txt", data=b"beta\n", mode=0o644)),
        _with(app_entries(), "sub/a.txt", member("sub/A.txt", data=b"alpha\n")),
        _with(app_entries(), "link", symlink("link", "sub/b.txt")),
        _with(app_entries(), "link", member("link", data=b"sub/a.txt")),
        _with(app_entries(), "empty", None),
        [*app_entries(), directory("another")],
    ],
    ids=[
        "content",
        "exec-bit",
        "group-read",
        "rename",
        "link-target",
        "link-to-file",
        "dir",
        "more",
    ],
)
def test_any_change_changes_the_digest(images: ImageFiles, changed: list[Entry]) -> None:
    assert digest_of(images, make_tar(changed)) != digest_of(images, make_tar(app_entries()))


def test_hard_link_is_the_same_image_as_a_copy(images: ImageFiles) -> None:
    copied = [member("a", data=b"x"), member("b", data=b"x")]
    linked = [member("a", data=b"x"), hardlink("b", "a")]
    assert digest_of(images, make_tar(linked)) == digest_of(images, make_tar(copied))


def test_dedupe_keeps_one_copy(images: ImageFiles) -> None:
    first = images.add_tar(io.BytesIO(make_tar(app_entries())))
    second = images.add_tar(io.BytesIO(make_tar(_reordered(app_entries()), compression="gz")))
    assert second == first
    assert images.digests() == {first.digest}
    assert leftovers(images) == ["sha256-" + first.digest.removeprefix("sha256:")]


def test_concurrent_adds_of_the_same_content_agree(images: ImageFiles) -> None:
    data = make_tar(app_entries())
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(digest_of(images, data))) for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 6
    assert len(leftovers(images)) == 1


def test_content_describes_the_files(images: ImageFiles) -> None:
    content = images.add_tar(io.BytesIO(make_tar(app_entries())))
    assert content.digest.startswith("sha256:") and len(content.digest) == 7 + 64
    assert content.size_bytes == len(b"#!/bin/sh\necho hi\n") + len(b"alpha\n") + len(b"beta\n")
    assert content.manifest == Manifest()
    assert (content.root / "sub" / "a.txt").read_bytes() == b"alpha\n"
    assert images.get(content.digest) == content
    assert ImageFiles(images.root).get(content.digest) == content  # survives a restart


@pytest.mark.parametrize("digest", ["", "sha256:", "sha256:abc", "sha256:" + "G" * 64, "../x"])
def test_get_of_a_malformed_digest_is_none(images: ImageFiles, digest: str) -> None:
    assert images.get(digest) is None
    assert images.get("sha256:" + "0" * 64) is None


# --- the manifest -------------------------------------------------------------------------------


def test_manifest_valid() -> None:
    manifest = parse_manifest(
        b'command = ["python3", "server.py"]\nport = 8080\n[env]\nGREETING = "hello"\n'
    )
    assert manifest == Manifest(("python3", "server.py"), {"GREETING": "hello"}, 8080)


def test_manifest_command_string_is_split_like_a_shell() -> None:
    manifest = parse_manifest(b"command = \"python3 -c 'print(1)'\"")
    assert manifest.command == ("python3", "-c", "print(1)")


def test_manifest_empty_file_and_missing_file(images: ImageFiles) -> None:
    assert parse_manifest(b"") == Manifest()
    assert images.add_tar(io.BytesIO(make_tar([member("x")]))).manifest == Manifest()


def test_manifest_is_read_from_the_archive_and_stays_in_the_files(images: ImageFiles) -> None:
    toml = b'command = ["./run.sh"]\nport = 3000\n'
    content = images.add_tar(io.BytesIO(make_tar([member("portway.toml", data=toml)])))
    assert content.manifest == Manifest(("./run.sh",), {}, 3000)
    assert (content.root / "portway.toml").read_bytes() == toml
    assert images.get(content.digest) == content  # kept in image.json


def test_manifest_is_immutable() -> None:
    manifest = parse_manifest(b'[env]\nA = "1"\n')
    with pytest.raises(TypeError):
        manifest.env["A"] = "2"  # type: ignore[index]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (b"port = 70000", "portway.toml: port: 70000 is not a port (1-65535)"),
        (b"port = 0", "portway.toml: port: 0 is not a port (1-65535)"),
        (b'port = "80"', "portway.toml: port: must be an integer"),
        (b"port = true", "portway.toml: port: must be an integer"),
        (b"command = 42", "portway.toml: command: must be a list of strings or a string"),
        (b"command = []", "portway.toml: command: must not be empty"),
        (b'command = ""', "portway.toml: command: must not be empty"),
        (b'command = ["ok", 3]', "portway.toml: command: item 1 is not a string"),
        (b'command = ["", "x"]', "portway.toml: command: the program (first item) is empty"),
        (b'command = "\'unclosed"', "portway.toml: command: cannot split"),
        (b'command = ["a\\u0000b"]', "portway.toml: command: contains a NUL character"),
        (b'env = "A=1"', "portway.toml: env: must be a table of strings"),
        (b"[env]\nA = 1", "portway.toml: env: A: must be a string"),
        (b'[env]\n"A=B" = "x"', "portway.toml: env: 'A=B' is not a valid variable name"),
        (b'[env]\n"" = "x"', "portway.toml: env: '' is not a valid variable name"),
        (b'image = "x"', "portway.toml: image: unknown key (allowed: command, env, port)"),
        (b"[build]\nx = 1", "portway.toml: build: unknown key"),
        (b"port = ", "portway.toml: is not valid TOML"),
        (b"\xff\xfe", "portway.toml: is not UTF-8 text"),
    ],
)
def test_manifest_invalid(toml: bytes, message: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse_manifest(toml)
    assert str(caught.value).startswith(message)
    assert caught.value.field == "portway.toml"


def test_invalid_manifest_refuses_the_image(images: ImageFiles) -> None:
    with pytest.raises(Invalid, match="port: 70000"):
        images.add_tar(io.BytesIO(make_tar([member("portway.toml", data=b"port = 70000")])))
    assert leftovers(images) == []


def test_manifest_must_be_a_regular_file(images: ImageFiles) -> None:
    data = make_tar([member("secret", data=b"port = 1"), symlink("portway.toml", "secret")])
    with pytest.raises(Invalid, match=r"portway\.toml: must be a regular file"):
        images.add_tar(io.BytesIO(data))
    assert leftovers(images) == []


# --- the security boundary ----------------------------------------------------------------------


def refused(images: ImageFiles, data: bytes | io.RawIOBase, match: str) -> None:
    """The archive is refused with Invalid, and nothing is left anywhere: not in the images
    root, not beside it (where an escape would land)."""
    stream: Any = io.BytesIO(data) if isinstance(data, bytes) else io.BufferedReader(data)
    with pytest.raises(Invalid, match=match):
        images.add_tar(stream)
    assert leftovers(images) == []
    assert os.listdir(images.root.parent) == ["images"]


def test_absolute_path_is_refused(images: ImageFiles) -> None:
    outside = images.root.parent / "escaped"
    refused(images, make_tar([member(str(outside), data=b"x")]), "absolute path")


@pytest.mark.parametrize("name", ["../escaped", "a/../../escaped", "../../../escaped", ".."])
def test_dotdot_traversal_is_refused(images: ImageFiles, name: str) -> None:
    refused(images, make_tar([member(name, data=b"x")]), r"'\.\.' component")


def test_symlink_escaping_then_a_file_through_it_is_refused(images: ImageFiles) -> None:
    data = make_tar([symlink("link", "../../../.."), member("link/pwned", data=b"x")])
    refused(images, data, "points outside the image")


def test_absolute_symlink_is_refused(images: ImageFiles) -> None:
    refused(images, make_tar([symlink("link", "/etc")]), "absolute path")


def test_chained_symlinks_that_escape_are_refused(images: ImageFiles) -> None:
    # Each link alone stays inside on paper ("d/s/../../victim" is "victim"), but d/s leads up
    # a level, so d/t really points beside the image. `t` comes first so that not even
    # tarfile's realpath-based filter can see it.
    data = make_tar(
        [
            directory("d"),
            symlink("d/t", "s/../../victim"),
            symlink("d/s", "../e"),
            directory("e"),
        ]
    )
    refused(images, data, "'d/t' resolves outside the image")


def test_writing_through_an_inner_symlink_is_refused(images: ImageFiles) -> None:
    data = make_tar([directory("real"), symlink("alias", "real"), member("alias/x", data=b"x")])
    refused(images, data, "'alias/x' goes through a symlink")


def test_writing_onto_a_symlink_is_refused(images: ImageFiles) -> None:
    data = make_tar([symlink("f", "g"), member("f", data=b"x")])
    refused(images, data, "appears more than once")


def test_writing_through_a_file_is_refused(images: ImageFiles) -> None:
    data = make_tar([member("f", data=b"x"), member("f/g", data=b"x")])
    refused(images, data, "goes through a file")


def test_duplicate_member_is_refused(images: ImageFiles) -> None:
    data = make_tar([member("f", data=b"one"), member("f", data=b"two")])
    refused(images, data, "appears more than once")


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("/etc/passwd", "absolute path"),
        ("../../../../../etc/passwd", r"'\.\.' component"),
        ("not-in-archive", "not a regular file earlier in the archive"),
        ("later", "not a regular file earlier in the archive"),
        ("dir", "not a regular file earlier in the archive"),
        ("sym", "not a regular file earlier in the archive"),
    ],
)
def test_hard_link_outside_the_archive_is_refused(
    images: ImageFiles, target: str, match: str
) -> None:
    data = make_tar(
        [
            directory("dir"),
            symlink("sym", "dir"),
            hardlink("passwd", target),
            member("later", data=b"x"),
        ]
    )
    refused(images, data, match)


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        (tarfile.CHRTYPE, "is a device file"),
        (tarfile.BLKTYPE, "is a device file"),
        (tarfile.FIFOTYPE, "is a fifo"),
        (b"V", "unsupported type"),
    ],
)
def test_special_files_are_refused(images: ImageFiles, kind: bytes, match: str) -> None:
    data = make_tar([member("special", kind, devmajor=1, devminor=3)])
    refused(images, data, match)


def test_setuid_and_setgid_bits_are_stripped(images: ImageFiles, tmp_path: Path) -> None:
    data = make_tar(
        [
            directory("shared", mode=0o2775),
            member("shared/suid", data=b"x", mode=0o4755),
            member("sgid", data=b"x", mode=0o2755),
            member("writable", data=b"x", mode=0o666),
        ]
    )
    content = images.add_tar(io.BytesIO(data))
    for path in content.root.rglob("*"):
        assert path.lstat().st_mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX) == 0
    images.copy_to(content.digest, tmp_path / "copy")
    modes = {rel: mode for rel, (_, mode, _) in tree(tmp_path / "copy").items()}
    assert modes == {"shared": None, "shared/suid": 0o755, "sgid": 0o755, "writable": 0o644}
    assert stat.S_IMODE((tmp_path / "copy" / "shared").stat().st_mode) == 0o755


def test_size_cap_refuses_a_claimed_huge_file_before_reading_it(tmp_path: Path) -> None:
    images = ImageFiles(tmp_path / "images", max_bytes=1 << 20)
    header = member("huge")[0]
    header.size = 8 << 30  # 8 GiB, never produced
    stream = GeneratedStream(itertools.chain([header.tobuf(tarfile.PAX_FORMAT)], zeros_forever()))
    refused(images, stream, "larger than the limit of 1048576 bytes")
    assert stream.consumed < 1 << 20


def test_size_cap_counts_across_files(tmp_path: Path) -> None:
    images = ImageFiles(tmp_path / "images", max_bytes=1000)
    data = make_tar([member("a", data=b"x" * 600), member("b", data=b"x" * 600)])
    refused(images, data, "larger than the limit of 1000 bytes.*'b'")


def test_size_cap_counts_hard_links_at_full_size(tmp_path: Path) -> None:
    # A copy of the image makes each link a full file: 1000 links to one file is 1000 files.
    images = ImageFiles(tmp_path / "images", max_bytes=10_000)
    links = [hardlink(f"l{i}", "a") for i in range(20)]
    refused(images, make_tar([member("a", data=b"x" * 1000), *links]), "larger than the limit")


def test_size_cap_holds_for_a_compression_bomb(tmp_path: Path) -> None:
    images = ImageFiles(tmp_path / "images", max_bytes=1 << 20)
    bomb = make_tar([member("zeros", data=bytes(8 << 20))], compression="gz")
    assert len(bomb) < 64 << 10
    refused(images, bomb, "larger than the limit")


def test_member_count_cap(tmp_path: Path) -> None:
    images = ImageFiles(tmp_path / "images", max_members=10)
    images.add_tar(io.BytesIO(make_tar([member(f"f{i}") for i in range(10)])))
    images.remove(next(iter(images.digests())))
    refused(images, make_tar([member(f"f{i}") for i in range(11)]), "more than 10 members")


def test_entry_cap_counts_implicit_directories(tmp_path: Path) -> None:
    images = ImageFiles(tmp_path / "images", max_members=10)
    refused(images, make_tar([member("/".join("abcdefghijk") + "/f")]), "more than 10 files")


def test_oversized_metadata_header_is_refused_before_it_is_read(images: ImageFiles) -> None:
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    pax.size = 1 << 30
    stream = GeneratedStream(itertools.chain([pax.tobuf(tarfile.USTAR_FORMAT)], zeros_forever()))
    refused(images, stream, "metadata header")
    assert stream.consumed < 1 << 20


def test_endless_chain_of_metadata_headers_is_refused(images: ImageFiles) -> None:
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    chain = pax.tobuf(tarfile.USTAR_FORMAT) * 5000
    data = chain + member("f")[0].tobuf(tarfile.USTAR_FORMAT) + bytes(1024)
    refused(images, data, "metadata headers in a row")


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("a" * 300, "name longer than 255 bytes"),
        ("/".join(["d" * 200] * 20), "path longer than 3072 bytes"),
        ("/".join(["d"] * 300), "nested more than 256 levels"),
    ],
)
def test_overlong_paths_are_refused(images: ImageFiles, name: str, match: str) -> None:
    refused(images, make_tar([member(name, data=b"x")]), match)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"this is not a tar archive" * 100,
        make_tar([member("f", data=b"x" * 10_000)])[:3000],  # cut inside the file's data
        make_tar([member("f", data=os.urandom(10_000))], compression="gz")[:5000],
    ],
    ids=["empty", "garbage", "truncated", "truncated-gz"],
)
def test_unreadable_archive_is_refused(images: ImageFiles, data: bytes) -> None:
    refused(images, data, "not a readable tar archive")


def test_archive_cut_between_members_is_refused(images: ImageFiles) -> None:
    whole = make_tar([member("a", data=b"x" * 512), member("b", data=b"y" * 512)])
    refused(images, whole[: 2 * 512], "cut short")  # header and data of "a" only
    damaged = whole[: 2 * 512] + b"\xff" * 512 + whole[3 * 512 :]  # b's header: bad checksum
    refused(images, damaged, "cut short or damaged")


def test_refusal_midway_leaves_nothing(images: ImageFiles) -> None:
    data = make_tar([member(f"ok{i}", data=b"fine") for i in range(50)] + [member("/abs")])
    refused(images, data, "absolute path")


def test_crash_before_the_rename_leaves_no_image(
    images: ImageFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(path: Path, data: bytes) -> None:
        raise OSError("disk fell off")

    monkeypatch.setattr(images_module, "_write_durably", crash)
    with pytest.raises(OSError, match="disk fell off"):
        images.add_tar(io.BytesIO(make_tar(app_entries())))
    assert images.digests() == set()
    assert leftovers(images) == []


def test_stale_temporary_directories_are_swept_on_start(tmp_path: Path) -> None:
    images = ImageFiles(tmp_path / "images")
    kept = images.add_tar(io.BytesIO(make_tar(app_entries())))
    stale = images.root / ".tmp-0123456789abcdef" / "files" / "sub"
    stale.mkdir(parents=True)
    (stale / "f").write_bytes(b"half")
    stale.chmod(0o555)  # as an interrupted add leaves it: read-only on the way to the store
    assert ImageFiles(images.root).digests() == {kept.digest}
    assert leftovers(images) == ["sha256-" + kept.digest.removeprefix("sha256:")]


# --- host, copies, removal ----------------------------------------------------------------------


def test_host_image_is_empty_and_the_same_everywhere(tmp_path: Path) -> None:
    one = ImageFiles(tmp_path / "one").host()
    two = ImageFiles(tmp_path / "two")
    assert one.digest == two.host().digest == two.host().digest == HOST_DIGEST
    assert one.manifest == Manifest() and one.size_bytes == 0
    assert list(one.root.iterdir()) == []
    assert two.digests() == {HOST_DIGEST}
    assert digest_of(two, make_tar([])) == HOST_DIGEST  # an empty upload is the same image


def test_image_files_are_read_only(images: ImageFiles) -> None:
    content = images.add_tar(io.BytesIO(make_tar(app_entries())))
    for path in [content.root, *content.root.rglob("*")]:
        st = path.lstat()
        if not stat.S_ISLNK(st.st_mode):
            assert st.st_mode & 0o222 == 0, path


def test_copy_is_independent_and_writable(images: ImageFiles, tmp_path: Path) -> None:
    content = images.add_tar(io.BytesIO(make_tar(app_entries())))
    before = tree(content.root)
    dest = tmp_path / "instances" / "abc" / "app"
    images.copy_to(content.digest, dest)
    assert {rel: (kind, data) for rel, (kind, _, data) in tree(dest).items()} == {
        rel: (kind, data) for rel, (kind, _, data) in before.items()
    }
    assert {rel: mode for rel, (_, mode, _) in tree(dest).items()} == {
        "empty": None,
        "link": None,
        "run.sh": 0o755,
        "sub": None,
        "sub/a.txt": 0o644,
        "sub/b.txt": 0o640,
    }
    (dest / "sub" / "a.txt").write_bytes(b"changed")
    (dest / "empty" / "new").write_bytes(b"new")
    (dest / "run.sh").chmod(0o700)
    assert tree(content.root) == before


def test_copy_of_hard_links_gives_separate_files(images: ImageFiles, tmp_path: Path) -> None:
    content = images.add_tar(io.BytesIO(make_tar([member("a", data=b"x"), hardlink("b", "a")])))
    images.copy_to(content.digest, tmp_path / "copy")
    (tmp_path / "copy" / "a").write_bytes(b"changed")
    assert (tmp_path / "copy" / "b").read_bytes() == b"x"
    assert (content.root / "a").read_bytes() == b"x"


def test_copy_refuses_an_existing_destination_and_an_unknown_image(
    images: ImageFiles, tmp_path: Path
) -> None:
    content = images.host()
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        images.copy_to(content.digest, tmp_path / "taken")
    with pytest.raises(ItemError) as caught:
        images.copy_to("sha256:" + "0" * 64, tmp_path / "new")
    assert caught.value.code == ErrorCode.NOT_FOUND
    assert not (tmp_path / "new").exists()


def test_remove(images: ImageFiles) -> None:
    content = images.add_tar(io.BytesIO(make_tar(app_entries())))
    host = images.host()
    images.remove(content.digest)
    assert images.get(content.digest) is None
    assert images.digests() == {host.digest}
    assert leftovers(images) == ["sha256-" + host.digest.removeprefix("sha256:")]
    images.remove(content.digest)  # already gone: nothing to do
    images.remove("not a digest")
    assert images.add_tar(io.BytesIO(make_tar(app_entries()))) == content  # can come back


# --- with the client's packer -------------------------------------------------------------------


def test_pack_then_add_round_trips_files_modes_and_symlinks(
    images: ImageFiles, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    (src / "static" / "css").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "server.py").write_text("print('hi')\n")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    (src / "static" / "css" / "site.css").write_text("body {}\n")
    (src / "static" / "private").write_text("secret\n")
    (src / "static" / "private").chmod(0o600)
    (src / "current").symlink_to("static/css")
    (src / "static" / "up").symlink_to("../server.py")
    (src / "portway.toml").write_text('command = ["python3", "server.py"]\nport = 8000\n')
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref\n")

    content = images.add_tar(io.BytesIO(pack(src)))
    images.copy_to(content.digest, tmp_path / "copy")
    expected = tree(src)
    del expected[".git"], expected[".git/HEAD"]
    assert tree(tmp_path / "copy") == expected
    assert content.manifest == Manifest(("python3", "server.py"), {}, 8000)

    os.utime(src / "server.py", (1, 1))  # mtimes are not content
    assert digest_of(images, pack(src)) == content.digest
    assert images.digests() == {content.digest}


def test_pack_with_extra_manifest_sets_the_image_manifest(
    images: ImageFiles, tmp_path: Path
) -> None:
    (tmp_path / "app").mkdir()
    extra = {"command": ["sh", "-c", 'echo "$GREETING"'], "port": 9000, "env": {"GREETING": "hi"}}
    content = images.add_tar(io.BytesIO(pack(tmp_path / "app", extra)))
    assert content.manifest == Manifest(("sh", "-c", 'echo "$GREETING"'), {"GREETING": "hi"}, 9000)
