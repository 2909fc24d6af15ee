"""How the CLI shows service groups: `-o table`, `-o list` and `-o json`, as `kraft cloud`
does (ukc-api.md §7). Rendering is pure: items and the current time in, text or a Rich table out;
only `show_groups` writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# When stdout is a pipe, Rich would wrap a table at 80 columns and break every line a script
# greps; a wide virtual screen keeps one group per line (the table is only as wide as it needs).
PIPE_WIDTH = 4096


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
