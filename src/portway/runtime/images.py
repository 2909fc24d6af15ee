"""Image files: immutable, content-addressed snapshots of a directory, kept in the data directory.

Theory of operation. The process runtime cannot pull OCI images, so an image is the local
analogue (semantics.md "Images"): the files of a directory plus a manifest (`portway.toml` at its
root) giving the start command, default env and default port. Users upload a tar stream; this
module unpacks it, names it by the sha256 of its content and keeps it read-only. Each instance
gets its own writable copy (`copy_to`), so no run can change an image.

Layout under `root` (`<data dir>/images`), one directory per image:

    sha256-<hex>/files        the image's files, read-only
    sha256-<hex>/image.json   the parsed manifest and the size, written before the rename
    .tmp-<random>/            an add or a removal in progress; never read, swept on start

An image becomes visible by one `rename` of a complete temporary directory, and disappears by one
`rename` to a temporary name before it is deleted, so a crash at any point leaves either a whole
image or a stale `.tmp-*` that the next `ImageFiles` removes.

The tar is a security boundary: the daemon runs as root and users choose the bytes. Extraction
therefore does not use `TarFile.extract`, whose safety rests on the `data` filter's realpath
checks (which have had bypasses, e.g. CVE-2025-4517, fixed after the 3.11.7 this project runs on);
it writes every member itself, after these checks:
- only regular files, directories, symlinks and hard links to earlier regular files; no devices,
  fifos, sparse or unknown members;
- member paths are relative, with no `..`, bounded in length and depth, and never repeated;
- no member is written on or through a symlink (each path's parents must be directories this
  extraction made), and files are opened with O_EXCL|O_NOFOLLOW;
- symlinks may not be absolute or point outside the image, checked lexically per member and
  again with `realpath` once every link exists (chains of relative links can escape otherwise);
- tarfile's own `data` filter must also accept each member, and gives the file modes: no
  setuid/setgid/sticky, no group/other write, owner read-write;
- size (declared and actually written), member count and metadata headers are capped as the
  stream is read, so neither a tar bomb nor a compression bomb can fill the disk or the memory.

The digest is over a canonical listing of the extracted tree (sorted paths; each entry's type,
path, and a file's permission bits and content sha256 or a symlink's target), so the same directory
gives the same digest however it was tarred: order, mtimes, owners, tar format and compression do
not count; any change of content, name, exec bit or link target does. Directory modes are not part
of an image (directories are always 0755 in a copy), like git.
"""

from __future__ import annotations

import errno
import hashlib
import json
import lzma
import os
import posixpath
import re
import secrets
import shlex
import shutil
import stat
import tarfile
import tomllib
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any, Self

from portway.model.errors import Invalid, not_found

MANIFEST_NAME = "portway.toml"
MANIFEST_KEYS = ("command", "env", "port")

DEFAULT_MAX_MEMBERS = 100_000
MAX_PATH_BYTES = 3072  # leaves room under PATH_MAX (4096) for the data dir and instance dirs
MAX_NAME_BYTES = 255  # what Linux filesystems allow for one path component
MAX_DEPTH = 256  # keeps every later walk (ours, shutil's) far from the recursion limit
MAX_MANIFEST_BYTES = 1 << 20
MAX_METADATA_HEADER_BYTES = 1 << 20  # one pax / GNU long-name header, read whole into memory
MAX_METADATA_TOTAL_BYTES = 64 << 20  # all of them in one archive
MAX_CHAINED_HEADERS = 16  # metadata headers before one member; tarfile recurses per header

_CANONICAL_FORMAT = b"portway-image/1\0"
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_IMAGE_DIR_PREFIX = "sha256-"
_TEMP_PREFIX = ".tmp-"
_CHUNK = 1 << 20
_METADATA_TYPES = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)
# Errors of the file system that the archive's content causes (a name the file system refuses),
# as opposed to the host's own trouble (disk full, I/O error), which must stay a server error.
_ERRNOS_CAUSED_BY_CONTENT = frozenset(
    {errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ, errno.EEXIST, errno.ENOTDIR, errno.ELOOP}
)


# --- the manifest -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """What `portway.toml` says: how to start the image when the instance does not say."""

    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    port: int | None = None

    def __post_init__(self) -> None:
        # A frozen dataclass would still hand out a mutable dict; images never change.
        object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))


