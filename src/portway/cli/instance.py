"""`portway instance create|list|get|start|stop|remove|logs` with `kraft cloud instance`'s flags
(ukc-api.md §3, §7), and the launch path `portway deploy` shares.

As in service.py, the argument parsing (`instance_request` and its parts) is pure and raises
`BadArgument`; the commands parse, call the client, show; a failure is one line on stderr,
`portway: <message>`, and exit code 1. One failure gets more than a line: an instance that was
to run but stopped is reported with its state, stop reason and last log lines, since the one
line "it stopped" would leave the user to find out why.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console

from ..client import Client, ClientError, Item, Ref, identifier_ref
from .output import (
    OutputFormat,
    render_deployed,
    render_failed,
    show_instances,
    show_map,
    stderr_console,
)
from .service import BadArgument, connect, create_request, ref_of, reporting_errors

RUNNING, STOPPED, DELETED = "running", "stopped", "deleted"
# States an instance that should be running must not end a wait in.
ENDED = frozenset({STOPPED, DELETED})
NOT_FOUND = 8  # the API's item error code (ukc-api.md §1.5)
DEFAULT_TIMEOUT_S = 60
FAILED_LOG_LINES = 20
FAILED_LOG_BYTES = 16 * 1024
TAIL_WINDOW = 1024 * 1024  # bytes read to find the last --tail lines
LOG_CHUNK = 1024 * 1024  # bytes per log request
POLL_MIN_S, POLL_MAX_S = 0.25, 2.0  # --follow polls, backing off while the log is quiet

app = typer.Typer(
    no_args_is_help=True,
    help="Manage instances: supervised runs of an image.",
)


class RestartPolicy(StrEnum):
    NEVER = "never"
    ALWAYS = "always"
    ON_FAILURE = "on-failure"


class ScaleToZero(StrEnum):
    ON = "on"
    OFF = "off"
    IDLE = "idle"


# --- the flags `deploy` and `instance create` share, declared once -----------------------------

NameOption = Annotated[
    str | None, typer.Option("--name", "-n", help="Name of the instance.", show_default=False)
]
PortsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--port",
        "-p",
        metavar="EXTERNAL:INTERNAL[/HANDLER[+HANDLER]]",
        help="Publish a port through a new service group, as `portway service create` takes it "
        "(repeatable; 443:8080 also redirects 80 to HTTPS).",
        show_default=False,
    ),
]
ServiceOption = Annotated[
    str | None,
    typer.Option(
        "--service",
        "-g",
        metavar="NAME|UUID",
        help="Attach to an existing service group (not with -p, -d, -s, -l, -L).",
        show_default=False,
    ),
]
DomainsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--domain", "-d", help="A domain of your own for the new group.", show_default=False
    ),
]
SubdomainsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--subdomain",
        "-s",
        help="A subdomain of the platform domain for the new group.",
        show_default=False,
    ),
]
SoftLimitOption = Annotated[
    int | None,
    typer.Option("--soft-limit", "-l", help="The new group's soft limit.", show_default=False),
]
HardLimitOption = Annotated[
    int | None,
    typer.Option("--hard-limit", "-L", help="The new group's hard limit.", show_default=False),
]
EnvOption = Annotated[
    list[str] | None,
    typer.Option(
        "--env", "-e", metavar="KEY=VALUE", help="Set an environment variable.", show_default=False
    ),
]
MemoryOption = Annotated[
    int | None,
    typer.Option(
        "--memory", "-M", metavar="MB", help="Memory in MiB (default: 128).", show_default=False
    ),
]
ReplicasOption = Annotated[
    int | None,
    typer.Option("--replicas", "-R", help="How many more instances like it.", show_default=False),
]
RestartOption = Annotated[
    RestartPolicy | None,
    typer.Option(
        "--restart",
        case_sensitive=False,
        help="Restart policy (default: never).",
        show_default=False,
    ),
]
ScaleToZeroOption = Annotated[
    ScaleToZero | None,
    typer.Option(
        "--scale-to-zero",
        case_sensitive=False,
        help="Scale to zero when idle (needs a service group).",
        show_default=False,
    ),
]
CooldownOption = Annotated[
    int | None,
    typer.Option(
        "--scale-to-zero-cooldown",
        metavar="MS",
        help="Idle time before scaling to zero (default: 1000).",
        show_default=False,
    ),
]
StatefulOption = Annotated[
    bool,
    typer.Option("--scale-to-zero-stateful", help="Keep memory while scaled to zero."),
]
TimeoutOption = Annotated[
    int,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        help="How long to wait for the instance to run (0: do not wait).",
    ),
]
OutputOption = Annotated[
    OutputFormat | None,
    typer.Option(
        "--output",
        "-o",
        case_sensitive=False,
        help="Output format (default: the deploy summary).",
        show_default=False,
    ),
]


def output_option(default: OutputFormat) -> Any:
    return typer.Option(default, "--output", "-o", case_sensitive=False, help="Output format.")


@dataclass(frozen=True)
class LaunchOptions:
    """What `deploy` and `instance create` were asked for, before any check."""

    name: str | None = None
    ports: Sequence[str] = ()
    service: str | None = None
    domains: Sequence[str] = ()
    subdomains: Sequence[str] = ()
    soft_limit: int | None = None
    hard_limit: int | None = None
    env: Sequence[str] = ()
    memory_mb: int | None = None
    replicas: int | None = None
    restart: RestartPolicy | None = None
    scale_to_zero: ScaleToZero | None = None
    scale_to_zero_cooldown_ms: int | None = None
    scale_to_zero_stateful: bool = False
    start: bool = True
    timeout_s: int = DEFAULT_TIMEOUT_S


# --- pure: arguments -> request ---------------------------------------------------------------


def parse_env(pairs: Sequence[str], flag: str = "--env") -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise BadArgument(f"{flag} {pair!r}: use KEY=VALUE")
        env[key] = value
    return env


def _wants_inline_group(options: LaunchOptions) -> bool:
    return bool(
        options.ports
        or options.domains
        or options.subdomains
        or options.soft_limit is not None
        or options.hard_limit is not None
    )


def service_group_request(options: LaunchOptions) -> dict[str, Any] | None:
    """`--service` names an existing group; -p/-d/-s/-l/-L describe a new, instance-owned one,
    parsed exactly as `portway service create` parses them (443 expansion included)."""
    inline = _wants_inline_group(options)
    if options.service is not None:
        if inline:
            raise BadArgument(
                "--service attaches to an existing service group; it cannot be combined with "
                "-p/--port, -d/--domain, -s/--subdomain, -l/--soft-limit or -L/--hard-limit"
            )
        return dict(identifier_ref(options.service))
    if not inline:
        return None
    if not options.ports:
        raise BadArgument("a new service group needs a port to publish: add -p, e.g. -p 443:8080")
    return create_request(
        options.ports,
        domains=options.domains,
        subdomains=options.subdomains,
        soft_limit=options.soft_limit,
        hard_limit=options.hard_limit,
    )


def scale_to_zero_request(options: LaunchOptions, has_group: bool) -> dict[str, Any] | None:
    tuned = options.scale_to_zero_cooldown_ms is not None or options.scale_to_zero_stateful
    if options.scale_to_zero is None:
        if tuned:
            raise BadArgument(
                "--scale-to-zero-cooldown and --scale-to-zero-stateful need --scale-to-zero"
            )
        return None
    # Only traffic through a service group wakes an instance that scaled to zero.
    if options.scale_to_zero is not ScaleToZero.OFF and not has_group:
        raise BadArgument(
            "--scale-to-zero needs a service group to wake the instance: "
            "publish a port with -p or attach with --service"
        )
    request: dict[str, Any] = {"policy": options.scale_to_zero.value}
    if options.scale_to_zero_cooldown_ms is not None:
        if options.scale_to_zero_cooldown_ms < 0:
            raise BadArgument("--scale-to-zero-cooldown must not be negative")
        request["cooldown_time_ms"] = options.scale_to_zero_cooldown_ms
    if options.scale_to_zero_stateful:
        request["stateful"] = True
    return request


def _check_counts(options: LaunchOptions) -> None:
    if options.memory_mb is not None and options.memory_mb < 1:
        raise BadArgument(f"--memory must be at least 1 MiB (got {options.memory_mb})")
    if options.replicas is not None and options.replicas < 0:
        raise BadArgument(f"--replicas must not be negative (got {options.replicas})")
    if options.timeout_s < 0:
        raise BadArgument(f"--timeout must not be negative (got {options.timeout_s})")


def instance_request(image: str, args: Sequence[str], options: LaunchOptions) -> dict[str, Any]:
    """The body of `POST /v1/instances`. Unset fields are left out, as the SDK does, except
    `autostart`: the daemon's default must not decide whether a deploy runs."""
    _check_counts(options)
    request: dict[str, Any] = {"image": image}
    if options.name is not None:
        request["name"] = options.name
    if args:
        request["args"] = list(args)
    env = parse_env(options.env)
    if env:
        request["env"] = env
    if options.memory_mb is not None:
        request["memory_mb"] = options.memory_mb
    if options.replicas is not None:
        request["replicas"] = options.replicas
    if options.restart is not None:
        request["restart_policy"] = options.restart.value
    group = service_group_request(options)
    if group is not None:
        request["service_group"] = group
    scale_to_zero = scale_to_zero_request(options, has_group=group is not None)
    if scale_to_zero is not None:
        request["scale_to_zero"] = scale_to_zero
    request["autostart"] = options.start
    if options.start and options.timeout_s > 0:
        request["timeout_s"] = options.timeout_s
    return request


