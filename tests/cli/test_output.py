"""Rendering service groups: pure functions of the items and the time."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from io import StringIO
from typing import Any

import pytest
from rich.console import Console

from portway.cli.output import (
    OutputFormat,
    address_entry,
    describe_service,
    humanize_since,
    render_list,
    show_groups,
)

NOW = datetime(2026, 5, 28, 14, 8, 0, tzinfo=UTC)

GROUP: dict[str, Any] = {
    "status": "success",
    "uuid": "954b4a52-fc51-4eac-b5c9-1fc2a368a237",
    "name": "wandering-shape",
    "created_at": "2026-05-28T13:53:40Z",
    "persistent": False,
    "soft_limit": 1,
    "hard_limit": 65535,
    "services": [
        {"port": 443, "destination_port": 8080, "protocol": "tcp", "handlers": ["tls", "http"]},
        {"port": 80, "destination_port": 443, "protocol": "tcp", "handlers": ["http", "redirect"]},
    ],
    "domains": [{"fqdn": "wandering-shape.example.net"}, {"fqdn": "www.example.com"}],
    "instances": [{"uuid": "06c972a6", "name": "nginx-8ujeu"}, {"uuid": "d6238ac6", "name": ""}],
}


@pytest.mark.parametrize(
    ("created", "shown"),
    [
        ("2026-05-28T14:08:00Z", "now"),
        ("2026-05-28T14:07:59Z", "1 second ago"),
        ("2026-05-28T14:07:15Z", "45 seconds ago"),
        ("2026-05-28T14:07:00Z", "1 minute ago"),
        ("2026-05-28T13:53:40Z", "14 minutes ago"),
        ("2026-05-28T12:08:00Z", "2 hours ago"),
        ("2026-05-27T14:08:00Z", "1 day ago"),
        ("2026-05-14T14:08:00Z", "2 weeks ago"),
        ("2026-03-28T14:08:00Z", "2 months ago"),
        ("2024-05-28T14:08:00Z", "2 years ago"),
        ("2026-05-28T14:08:30Z", "30 seconds from now"),  # the local clock is behind
        ("2026-05-28T14:07:00", "1 minute ago"),  # no zone: UTC, as the API writes
        ("2026-05-28T16:07:00+02:00", "1 minute ago"),
        ("yesterday", "yesterday"),  # shown as it is rather than failing
    ],
)
def test_humanize_since(created: str, shown: str) -> None:
    assert humanize_since(created, NOW) == shown


@pytest.mark.parametrize(
    ("service", "shown"),
    [
        ({"port": 443, "destination_port": 8080, "handlers": ["tls", "http"]}, "443:8080/tls+http"),
        ({"port": 8080, "destination_port": 8080, "handlers": []}, "8080:8080"),
        ({"port": 53, "destination_port": 53, "protocol": "udp", "handlers": []}, "53:53/udp"),
    ],
)
def test_describe_service(service: dict[str, Any], shown: str) -> None:
    assert describe_service(service) == shown


def test_list_is_one_key_value_block_per_group() -> None:
    other = {**GROUP, "name": "second", "instances": [], "persistent": True}
    assert render_list([GROUP, other]) == "\n".join(
        [
            "uuid: 954b4a52-fc51-4eac-b5c9-1fc2a368a237",
            "name: wandering-shape",
            "fqdn: wandering-shape.example.net,www.example.com",
            "services: 443:8080/tls+http 80:443/http+redirect",
            "instances: nginx-8ujeu d6238ac6",  # the uuid when an instance has no name
            "created at: 2026-05-28T13:53:40Z",  # raw in lists
            "persistent: false",
            "soft limit: 1",
            "hard limit: 65535",
            "",
            "uuid: 954b4a52-fc51-4eac-b5c9-1fc2a368a237",
            "name: second",
            "fqdn: wandering-shape.example.net,www.example.com",
            "services: 443:8080/tls+http 80:443/http+redirect",
            "instances: ",
            "created at: 2026-05-28T13:53:40Z",
            "persistent: true",
            "soft limit: 1",
            "hard limit: 65535",
        ]
    )


def rendered(fmt: OutputFormat, groups: list[dict[str, Any]]) -> str:
    out = StringIO()
    show_groups(groups, fmt, now=NOW, console=Console(file=out, width=60))
    return out.getvalue()


def test_table_columns_and_humanized_time() -> None:
    # A narrow console that is not a terminal: lines must still not wrap or be padded.
    lines = rendered(OutputFormat.TABLE, [GROUP]).splitlines()
    assert re.split(r"\s{2,}", lines[0]) == [
        "NAME",
        "FQDN",
        "SERVICES",
        "INSTANCES",
        "CREATED AT",
        "PERSISTENT",
    ]
    assert len(lines) == 2
    assert lines[1].startswith("wandering-shape  wandering-shape.example.net,www.example.com  ")
    assert "443:8080/tls+http 80:443/http+redirect  nginx-8ujeu d6238ac6" in lines[1]
    assert lines[1].endswith("14 minutes ago  false")


def test_table_shows_values_verbatim_not_as_markup() -> None:
    lines = rendered(OutputFormat.TABLE, [{**GROUP, "name": "[bold]x[/bold]"}]).splitlines()
    assert lines[1].startswith("[bold]x[/bold]  ")


def test_json_is_the_items() -> None:
    assert json.loads(rendered(OutputFormat.JSON, [GROUP])) == [GROUP]
    assert json.loads(rendered(OutputFormat.JSON, [])) == []


def test_an_empty_list_prints_nothing() -> None:
    assert rendered(OutputFormat.LIST, []) == ""


@pytest.mark.parametrize(
    ("ports", "offset", "expected"),
    [
        ([443, 80], 0, ("url", "https://web.portway.localhost")),
        ([443], 8000, ("url", "https://web.portway.localhost:8443")),
        ([80], 21000, ("url", "http://web.portway.localhost:21080")),
        ([10000], 8000, ("domain", "web.portway.localhost")),
    ],
)
def test_printed_urls_follow_the_port_mapping(
    ports: list[int], offset: int, expected: tuple[str, str]
) -> None:
    group = {
        "domains": [{"fqdn": "web.portway.localhost"}],
        "services": [{"port": p, "destination_port": 8080} for p in ports],
    }
    assert address_entry({}, group, offset) == expected
