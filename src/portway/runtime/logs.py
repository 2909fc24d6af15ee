"""The bounded per-instance console log.

Theory of operation. An instance's stdout and stderr are appended (O_APPEND) to one file by the
instance's processes themselves, so the app keeps running and logging while the daemon is down.
Readers address the log by ABSOLUTE byte offset, forever: offset N names the same byte for the
life of the file, so a client that follows the log (`offset = previous end`) never sees a byte
twice or skips one, however the file is trimmed.

To keep the file bounded without moving bytes (which would change offsets, and which cannot be
done safely while another process appends), `trim` punches a hole over the oldest blocks:
fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) frees their disk space, keeps the size,
and the app's O_APPEND writes carry on at the end untouched. The first byte still held is found
with lseek(SEEK_DATA). At most `cap_bytes` plus one block of data remains, because holes are
punched in whole blocks.

Where the filesystem cannot punch holes (EOPNOTSUPP), the file is kept whole and a warning is
logged: the alternative, truncate-and-copy, loses or duplicates what the app writes during the
copy and changes every offset, so it is not done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

_log = logging.getLogger(__name__)

# From <linux/falloc.h>.
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02


@dataclass(frozen=True)
class LogSlice:
    """Bytes [start, end) of the log, and the range [available_start, available_end) it holds."""

    data: bytes
    available_start: int
    available_end: int
    start: int
    end: int


def _load_fallocate() -> Callable[[int, int, int, int], int] | None:
    """libc's fallocate(2) wrapper; Python's os module has only posix_fallocate (no modes)."""
    try:
        func = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    func.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], func)


_fallocate = _load_fallocate()


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Free [offset, offset+length) of the file without changing its size or other offsets.
    Raises OSError (EOPNOTSUPP where the filesystem cannot)."""
    if _fallocate is None:
        raise OSError(errno.EOPNOTSUPP, "fallocate is not available")
    if _fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def first_data(fd: int, size: int) -> int:
    """The offset of the first byte still held; `size` if none is (empty, or all punched)."""
    try:
        return min(os.lseek(fd, 0, os.SEEK_DATA), size)
    except OSError as e:
        if e.errno == errno.ENXIO:  # no data at or after offset 0
            return size
        raise


def trim(path: Path, cap_bytes: int) -> None:
    """Keep at most `cap_bytes` (+ one block) of the log's newest data; safe while the instance
    appends to it. A missing file is left missing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        st = os.fstat(fd)
        block = st.st_blksize or 4096
        # Everything before `cut` goes; rounded down so only whole blocks are punched (a partial
        # block would be zeroed but still stored, and SEEK_DATA would still report it).
        cut = (st.st_size - cap_bytes) // block * block
        start = first_data(fd, st.st_size)
        if cut <= start:
            return
        try:
            punch_hole(fd, start, cut - start)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            _log.warning(
                "cannot trim console log %s: its filesystem cannot punch holes; it keeps growing",
                path,
            )
    finally:
        os.close(fd)


def read(path: Path, offset: int, limit: int) -> LogSlice:
    """Read up to `limit` bytes from absolute `offset`; a negative offset counts back from the
    end, and an offset before the first byte still held starts at that byte. A log that does not
    exist yet reads as empty."""
    if limit < 0:
        raise ValueError("limit must be >= 0")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return LogSlice(b"", 0, 0, 0, 0)
    try:
        size = os.fstat(fd).st_size
        available_start = first_data(fd, size)
        start = size + offset if offset < 0 else offset
        start = max(available_start, min(start, size))
        data = os.pread(fd, min(limit, size - start), start)
        # A trim that ran during the pread may have punched what we read into zeros: drop
        # whatever now lies before the first byte held, rather than return zeros as log text.
        now_size = os.fstat(fd).st_size
        now_start = first_data(fd, now_size)
        if now_start > start:
            data = data[now_start - start :]
            available_start = start = now_start
            size = max(size, now_size)
        return LogSlice(data, available_start, size, start, start + len(data))
    finally:
        os.close(fd)
