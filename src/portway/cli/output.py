"""How the CLI shows service groups, instances and images: `-o table`, `-o list` and `-o json`,
as `kraft cloud` does (ukc-api.md §7), and the deploy result as kraft's "fancy map". Rendering
is pure: items and the current time in, text or a Rich table out; only the `show_*` functions
write.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# When stdout is a pipe, Rich would wrap a table at 80 columns and break every line a script
# greps; a wide virtual screen keeps one group per line (the table is only as wide as it needs).
PIPE_WIDTH = 4096
HTTP_PORT, HTTPS_PORT = 80, 443


class OutputFormat(StrEnum):
    TABLE = "table"
    LIST = "list"
    JSON = "json"


# (heading, field) in the order kraft prints them; `table` leaves out the ones marked False.
GROUP_FIELDS: tuple[tuple[str, bool], ...] = (
    ("uuid", False),
    ("name", True),
    ("fqdn", True),
    ("services", True),
    ("instances", True),
    ("created at", True),
    ("persistent", True),
    ("soft limit", False),
    ("hard limit", False),
)

_UNITS = (
    ("year", 365 * 86400),
    ("month", 30 * 86400),
    ("week", 7 * 86400),
    ("day", 86400),
    ("hour", 3600),
    ("minute", 60),
    ("second", 1),
)


def humanize_since(timestamp: str, now: datetime) -> str:
    """`2026-05-28T13:53:40Z` seen at 14:08 -> `14 minutes ago`. Unparseable text is shown
    as it is: a display must not fail over a field it only decorates."""
    try:
        then = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)  # RFC 3339 from the API is UTC
    seconds = int((now - then).total_seconds())
    if seconds == 0:
        return "now"
    # A clock a little behind the daemon's must not print nonsense like "-3 seconds ago".
    suffix = "ago" if seconds > 0 else "from now"
    seconds = abs(seconds)
    for unit, size in _UNITS:
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'} {suffix}"
    raise AssertionError("unreachable: seconds >= 1")


def describe_service(service: Mapping[str, Any]) -> str:
    """The kraft notation `443:8080/tls+http`, handlers in the order the server reports."""
    text = f"{service.get('port', '?')}:{service.get('destination_port', '?')}"
    handlers = service.get("handlers") or []
    if handlers:
        text += "/" + "+".join(str(h) for h in handlers)
    if service.get("protocol") == "udp":
        text += "/udp"
    return text


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def group_fields(group: Mapping[str, Any], now: datetime | None = None) -> dict[str, str]:
    """One group as display strings, keyed by heading. `created at` is humanized when `now`
    is given (tables) and raw RFC 3339 otherwise (lists, which scripts read)."""
    created = _text(group.get("created_at"))
    return {
        "uuid": _text(group.get("uuid")),
        "name": _text(group.get("name")),
        "fqdn": ",".join(_text(d.get("fqdn")) for d in group.get("domains") or []),
        "services": " ".join(describe_service(s) for s in group.get("services") or []),
        "instances": " ".join(
            _text(i.get("name") or i.get("uuid")) for i in group.get("instances") or []
        ),
        "created at": humanize_since(created, now) if now is not None and created else created,
        "persistent": _text(group.get("persistent")),
        "soft limit": _text(group.get("soft_limit")),
        "hard limit": _text(group.get("hard_limit")),
    }


def render_list(groups: Sequence[Mapping[str, Any]]) -> str:
    """`key: value` lines, a blank line between groups."""
    blocks = []
    for group in groups:
        fields = group_fields(group)
        blocks.append("\n".join(f"{heading}: {fields[heading]}" for heading, _ in GROUP_FIELDS))
    return "\n\n".join(blocks)


def render_table(groups: Sequence[Mapping[str, Any]], now: datetime) -> Table:
    """Borderless columns under upper-case headings, like kraft's table."""
    headings = [heading for heading, in_table in GROUP_FIELDS if in_table]
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for heading in headings:
        table.add_column(heading.upper(), no_wrap=True)
    for group in groups:
        fields = group_fields(group, now)
        # Text, not str: Rich would read `[...]` in a value as markup.
        table.add_row(*(Text(fields[heading]) for heading in headings))
    return table