def parse_manifest(data: bytes) -> Manifest:
    """Parse the bytes of a `portway.toml`; raise Invalid naming the offending key."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid(MANIFEST_NAME, "is not UTF-8 text") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise Invalid(MANIFEST_NAME, f"is not valid TOML: {e}") from None
    unknown = sorted(set(table) - set(MANIFEST_KEYS))
    if unknown:
        allowed = ", ".join(MANIFEST_KEYS)
        raise Invalid(MANIFEST_NAME, f"{unknown[0]}: unknown key (allowed: {allowed})")
    return Manifest(
        command=_manifest_command(table.get("command")),
        env=_manifest_env(table.get("env")),
        port=_manifest_port(table.get("port")),
    )


def _manifest_command(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            words = shlex.split(value)
        except ValueError as e:  # unbalanced quotes
            raise Invalid(MANIFEST_NAME, f"command: cannot split {value!r}: {e}") from None
    elif isinstance(value, list):
        for i, word in enumerate(value):
            if not isinstance(word, str):
                raise Invalid(MANIFEST_NAME, f"command: item {i} is not a string")
        words = value
    else:
        raise Invalid(MANIFEST_NAME, "command: must be a list of strings or a string")
    if not words:
        raise Invalid(MANIFEST_NAME, "command: must not be empty (leave it out instead)")
    if not words[0]:
        raise Invalid(MANIFEST_NAME, "command: the program (first item) is empty")
    if any("\0" in word for word in words):
        raise Invalid(MANIFEST_NAME, "command: contains a NUL character")
    return tuple(words)


def _manifest_env(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(MANIFEST_NAME, "env: must be a table of strings")
    env: dict[str, str] = {}
    for name, text in value.items():
        if not name or "=" in name or "\0" in name:
            raise Invalid(MANIFEST_NAME, f"env: {name!r} is not a valid variable name")
        if not isinstance(text, str):
            raise Invalid(MANIFEST_NAME, f"env: {name}: must be a string")
        if "\0" in text:
            raise Invalid(MANIFEST_NAME, f"env: {name}: contains a NUL character")
        env[name] = text
    return env


def _manifest_port(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):  # TOML true is a Python int
        raise Invalid(MANIFEST_NAME, "port: must be an integer")
    if not 1 <= value <= 65535:
        raise Invalid(MANIFEST_NAME, f"port: {value} is not a port (1-65535)")
    return value


def _manifest_to_json(manifest: Manifest) -> dict[str, Any]:
    return {"command": list(manifest.command), "env": dict(manifest.env), "port": manifest.port}


def _manifest_from_json(data: Mapping[str, Any]) -> Manifest:
    return Manifest(command=tuple(data["command"]), env=data["env"], port=data["port"])


# --- images -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageContent:
    """One stored image."""

    digest: str  # "sha256:<64 hex>"
    size_bytes: int  # total bytes of regular files
    manifest: Manifest
    root: Path  # the read-only files of the image


@dataclass(frozen=True)
class _Limits:
    max_bytes: int
    max_members: int


def _canonical_digest(records: list[tuple[bytes, ...]]) -> str:
    """The digest of a tree from its entries. Fields never contain NUL and each entry type has a
    fixed number of fields, so NUL-terminated fields are unambiguous."""
    h = hashlib.sha256(_CANONICAL_FORMAT)
    for record in sorted(records, key=lambda r: r[1]):  # r[1] is the path; paths are unique
        for part in record:
            h.update(part + b"\0")
    return "sha256:" + h.hexdigest()


#: The built-in empty image (no files, empty manifest) that runs a bare host command.
HOST_DIGEST = _canonical_digest([])


class ImageFiles:
    """The images of one data directory. One instance per `root`; safe to call from threads
    (each add works in its own temporary directory, and renames decide races)."""

    def __init__(
        self, root: Path, max_bytes: int = 1 << 30, *, max_members: int = DEFAULT_MAX_MEMBERS
    ) -> None:
        self.root = root
        self._limits = _Limits(max_bytes=max_bytes, max_members=max_members)
        root.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temps()

    def add_tar(self, stream: IO[bytes]) -> ImageContent:
        """Unpack a tar stream (plain, gzip, bzip2 or xz; need not be seekable) as an image.
        Raises Invalid for an archive it refuses, leaving nothing on disk. Returns the existing
        image when the same content is already stored."""
        temp = self._new_temp()
        try:
            _extract(stream, temp / "files", self._limits)
            return self._store(temp)
        finally:
            _force_remove(temp)  # a no-op once renamed into place

    def host(self) -> ImageContent:
        """The built-in empty image, created on first use; its digest is HOST_DIGEST everywhere."""
        existing = self.get(HOST_DIGEST)
        if existing is not None:
            return existing
        temp = self._new_temp()
        try:
            (temp / "files").mkdir()
            return self._store(temp)
        finally:
            _force_remove(temp)

    def get(self, digest: str) -> ImageContent | None:
        """The stored image of a digest, or None (also for a malformed digest)."""
        home = self._home_of(digest)
        if home is None:
            return None
        try:
            data = json.loads((home / "image.json").read_text())
        except FileNotFoundError:
            return None
        return ImageContent(
            digest=digest,
            size_bytes=int(data["size_bytes"]),
            manifest=_manifest_from_json(data["manifest"]),
            root=home / "files",
        )

    def remove(self, digest: str) -> None:
        """Delete an image's files; the caller has made sure nothing refers to it. Removing an
        image that is not there does nothing."""
        home = self._home_of(digest)
        if home is None:
            return
        doomed = self._temp_name()
        try:
            os.rename(home, doomed)  # gone at once as an image; deleted below or on next start
        except FileNotFoundError:
            return
        _force_remove(doomed)

    def digests(self) -> set[str]:
        """Every stored image."""
        found: set[str] = set()
        for entry in os.scandir(self.root):
            if entry.name.startswith(_IMAGE_DIR_PREFIX):
                digest = "sha256:" + entry.name.removeprefix(_IMAGE_DIR_PREFIX)
                if self.get(digest) is not None:
                    found.add(digest)
        return found

    def copy_to(self, digest: str, dest: Path) -> None:
        """Give an instance its own writable copy of an image's files at `dest`, which must not
        exist (FileExistsError). Modes and symlinks are kept; hard links become separate files
        so that no write in the copy reaches anything else. Raises the not-found ItemError for
        an unknown digest."""
        image = self.get(digest)
        if image is None:
            raise not_found("image", "digest", digest)
        shutil.copytree(image.root, dest, symlinks=True)
        _add_owner_write(dest)  # undo the store's read-only bits: back to the canonical modes

    # --- internals ------------------------------------------------------------------------------

    def _store(self, temp: Path) -> ImageContent:
        """Name the extracted files in `temp` by their digest and move them into place."""
        files = temp / "files"
        digest, size_bytes = _scan(files)
        manifest = _read_manifest(files)
        existing = self.get(digest)
        if existing is not None:
            return existing
        _make_read_only(files)
        info = {"digest": digest, "size_bytes": size_bytes, "manifest": _manifest_to_json(manifest)}
        _write_durably(temp / "image.json", json.dumps(info, sort_keys=True).encode())
        home = self.root / (_IMAGE_DIR_PREFIX + digest.removeprefix("sha256:"))
        try:
            os.rename(temp, home)  # the one step that makes the image visible
        except OSError:
            # A concurrent add of the same content got there first; theirs is the same image.
            existing = self.get(digest)
            if existing is not None:
                return existing
            raise
        _fsync_directory(self.root)
        return ImageContent(
            digest=digest, size_bytes=size_bytes, manifest=manifest, root=home / "files"
        )

    def _home_of(self, digest: str) -> Path | None:
        # The strict pattern is also what keeps a digest from naming a path outside root.
        match = _DIGEST.fullmatch(digest)
        return self.root / (_IMAGE_DIR_PREFIX + match.group(1)) if match else None

    def _temp_name(self) -> Path:
        return self.root / (_TEMP_PREFIX + secrets.token_hex(8))

    def _new_temp(self) -> Path:
        temp = self._temp_name()
        temp.mkdir(mode=0o700)
        return temp

    def _remove_stale_temps(self) -> None:
        """Adds and removals that a crash interrupted."""
        for entry in os.scandir(self.root):
            if entry.name.startswith(_TEMP_PREFIX):
                _force_remove(Path(entry.path))


# --- extraction ---------------------------------------------------------------------------------


def _extract(stream: IO[bytes], dest: Path, limits: _Limits) -> None:
    dest.mkdir()
    extraction = _Extraction(dest, limits)
    budget = _HeaderBudget()
    try:
        with tarfile.open(fileobj=stream, mode="r|*", tarinfo=_guarded_tarinfo(budget)) as tar:
            for member in tar:
                extraction.add(tar, member)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as e:
        raise _refused(f"is not a readable tar archive ({e})") from None
    if not budget.saw_end:
        # tarfile also stops quietly at the end of the data or at a damaged header; an upload cut
        # short between two members must not become an image that lacks files.
        raise _refused("is cut short or damaged (no end-of-archive marker)")


def _refused(problem: str) -> Invalid:
    return Invalid("image", problem)


def _shown(path: str) -> str:
    """A member path for an error message: quoted, so odd names stay readable, and cut short."""
    return repr(path if len(path) <= 200 else path[:200] + "...")


@dataclass
class _HeaderBudget:
    """What one archive has spent on metadata headers, which tarfile reads whole into memory."""

    total_bytes: int = 0
    chained: int = 0
    saw_end: bool = False  # the zero block that ends an archive


def _guarded_tarinfo(budget: _HeaderBudget) -> type[tarfile.TarInfo]:
    """A TarInfo class that refuses oversized or endless metadata headers before tarfile reads
    them: a pax header claiming gigabytes would otherwise be read into memory in one piece, and a
    long chain of them makes tarfile recurse once per header. It also notes the end-of-archive
    block, which tarfile does not report."""

    class GuardedTarInfo(tarfile.TarInfo):
        @classmethod
        def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
            if len(buf) == tarfile.BLOCKSIZE and not any(buf):
                budget.saw_end = True
            info = super().frombuf(buf, encoding, errors)
            if info.type not in _METADATA_TYPES:
                budget.chained = 0
                return info
            budget.chained += 1
            budget.total_bytes += info.size
            if info.size > MAX_METADATA_HEADER_BYTES:
                raise _refused(f"has a {info.size}-byte metadata header (pax or GNU long name)")
            if budget.total_bytes > MAX_METADATA_TOTAL_BYTES:
                raise _refused(f"has more than {MAX_METADATA_TOTAL_BYTES} bytes of metadata")
            if budget.chained > MAX_CHAINED_HEADERS:
                raise _refused(f"has more than {MAX_CHAINED_HEADERS} metadata headers in a row")
            return info

    return GuardedTarInfo


class _Extraction:
    """One archive being written into a fresh private directory, member by member.

    It remembers the kind of every path it made ("dir", "file", "symlink"), which is how it
    knows, without asking the file system, that no member lands on or goes through a symlink.
    Nobody else writes in the directory, so the record cannot go stale."""

    def __init__(self, dest: Path, limits: _Limits) -> None:
        self.dest = dest
        self.limits = limits
        self.kinds: dict[str, str] = {"": "dir"}
        self.members = 0
        self.bytes = 0

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise _refused(f"has more than {self.limits.max_members} members")
        _check_type(member)
        name = _member_path(member.name)
        if name == "":  # the archive's own root, "./"
            if not member.isdir():
                raise _refused("the root of the archive must be a directory")
            return
        if not self._check_place(name, member):
            return
        if member.issym():
            _check_symlink_target(name, member.linkname)
        link_target = self._hard_link_target(name, member.linkname) if member.islnk() else ""
        filtered = _data_filter(member, name, self.dest)
        try:
            if member.isdir():
                self._make_dirs(name)
            elif member.issym():
                self._make_symlink(name, member.linkname)
            elif member.islnk():
                self._make_hard_link(name, link_target)
            else:
                assert filtered.mode is not None  # the data filter keeps regular files' modes
                self._make_file(name, tar, member, filtered.mode)
        except OSError as e:
            if e.errno in _ERRNOS_CAUSED_BY_CONTENT:
                raise _refused(f"{_shown(name)} cannot be created: {e.strerror}") from None
            raise

    def _check_place(self, name: str, member: tarfile.TarInfo) -> bool:
        """Refuse a member whose path goes through anything but a directory, or repeats an
        earlier one. False for a directory already made (nothing left to do)."""
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            kind = self.kinds.get(parent)
            if kind not in (None, "dir"):
                raise _refused(f"{_shown(name)} goes through a {kind} ({_shown(parent)})")
        existing = self.kinds.get(name)
        if existing is None:
            return True
        if existing == "dir" and member.isdir():
            return False  # e.g. "a/" after "a/b" made it: the same directory
        raise _refused(f"{_shown(name)} appears more than once")

    def _record(self, name: str, kind: str) -> None:
        # Implicit parent directories count too: one member per deep path could otherwise make
        # hundreds of directories each, and exhaust the inodes that a member cap should protect.
        if len(self.kinds) > self.limits.max_members:  # the root is in kinds, and not counted
            raise _refused(f"has more than {self.limits.max_members} files, directories and links")
        self.kinds[name] = kind

    def _path(self, name: str) -> str:
        return os.path.join(self.dest, name)

    def _make_dirs(self, name: str) -> None:
        """Make a directory and any parents the archive left implicit."""
        parts = name.split("/")
        for depth in range(1, len(parts) + 1):
            path = "/".join(parts[:depth])
            if path not in self.kinds:
                os.mkdir(self._path(path), 0o755)
                self._record(path, "dir")

    def _make_parent(self, name: str) -> None:
        parent = posixpath.dirname(name)
        if parent:
            self._make_dirs(parent)

    def _count_bytes(self, name: str, size: int) -> None:
        if self.bytes + size > self.limits.max_bytes:
            raise _refused(
                f"is larger than the limit of {self.limits.max_bytes} bytes (at {_shown(name)})"
            )
        self.bytes += size

    def _make_file(
        self, name: str, tar: tarfile.TarFile, member: tarfile.TarInfo, mode: int
    ) -> None:
        self._count_bytes(name, member.size)  # refuse on the declared size, before any write
        source = tar.extractfile(member)
        assert source is not None  # always a reader for a regular file
        self._make_parent(name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self._path(name), flags, 0o600)
        self._record(name, "file")
        with os.fdopen(fd, "wb") as target:
            written = 0
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                if written > member.size:  # tarfile stops at the size; never trust, count
                    raise _refused(f"{_shown(name)} is longer than its header says")
                target.write(chunk)
            os.fchmod(fd, mode & 0o777)

    def _make_symlink(self, name: str, target: str) -> None:
        self._make_parent(name)
        os.symlink(target, self._path(name))
        self._record(name, "symlink")

    def _hard_link_target(self, name: str, linkname: str) -> str:
        """The member a hard link names, which must be a regular file made earlier: anything
        else could reach a file of the host or a path that is not the image's."""
        target = _member_path(linkname)
        if self.kinds.get(target) != "file":
            raise _refused(
                f"{_shown(name)} is a hard link to {_shown(linkname)}, "
                "which is not a regular file earlier in the archive"
            )
        return target

    def _make_hard_link(self, name: str, target: str) -> None:
        # Copies of the image make each link a full file, so links count at full size.
        self._count_bytes(name, os.lstat(self._path(target)).st_size)
        self._make_parent(name)
        os.link(self._path(target), self._path(name), follow_symlinks=False)
        self._record(name, "file")


