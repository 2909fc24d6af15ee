"""The bounded console log: absolute offsets, trimming by punching holes, a concurrent writer.

Every line the writers below produce is 16 bytes and names its own number, so the byte at any
absolute offset is known: a read is checked against what must be there, not just for length.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portway.runtime import logs

LINE = 16


def line(n: int) -> bytes:
    return b"%015d\n" % n


def expected(start: int, end: int) -> bytes:
    """The bytes [start, end) of a log made of line(0), line(1), ..."""
    first, last = start // LINE, (end + LINE - 1) // LINE
    text = b"".join(line(n) for n in range(first, last))
    return text[start - first * LINE : end - first * LINE]


def write_lines(path: Path, count: int, first: int = 0) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"".join(line(n) for n in range(first, first + count)))
    finally:
        os.close(fd)


def block_size(path: Path) -> int:
    return os.stat(path).st_blksize


def test_a_missing_log_reads_as_empty(tmp_path: Path) -> None:
    assert logs.read(tmp_path / "none.log", 0, 100) == logs.LogSlice(b"", 0, 0, 0, 0)
    logs.trim(tmp_path / "none.log", 10)  # nothing to trim, nothing created
    assert not (tmp_path / "none.log").exists()


def test_read_by_offset_negative_offset_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    write_lines(path, 100)  # 1600 bytes
    s = logs.read(path, 32, 40)
    assert (s.start, s.end, s.data) == (32, 72, expected(32, 72))
    assert (s.available_start, s.available_end) == (0, 1600)
    tail = logs.read(path, -LINE, 1000)
    assert (tail.start, tail.data) == (1600 - LINE, line(99))
    assert logs.read(path, -10_000, 16).start == 0  # before the start: clamped
    past = logs.read(path, 5000, 10)
    assert (past.start, past.end, past.data) == (1600, 1600, b"")  # follow: nothing new yet
    assert logs.read(path, 0, 0).data == b""
    with pytest.raises(ValueError):
        logs.read(path, 0, -1)


def test_trim_keeps_offsets_and_at_most_cap_plus_a_block(tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    write_lines(path, 64 * 1024)  # 1 MiB
    size = path.stat().st_size
    blocks_before = path.stat().st_blocks
    cap = 100_000
    logs.trim(path, cap)

    s = logs.read(path, 0, 1 << 20)
    assert path.stat().st_size == size  # the size, and so every offset, is unchanged
    assert s.available_start % block_size(path) == 0
    assert size - cap <= s.available_start + block_size(path)  # nothing more than needed goes
    assert size - s.available_start <= cap + block_size(path)
    assert s.start == s.available_start and s.end == size
    assert s.data == expected(s.start, s.end)  # the bytes kept are the same bytes
    assert path.stat().st_blocks < blocks_before / 4  # and the space really was given back

    logs.trim(path, cap)  # again: nothing more to punch
    assert logs.read(path, 0, 10).available_start == s.available_start
    write_lines(path, 1, first=size // LINE)  # appending after a trim carries on at the end
    assert logs.read(path, -LINE, LINE).data == line(size // LINE)


def test_trim_under_the_cap_does_nothing(tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    write_lines(path, 10)
    logs.trim(path, 1 << 20)
    assert logs.read(path, 0, 1000).data == expected(0, 160)


def test_a_log_that_is_all_hole_reads_as_empty_at_its_end(tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    write_lines(path, 4096)  # 64 KiB: whole blocks
    logs.trim(path, 0)
    s = logs.read(path, 0, 100)
    assert (s.available_start, s.available_end, s.data) == (65536, 65536, b"")


def test_without_hole_punching_the_log_is_kept_whole_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(logs, "punch_hole", unsupported)
    path = tmp_path / "console.log"
    write_lines(path, 10_000)
    with caplog.at_level(logging.WARNING, logger="portway.runtime.logs"):
        logs.trim(path, 1000)
    assert "cannot punch holes" in caplog.text
    assert logs.read(path, 0, 1 << 20).data == expected(0, 160_000)


WRITER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
n, deadline = 0, time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    os.write(fd, b"".join(b"%015d\\n" % i for i in range(n, n + 64)))
    n += 64
    if n % 4096 == 0:
        time.sleep(0.001)
print(n)
"""


def test_trim_and_read_while_a_process_appends(tmp_path: Path) -> None:
    """The app appends with O_APPEND as fast as it can; we trim and follow the log meanwhile.
    No write is lost, every byte read is the byte that was written at that offset (never a
    zero from a hole), and the data held stays within the cap."""
    path = tmp_path / "console.log"
    path.touch()
    cap = 64 * 1024
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), "1.5"], stdout=subprocess.PIPE
    )
    try:
        offset, read_bytes, trims, clamped = 0, 0, 0, 0
        deadline = time.monotonic() + 30
        while writer.poll() is None:
            assert time.monotonic() < deadline, "writer did not finish"
            size_before = path.stat().st_size
            logs.trim(path, cap)
            trims += 1
            s = logs.read(path, offset, 32 * 1024)
            assert s.data == expected(s.start, s.end)
            # All that was more than `cap` behind the end when trim looked is gone (the writer
            # has moved the end on since, so the bound is taken from that moment).
            block = block_size(path)
            assert s.available_start >= (size_before - cap) // block * block
            read_bytes += len(s.data)
            offset = s.end
            # From the beginning: starts at the first byte still held, never in a hole.
            head = logs.read(path, 0, 4096)
            assert head.start == head.available_start
            assert head.data == expected(head.start, head.end)
            clamped += head.start > 0
        written = int(writer.communicate(timeout=10)[0])
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=10)

    size = path.stat().st_size
    assert size == written * LINE  # O_APPEND writes all landed, at the end, in order
    logs.trim(path, cap)
    final = logs.read(path, 0, 1 << 30)
    assert size - final.available_start <= cap + block_size(path)
    assert final.data == expected(final.start, size)
    assert trims > 10 and read_bytes > 0 and clamped > 0  # the test did exercise all three
