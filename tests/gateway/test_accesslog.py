"""Access-log lines: one JSON object per request or connection, the same bytes whatever the
entry's fields came as (bytes read off the wire in HTTP mode, text in TCP mode)."""

from __future__ import annotations

import json
import random
import re
import socket
from pathlib import Path

import pytest

from portway.gateway.accesslog import FIELDS, format_line, who

from .harness import WAIT_S, GatewayThread, backends, http_listener, read_response, route, snapshot

HTTP_WHO = who("http", 443, b"127.0.0.1", "web", "web-1", b"GET", b"web.example.com")
HTTP_ENTRY = (
    1795000000.1234567,  # time: wall clock, seconds
    0.0012344,  # duration, seconds
    HTTP_WHO,
    b"/a?b=c",
    200,
    12,
    3456,
    "ok",
    0.0,
)


def test_a_line_is_json_with_every_field_in_order() -> None:
    line = format_line(*HTTP_ENTRY)
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
    entry = (1795000000.000001, 0.000050, *HTTP_ENTRY[2:8], 0.0125)
    line = format_line(*entry)
    assert '"time":1795000000.000001,' in line
    assert '"duration_ms":0.050,' in line
    assert '"wake_ms":12.500}' in line


def test_times_are_the_entry_s_to_the_microsecond_in_fixed_decimals() -> None:
    """Over many values: the digits of each part land in their place (whole seconds, then
    milliseconds, then µs), rounded to the nearest."""
    rng = random.Random(7)
    for _ in range(500):
        when = rng.uniform(1.7e9, 1.9e9)
        duration = rng.choice([rng.uniform(0, 0.002), rng.uniform(0, 90)])
        text = format_line(when, duration, *HTTP_ENTRY[2:])
        time_text = re.search(r'"time":([0-9.]+),', text)
        ms_text = re.search(r'"duration_ms":([0-9.]+),', text)
        assert time_text and re.fullmatch(r"\d{10}\.\d{6}", time_text.group(1)), text
        assert ms_text and re.fullmatch(r"\d+\.\d{3}", ms_text.group(1)), text
        # Compared in whole µs: a float near 1.8e9 s cannot hold a µs exactly.
        assert abs(int(time_text.group(1).replace(".", "")) - when * 1e6) <= 0.75, text
        assert abs(int(ms_text.group(1).replace(".", "")) - duration * 1e6) <= 0.75, text


def test_tcp_entries_carry_text_and_give_the_same_shape() -> None:
    entry = (
        1795000000.5,
        2.5,
        who("tcp", 10000, "10.0.0.9", "db", "db-1", "", "db.example.com"),
        "",
        0,
        100,
        200,
        "closed",
        0.0,
    )
    parsed = json.loads(format_line(*entry))
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
    entry = (*HTTP_ENTRY[:3], target, *HTTP_ENTRY[4:])
    assert json.loads(format_line(*entry))["target"] == shown


def test_non_ascii_names_are_utf8() -> None:
    fields = who("http", 443, b"127.0.0.1", "gr\u00fcn", "gr\u00fcn-1", b"GET", b"h\xe9")
    entry = (*HTTP_ENTRY[:2], fields, *HTTP_ENTRY[3:])
    parsed = json.loads(format_line(*entry))
    assert parsed["group"] == "gr\u00fcn" and parsed["instance"] == "gr\u00fcn-1"
    assert parsed["host"] == "h\u00e9"


def test_each_request_of_a_keep_alive_connection_is_logged_as_it_was(tmp_path: Path) -> None:
    """A connection's lines share their middle fields, formatted once (ClientConnection.
    log_fields): each line must still name its own request's instance, group, method, host."""
    with backends("a", "b", "c") as bes, GatewayThread(tmp_path) as gw:
        web = route("web", 80, [bes[0].endpoint(), bes[1].endpoint()], soft_limit=100)
        api = route("api", 80, [bes[2].endpoint()], soft_limit=100)
        gw.apply(snapshot(1, http_listener(80, {"app.test": web, "api.test": api})))
        sent = []
        with socket.create_connection(gw.address(80), timeout=WAIT_S) as sock:
            for n in range(24):
                method = ("GET", "DELETE")[n % 5 == 0]
                host = ("app.test", "api.test")[n % 3 == 0]
                sock.sendall(f"{method} /r{n} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                status, _, body = read_response(sock)
                assert status == 200
                sent.append((method, host, f"/r{n}", body.decode()))
        gw.flush_log()
        lines = [json.loads(x) for x in gw.access_log.read_text().splitlines()]
    assert [(x["method"], x["host"], x["target"], x["instance"]) for x in lines] == sent
    assert {x["group"] for x in lines} == {"web", "api"}
    assert all(x["group"] == ("web", "api")[x["host"] == "api.test"] for x in lines)
    assert {x["instance"] for x in lines if x["host"] == "app.test"} == {"a", "b"}