def image_and_args(image: str | None, words: Sequence[str]) -> tuple[str, list[str]]:
    """`--image X -- ARGS` or `X -- ARGS`: with --image every positional word is an arg."""
    if image is not None:
        return image, list(words)
    if not words:
        raise BadArgument(
            "name the image to run: IMAGE or --image NAME:TAG "
            "(`--image host -- CMD ARGS` runs a command on the host)"
        )
    return words[0], list(words[1:])


def refs_of(identifiers: Sequence[str]) -> list[Ref]:
    return [identifier_ref(identifier) for identifier in identifiers]


def stop_request(ref: Ref, *, force: bool, drain_timeout_ms: int | None) -> dict[str, Any]:
    request: dict[str, Any] = dict(ref)
    if force:
        request["force"] = True
    if drain_timeout_ms is not None:
        request["drain_timeout_ms"] = drain_timeout_ms
    return request


def check_stop_flags(force: bool, drain_timeout_ms: int | None) -> None:
    # The docs make the pair a 400 (ukc-api.md §9.9); saying so here names the flags.
    if force and drain_timeout_ms is not None:
        raise BadArgument("--force stops at once; it cannot be combined with --drain-timeout")
    if drain_timeout_ms is not None and drain_timeout_ms < -1:
        raise BadArgument(
            f"--drain-timeout is in ms, -1 for the platform maximum (got {drain_timeout_ms})"
        )


