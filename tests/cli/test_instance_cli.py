"""`portway instance ...` against a fake daemon: the exact requests the verbs send, and what
they print for the answers. The fake is an httpx.MockTransport handed to the CLI's client; the
real daemon's side of the same verbs is tests/cli/test_instance_cli_e2e.py.

The fake (`FakeApi`) and the test app (`portway_app`) are shared with the deploy and image tests.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner, Result

from portway.cli import deploy as deploy_module
from portway.cli import image as image_module
from portway.cli import instance as instance_module
from portway.cli.deploy import DeployCommand, deploy
from portway.cli.image import app as image_app
from portway.cli.instance import LaunchOptions, LogCursor, follow_log, instance_request
from portway.cli.instance import app as instance_app
from portway.cli.service import BadArgument
from portway.client import Client, Endpoint

ENDPOINT = Endpoint("http://portway.test/v1", "secret")
UUID_A = "d6238ac6-27d2-47b3-8a45-c6cac99fb4ef"
UUID_B = "06c972a6-a117-4b07-8eba-9389b4cccb42"
GROUP_UUID = "954b4a52-fc51-4eac-b5c9-1fc2a368a237"


# --- the fake daemon ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One request as the fake received it."""

    method: str
    path: str
    params: list[tuple[str, str]]
    body: Any  # the JSON body, None when there is none or it is not JSON
    content: bytes
    content_type: str | None
    read_timeout: float | None


Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


def envelope(
    key: str, items: list[dict[str, Any]], *, status: str = "success", **top: Any
) -> httpx.Response:
    return httpx.Response(200, json={"status": status, **top, "data": {key: items}})


def bad_request(message: str) -> httpx.Response:
    return httpx.Response(
        400,
        json={
            "status": "error",
            "message": message,
            "errors": [{"status": 400, "message": message}],
        },
    )


