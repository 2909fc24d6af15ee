"""One JSON line per request (HTTP mode) or connection (TCP mode), written in batches.

Entries come from `Activity.settle`; a flush (the gateway's sweeper, a few times a second, or
when the batch is large) formats and writes many lines with one `write`, so logging costs no
syscall per request. The
file is kept bounded: past `MAX_BYTES` it is renamed to `access.log.1` (one generation kept).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Final

log = logging.getLogger("portway.gateway")

BATCH: Final = 4096
MAX_BYTES: Final = 64 * 1024 * 1024

# (time, duration_s, kind, port, client, group, instance, method, host, target, status,
#  bytes_in, bytes_out, outcome); bytes are decoded only when the line is written.
Entry = tuple[Any, ...]
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


# Printable ASCII without `"` and `\\`: such a value is its own JSON string body.
_PLAIN = re.compile(rb"[\x20\x21\x23-\x5b\x5d-\x7e]*")
_LINE = (
    b'{"time":%.6f,"duration_ms":%.3f,"kind":"%s","port":%d,"client":"%s","group":"%s",'
    b'"instance":"%s","method":"%s","host":"%s","target":%s,"status":%d,"bytes_in":%d,'
    b'"bytes_out":%d,"outcome":"%s","wake_ms":%.3f}\n'
)
# Fields the gateway has checked already (an address, DNS names, a method token): only the
# request target can hold characters JSON must escape.


def format_line(entry: Entry) -> bytes:
    """One JSON object (the FIELDS, in order) and its newline, UTF-8. A bytes template, not
    json.dumps of a dict: this runs once per request, HTTP entries carry most fields as the
    bytes the gateway read (no decoding), and only the request target can need escaping (the
    other text fields are an address, DNS names and a method token the gateway has checked).
    Bytes are read as Latin-1, as the text log always did."""
    when, duration, kind, port, client, group, instance, method, host, target = entry[:10]
    status, bytes_in, bytes_out, outcome, wake_s = entry[10:]
    if isinstance(target, bytes):
        raw, text = target, None
    else:
        raw, text = target.encode(), target
    if _PLAIN.fullmatch(raw):
        target = b'"%s"' % raw
    else:
        target = json.dumps(raw.decode("latin-1") if text is None else text).encode()
    if not (
        type(client) is bytes
        and type(method) is bytes
        and type(host) is bytes
        and (client + method + host).isascii()
    ):
        client, method, host = _utf8(client), _utf8(method), _utf8(host)
    return _LINE % (
        when,
        duration * 1000,
        kind.encode(),
        port,
        client,
        group.encode(),
        instance.encode(),
        method,
        host,
        target,
        status,
        bytes_in,
        bytes_out,
        outcome.encode(),
        wake_s * 1000,
    )


def _utf8(value: str | bytes) -> bytes:
    """A text field as UTF-8: str encoded, bytes (ASCII nearly always) read as Latin-1."""
    if isinstance(value, bytes):
        return value if value.isascii() else value.decode("latin-1").encode()
    return value.encode()


class AccessLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._batch: list[Entry] = []

    def add(self, entry: Entry) -> None:
        if self.path is None:
            return
        self._batch.append(entry)
        if len(self._batch) >= BATCH:
            self.flush()

    def extend(self, entries: list[Entry]) -> None:
        if self.path is None:
            return
        self._batch.extend(entries)
        if len(self._batch) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self._batch or self.path is None:
            return
        batch, self._batch = self._batch, []
        text = b"".join([format_line(e) for e in batch])
        try:
            if self.path.exists() and self.path.stat().st_size > MAX_BYTES:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            with open(self.path, "ab") as out:
                out.write(text)
        except OSError as err:
            log.warning("access log %s: %s (%d lines lost)", self.path, err, len(batch))