def state_line(item: Item) -> str:
    """`app-8ujeu: running -> stopping`, or just the state when it did not change."""
    name = item.get("name") or item.get("uuid")
    state, previous = item.get("state"), item.get("previous_state")
    if previous and previous != state:
        return f"{name}: {previous} -> {state}"
    return f"{name}: {state}"


# --- launching: create, wait, read back, report -----------------------------------------------


def launch_message(request: Mapping[str, Any]) -> str:
    return "Starting the instance" if request.get("autostart") else "Creating the instance"


@contextmanager
def progress(message: str) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr while the daemon works, only on a terminal: pipes and CI logs must
    not fill with control characters. Yields a function to change the message."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda _message: None
        return
    with console.status(message) as status:
        yield lambda text: status.update(text)


def launch(client: Client, request: Mapping[str, Any]) -> list[Item]:
    """Create the instances and read them back in full: the create answer is terse
    (ukc-api.md §3.2). Instances that stopped instead of running come back too, for the
    caller to report; any other failure is raised."""
    try:
        created = client.create_instances(request)
    except ClientError as err:
        created = _stopped_instead_of_running(err)
    return [reread(client, item) for item in created]


def _stopped_instead_of_running(err: ClientError) -> list[Item]:
    """The SDK's InstanceStoppedError shape: error items with a uuid, a `stopped`/`deleted`
    state and no error code. Every other failure stays the one-line error it is."""
    failed = [item for item in err.items if item.get("status") == "error"]
    ended = all(
        item.get("uuid") and item.get("state") in ENDED and item.get("error") is None
        for item in failed
    )
    if not failed or not ended:
        raise err
    return err.items