class FakeApi:
    """Canned answers by (method, path), consumed in order (the last one repeats), and every
    request recorded. A request nobody planned for is a 404 the test will see."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], list[Answer]] = {}
        self.sent: list[Sent] = []

    def on(self, method: str, path: str, *answers: Answer) -> None:
        self.answers[(method, path)] = list(answers)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/v1")
        try:
            body = json.loads(request.content) if request.content else None
        except (ValueError, UnicodeDecodeError):
            body = None
        timeout = request.extensions.get("timeout", {})
        self.sent.append(
            Sent(
                request.method,
                path,
                list(request.url.params.multi_items()),
                body,
                request.content,
                request.headers.get("content-type"),
                timeout.get("read"),
            )
        )
        queue = self.answers.get((request.method, path))
        if not queue:
            return httpx.Response(404, json={"status": "error", "message": f"no route {path}"})
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return answer(request) if callable(answer) else answer

    def client(self) -> Client:
        return Client(ENDPOINT, transport=httpx.MockTransport(self.handle))

    def requests(self, method: str, path: str) -> list[Sent]:
        return [s for s in self.sent if (s.method, s.path) == (method, path)]

    def bodies(self, method: str, path: str) -> list[Any]:
        return [s.body for s in self.requests(method, path)]


def install_fake(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    """A fake daemon that every CLI module under test connects to."""
    fake = FakeApi()
    for module in (instance_module, deploy_module, image_module):
        monkeypatch.setattr(module, "connect", fake.client)
    return fake


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    return install_fake(monkeypatch)


def portway_app() -> typer.Typer:
    """The verbs mounted as main.py will mount them (see the report for the exact lines)."""
    app = typer.Typer(pretty_exceptions_enable=False)
    app.add_typer(instance_app, name="instance")
    app.add_typer(image_app, name="image")
    app.command("deploy", cls=DeployCommand)(deploy)
    return app


def run(*args: str) -> Result:
    return CliRunner().invoke(portway_app(), list(args))


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


def instance_item(**fields: Any) -> dict[str, Any]:
    """An instance as the daemon reads it (ukc-api.md §3.3, Portway's fields)."""
    base: dict[str, Any] = {
        "status": "success",
        "uuid": UUID_A,
        "name": "app-8ujeu",
        "state": "running",
        "image": "app:latest@sha256:269192f523dca7498423bc54676ab08e",
        "memory_mb": 128,
        "vcpus": 1,
        "args": ["python3", "server.py"],
        "env": {},
        "private_ip": "127.64.0.2",
        "private_fqdn": "app-8ujeu.internal",
        "boot_time_us": 20180,
        "service_group": {
            "uuid": GROUP_UUID,
            "name": "wandering-shape-n6mhimgn",
            "domains": [{"fqdn": "wandering-shape-n6mhimgn.portway.localhost"}],
        },
        "created_at": "2026-05-28T13:53:40Z",
        "started_at": "2026-05-28T13:53:41Z",
        "restart_policy": "never",
    }
    return {**base, **fields}


def group_item(ports: list[int]) -> dict[str, Any]:
    return {
        "status": "success",
        "uuid": GROUP_UUID,
        "name": "wandering-shape-n6mhimgn",
        "domains": [{"fqdn": "wandering-shape-n6mhimgn.portway.localhost"}],
        "services": [{"port": p, "destination_port": 8080, "handlers": []} for p in ports],
    }


def log_item(text: bytes, start: int, available_end: int, state: str = "running") -> httpx.Response:
    item = {
        "status": "success",
        "uuid": UUID_A,
        "name": "app-8ujeu",
        "state": state,
        "output": base64.b64encode(text).decode(),
        "available": {"start": 0, "end": available_end},
        "range": {"start": start, "end": start + len(text)},
    }
    return envelope("instances", [item])


HTTPS_PAIR = [
    {"port": 443, "destination_port": 8080, "handlers": ["tls", "http"]},
    {"port": 80, "destination_port": 443, "handlers": ["http", "redirect"]},
]


# --- the request: pure -------------------------------------------------------------------------


def test_request_leaves_unset_fields_out_but_says_autostart() -> None:
    assert instance_request("app:latest", [], LaunchOptions(start=False)) == {
        "image": "app:latest",
        "autostart": False,
    }


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (LaunchOptions(service="web", ports=["443:8080"]), "cannot be combined with -p/--port"),
        (LaunchOptions(service="web", domains=["a.example"]), "cannot be combined"),
        (LaunchOptions(service="web", soft_limit=3), "cannot be combined"),
        (LaunchOptions(domains=["a.example"]), "needs a port to publish: add -p"),
        (LaunchOptions(scale_to_zero=instance_module.ScaleToZero.ON), "needs a service group"),
        (LaunchOptions(scale_to_zero_stateful=True, ports=["443:8080"]), "need --scale-to-zero"),
        (LaunchOptions(env=["NOVALUE"]), "--env 'NOVALUE': use KEY=VALUE"),
        (LaunchOptions(env=["=x"]), "use KEY=VALUE"),
        (LaunchOptions(memory_mb=0), "--memory must be at least 1 MiB"),
        (LaunchOptions(replicas=-1), "--replicas must not be negative"),
        (LaunchOptions(timeout_s=-5), "--timeout must not be negative"),
        (LaunchOptions(ports=["443:bogus"]), "port spec '443:bogus'"),
    ],
)
def test_request_refuses_bad_flags(options: LaunchOptions, problem: str) -> None:
    with pytest.raises(BadArgument) as caught:
        instance_request("app:latest", [], options)
    assert problem in str(caught.value)


# --- instance create ---------------------------------------------------------------------------


def created_and_read(api: FakeApi, *items: dict[str, Any], ports: list[int] | None = None) -> None:
    """The create answer (terse), the read back (full) and the group read the summary uses."""
    terse = [{"status": "success", "uuid": i["uuid"], "name": i["name"]} for i in items]
    api.on("POST", "/instances", envelope("instances", terse))
    api.on("GET", "/instances", *(envelope("instances", [i]) for i in items))
    api.on("GET", "/services", envelope("service_groups", [group_item(ports or [443, 80])]))


def test_create_sends_every_flag(api: FakeApi) -> None:
    created_and_read(api, instance_item())
    ok(
        run(
            "instance", "create", "--image", "app:v1", "-n", "web", "-p", "443:8080",
            "-e", "A=1", "-e", "B=x=y", "-M", "256", "-R", "1", "--restart", "on-failure",
            "--scale-to-zero", "on", "--scale-to-zero-cooldown", "500",
            "--scale-to-zero-stateful", "-S", "--timeout", "30",
            "--", "python3", "server.py", "--flag",
        )
    )  # fmt: skip
    assert api.bodies("POST", "/instances") == [
        {
            "image": "app:v1",
            "name": "web",
            "args": ["python3", "server.py", "--flag"],
            "env": {"A": "1", "B": "x=y"},  # only the first = splits
            "memory_mb": 256,
            "replicas": 1,
            "restart_policy": "on-failure",
            # the same parser as `portway service create`: a lone 443 gets the redirect
            "service_group": {"services": HTTPS_PAIR},
            "scale_to_zero": {"policy": "on", "cooldown_time_ms": 500, "stateful": True},
            "autostart": True,
            "timeout_s": 30,
        }
    ]
    # the daemon holds the call for timeout_s: the client's read timeout must outlast it
    [post] = api.requests("POST", "/instances")
    assert post.read_timeout is not None and post.read_timeout >= 30 + 10