def _check_type(member: tarfile.TarInfo) -> None:
    if member.isreg() and not member.issparse():
        return
    if member.isdir() or member.issym() or member.islnk():
        return
    name = _shown(member.name)
    if member.ischr() or member.isblk():
        problem = "is a device file"
    elif member.isfifo():
        problem = "is a fifo"
    elif member.issparse():
        problem = "is a sparse file"
    else:
        problem = f"has an unsupported type {member.type!r}"
    raise _refused(f"{name} {problem}; an image holds only files, directories and symlinks")


def _member_path(raw: str) -> str:
    """The normalized relative path of a member ("" for the root); refuses what could land
    outside the image or that the file system could not hold."""
    if "\0" in raw:
        raise _refused(f"{_shown(raw)} has a NUL character in its path")
    if len(os.fsencode(raw)) > MAX_PATH_BYTES:
        raise _refused(f"{_shown(raw)} has a path longer than {MAX_PATH_BYTES} bytes")
    if raw.startswith("/"):
        raise _refused(f"{_shown(raw)} is an absolute path")
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _refused(f"{_shown(raw)} has a '..' component")
    if len(parts) > MAX_DEPTH:
        raise _refused(f"{_shown(raw)} is nested more than {MAX_DEPTH} levels deep")
    if any(len(os.fsencode(part)) > MAX_NAME_BYTES for part in parts):
        raise _refused(f"{_shown(raw)} has a name longer than {MAX_NAME_BYTES} bytes")
    return "/".join(parts)