def reread(client: Client, item: Item) -> Item:
    """The full read of a created instance; the create item itself if the instance is already
    gone (an instance that stopped may have been deleted with it)."""
    try:
        return client.get_instance(ref_of(item))
    except ClientError as err:
        if err.error_code == NOT_FOUND:
            return item
        raise


def groups_of(client: Client, instances: Iterable[Item]) -> dict[str, Item]:
    """The full reads of the instances' service groups, by uuid. Only the summary's `url` line
    needs them (an instance read has no ports), so a group that cannot be read is left out
    rather than failing a deploy that worked."""
    groups: dict[str, Item] = {}
    for instance in instances:
        uuid = (instance.get("service_group") or {}).get("uuid")
        if isinstance(uuid, str) and uuid and uuid not in groups:
            try:
                groups[uuid] = client.get_service_group({"uuid": uuid})
            except ClientError:
                continue
    return groups


def decode_output(item: Item) -> bytes:
    try:
        return base64.b64decode(item.get("output") or "", validate=True)
    except (binascii.Error, TypeError):
        raise ClientError("unexpected answer: a log `output` that is not base64") from None


def last_log_lines(client: Client, instance: Item, count: int = FAILED_LOG_LINES) -> list[str]:
    """The end of an instance's log, best effort: the report it decorates must still show."""
    try:
        item = client.instance_log(
            ref_of(instance), offset=-FAILED_LOG_BYTES, limit=FAILED_LOG_BYTES
        )
        text = decode_output(item).decode("utf-8", errors="replace")
    except ClientError:
        return []
    return text.splitlines()[-count:]


def report_launched(
    client: Client,
    instances: Sequence[Item],
    request: Mapping[str, Any],
    output: OutputFormat | None,
    *,
    image_args: Sequence[str] = (),
) -> None:
    """The deploy summary (or `-o`) for every instance that is as asked; a failure report on
    stderr for each one that was to run but stopped, and then exit 1. `image_args`: the
    image's command, shown as the args of an instance that does not override it."""
    started = bool(request.get("autostart"))
    waited = started and bool(request.get("timeout_s"))
    failed = [i for i in instances if waited and i.get("state") in ENDED]
    good = [i for i in instances if i not in failed]
    if output is not None:
        show_instances(good, output, now=datetime.now(UTC))
    else:
        shown = [with_command(i, image_args) for i in good]
        show_summaries(client, shown, started=started)
    for instance in failed:
        show_map(render_failed(instance, last_log_lines(client, instance)), stderr_console())
    if failed:
        raise typer.Exit(1)


def with_command(instance: Item, image_args: Sequence[str]) -> Item:
    """An instance read's `args` are only its own; what it runs without them is the image's."""
    if instance.get("args") or not image_args:
        return instance
    return {**instance, "args": list(image_args)}