def test_create_with_a_positional_image_does_not_start_by_default(api: FakeApi) -> None:
    created_and_read(api, instance_item(state="stopped", boot_time_us=None))
    out = ok(run("instance", "create", "app:latest", "--", "python3", "-m", "http.server"))
    assert api.bodies("POST", "/instances") == [
        {"image": "app:latest", "args": ["python3", "-m", "http.server"], "autostart": False}
    ]
    assert out.startswith("[●] Created successfully!\n │\n")
    assert "state: stopped" in out and "boot time" not in out


@pytest.mark.parametrize(
    ("service", "ref"), [("web", {"name": "web"}), (GROUP_UUID, {"uuid": GROUP_UUID})]
)
def test_create_attaches_to_a_group_by_name_or_uuid(
    api: FakeApi, service: str, ref: dict[str, str]
) -> None:
    created_and_read(api, instance_item())
    ok(run("instance", "create", "--image", "app:latest", "--service", service, "-S"))
    [body] = api.bodies("POST", "/instances")
    assert body["service_group"] == ref


def test_create_service_with_ports_is_refused_before_sending(api: FakeApi) -> None:
    line = one_line_error(
        run("instance", "create", "app:latest", "--service", "web", "-p", "443:8080")
    )
    assert line.startswith("portway: --service attaches to an existing service group;")
    assert api.sent == []


def test_create_needs_an_image(api: FakeApi) -> None:
    assert "name the image to run" in one_line_error(run("instance", "create", "-S"))


def test_create_prints_json_with_o(api: FakeApi) -> None:
    created_and_read(api, instance_item())
    [shown] = json.loads(ok(run("instance", "create", "app:latest", "-S", "-o", "json")))
    assert shown["uuid"] == UUID_A and shown["private_ip"] == "127.64.0.2"


def test_create_answering_an_error_item_is_one_line(api: FakeApi) -> None:
    missing = {"status": "error", "message": "No image with name 'nope:latest'", "error": 8}
    api.on("POST", "/instances", envelope("instances", [missing], status="error"))
    line = one_line_error(run("instance", "create", "nope:latest", "-S"))
    assert line == "portway: No image with name 'nope:latest'"


def test_create_timed_out_is_one_line(api: FakeApi) -> None:
    lapsed = instance_item(
        status="error", state="starting", error=12, message="Timed out waiting for 'app-8ujeu'"
    )
    api.on(
        "POST",
        "/instances",
        envelope("instances", [lapsed], status="error", message="Timed out waiting"),
    )
    assert one_line_error(run("instance", "create", "app:latest", "-S")) == (
        "portway: Timed out waiting for 'app-8ujeu'"
    )


# --- list and get ------------------------------------------------------------------------------


def test_list_is_a_table_with_kraft_columns(api: FakeApi) -> None:
    api.on("GET", "/instances", envelope("instances", [instance_item()]))
    lines = ok(run("instance", "list")).splitlines()
    assert lines[0].split() == [
        "NAME", "FQDN", "STATE", "CREATED", "AT", "IMAGE", "MEMORY", "ARGS", "BOOT", "TIME",
    ]  # fmt: skip
    row = lines[1]
    assert row.startswith("app-8ujeu  wandering-shape-n6mhimgn.portway.localhost  running  ")
    assert " ago " in row and "128 MiB  python3 server.py  20.18 ms" in row
    assert api.requests("GET", "/instances")[0].params == [("count", "100")]


def test_get_by_uuid_in_list_format(api: FakeApi) -> None:
    api.on("GET", "/instances", envelope("instances", [instance_item(stop_reason=None)]))
    out = ok(run("instance", "get", UUID_A))
    assert api.requests("GET", "/instances")[0].params == [("uuid", UUID_A)]
    assert out.splitlines()[:5] == [
        f"uuid: {UUID_A}",
        "name: app-8ujeu",
        "fqdn: wandering-shape-n6mhimgn.portway.localhost",
        "state: running",
        "created at: 2026-05-28T13:53:40Z",  # raw in `list`
    ]
    assert "private ip: 127.64.0.2\n" in out and "service: wandering-shape-n6mhimgn\n" in out


@pytest.mark.parametrize("args", [("list",), ("ls",), ("get", "app-8ujeu")])
def test_list_and_get_print_json_with_o(api: FakeApi, args: tuple[str, ...]) -> None:
    api.on("GET", "/instances", envelope("instances", [instance_item()]))
    [shown] = json.loads(ok(run("instance", *args, "-o", "json")))
    assert shown == instance_item()


