"""`portway service ...`: the pure argument parsing, then the verbs against a real daemon."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from portway.cli.main import app
from portway.cli.service import BadArgument, create_request, parse_services
from tests.daemon import Daemon

# --- the port-spec parser (pure) -------------------------------------------------------------

HTTPS_PAIR = [
    {"port": 443, "destination_port": 8080, "handlers": ["tls", "http"]},
    {"port": 80, "destination_port": 443, "handlers": ["http", "redirect"]},
]


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        (["443:8080"], HTTPS_PAIR),
        # `P` alone is P:P, and a lone 443 still gets the redirect companion.
        (["443"], [{**HTTPS_PAIR[0], "destination_port": 443}, HTTPS_PAIR[1]]),
        (["8080"], [{"port": 8080, "destination_port": 8080}]),
        (["8443:8080/tls"], [{"port": 8443, "destination_port": 8080, "handlers": ["tls"]}]),
        # Handlers are passed in the order given; the daemon orders them.
        (
            ["443:8080/http+tls"],
            [{"port": 443, "destination_port": 8080, "handlers": ["http", "tls"]}],
        ),
        (
            ["80:443/redirect+http"],
            [{"port": 80, "destination_port": 443, "handlers": ["redirect", "http"]}],
        ),
        # Only a *lone* 443 without handlers expands, as in kraft.
        (
            ["443:8080", "8443:9000"],
            [{"port": 443, "destination_port": 8080}, {"port": 8443, "destination_port": 9000}],
        ),
        (["1:65535"], [{"port": 1, "destination_port": 65535}]),
    ],
)
def test_parse_services(specs: list[str], expected: list[dict[str, Any]]) -> None:
    assert parse_services(specs) == expected


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("abc", "'abc' is not a port number"),
        ("70000:80", "port 70000 is out of range 1-65535"),
        ("80:0", "port 0 is out of range"),
        ("443:8080/bogus", "unknown handler 'bogus'"),
        ("443:8080/", "unknown handler an empty handler"),
        ("443:8080/tls+", "an empty handler"),
        ("443:8080/tls+tls", "listed more than once"),
        (":8080", "'' is not a port number"),
        ("443:", "'' is not a port number"),
        ("+80", "'+80' is not a port number"),
        (" 80", "' 80' is not a port number"),
        ("8080/udp", "unknown handler 'udp'"),
    ],
)
def test_parse_services_rejects_bad_specs_naming_them(spec: str, problem: str) -> None:
    with pytest.raises(BadArgument) as caught:
        parse_services([spec])
    assert str(caught.value).startswith(f"port spec {spec!r}: ")
    assert problem in str(caught.value)


def test_create_request_domains_and_limits() -> None:
    request = create_request(
        ["8443:8080/tls"],
        name="web",
        domains=["www.example.com", "api.example.com."],
        subdomains=["shop.", "blog"],
        soft_limit=2,
        hard_limit=5,
    )
    assert request == {
        "services": [{"port": 8443, "destination_port": 8080, "handlers": ["tls"]}],
        "name": "web",
        # -d becomes an FQDN (trailing dot, once); -s a platform subdomain (no dot).
        "domains": [
            {"name": "www.example.com."},
            {"name": "api.example.com."},
            {"name": "shop"},
            {"name": "blog"},
        ],
        "soft_limit": 2,
        "hard_limit": 5,
    }


def test_create_request_leaves_unset_fields_out() -> None:
    assert create_request(["8080"]) == {"services": [{"port": 8080, "destination_port": 8080}]}


@pytest.mark.parametrize(
    ("soft", "hard", "problem"),
    [
        (9, 3, "the soft limit (9) must not be greater than the hard limit (3)"),
        (0, None, "--soft-limit must be between 1 and 65535 (got 0)"),
        (None, 70000, "--hard-limit must be between 1 and 65535 (got 70000)"),
    ],
)
def test_create_request_rejects_bad_limits(
    soft: int | None, hard: int | None, problem: str
) -> None:
    with pytest.raises(BadArgument, match=re.escape(problem)):
        create_request(["8080"], soft_limit=soft, hard_limit=hard)


def test_create_request_rejects_an_empty_domain() -> None:
    with pytest.raises(BadArgument, match="--domain needs a name"):
        create_request(["8080"], domains=["."])


# --- the verbs against a real daemon ---------------------------------------------------------


def cli(env: Mapping[str, str | None], *args: str) -> Result:
    return CliRunner().invoke(app, ["service", *args], env=dict(env))


def env_for(daemon: Daemon) -> dict[str, str | None]:
    # PORTWAY_DATA_DIR points at nothing, so only UKC_* can be what finds the daemon.
    return {"UKC_METRO": daemon.url, "UKC_TOKEN": daemon.token, "PORTWAY_DATA_DIR": "/nonexistent"}


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}"
    return result.stdout


def one_line_error(result: Result) -> str:
    """The error contract: exit 1, nothing on stdout, one `portway: ...` line on stderr."""
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("portway: "), result.stderr
    return lines[0]


def as_json(result: Result) -> list[dict[str, Any]]:
    doc = json.loads(ok(result))
    assert isinstance(doc, list)
    return doc


def server_group(daemon: Daemon, name: str) -> dict[str, Any]:
    """What the daemon itself holds, read without the CLI."""
    r = httpx.get(
        f"{daemon.url}/services",
        params={"name": name},
        headers={"Authorization": f"Bearer {daemon.token}"},
        timeout=5,
    )
    item: dict[str, Any] = r.json()["data"]["service_groups"][0]
    return item


def unused_url() -> str:
    """A URL nothing listens on (the port was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def env(shared_daemon: Daemon) -> dict[str, str | None]:
    return env_for(shared_daemon)


def test_create_443_expands_to_https_and_redirect(
    env: dict[str, str | None], shared_daemon: Daemon
) -> None:
    [group] = as_json(cli(env, "create", "443:8080", "-n", "expand", "-o", "json"))
    described = [(s["port"], s["destination_port"], s["handlers"]) for s in group["services"]]
    assert described == [(443, 8080, ["tls", "http"]), (80, 443, ["http", "redirect"])]
    assert server_group(shared_daemon, "expand")["uuid"] == group["uuid"]


def test_create_with_every_flag(env: dict[str, str | None], shared_daemon: Daemon) -> None:
    out = ok(
        cli(
            env,
            "new",
            "8443:8080/tls",
            "-n",
            "flags",
            "-d",
            "flags.example.com",
            "-s",
            "flags-sub.",
            "-l",
            "3",
            "-L",
            "7",
        )
    )
    held = server_group(shared_daemon, "flags")
    assert [d["fqdn"] for d in held["domains"]] == [
        "flags.example.com",
        "flags-sub.portway.localhost",
    ]
    assert (held["soft_limit"], held["hard_limit"]) == (3, 7)
    # create prints the re-read group, `-o list` by default
    assert out.splitlines() == [
        f"uuid: {held['uuid']}",
        "name: flags",
        "fqdn: flags.example.com,flags-sub.portway.localhost",
        "services: 8443:8080/tls",
        "instances: ",
        f"created at: {held['created_at']}",
        "persistent: true",
        "soft limit: 3",
        "hard limit: 7",
    ]


def test_list_in_three_formats(env: dict[str, str | None]) -> None:
    ok(cli(env, "create", "9001:9001/tls", "-n", "list-a"))
    ok(cli(env, "create", "9002/tls", "-n", "list-b"))

    table = ok(cli(env, "list")).splitlines()
    assert table[0].split() == [
        "NAME",
        "FQDN",
        "SERVICES",
        "INSTANCES",
        "CREATED",
        "AT",
        "PERSISTENT",
    ]
    row = next(line for line in table if line.startswith("list-b "))
    assert "9002:9002/tls" in row and row.endswith("true")
    assert " ago " in row or " now " in row, row  # humanized, never raw RFC 3339
    assert "T" not in row.split("tls", 1)[1]

    listed = ok(cli(env, "ls", "-o", "list"))
    assert "name: list-a\n" in listed and "name: list-b\n" in listed
    assert "\n\nuuid: " in listed  # blocks are separated by a blank line

    names = [g["name"] for g in as_json(cli(env, "list", "-o", "json"))]
    assert names.index("list-a") < names.index("list-b")  # creation order


def test_get_by_name_and_uuid_in_three_formats(env: dict[str, str | None]) -> None:
    [created] = as_json(cli(env, "create", "9100/tls", "-n", "getme", "-o", "json"))

    by_name = ok(cli(env, "get", "getme"))
    assert by_name.startswith(f"uuid: {created['uuid']}\nname: getme\n")
    assert f"created at: {created['created_at']}\n" in by_name  # raw in `list`

    [by_uuid] = as_json(cli(env, "get", created["uuid"], "-o", "json"))
    assert by_uuid["name"] == "getme" and by_uuid["services"] == created["services"]

    table = ok(cli(env, "get", "getme", "-o", "table")).splitlines()
    assert len(table) == 2 and table[1].split()[:3] == [
        "getme",
        created["domains"][0]["fqdn"],
        "9100:9100/tls",
    ]
    assert "UUID" not in table[0] and "LIMIT" not in table[0]


def test_remove_by_name_and_uuid_with_aliases(env: dict[str, str | None]) -> None:
    ok(cli(env, "create", "9200/tls", "-n", "rm-a"))
    [b] = as_json(cli(env, "create", "9201/tls", "-n", "rm-b", "-o", "json"))

    assert ok(cli(env, "remove", "rm-a")) == "removed rm-a\n"
    assert ok(cli(env, "rm", b["uuid"])) == "removed rm-b\n"
    for name in ("rm-a", "rm-b"):
        assert one_line_error(cli(env, "get", name)) == (
            f"portway: No service group with name '{name}'"
        )


def test_remove_reports_what_it_removed_before_what_failed(env: dict[str, str | None]) -> None:
    ok(cli(env, "create", "9300/tls", "-n", "rm-partial"))
    result = cli(env, "delete", "rm-partial", "rm-missing")
    assert result.exit_code == 1
    assert result.stdout == "removed rm-partial\n"
    assert result.stderr == "portway: No service group with name 'rm-missing'\n"


def test_remove_all(daemon: Daemon) -> None:
    env = env_for(daemon)
    for name in ("all-a", "all-b"):
        ok(cli(env, "create", "9400/tls", "-n", name))
    assert sorted(ok(cli(env, "rm", "--all")).splitlines()) == ["removed all-a", "removed all-b"]
    assert as_json(cli(env, "list", "-o", "json")) == []
    assert ok(cli(env, "rm", "--all")) == ""  # nothing left is not an error


@pytest.mark.parametrize("args", [(), ("web", "--all")])
def test_remove_needs_names_or_all(env: dict[str, str | None], args: tuple[str, ...]) -> None:
    assert "or pass --all" in one_line_error(cli(env, "remove", *args))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("abc", "portway: port spec 'abc': 'abc' is not a port number"),
        ("70000:80", "portway: port spec '70000:80': port 70000 is out of range 1-65535"),
        (
            "443:8080/bogus",
            "portway: port spec '443:8080/bogus': unknown handler 'bogus' "
            "(use tls, http, redirect joined by '+')",
        ),
    ],
)
def test_bad_spec_fails_before_sending(spec: str, message: str) -> None:
    # Nothing listens at UKC_METRO: any request would fail differently.
    env = {"UKC_METRO": unused_url(), "UKC_TOKEN": "x"}
    assert one_line_error(cli(env, "create", spec)) == message