def show_summaries(client: Client, instances: Sequence[Item], *, started: bool) -> None:
    groups = groups_of(client, instances)
    offset = client.port_offset() if groups else 0
    for index, instance in enumerate(instances):
        group = groups.get(str((instance.get("service_group") or {}).get("uuid")))
        if index:
            print()
        show_map(render_deployed(instance, group, started=started, port_offset=offset))


# --- logs -------------------------------------------------------------------------------------


@dataclass
class LogCursor:
    """Where the next log read starts, and the decoder that carries a UTF-8 character split
    across two reads."""

    offset: int = 0
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )


def _int_field(item: Item, key: str, part: str) -> int | None:
    value = item.get(key)
    number = value.get(part) if isinstance(value, Mapping) else None
    return number if isinstance(number, int) and not isinstance(number, bool) else None


def advance(cursor: LogCursor, item: Item, data: bytes) -> bool:
    """Move the cursor past what `item` returned; True when that reached the end of what is
    available. A read that returns nothing is the end too: never poll the same offset twice
    in a row without a pause, whatever the daemon reports."""
    start = max(cursor.offset, 0)
    end = _int_field(item, "range", "end")
    cursor.offset = max(end if end is not None else start + len(data), start)
    available_end = _int_field(item, "available", "end")
    return not data or available_end is None or cursor.offset >= available_end


def read_tail(client: Client, ref: Ref, lines: int, cursor: LogCursor) -> str:
    """The last `lines` lines. A window that starts mid-log starts mid-line: drop that one."""
    item = client.instance_log(ref, offset=-TAIL_WINDOW, limit=TAIL_WINDOW)
    data = decode_output(item)
    cursor.offset = -TAIL_WINDOW
    advance(cursor, item, data)
    text_lines = cursor.decoder.decode(data).splitlines(keepends=True)
    range_start = _int_field(item, "range", "start")
    available_start = _int_field(item, "available", "start")
    if range_start is not None and available_start is not None and range_start > available_start:
        text_lines = text_lines[1:]
    return "".join(text_lines[-lines:]) if lines > 0 else ""


def copy_log(
    client: Client, ref: Ref, cursor: LogCursor, write: Callable[[str], None]
) -> tuple[Item, bool]:
    """Read from the cursor until the end of what is available; (last item, got anything)."""
    got = False
    while True:
        item = client.instance_log(ref, offset=cursor.offset, limit=LOG_CHUNK)
        data = decode_output(item)
        got = got or bool(data)
        write(cursor.decoder.decode(data))
        if advance(cursor, item, data):
            return item, got


def has_ended(client: Client, ref: Ref, item: Item) -> bool:
    """Whether there will be no more output: the instance stopped or is gone. The log item
    carries the state (ukc-api.md §3.1); an older daemon's may not, so then read it."""
    state = item.get("state")
    if state is None:
        try:
            state = client.get_instance(ref).get("state")
        except ClientError as err:
            if err.error_code == NOT_FOUND:
                return True
            raise
    return state in ENDED


def follow_log(
    client: Client,
    ref: Ref,
    cursor: LogCursor,
    write: Callable[[str], None],
    *,
    found: bool = False,
    sleep: Callable[[float], None] | None = None,
) -> None:
    """Poll for new output until the instance stops or is deleted (or Ctrl-C). `found`: the
    instance was already read, so its disappearance is the end of its log, not an error."""
    delay = POLL_MIN_S
    while True:
        try:
            item, got = copy_log(client, ref, cursor, write)
            found = True
            if has_ended(client, ref, item):
                copy_log(client, ref, cursor, write)  # what it wrote while stopping
                return
        except ClientError as err:
            if found and err.error_code == NOT_FOUND:
                return  # deleted while we followed
            raise
        delay = POLL_MIN_S if got else min(delay * 2, POLL_MAX_S)
        (sleep or time.sleep)(delay)


def write_stdout(text: str) -> None:
    if text:
        sys.stdout.write(text)
        sys.stdout.flush()