def _check_symlink_target(name: str, target: str) -> None:
    if not target or "\0" in target or len(os.fsencode(target)) > MAX_PATH_BYTES:
        raise _refused(f"symlink {_shown(name)} has an empty, overlong or NUL-bearing target")
    if target.startswith("/"):
        raise _refused(f"symlink {_shown(name)} points to an absolute path {_shown(target)}")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if resolved == ".." or resolved.startswith("../"):
        raise _refused(f"symlink {_shown(name)} points outside the image ({_shown(target)})")


def _data_filter(member: tarfile.TarInfo, name: str, dest: Path) -> tarfile.TarInfo:
    """tarfile's own `data` filter, as a second opinion after ours (and the source of the file
    modes it settles on)."""
    try:
        return tarfile.data_filter(member.replace(name=name, deep=False), str(dest))
    except tarfile.FilterError as e:
        raise _refused(f"{_shown(name)} refused by the tar data filter: {e}") from None


# --- the extracted tree -------------------------------------------------------------------------


def _walk(top: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry under `top` (not `top` itself) as (relative path, lstat), never following a
    symlink. Iterative, so depth costs no recursion."""
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        with os.scandir(os.path.join(top, rel_dir)) as entries:
            for entry in entries:
                rel = posixpath.join(rel_dir, entry.name) if rel_dir else entry.name
                st = entry.stat(follow_symlinks=False)
                yield rel, st
                if stat.S_ISDIR(st.st_mode):
                    pending.append(rel)


def _scan(files: Path) -> tuple[str, int]:
    """The digest and total regular-file bytes of an extracted tree. Also the last check of the
    tree: every symlink, now that all of them exist, must resolve inside it."""
    real_top = os.path.realpath(files)
    records: list[tuple[bytes, ...]] = []
    size = 0
    for rel, st in _walk(files):
        path = os.path.join(files, rel)
        key = os.fsencode(rel)
        if stat.S_ISDIR(st.st_mode):
            records.append((b"dir", key))
        elif stat.S_ISREG(st.st_mode):
            size += st.st_size
            mode = b"%o" % (st.st_mode & 0o777)
            records.append((b"file", key, mode, _file_sha256(path).encode()))
        elif stat.S_ISLNK(st.st_mode):
            if os.path.commonpath([os.path.realpath(path), real_top]) != real_top:
                raise _refused(f"symlink {_shown(rel)} resolves outside the image")
            records.append((b"symlink", key, os.fsencode(os.readlink(path))))
        else:  # extraction makes nothing else; refuse rather than hash something odd
            raise _refused(f"{_shown(rel)} is not a file, directory or symlink")
    return _canonical_digest(records), size


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _read_manifest(files: Path) -> Manifest:
    path = files / MANIFEST_NAME
    try:
        st = path.lstat()
    except FileNotFoundError:
        return Manifest()  # a plain directory is an image too; the instance gives the command
    if not stat.S_ISREG(st.st_mode):  # a symlink could make the daemon read any host file
        raise Invalid(MANIFEST_NAME, "must be a regular file")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise Invalid(MANIFEST_NAME, f"is larger than {MAX_MANIFEST_BYTES} bytes")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        return parse_manifest(f.read(MAX_MANIFEST_BYTES + 1))


# --- file-system helpers ------------------------------------------------------------------------


def _make_read_only(top: Path) -> None:
    """Take every write bit off an image's files and directories (symlinks have no mode)."""
    for rel, st in _walk(top):
        if stat.S_ISDIR(st.st_mode):
            os.chmod(os.path.join(top, rel), 0o555)
        elif stat.S_ISREG(st.st_mode):
            os.chmod(os.path.join(top, rel), stat.S_IMODE(st.st_mode) & ~0o222)
    os.chmod(top, 0o555)


def _add_owner_write(top: Path) -> None:
    """Give the owner write on every file and directory of a copy (canonical modes all have it)."""
    os.chmod(top, 0o755)
    for rel, st in _walk(top):
        if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            os.chmod(os.path.join(top, rel), stat.S_IMODE(st.st_mode) | 0o200)


def _force_remove(path: Path) -> None:
    """Delete a tree even where it is read-only (without root, a 0555 directory's entries
    cannot be unlinked)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        path.unlink()
        return
    os.chmod(path, 0o700)
    for rel, entry_st in _walk(path):
        if stat.S_ISDIR(entry_st.st_mode):
            os.chmod(os.path.join(path, rel), 0o700)
    shutil.rmtree(path)


def _write_durably(path: Path, data: bytes) -> None:
    """Write a new file and flush it to disk (it is renamed into place with its directory)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(fd)


def _fsync_directory(path: Path) -> None:
    """Make a rename in `path` survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