def test_get_decodes_the_stop_reason(api: FakeApi) -> None:
    api.on(
        "GET",
        "/instances",
        envelope("instances", [instance_item(state="stopped", stop_reason=3, exit_code=2)]),
    )
    assert "stop reason: the app exited with code 2 (3)\n" in ok(run("instance", "get", "app"))


def test_get_missing_is_one_line(api: FakeApi) -> None:
    missing = {"status": "error", "name": "nope", "message": "No instance with name 'nope'"}
    api.on("GET", "/instances", envelope("instances", [{**missing, "error": 8}]))
    assert one_line_error(run("instance", "get", "nope")) == (
        "portway: No instance with name 'nope'"
    )


# --- start, stop, remove -----------------------------------------------------------------------


def transition(name: str, uuid: str, previous: str, state: str) -> dict[str, Any]:
    return {
        "status": "success",
        "uuid": uuid,
        "name": name,
        "previous_state": previous,
        "state": state,
    }


def states(*items: dict[str, Any]) -> httpx.Response:
    return envelope("instances", list(items))


def test_stop_sends_the_drain_timeout_per_instance(api: FakeApi) -> None:
    api.on(
        "PUT",
        "/instances/stop",
        states(
            transition("web", UUID_A, "running", "draining"),
            transition("api", UUID_B, "running", "draining"),
        ),
    )
    out = ok(run("instance", "stop", "web", UUID_B, "-d", "5000"))
    assert api.bodies("PUT", "/instances/stop") == [
        [{"name": "web", "drain_timeout_ms": 5000}, {"uuid": UUID_B, "drain_timeout_ms": 5000}]
    ]
    assert out == "web: running -> draining\napi: running -> draining\n"


def test_stop_force(api: FakeApi) -> None:
    api.on("PUT", "/instances/stop", states(transition("web", UUID_A, "running", "stopped")))
    ok(run("instance", "stop", "-f", "web"))
    assert api.bodies("PUT", "/instances/stop") == [[{"name": "web", "force": True}]]


def test_stop_force_with_drain_is_refused_before_sending(api: FakeApi) -> None:
    line = one_line_error(run("instance", "stop", "-f", "-d", "100", "web"))
    assert line == "portway: --force stops at once; it cannot be combined with --drain-timeout"
    assert api.sent == []


def test_stop_all_and_wait(api: FakeApi) -> None:
    listed = [
        instance_item(uuid=UUID_A, name="a"),
        instance_item(uuid=UUID_B, name="b", state="standby"),
        instance_item(uuid="11111111-2222-4333-8444-555555555555", name="c", state="stopped"),
    ]
    api.on("GET", "/instances", envelope("instances", listed))
    api.on(
        "PUT",
        "/instances/stop",
        states(
            transition("a", UUID_A, "running", "stopping"),
            transition("b", UUID_B, "standby", "stopped"),
        ),
    )
    api.on(
        "GET",
        "/instances/wait",
        states(
            {"status": "success", "uuid": UUID_A, "name": "a", "state": "stopped"},
            {"status": "success", "uuid": UUID_B, "name": "b", "state": "stopped"},
        ),
    )
    out = ok(run("instance", "stop", "--all", "-w", "--timeout", "15"))
    # the stopped one is left alone; every ref is by uuid, as listed
    assert api.bodies("PUT", "/instances/stop") == [[{"uuid": UUID_A}, {"uuid": UUID_B}]]
    assert api.bodies("GET", "/instances/wait") == [
        [
            {"uuid": UUID_A, "state": "stopped", "timeout_s": 15},
            {"uuid": UUID_B, "state": "stopped", "timeout_s": 15},
        ]
    ]
    assert out == "a: stopped\nb: stopped\n"  # the state after the wait, not "stopping"


def test_stop_needs_names_or_all(api: FakeApi) -> None:
    assert "or pass --all" in one_line_error(run("instance", "stop"))
    assert "or pass --all" in one_line_error(run("instance", "stop", "web", "--all"))


def test_start_and_wait(api: FakeApi) -> None:
    api.on("PUT", "/instances/start", states(transition("web", UUID_A, "stopped", "starting")))
    api.on(
        "GET",
        "/instances/wait",
        states({"status": "success", "name": "web", "uuid": UUID_A, "state": "running"}),
    )
    assert ok(run("instance", "start", "web", "-w")) == "web: running\n"
    assert api.bodies("PUT", "/instances/start") == [[{"name": "web"}]]
    assert api.bodies("GET", "/instances/wait") == [
        [{"uuid": UUID_A, "state": "running", "timeout_s": 60}]
    ]