# --- commands ---------------------------------------------------------------------------------


@app.command("create")
def create(
    words: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="IMAGE [-- ARGS]",
            help="The image (NAME:TAG, or `host` for a host command), then its arguments.",
            show_default=False,
        ),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            "--image", "-i", metavar="NAME:TAG", help="The image to run.", show_default=False
        ),
    ] = None,
    name: NameOption = None,
    ports: PortsOption = None,
    service: ServiceOption = None,
    domains: DomainsOption = None,
    subdomains: SubdomainsOption = None,
    soft_limit: SoftLimitOption = None,
    hard_limit: HardLimitOption = None,
    env: EnvOption = None,
    memory: MemoryOption = None,
    replicas: ReplicasOption = None,
    restart: RestartOption = None,
    scale_to_zero: ScaleToZeroOption = None,
    scale_to_zero_cooldown: CooldownOption = None,
    scale_to_zero_stateful: StatefulOption = False,
    start: Annotated[
        bool, typer.Option("--start", "-S", help="Start it and wait until it runs.")
    ] = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    output: OutputOption = None,
) -> None:
    """Create an instance of an image (alias: new); with --start, start it too."""
    options = LaunchOptions(
        name=name,
        ports=ports or (),
        service=service,
        domains=domains or (),
        subdomains=subdomains or (),
        soft_limit=soft_limit,
        hard_limit=hard_limit,
        env=env or (),
        memory_mb=memory,
        replicas=replicas,
        restart=restart,
        scale_to_zero=scale_to_zero,
        scale_to_zero_cooldown_ms=scale_to_zero_cooldown,
        scale_to_zero_stateful=scale_to_zero_stateful,
        start=start,
        timeout_s=timeout,
    )
    with reporting_errors():
        request = instance_request(*image_and_args(image, words or ()), options)
        with connect() as client:
            with progress(launch_message(request)):
                instances = launch(client, request)
            report_launched(client, instances, request, output)


@app.command("list")
def list_instances(output: OutputFormat = output_option(OutputFormat.TABLE)) -> None:
    """List your instances (alias: ls)."""
    with reporting_errors(), connect() as client:
        instances = client.list_instances()
    show_instances(instances, output, now=datetime.now(UTC))


@app.command("get")
def get(
    identifier: Annotated[str, typer.Argument(metavar="NAME|UUID", help="The instance to show.")],
    output: OutputFormat = output_option(OutputFormat.LIST),
) -> None:
    """Show one instance."""
    with reporting_errors(), connect() as client:
        instance = client.get_instance(identifier_ref(identifier))
    show_instances([instance], output, now=datetime.now(UTC))


IdentifiersArgument = Annotated[
    list[str] | None,
    typer.Argument(metavar="NAME|UUID...", help="The instances.", show_default=False),
]
AllOption = Annotated[bool, typer.Option("--all", "-a", help="Every instance.")]
WaitOption = Annotated[bool, typer.Option("--wait", "-w", help="Wait for the new state.")]
WaitTimeoutOption = Annotated[
    int, typer.Option("--timeout", metavar="SECONDS", help="How long --wait waits.")
]


def chosen_refs(
    client: Client, identifiers: Sequence[str], every: bool, keep: Callable[[Item], bool]
) -> list[Ref]:
    """The named instances, or with --all every one `keep` selects (never both)."""
    if every == bool(identifiers):
        raise BadArgument("name the instances, or pass --all (not both)")
    if every:
        return [ref_of(i) for i in client.list_instances() if keep(i)]
    return refs_of(identifiers)


def report_items(
    call: Callable[[], list[Item]], show: Callable[[Iterable[Item]], None]
) -> list[Item]:
    """Show what a bulk call did; if some items failed, the others are still shown first."""
    try:
        items = call()
    except ClientError as err:
        show(i for i in err.items if i.get("status") != "error")
        raise
    show(items)
    return items


