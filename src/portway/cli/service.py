"""`portway service create|list|get|remove`: service groups with `kraft cloud service`'s syntax
(ukc-api.md §7).

The argument parsing (`parse_services`, `create_request`) is pure and raises `BadArgument`; the
commands are thin: parse, call the client, show. Every failure ends as one line on stderr,
`portway: <message>`, and exit code 1.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn, NotRequired, TypedDict

import typer

from ..client import Client, ClientError, Item, Ref, find_endpoint, identifier_ref
from .output import OutputFormat, show_groups

PORT_MIN, PORT_MAX = 1, 65535
LIMIT_MIN, LIMIT_MAX = 1, 65535
HANDLERS = ("tls", "http", "redirect")
HTTPS_PORT, HTTP_PORT = 443, 80
_NUMBER = re.compile(r"[0-9]+")  # not int(): it would also take "+80", " 80" and "٨٠"

app = typer.Typer(
    no_args_is_help=True,
    help="Manage service groups: the published ports and domains that reach your instances.",
)


class BadArgument(Exception):
    """A command-line argument the client refuses before anything is sent."""


class ServiceRequest(TypedDict):
    """One entry of `services` in `POST /v1/services` (ukc-api.md §2.3)."""

    port: int
    destination_port: int
    handlers: NotRequired[list[str]]


# --- pure: arguments -> request --------------------------------------------------------------


def _port(spec: str, text: str) -> int:
    if not _NUMBER.fullmatch(text):
        raise BadArgument(f"port spec {spec!r}: {text!r} is not a port number")
    value = int(text)
    if not PORT_MIN <= value <= PORT_MAX:
        raise BadArgument(f"port spec {spec!r}: port {value} is out of range {PORT_MIN}-{PORT_MAX}")
    return value


def _handlers(spec: str, text: str) -> list[str]:
    handlers = text.split("+")
    for handler in handlers:
        if handler not in HANDLERS:
            shown = repr(handler) if handler else "an empty handler"
            raise BadArgument(
                f"port spec {spec!r}: unknown handler {shown} "
                "(use tls, http, redirect joined by '+')"
            )
    if len(set(handlers)) != len(handlers):
        raise BadArgument(f"port spec {spec!r}: a handler is listed more than once")
    return handlers


def parse_service(spec: str) -> ServiceRequest:
    """`EXTERNAL[:INTERNAL][/HANDLER[+HANDLER]]`. Without handlers the daemon picks the ones the
    port needs; `P` alone publishes P to P."""
    ports, slash, handlers = spec.partition("/")
    external, colon, internal = ports.partition(":")
    port = _port(spec, external)
    service: ServiceRequest = {
        "port": port,
        "destination_port": _port(spec, internal) if colon else port,
    }
    if slash:
        service["handlers"] = _handlers(spec, handlers)
    return service


def parse_services(specs: Sequence[str]) -> list[ServiceRequest]:
    """Every spec, with kraft's shortcut: a lone `443:X` without handlers means HTTPS on 443 and
    the HTTP -> HTTPS redirect on 80, the pair a website needs."""
    if not specs:
        raise BadArgument("name at least one port to publish, e.g. 443:8080")
    services = [parse_service(spec) for spec in specs]
    if len(services) == 1 and services[0]["port"] == HTTPS_PORT and "handlers" not in services[0]:
        https = services[0]
        return [
            {
                "port": HTTPS_PORT,
                "destination_port": https["destination_port"],
                "handlers": ["tls", "http"],
            },
            {"port": HTTP_PORT, "destination_port": HTTPS_PORT, "handlers": ["http", "redirect"]},
        ]
    return services


def check_limits(soft_limit: int | None, hard_limit: int | None) -> None:
    for flag, value in (("--soft-limit", soft_limit), ("--hard-limit", hard_limit)):
        if value is not None and not LIMIT_MIN <= value <= LIMIT_MAX:
            raise BadArgument(f"{flag} must be between {LIMIT_MIN} and {LIMIT_MAX} (got {value})")
    if soft_limit is not None and hard_limit is not None and soft_limit > hard_limit:
        raise BadArgument(
            f"the soft limit ({soft_limit}) must not be greater than the hard limit ({hard_limit})"
        )


def domain_requests(domains: Sequence[str], subdomains: Sequence[str]) -> list[dict[str, str]]:
    """`-d` names a full domain and `-s` a subdomain of the platform's; on the wire the only
    difference is the trailing dot (ukc-api.md §2.3)."""
    requests = []
    flagged = [("--domain", d) for d in domains] + [("--subdomain", s) for s in subdomains]
    for flag, value in flagged:
        bare = value.strip().rstrip(".")
        if not bare:
            raise BadArgument(f"{flag} needs a name (got {value!r})")
        requests.append({"name": f"{bare}." if flag == "--domain" else bare})
    return requests


def create_request(
    specs: Sequence[str],
    *,
    name: str | None = None,
    domains: Sequence[str] = (),
    subdomains: Sequence[str] = (),
    soft_limit: int | None = None,
    hard_limit: int | None = None,
) -> dict[str, Any]:
    """The body of `POST /v1/services`; unset fields are left out, as the SDK does."""
    check_limits(soft_limit, hard_limit)
    request: dict[str, Any] = {"services": parse_services(specs)}
    if name is not None:
        request["name"] = name
    if domains or subdomains:
        request["domains"] = domain_requests(domains, subdomains)
    if soft_limit is not None:
        request["soft_limit"] = soft_limit
    if hard_limit is not None:
        request["hard_limit"] = hard_limit
    return request


def ref_of(item: Item) -> Ref:
    """How to ask for an item again: by uuid when the daemon gave one."""
    return {"uuid": item["uuid"]} if item.get("uuid") else {"name": str(item.get("name"))}


# --- the shell: errors, client, output -------------------------------------------------------


def fail(message: str) -> NoReturn:
    print(f"portway: {message}", file=sys.stderr)
    raise typer.Exit(1)


@contextmanager
def reporting_errors() -> Iterator[None]:
    """Our own failures become one line and exit 1, never a traceback."""
    try:
        yield
    except (BadArgument, ClientError) as err:
        fail(str(err))


def connect() -> Client:
    return Client(find_endpoint())


def show(groups: Sequence[Item], output: OutputFormat) -> None:
    show_groups(groups, output, now=datetime.now(UTC))


def _output_option(default: OutputFormat) -> Any:
    return typer.Option(default, "--output", "-o", case_sensitive=False, help="Output format.")


# --- commands --------------------------------------------------------------------------------


@app.command("create")
def create(
    specs: list[str] = typer.Argument(
        ...,
        metavar="EXTERNAL:INTERNAL[/HANDLER[+HANDLER]]",
        help="Ports to publish, e.g. 443:8080 (HTTPS, plus the redirect from 80) or "
        "8443:8080/tls. Handlers: tls, http, redirect.",
        show_default=False,
    ),
    name: str | None = typer.Option(None, "--name", "-n", help="Name of the service group."),
    domains: list[str] = typer.Option(
        [], "--domain", "-d", help="A domain of your own (repeatable).", show_default=False
    ),
    subdomains: list[str] = typer.Option(
        [],
        "--subdomain",
        "-s",
        help="A subdomain of the platform domain (repeatable).",
        show_default=False,
    ),
    soft_limit: int | None = typer.Option(
        None, "--soft-limit", "-l", help="Concurrent requests per instance before waking another."
    ),
    hard_limit: int | None = typer.Option(
        None, "--hard-limit", "-L", help="Most concurrent requests per instance."
    ),
    output: OutputFormat = _output_option(OutputFormat.LIST),
) -> None:
    """Create a service group and show it (alias: new)."""
    with reporting_errors():
        request = create_request(
            specs,
            name=name,
            domains=domains,
            subdomains=subdomains,
            soft_limit=soft_limit,
            hard_limit=hard_limit,
        )
        with connect() as client:
            created = client.create_service_group(request)
            # The create answer carries less than a read (ukc-api.md §2.3).
            group = client.get_service_group(ref_of(created))
        show([group], output)


@app.command("list")
def list_groups(output: OutputFormat = _output_option(OutputFormat.TABLE)) -> None:
    """List your service groups (alias: ls)."""
    with reporting_errors(), connect() as client:
        groups = client.list_service_groups()
    show(groups, output)


@app.command("get")
def get(
    identifier: str = typer.Argument(..., metavar="UUID|NAME", help="The group to show."),
    output: OutputFormat = _output_option(OutputFormat.LIST),
) -> None:
    """Show one service group."""
    with reporting_errors(), connect() as client:
        group = client.get_service_group(identifier_ref(identifier))
    show([group], output)


@app.command("remove")
def remove(
    identifiers: list[str] | None = typer.Argument(
        None, metavar="NAME|UUID", help="The groups to remove.", show_default=False
    ),
    remove_all: bool = typer.Option(False, "--all", help="Remove every service group."),
) -> None:
    """Remove service groups, refused while instances are attached (aliases: delete, rm)."""
    with reporting_errors():
        names = identifiers or []
        if remove_all == bool(names):
            raise BadArgument("name the service groups to remove, or pass --all (not both)")
        with connect() as client:
            refs = (
                [ref_of(g) for g in client.list_service_groups()]
                if remove_all
                else [identifier_ref(n) for n in names]
            )
            if refs:
                report_removed(client, refs)


def report_removed(client: Client, refs: Sequence[Ref]) -> None:
    """One line per removed group; if some failed, the others are still reported first."""
    try:
        items = client.delete_service_groups(refs)
    except ClientError as err:
        _print_removed(i for i in err.items if i.get("status") != "error")
        raise
    _print_removed(items)


def _print_removed(items: Iterable[Item]) -> None:
    for item in items:
        print(f"removed {item.get('name') or item.get('uuid')}")


# kraft's aliases: the same commands under other names, left out of --help to keep it short.
app.command("new", hidden=True)(create)
app.command("ls", hidden=True)(list_groups)
for _alias in ("delete", "del", "rm"):
    app.command(_alias, hidden=True)(remove)