def table_text(table: Table) -> str:
    """A table as plain lines without the padding after the last column, for pipes and greps."""
    console = Console(width=PIPE_WIDTH, color_system=None)
    with console.capture() as capture:
        console.print(table)
    return "\n".join(line.rstrip() for line in capture.get().splitlines())


def render_json(groups: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(list(groups), indent=2)


def show_groups(
    groups: Sequence[Mapping[str, Any]],
    fmt: OutputFormat,
    *,
    now: datetime | None = None,
    console: Console | None = None,
) -> None:
    out = console or stdout_console()
    if fmt is OutputFormat.TABLE:
        table = render_table(groups, now or datetime.now(UTC))
        if out.is_terminal:
            out.print(table)
        else:
            out.print(table_text(table), markup=False, highlight=False, soft_wrap=True)
    elif fmt is OutputFormat.JSON:
        out.print(render_json(groups), markup=False, highlight=False, soft_wrap=True)
    elif groups:
        out.print(render_list(groups), markup=False, highlight=False, soft_wrap=True)


def stdout_console() -> Console:
    """A console on the current stdout (created per call, so tests' captured stdout works)."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=PIPE_WIDTH)
    return console


# --- instances and images ---------------------------------------------------------------------
#
# The same three formats, through generic helpers: each resource only says which fields it has
# (`*_FIELDS`) and how one item reads as display strings (`*_fields`).

FieldsOf = Callable[[Mapping[str, Any], datetime | None], dict[str, str]]

# (heading, in table), in kraft's order for `instance list`.
INSTANCE_FIELDS: tuple[tuple[str, bool], ...] = (
    ("uuid", False),
    ("name", True),
    ("fqdn", True),
    ("state", True),
    ("created at", True),
    ("image", True),
    ("memory", True),
    ("vcpus", False),
    ("args", True),
    ("boot time", True),
    ("private fqdn", False),
    ("private ip", False),
    ("service", False),
    ("restart", False),
    ("started at", False),
    ("stop reason", False),
)

IMAGE_FIELDS: tuple[tuple[str, bool], ...] = (
    ("name", True),
    ("digest", True),
    ("size", True),
    ("args", True),
    ("port", True),
    ("created at", True),
    ("ref", False),
    ("env", False),
)

# stop_reason bits (ukc-api.md §3.5): kernel exited, app exited, platform, user, forced, zero.
STOP_KERNEL, STOP_APP, STOP_PLATFORM, STOP_USER, STOP_FORCED, STOP_SCALED = (1, 2, 4, 8, 16, 32)
SHORT_DIGEST = len("sha256:") + 12
OK_MARK, FAIL_MARK = "[●]", "[✗]"


def format_memory(memory_mb: Any) -> str:
    return f"{memory_mb} MiB" if isinstance(memory_mb, int) else ""


def format_boot_time(boot_time_us: Any) -> str:
    """20180 µs -> `20.18 ms`, as kraft prints it."""
    if not isinstance(boot_time_us, int | float) or isinstance(boot_time_us, bool):
        return ""
    return f"{boot_time_us / 1000:.2f} ms"


def format_size(size: Any) -> str:
    if not isinstance(size, int) or isinstance(size, bool):
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable: the loop returns at GiB")


def format_args(args: Any) -> str:
    """Quoted only where a shell would need it: `python3 -c 'print(1)'`. A line break inside
    an argument (a `-c` script) is shown as `\\n`: every format here is one value per line."""
    if not isinstance(args, list):
        return ""
    return shlex.join(str(a) for a in args).replace("\r", "\\r").replace("\n", "\\n")


def describe_stop_reason(reason: Any, exit_code: Any = None) -> str:
    """The stop_reason bitmask in words, most telling cause first, with the raw number."""
    if not isinstance(reason, int) or isinstance(reason, bool):
        return ""
    forced = ", forced" if reason & STOP_FORCED else ""
    if reason & STOP_SCALED:
        text = "scaled to zero"
    elif reason & STOP_USER:
        text = f"stopped by the user{forced}"
    elif reason & STOP_PLATFORM:
        text = f"stopped by the platform{forced}"
    elif reason & STOP_APP:
        code = f" with code {exit_code}" if isinstance(exit_code, int) else ""
        text = f"the app exited{code}"
    elif reason & STOP_KERNEL:
        text = "the instance crashed"
    else:
        text = "unknown"
    return f"{text} ({reason})"


def _group_of(instance: Mapping[str, Any]) -> Mapping[str, Any]:
    group = instance.get("service_group")
    return group if isinstance(group, Mapping) else {}


def _fqdns(group: Mapping[str, Any]) -> list[str]:
    return [_text(d.get("fqdn")) for d in group.get("domains") or [] if isinstance(d, Mapping)]


def _since(timestamp: Any, now: datetime | None) -> str:
    text = _text(timestamp)
    return humanize_since(text, now) if now is not None and text else text


def instance_fields(instance: Mapping[str, Any], now: datetime | None = None) -> dict[str, str]:
    """One instance as display strings; times humanized when `now` is given (tables)."""
    group = _group_of(instance)
    return {
        "uuid": _text(instance.get("uuid")),
        "name": _text(instance.get("name")),
        "fqdn": ",".join(_fqdns(group)),
        "state": _text(instance.get("state")),
        "created at": _since(instance.get("created_at"), now),
        "image": _text(instance.get("image")),
        "memory": format_memory(instance.get("memory_mb")),
        "vcpus": _text(instance.get("vcpus")),
        "args": format_args(instance.get("args")),
        "boot time": format_boot_time(instance.get("boot_time_us")),
        "private fqdn": _text(instance.get("private_fqdn")),
        "private ip": _text(instance.get("private_ip")),
        "service": _text(group.get("name")),
        "restart": _text(instance.get("restart_policy")),
        "started at": _since(instance.get("started_at"), now),
        "stop reason": describe_stop_reason(instance.get("stop_reason"), instance.get("exit_code")),
    }


def image_fields(image: Mapping[str, Any], now: datetime | None = None) -> dict[str, str]:
    """One image as display strings; in tables (`now` given) the digest is shortened."""
    digest = _text(image.get("digest"))
    env = image.get("env")
    return {
        "name": f"{_text(image.get('name'))}:{_text(image.get('tag'))}",
        "digest": digest[:SHORT_DIGEST] if now is not None else digest,
        "size": format_size(image.get("size_in_bytes")),
        "args": format_args(image.get("args")),
        "port": _text(image.get("port")),
        "created at": _since(image.get("created_at"), now),
        "ref": _text(image.get("ref")),
        "env": " ".join(f"{k}={v}" for k, v in env.items()) if isinstance(env, Mapping) else "",
    }


def render_items_list(
    items: Sequence[Mapping[str, Any]],
    spec: Sequence[tuple[str, bool]],
    fields_of: FieldsOf,
) -> str:
    """`key: value` lines, a blank line between items; times raw, as scripts read them."""
    blocks = []
    for item in items:
        fields = fields_of(item, None)
        blocks.append("\n".join(f"{heading}: {fields[heading]}" for heading, _ in spec))
    return "\n\n".join(blocks)


def render_items_table(
    items: Sequence[Mapping[str, Any]],
    spec: Sequence[tuple[str, bool]],
    fields_of: FieldsOf,
    now: datetime,
) -> Table:
    headings = [heading for heading, in_table in spec if in_table]
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for heading in headings:
        table.add_column(heading.upper(), no_wrap=True)
    for item in items:
        fields = fields_of(item, now)
        table.add_row(*(Text(fields[heading]) for heading in headings))
    return table


def show_items(
    items: Sequence[Mapping[str, Any]],
    fmt: OutputFormat,
    spec: Sequence[tuple[str, bool]],
    fields_of: FieldsOf,
    *,
    now: datetime | None = None,
    console: Console | None = None,
) -> None:
    out = console or stdout_console()
    if fmt is OutputFormat.TABLE:
        table = render_items_table(items, spec, fields_of, now or datetime.now(UTC))
        if out.is_terminal:
            out.print(table)
        else:
            out.print(table_text(table), markup=False, highlight=False, soft_wrap=True)
    elif fmt is OutputFormat.JSON:
        out.print(render_json(items), markup=False, highlight=False, soft_wrap=True)
    elif items:
        text = render_items_list(items, spec, fields_of)
        out.print(text, markup=False, highlight=False, soft_wrap=True)


def show_instances(
    instances: Sequence[Mapping[str, Any]], fmt: OutputFormat, *, now: datetime | None = None
) -> None:
    show_items(instances, fmt, INSTANCE_FIELDS, instance_fields, now=now)


def show_images(
    images: Sequence[Mapping[str, Any]], fmt: OutputFormat, *, now: datetime | None = None
) -> None:
    show_items(images, fmt, IMAGE_FIELDS, image_fields, now=now)


# --- the deploy result: kraft's "fancy map" ---------------------------------------------------


def fancy_map(headline: str, entries: Sequence[tuple[str, str]]) -> str:
    """A headline, then one branch per entry with the keys right-aligned on a rule:

    [●] Deployed successfully!
     │
     ├────────── name: app-8ujeu
     └────────── args: python3 server.py
    """
    width = max((len(key) for key, _ in entries), default=0)
    lines = [headline, " │"]
    for index, (key, value) in enumerate(entries):
        branch = "└" if index == len(entries) - 1 else "├"
        lines.append(f" {branch}{'─' * (width - len(key) + 2)} {key}: {value}".rstrip())
    return "\n".join(lines)


def address_entry(
    instance: Mapping[str, Any], group: Mapping[str, Any] | None, port_offset: int = 0
) -> tuple[str, str] | None:
    """`url: https://<first domain>` when the group publishes 443 (`http://` for port 80
    alone), else `domain: <fqdn>`. `group` is the group as `GET /v1/services` reads it (an
    instance read has no ports). Under a port offset the URL names the port the gateway
    really listens on (443 + offset)."""
    fqdns = _fqdns(group if group is not None else _group_of(instance))
    if not fqdns or not fqdns[0]:
        return None
    ports = {s.get("port") for s in (group or {}).get("services") or [] if isinstance(s, Mapping)}
    for port, scheme in ((HTTPS_PORT, "https"), (HTTP_PORT, "http")):
        if port in ports:
            shown = f":{port + port_offset}" if port_offset else ""
            return ("url", f"{scheme}://{fqdns[0]}{shown}")
    return ("domain", fqdns[0])


def deployed_entries(
    instance: Mapping[str, Any], group: Mapping[str, Any] | None = None, port_offset: int = 0
) -> list[tuple[str, str]]:
    """The fancy map's entries in kraft's order, leaving out those without a value."""
    fields = instance_fields(instance)
    address = address_entry(instance, group, port_offset)
    keys_before = ("name", "uuid", "state", "stop reason")
    keys_after = ("image", "boot time", "memory", "service", "private fqdn", "private ip", "args")
    entries = [(key, fields[key]) for key in keys_before]
    if address is not None:
        entries.append(address)
    entries += [(key, fields[key]) for key in keys_after]
    return [(key, value) for key, value in entries if value]


def render_deployed(
    instance: Mapping[str, Any],
    group: Mapping[str, Any] | None = None,
    *,
    started: bool = True,
    port_offset: int = 0,
) -> str:
    headline = "Deployed successfully!" if started else "Created successfully!"
    entries = deployed_entries(instance, group, port_offset)
    return fancy_map(f"{OK_MARK} {headline}", entries)


def render_failed(instance: Mapping[str, Any], log_lines: Sequence[str] = ()) -> str:
    """Why an instance that should run does not: its state, stop reason and last log lines."""
    fields = instance_fields(instance)
    keys = ("name", "uuid", "state", "stop reason", "image", "args")
    entries = [(key, fields[key]) for key in keys if fields[key]]
    text = fancy_map(f"{FAIL_MARK} Deployment failed", entries)
    if log_lines:
        shown = "\n".join(f"   {line}" for line in log_lines)
        text += f"\n\n last {len(log_lines)} log lines:\n{shown}"
    return text


def show_map(text: str, console: Console | None = None) -> None:
    """A fancy map, its mark coloured on a terminal (green for success, red for failure)."""
    out = console or stdout_console()
    rendered = Text(text)
    style = "bold red" if text.startswith(FAIL_MARK) else "bold green"
    rendered.stylize(style, 0, len(OK_MARK))
    out.print(rendered, highlight=False, soft_wrap=True)


def stderr_console() -> Console:
    """`stdout_console`'s twin for reports that are not results (a failed deploy)."""
    console = Console(stderr=True)
    if not console.is_terminal:
        console = Console(stderr=True, width=PIPE_WIDTH)
    return console