def test_remove_reports_removed_before_the_failure(api: FakeApi) -> None:
    items: list[dict[str, Any]] = [
        {"status": "success", "uuid": UUID_A, "name": "web", "previous_state": "running"},
        {"status": "error", "name": "gone", "message": "No instance with name 'gone'", "error": 8},
    ]
    api.on("DELETE", "/instances", envelope("instances", items, status="partial_success"))
    result = run("instance", "rm", "web", "gone")
    assert api.bodies("DELETE", "/instances") == [[{"name": "web"}, {"name": "gone"}]]
    assert result.exit_code == 1
    assert result.stdout == "removed web\n"
    assert result.stderr == "portway: No instance with name 'gone'\n"


# --- logs --------------------------------------------------------------------------------------


def test_logs_reads_in_chunks_and_decodes_across_them(api: FakeApi) -> None:
    text = "héllo\nwörld\n".encode()
    cut = 2  # inside the two bytes of "é"
    api.on(
        "GET",
        "/instances/log",
        log_item(text[:cut], 0, len(text), state="stopped"),
        log_item(text[cut:], cut, len(text), state="stopped"),
    )
    assert ok(run("instance", "logs", "web")) == "héllo\nwörld\n"
    assert api.bodies("GET", "/instances/log") == [
        [{"name": "web", "offset": 0, "limit": 1 << 20}],
        [{"name": "web", "offset": cut, "limit": 1 << 20}],
    ]


def test_logs_tail_drops_the_cut_first_line(api: FakeApi) -> None:
    window = b"rt of a line\none\ntwo\nthree\n"
    response = log_item(window, 100, 100 + len(window))
    item = response.json()["data"]["instances"][0]
    item["available"]["start"] = 0  # the log holds more than the window: its first line is cut
    api.on("GET", "/instances/log", envelope("instances", [item]))
    assert ok(run("instance", "logs", "web", "--tail", "5")) == "one\ntwo\nthree\n"
    assert api.bodies("GET", "/instances/log") == [
        [{"name": "web", "offset": -(1 << 20), "limit": 1 << 20}]
    ]


def test_logs_follow_polls_until_the_instance_stops(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(instance_module, "POLL_MIN_S", 0.0)
    monkeypatch.setattr(instance_module, "POLL_MAX_S", 0.0)
    api.on(
        "GET",
        "/instances/log",
        log_item(b"one\n", 0, 4),
        log_item(b"", 4, 4),  # quiet: poll again
        log_item(b"two\n", 4, 8, state="stopped"),
        log_item(b"", 8, 8, state="stopped"),  # the last read after it stopped
    )
    assert ok(run("instance", "logs", "-f", UUID_A)) == "one\ntwo\n"
    offsets = [body[0]["offset"] for body in api.bodies("GET", "/instances/log")]
    assert offsets == [0, 4, 4, 8]
    assert all(body[0]["uuid"] == UUID_A for body in api.bodies("GET", "/instances/log"))


def test_logs_follow_ends_quietly_when_the_instance_is_deleted(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(instance_module, "POLL_MIN_S", 0.0)
    gone = {"status": "error", "name": "web", "message": "No instance with name 'web'", "error": 8}
    api.on("GET", "/instances/log", log_item(b"bye\n", 0, 4), envelope("instances", [gone]))
    assert ok(run("instance", "logs", "-f", "web")) == "bye\n"


def test_logs_of_a_missing_instance_is_one_line_even_with_follow(api: FakeApi) -> None:
    gone = {"status": "error", "name": "web", "message": "No instance with name 'web'", "error": 8}
    api.on("GET", "/instances/log", envelope("instances", [gone]))
    assert one_line_error(run("instance", "logs", "-f", "web")) == (
        "portway: No instance with name 'web'"
    )


def test_follow_backs_off_while_quiet_and_resets_on_output() -> None:
    api = FakeApi()
    api.on(
        "GET",
        "/instances/log",
        log_item(b"", 0, 0),
        log_item(b"", 0, 0),
        log_item(b"", 0, 0),
        log_item(b"x", 0, 1),
        log_item(b"", 1, 1, state="stopped"),
    )
    sleeps: list[float] = []
    written: list[str] = []
    with api.client() as client:
        follow_log(client, {"name": "web"}, LogCursor(), written.append, sleep=sleeps.append)
    assert "".join(written) == "x"
    assert sleeps == [0.5, 1.0, 2.0, 0.25]  # doubling, capped, back to the minimum