def print_states(items: Iterable[Item]) -> None:
    for item in items:
        print(state_line(item))


def print_nothing(_items: Iterable[Item]) -> None:
    """For a call whose outcome a later wait reports."""


def wait_for(client: Client, items: Sequence[Item], state: str, timeout_s: int) -> None:
    refs = [ref_of(item) for item in items]
    if refs:
        report_items(lambda: client.wait_instances(refs, state, timeout_s), print_states)


@app.command("start")
def start(
    identifiers: IdentifiersArgument = None,
    every: AllOption = False,
    wait: WaitOption = False,
    timeout: WaitTimeoutOption = DEFAULT_TIMEOUT_S,
) -> None:
    """Start stopped instances."""
    with reporting_errors(), connect() as client:
        refs = chosen_refs(client, identifiers or [], every, lambda i: i.get("state") == STOPPED)
        if not refs:
            return
        show = print_nothing if wait else print_states
        started = report_items(lambda: client.start_instances(refs), show)
        if wait:
            wait_for(client, started, RUNNING, timeout)


@app.command("stop")
def stop(
    identifiers: IdentifiersArgument = None,
    every: AllOption = False,
    wait: WaitOption = False,
    timeout: WaitTimeoutOption = DEFAULT_TIMEOUT_S,
    drain_timeout: Annotated[
        int | None,
        typer.Option(
            "--drain-timeout",
            "-d",
            metavar="MS",
            help="Let connections finish for up to MS ms (-1: the platform maximum).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Stop at once.")] = False,
) -> None:
    """Stop instances (with --wait, until they are stopped)."""
    with reporting_errors():
        check_stop_flags(force, drain_timeout)
        with connect() as client:
            refs = chosen_refs(
                client, identifiers or [], every, lambda i: i.get("state") not in ENDED
            )
            if not refs:
                return
            requests = [stop_request(r, force=force, drain_timeout_ms=drain_timeout) for r in refs]
            show = print_nothing if wait else print_states
            stopped = report_items(lambda: client.stop_instances(requests), show)
            if wait:
                wait_for(client, stopped, STOPPED, timeout)


@app.command("remove")
def remove(identifiers: IdentifiersArgument = None, every: AllOption = False) -> None:
    """Remove instances, stopping them first (aliases: delete, rm)."""
    with reporting_errors(), connect() as client:
        refs = chosen_refs(client, identifiers or [], every, lambda _i: True)
        if refs:
            report_items(lambda: client.delete_instances(refs), print_removed)


def print_removed(items: Iterable[Item]) -> None:
    for item in items:
        print(f"removed {item.get('name') or item.get('uuid')}")


@app.command("logs")
def logs(
    identifier: Annotated[str, typer.Argument(metavar="NAME|UUID", help="The instance.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until it stops.")
    ] = False,
    tail: Annotated[
        int | None,
        typer.Option("--tail", metavar="N", help="Only the last N lines.", show_default=False),
    ] = None,
) -> None:
    """Print an instance's console output (stdout and stderr)."""
    with reporting_errors():
        if tail is not None and tail < 0:
            raise BadArgument(f"--tail must not be negative (got {tail})")
        ref = identifier_ref(identifier)
        cursor = LogCursor()
        with connect() as client:
            if tail is not None:
                write_stdout(read_tail(client, ref, tail, cursor))
            try:
                if follow:
                    follow_log(client, ref, cursor, write_stdout, found=tail is not None)
                elif tail is None:
                    copy_log(client, ref, cursor, write_stdout)
            except KeyboardInterrupt:
                return  # Ctrl-C is how a follow ends: not an error
            write_stdout(cursor.decoder.decode(b"", final=True))


# kraft's aliases, left out of --help to keep it short.
app.command("new", hidden=True)(create)
app.command("ls", hidden=True)(list_instances)
for _alias in ("delete", "del", "rm"):
    app.command(_alias, hidden=True)(remove)
