"""One JSON line per request (HTTP mode) or connection (TCP mode), written in batches.

Lines come from `Activity.settle` (each finished exchange formats its own, `format_line`) and
from TCP connections as they close; a flush (the gateway's sweeper, a few times a second, or
when the batch is large) writes many lines with one `write`, so logging costs no syscall per
request. The file is kept bounded: past `MAX_BYTES` it is renamed to `access.log.1` (one
generation kept).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Final

log = logging.getLogger("portway.gateway")

BATCH: Final = 4096
MAX_BYTES: Final = 64 * 1024 * 1024

FIELDS: Final = (
    "time",
    "duration_ms",
    "kind",
    "port",
    "client",
    "group",
    "instance",
    "method",
    "host",
    "target",
    "status",
    "bytes_in",
    "bytes_out",
    "outcome",
    "wake_ms",  # how long the work was held for an instance to wake (0: it was not)
)


# Bytes that may stand in a JSON string as they are: printable ASCII but `"` and `\\`.
_PLAIN: Final = bytes(b for b in range(0x20, 0x7F) if b not in b'"\\')


def who(
    kind: str,
    port: int,
    client: str | bytes,
    group: str,
    instance: str,
    method: str | bytes,
    host: str | bytes,
) -> str:
    """The fields from "kind" to "host" of a line, each followed by its comma. None needs
    escaping: they are an address, DNS names and a method token the gateway has checked. Bytes
    (what HTTP mode read off the wire) are read as Latin-1, as the text log always did."""
    return (
        f'"kind":"{kind}","port":{port},"client":"{_text(client)}","group":"{group}",'
        f'"instance":"{instance}","method":"{_text(method)}","host":"{_text(host)}",'
    )


def format_line(
    when: float,
    duration: float,
    fields: str,
    target: str | bytes,
    status: int,
    bytes_in: int,
    bytes_out: int,
    outcome: str,
    wake_s: float,
) -> str:
    """One JSON object (the FIELDS, in order) and its newline; the batch is encoded to UTF-8
    at once. Built by hand, not json.dumps of a dict: this runs once per request. Only the
    request target can need escaping (the rest of the text is in `who`, the fields from "kind"
    to "host", which a keep-alive connection's requests share: see proxy.Exchange). The target
    is bytes in HTTP mode, decoded here.

    Written for the compiled build (compiled.py): typed arguments (no tuple of boxed floats to
    unpack), an f-string and integers. Times are whole µs shown with their decimals, as `%.6f`
    of seconds showed them (to the last digit's rounding): float formatting, then bytes `%`
    formatting, were the dearest parts. The time and the duration are written into the line
    itself, not made into strings of their own first: that was a fifth of this function."""
    at = int(when * 1_000_000 + 0.5)  # µs
    took = int(duration * 1_000_000 + 0.5)
    digits = _THREE_DIGITS
    return (
        f'{{"time":{at // 1_000_000}.{digits[at // 1000 % 1000]}{digits[at % 1000]},'
        f'"duration_ms":{took // 1000}.{digits[took % 1000]},{fields}'
        f'"target":{_json_string(target)},"status":{status},"bytes_in":{bytes_in},'
        f'"bytes_out":{bytes_out},"outcome":"{outcome}","wake_ms":{_milliseconds(wake_s)}}}\n'
    )


# "000" to "999": the decimals of a number are looked up, not formatted.
_THREE_DIGITS: Final = [f"{n:03d}" for n in range(1000)]


def _milliseconds(seconds: float) -> str:
    """What `%.3f` of `seconds` * 1000 gives (to the last digit's rounding), from integers."""
    if seconds == 0.0:
        return "0.000"
    micros = int(seconds * 1_000_000 + 0.5)
    return f"{micros // 1000}.{_THREE_DIGITS[micros % 1000]}"


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


# Targets already written as JSON strings: a service's requests go to a handful of paths again
# and again. Bounded: emptied when full.
_TARGETS: Final[dict[str | bytes, str]] = {}
TARGETS_SIZE: Final = 1024


def _json_string(value: str | bytes) -> str:
    """The request target as a JSON string, quotes included."""
    known = _TARGETS.get(value)
    if known is None:
        if len(_TARGETS) >= TARGETS_SIZE:
            _TARGETS.clear()
        known = _TARGETS[value] = _quoted(value)
    return known


def _quoted(value: str | bytes) -> str:
    raw = value if isinstance(value, bytes) else value.encode()
    text = _text(value)
    if not raw.translate(None, _PLAIN):  # nothing left once the plain bytes are taken out
        return f'"{text}"'
    return json.dumps(text, ensure_ascii=False)


class AccessLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._batch: list[str] = []

    def add(self, line: str) -> None:
        if self.path is None:
            return
        self._batch.append(line)
        if len(self._batch) >= BATCH:
            self.flush()

    def extend(self, lines: list[str]) -> None:
        if self.path is None:
            return
        self._batch.extend(lines)
        if len(self._batch) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self._batch or self.path is None:
            return
        batch, self._batch = self._batch, []
        text = "".join(batch).encode()
        try:
            if self.path.exists() and self.path.stat().st_size > MAX_BYTES:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            with open(self.path, "ab") as out:
                out.write(text)
        except OSError as err:
            log.warning("access log %s: %s (%d lines lost)", self.path, err, len(batch))
