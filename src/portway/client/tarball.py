"""Packing a directory into a tar stream for upload (`portway image build`, `portway deploy`).

`iter_pack(directory)` yields the archive in pieces, for a streaming upload (httpx takes an
iterator of bytes as a request body), so even a large directory is never held in memory;
`pack(directory)` is the same archive as one bytes object.

The archive is reproducible: packing the same directory twice gives identical bytes. Members are
in sorted order (by the bytes of their names), and owner, group and mtime are fixed (0, 0, epoch),
so the upload does not reveal local user names and the daemon can dedupe uploads. (The daemon
names an image by its content anyway; see runtime/images.py.)

What goes in, with paths relative to the directory and no entry for the directory itself:
- regular files with their permission bits, directories, and symlinks stored as symlinks (never
  followed). A symlink that is absolute or points outside the directory is an error here, because
  the daemon refuses it and a message naming the link is more use before the upload.
- hard links are stored as separate files (their content twice).
- left out: sockets, fifos and device files (an image holds only files, directories and
  symlinks), and anything, at any depth, named one of SKIPPED_NAMES: version-control data,
  Python byte code and tool caches, which the app does not need, and `.venv`, which is tied to
  the paths of the machine it was made on (its symlinks to the host's interpreter are absolute
  and would be refused). `node_modules` is kept: Portway has no install step, so a Node.js app
  needs it in the image.

`extra_manifest`, when given, becomes the archive's `portway.toml`, replacing the directory's own
(for `portway deploy DIR -- CMD` and `--command`-style flags). To override only some keys, read
the directory's file with `tomllib`, merge, and pass the result.
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path

MANIFEST_NAME = "portway.toml"

SKIPPED_NAMES = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        ".venv",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
    }
)

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_CHUNK = 1 << 20


class PackError(ValueError):
    """The directory cannot be packed; the message says which path and why."""


def pack(directory: Path, extra_manifest: Mapping[str, object] | None = None) -> bytes:
    """The whole archive of `directory` as bytes (see iter_pack)."""
    return b"".join(iter_pack(directory, extra_manifest))


def iter_pack(
    directory: Path, extra_manifest: Mapping[str, object] | None = None
) -> Iterator[bytes]:
    """The archive of `directory`, in pieces of at most about a megabyte.

    The directory and the manifest are checked now, so a wrong path fails at the call rather than
    halfway through an upload; errors met while walking (an unreadable subdirectory, a file that
    shrank) are raised as PackError during iteration."""
    if not directory.exists():
        raise PackError(f"{directory}: no such directory")
    if not directory.is_dir():
        raise PackError(f"{directory}: not a directory")
    manifest = None if extra_manifest is None else render_manifest(extra_manifest).encode()
    return _with_end_of_archive(_members(directory, manifest))


def _members(directory: Path, manifest: bytes | None) -> Iterator[bytes]:
    for rel, path, st in _walk(directory, ""):
        if manifest is not None and rel == MANIFEST_NAME:
            continue  # replaced below
        if stat.S_ISDIR(st.st_mode):
            yield _header(rel, tarfile.DIRTYPE, st.st_mode)
        elif stat.S_ISLNK(st.st_mode):
            yield _header(rel, tarfile.SYMTYPE, st.st_mode, linkname=_symlink_target(rel, path))
        else:
            yield _header(rel, tarfile.REGTYPE, st.st_mode, size=st.st_size)
            yield from _file_content(path, st.st_size)
    if manifest is not None:
        yield _header(MANIFEST_NAME, tarfile.REGTYPE, 0o644, size=len(manifest))
        yield manifest + _padding(len(manifest))


def _walk(top: Path, rel_dir: str) -> Iterator[tuple[str, Path, os.stat_result]]:
    """Entries under `top/rel_dir` in sorted order, a directory before its contents, skipping
    SKIPPED_NAMES and special files. Never follows a symlink."""
    here = top / rel_dir if rel_dir else top
    try:
        with os.scandir(here) as entries:
            names = sorted((entry.name for entry in entries), key=os.fsencode)
    except OSError as e:
        raise PackError(f"{here}: cannot read the directory: {e.strerror}") from None
    for name in names:
        if name in SKIPPED_NAMES:
            continue
        rel = f"{rel_dir}/{name}" if rel_dir else name
        path = here / name
        try:
            st = path.lstat()
        except OSError as e:
            raise PackError(f"{path}: {e.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            yield rel, path, st
            yield from _walk(top, rel)
        elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            yield rel, path, st
        # sockets, fifos, devices: not part of an image


def _symlink_target(rel: str, path: Path) -> str:
    target = os.readlink(path)
    if target.startswith("/"):
        raise PackError(f"{path}: symlink to an absolute path ({target}); make it relative")
    depth = rel.count("/")  # how many directories deep the link itself is
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                raise PackError(f"{path}: symlink points outside the directory ({target})")
        elif part not in ("", "."):
            depth += 1
    return target


def _file_content(path: Path, size: int) -> Iterator[bytes]:
    """Exactly `size` bytes of a file (the size already written in its header), then padding."""
    remaining = size
    try:
        with open(path, "rb") as f:
            while remaining:
                chunk = f.read(min(_CHUNK, remaining))
                if not chunk:
                    raise PackError(f"{path}: the file shrank while it was being packed")
                remaining -= len(chunk)
                yield chunk
    except OSError as e:
        raise PackError(f"{path}: {e.strerror}") from None
    yield _padding(size)


def _header(name: str, kind: bytes, mode: int, size: int = 0, linkname: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = stat.S_IMODE(mode) & 0o777  # no setuid/setgid/sticky: the daemon strips them
    info.size = size
    info.linkname = linkname
    # Fixed owner and time: the same directory must give the same bytes.
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    # pax: long names, non-ASCII names and sizes over 8 GiB all fit.
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)


def _with_end_of_archive(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """The pieces, then the two zero blocks that end an archive, padded to a whole record as
    tarfile and tar(1) write it."""
    total = 0
    for piece in pieces:
        total += len(piece)
        yield piece
    end = 2 * _BLOCK
    yield b"\0" * (end + (-(total + end) % _RECORD))


# --- a small TOML writer for portway.toml -------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def render_manifest(manifest: Mapping[str, object]) -> str:
    """A `portway.toml` for a manifest of the simple types it allows: strings, integers,
    booleans, lists of strings, and tables of those scalars (`env`). Which keys and values the
    daemon accepts is its business; this only writes them correctly."""
    lines: list[str] = []
    tables: list[str] = []
    for key, value in manifest.items():
        if isinstance(value, Mapping):
            tables.append(f"\n[{_toml_key(key)}]")
            tables.extend(
                f"{_toml_key(k)} = {_toml_scalar(f'{key}.{k}', v)}" for k, v in value.items()
            )
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(key, value)}")
    return "\n".join([*lines, *tables]) + "\n"


def _toml_value(key: str, value: object) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_list_item(key, item) for item in value) + "]"
    return _toml_scalar(key, value)


def _toml_list_item(key: str, item: object) -> str:
    if not isinstance(item, str):
        raise PackError(f"{MANIFEST_NAME}: {key}: only lists of strings can be written")
    return _toml_string(item)


def _toml_scalar(key: str, value: object) -> str:
    if isinstance(value, bool):  # before int: True is an int in Python
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    raise PackError(f"{MANIFEST_NAME}: {key}: cannot write a {type(value).__name__}")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    """A TOML basic string: quote, backslash and control characters escaped (tab may stay,
    but escaping it too is simpler), everything else as it is."""
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:  # a lone surrogate cannot be written as UTF-8
            raise PackError(f"{MANIFEST_NAME}: {text!r} is not valid Unicode")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
