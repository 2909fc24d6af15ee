"""The client: finding the daemon, turning answers into items or one-line errors, paging."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from portway.client import Client, ClientError, Endpoint, find_endpoint, identifier_ref
from portway.client.api import normalize_metro
from tests.daemon import Daemon

ENDPOINT = Endpoint("http://portway.test/v1", "secret")
Handler = Callable[[httpx.Request], httpx.Response]


def fake(handler: Handler) -> Client:
    return Client(ENDPOINT, transport=httpx.MockTransport(handler))


def envelope(items: list[dict[str, Any]], **top: Any) -> httpx.Response:
    return httpx.Response(200, json={"status": "success", **top, "data": {"service_groups": items}})


# --- where the daemon is ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metro", "url"),
    [
        ("http://h:1", "http://h:1/v1"),
        ("http://h:1/", "http://h:1/v1"),
        ("http://h:1/v1", "http://h:1/v1"),
        ("http://h:1/V1/", "http://h:1/v1"),
        ("https://h/prefix", "https://h/prefix/v1"),
    ],
)
def test_normalize_metro(metro: str, url: str) -> None:
    assert normalize_metro(metro) == url


def test_a_metro_code_is_not_a_url() -> None:
    with pytest.raises(ClientError, match="UKC_METRO must be a URL"):
        normalize_metro("fra")


def write_client_file(data_dir: Path, metro: str, token: str | None = "local-token") -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    token_file = data_dir / "admin.token"
    if token is not None:
        token_file.write_text(token + "\n")
    (data_dir / "client.json").write_text(
        json.dumps({"metro": metro, "token_file": str(token_file)})
    )


def test_env_wins_over_client_json(tmp_path: Path) -> None:
    write_client_file(tmp_path, "http://local:1/v1")
    env = {"UKC_METRO": "http://remote:2", "UKC_TOKEN": "remote-token"}
    assert find_endpoint(env, tmp_path) == Endpoint("http://remote:2/v1", "remote-token")


def test_client_json_alone(tmp_path: Path) -> None:
    write_client_file(tmp_path, "http://local:1/v1")
    assert find_endpoint({}, tmp_path) == Endpoint("http://local:1/v1", "local-token")


def test_ukc_token_alone_goes_to_the_local_daemon(tmp_path: Path) -> None:
    write_client_file(tmp_path, "http://local:1/v1")
    assert find_endpoint({"UKC_TOKEN": "mine"}, tmp_path) == Endpoint("http://local:1/v1", "mine")


def test_local_token_is_used_for_the_same_daemon_named_in_env(tmp_path: Path) -> None:
    write_client_file(tmp_path, "http://local:1/v1")
    endpoint = find_endpoint({"UKC_METRO": "http://local:1"}, tmp_path)
    assert endpoint == Endpoint("http://local:1/v1", "local-token")


def test_local_token_never_travels_to_another_server(tmp_path: Path) -> None:
    write_client_file(tmp_path, "http://local:1/v1")
    with pytest.raises(ClientError, match=r"^no API token for http://remote:2/v1: set UKC_TOKEN$"):
        find_endpoint({"UKC_METRO": "http://remote:2/v1"}, tmp_path)


def test_nothing_configured(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="start one with `portway up`") as caught:
        find_endpoint({}, tmp_path)
    assert str(tmp_path / "client.json") in str(caught.value)


def test_missing_token_file(tmp_path: Path) -> None:
    write_client_file(tmp_path, "http://local:1/v1", token=None)
    with pytest.raises(ClientError, match=r"cannot read the token file .*admin\.token.*UKC_TOKEN"):
        find_endpoint({}, tmp_path)


def test_broken_client_json(tmp_path: Path) -> None:
    (tmp_path / "client.json").write_text("{not json")
    with pytest.raises(ClientError, match=r"cannot read .*client\.json"):
        find_endpoint({}, tmp_path)


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("web", {"name": "web"}),
        ("9bfe76ea-2679-482a-954e-577de7d122b3", {"uuid": "9bfe76ea-2679-482a-954e-577de7d122b3"}),
        ("9BFE76EA-2679-482A-954E-577DE7D122B3", {"uuid": "9BFE76EA-2679-482A-954E-577DE7D122B3"}),
        ("9bfe76ea-2679-482a-954e-577de7d122b", {"name": "9bfe76ea-2679-482a-954e-577de7d122b"}),
    ],
)
def test_identifier_ref(text: str, ref: dict[str, str]) -> None:
    assert identifier_ref(text) == ref


# --- requests and errors ---------------------------------------------------------------------


def test_requests_carry_the_token_and_the_refs() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return envelope([{"status": "success", "uuid": "u1"}, {"status": "success", "uuid": "u2"}])

    with fake(handler) as client:
        client.get_service_groups([{"name": "web"}, {"uuid": "u2"}])
        client.delete_service_groups([{"name": "web"}])
    get, delete = seen
    assert get.headers["authorization"] == "Bearer secret"
    assert str(get.url) == "http://portway.test/v1/services?name=web&uuid=u2"
    assert delete.method == "DELETE" and json.loads(delete.content) == [{"name": "web"}]


def error_of(response: httpx.Response) -> ClientError:
    with fake(lambda _: response) as client, pytest.raises(ClientError) as caught:
        client.get_service_groups([{"name": "web"}])
    return caught.value


def test_http_error_uses_the_envelope_message() -> None:
    err = error_of(
        httpx.Response(
            400,
            json={
                "status": "error",
                "message": "soft_limit: too high",
                "errors": [{"status": 400, "message": "soft_limit: too high"}],
            },
        )
    )
    assert (str(err), err.status_code) == ("soft_limit: too high", 400)


def test_http_error_falls_back_to_errors_then_status_line() -> None:
    err = error_of(httpx.Response(409, json={"status": "error", "errors": [{"message": "taken"}]}))
    assert str(err) == "taken"
    err = error_of(httpx.Response(502))
    assert str(err) == "HTTP 502 Bad Gateway from http://portway.test/v1/services?name=web"


def test_failed_items_are_the_message() -> None:
    err = error_of(
        httpx.Response(
            200,
            json={
                "status": "partial_success",
                "message": "2 of 3 items failed",
                "data": {
                    "service_groups": [
                        {"status": "success", "uuid": "u1", "name": "a"},
                        {
                            "status": "error",
                            "error": 8,
                            "message": "No service group with name 'b'",
                        },
                        {
                            "status": "error",
                            "error": 15,
                            "message": "Service group 'c' has instances",
                        },
                    ]
                },
            },
        )
    )
    assert str(err) == "No service group with name 'b'; Service group 'c' has instances"
    assert err.error_code == 8
    assert [i["status"] for i in err.items] == ["success", "error", "error"]


def test_top_level_errors_fail_even_on_200() -> None:
    err = error_of(envelope([], message="quota", errors=[{"status": 429, "message": "quota"}]))
    assert str(err) == "quota"


def test_not_an_envelope() -> None:
    err = error_of(
        httpx.Response(200, text="<html>hello</html>", headers={"content-type": "text/html"})
    )
    assert "not a Unikraft Cloud API envelope" in str(err) and "text/html" in str(err)
    err = error_of(httpx.Response(200, json={"status": "success", "data": {}}))
    assert "no data.service_groups list" in str(err)


def test_connection_refused_is_one_line_with_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    err = error_of_call(refuse)
    assert str(err) == (
        "cannot reach http://portway.test/v1 (connection refused); is the daemon running? "
        "Start it with `portway up`, or set UKC_METRO"
    )


def test_timeout_is_one_line() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    assert str(error_of_call(hang)).startswith("no answer from http://portway.test/v1 in time")


def error_of_call(handler: Handler) -> ClientError:
    with fake(handler) as client, pytest.raises(ClientError) as caught:
        client.list_service_groups()
    return caught.value


# --- paging ----------------------------------------------------------------------------------


class PagedServer:
    """Pages the way Portway does: stable order, inclusive `from`, empty page for an unknown
    cursor. `ignore_from` plays a server that does not page at all."""

    def __init__(self, total: int, *, ignore_from: bool = False) -> None:
        self.uuids = [f"g{i:04d}" for i in range(total)]
        self.ignore_from = ignore_from
        self.requests: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        self.requests.append(params)
        start = 0
        if "from" in params and not self.ignore_from:
            if params["from"] not in self.uuids:
                return envelope([])
            start = self.uuids.index(params["from"])
        page = self.uuids[start : start + int(params["count"])]
        return envelope([{"status": "success", "uuid": u} for u in page])


@pytest.mark.parametrize("total", [0, 1, 4, 5, 6, 12])
def test_list_pages_through_everything_once(total: int) -> None:
    server = PagedServer(total)
    with fake(server) as client:
        groups = client.list_service_groups(page_size=5)
    assert [g["uuid"] for g in groups] == server.uuids
    assert server.requests[0] == {"count": "5"}
    # Later pages ask for one more, starting at (and dropping) the last uuid seen.
    for params in server.requests[1:]:
        assert params["count"] == "6" and params["from"] in server.uuids
    assert len(server.requests) <= total // 5 + 1


def test_list_resumes_when_the_cursor_group_disappears() -> None:
    server = PagedServer(8)

    def deleting(request: httpx.Request) -> httpx.Response:
        response = server(request)
        if len(server.requests) == 1:
            server.uuids.remove("g0002")  # the cursor of the next page, gone meanwhile
        return response

    with fake(deleting) as client:
        groups = client.list_service_groups(page_size=3)
    assert [g["uuid"] for g in groups] == ["g0000", "g0001", "g0002", *server.uuids[2:]]
    assert server.requests[1]["from"] == "g0002" and server.requests[2]["from"] == "g0001"


def test_list_stops_when_the_server_ignores_the_cursor() -> None:
    server = PagedServer(10, ignore_from=True)
    with fake(server) as client:
        groups = client.list_service_groups(page_size=3)
    # The first repeat brings one new group (page size + 1); the next brings none: stop.
    assert [g["uuid"] for g in groups] == server.uuids[:4]
    assert len(server.requests) == 3


def test_list_pages_against_the_real_daemon(shared_daemon: Daemon) -> None:
    endpoint = Endpoint(shared_daemon.url, shared_daemon.token)
    with Client(endpoint) as client:
        for i in range(5):
            client.create_service_group(
                {"name": f"paged-{i}", "services": [{"port": 9700 + i, "handlers": ["tls"]}]}
            )
        everything = client.get_service_groups([])  # no count: one unpaged answer
        paged = client.list_service_groups(page_size=2)
    assert len(everything) >= 5
    assert [g["uuid"] for g in paged] == [g["uuid"] for g in everything]