def test_soft_above_hard_fails_before_sending() -> None:
    env = {"UKC_METRO": unused_url(), "UKC_TOKEN": "x"}
    assert one_line_error(cli(env, "create", "443:8080", "-l", "9", "-L", "3")) == (
        "portway: the soft limit (9) must not be greater than the hard limit (3)"
    )


def test_duplicate_name_is_one_line(env: dict[str, str | None]) -> None:
    ok(cli(env, "create", "9500/tls", "-n", "twice"))
    assert one_line_error(cli(env, "create", "9501/tls", "-n", "twice")) == (
        "portway: Service group 'twice' already exists"
    )


def test_rule_the_daemon_enforces_is_one_line(env: dict[str, str | None]) -> None:
    line = one_line_error(cli(env, "create", "443:8080/tls", "-n", "half-https"))
    assert "port 443 must have both 'tls' and 'http'" in line


def test_get_missing_group(env: dict[str, str | None]) -> None:
    assert one_line_error(cli(env, "get", "no-such-group")) == (
        "portway: No service group with name 'no-such-group'"
    )
    uuid = "00000000-0000-4000-8000-000000000000"
    assert one_line_error(cli(env, "get", uuid)) == f"portway: No service group with uuid '{uuid}'"


def test_unreachable_daemon_is_one_line() -> None:
    url = unused_url()
    line = one_line_error(cli({"UKC_METRO": url, "UKC_TOKEN": "x"}, "list"))
    assert line.startswith(f"portway: cannot reach {url} (")
    assert "`portway up`" in line and "UKC_METRO" in line


def test_wrong_token_is_one_line(shared_daemon: Daemon) -> None:
    env = {"UKC_METRO": shared_daemon.url, "UKC_TOKEN": "not-a-token"}
    assert one_line_error(cli(env, "list")) == "portway: the API token is not valid"


def test_finds_the_daemon_through_client_json(shared_daemon: Daemon) -> None:
    env = {"UKC_METRO": None, "UKC_TOKEN": None, "PORTWAY_DATA_DIR": str(shared_daemon.data_dir)}
    [group] = as_json(cli(env, "create", "9600/tls", "-n", "found-locally", "-o", "json"))
    assert group["name"] == "found-locally"
    assert "found-locally" in ok(cli(env, "list"))


def test_without_any_daemon_says_how_to_start_one(tmp_path: Path) -> None:
    env = {"UKC_METRO": None, "UKC_TOKEN": None, "PORTWAY_DATA_DIR": str(tmp_path)}
    line = one_line_error(cli(env, "list"))
    assert "`portway up`" in line and str(tmp_path / "client.json") in line
