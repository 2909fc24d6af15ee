"""Access-log lines: one JSON object per request or connection, the same bytes whatever the
entry's fields came as (bytes read off the wire in HTTP mode, text in TCP mode)."""

from __future__ import annotations

import json

import pytest

from portway.gateway.accesslog import FIELDS, format_line

HTTP_ENTRY = (
    1795000000.1234567,  # time: wall clock, seconds
    0.0012344,  # duration, seconds
    "http",
    443,
    b"127.0.0.1",
    "web",
    "web-1",
    b"GET",
    b"web.example.com",
    b"/a?b=c",
    200,
    12,
    3456,
    "ok",
    0.0,
)


def test_a_line_is_json_with_every_field_in_order() -> None:
    line = format_line(HTTP_ENTRY)
    assert line.endswith("}\n") and line.count("\n") == 1
    parsed = json.loads(line)
    assert list(parsed) == list(FIELDS)
    assert parsed == {
        "time": 1795000000.123457,
        "duration_ms": 1.234,
        "kind": "http",
        "port": 443,
        "client": "127.0.0.1",
        "group": "web",
        "instance": "web-1",
        "method": "GET",
        "host": "web.example.com",
        "target": "/a?b=c",
        "status": 200,
        "bytes_in": 12,
        "bytes_out": 3456,
        "outcome": "ok",
        "wake_ms": 0.0,
    }


def test_numbers_keep_their_precision_and_zero_padding() -> None:
    entry = (1795000000.000001, 0.000050, *HTTP_ENTRY[2:14], 0.0125)
    line = format_line(entry)
    assert '"time":1795000000.000001,' in line
    assert '"duration_ms":0.050,' in line
    assert '"wake_ms":12.500}' in line


def test_tcp_entries_carry_text_and_give_the_same_shape() -> None:
    entry = (
        1795000000.5,
        2.5,
        "tcp",
        10000,
        "10.0.0.9",
        "db",
        "db-1",
        "",
        "db.example.com",
        "",
        0,
        100,
        200,
        "closed",
        0.0,
    )
    parsed = json.loads(format_line(entry))
    assert parsed["kind"] == "tcp" and parsed["client"] == "10.0.0.9"
    assert parsed["method"] == "" and parsed["target"] == "" and parsed["duration_ms"] == 2500.0
    assert parsed["host"] == "db.example.com" and parsed["outcome"] == "closed"


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        (b'/q?"x"', '/q?"x"'),
        (b"/back\\slash", "/back\\slash"),
        (b"/caf\xc3\xa9", "/caf\u00c3\u00a9"),  # bytes are read as Latin-1
        (b"/tab\there", "/tab\there"),
        ("/text/caf\u00e9", "/text/caf\u00e9"),
    ],
)
def test_targets_json_must_escape_are_escaped(target: bytes | str, shown: str) -> None:
    entry = (*HTTP_ENTRY[:9], target, *HTTP_ENTRY[10:])
    assert json.loads(format_line(entry))["target"] == shown


def test_non_ascii_names_are_utf8() -> None:
    entry = (
        *HTTP_ENTRY[:4],
        b"127.0.0.1",
        "gr\u00fcn",
        "gr\u00fcn-1",
        b"GET",
        b"h\xe9",
        *HTTP_ENTRY[9:],
    )
    parsed = json.loads(format_line(entry))
    assert parsed["group"] == "gr\u00fcn" and parsed["instance"] == "gr\u00fcn-1"
    assert parsed["host"] == "h\u00e9"
