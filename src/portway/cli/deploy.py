"""`portway deploy`: from a directory or a host command to a running instance in one step,
with `kraft cloud deploy`'s flags and its summary (ukc-api.md §7).

    portway deploy -p 443:8080 .                       build `.` into an image, run it
    portway deploy -p 443:8080 app -- python3 alt.py   the same, with other arguments
    portway deploy -p 443:8000 -- python3 -m http.server   a bare host command (image `host`)

Telling `DIR` from a command needs to know where `--` was, which Click does not keep: the
command class `DeployCommand` sets aside what follows `--` before Click parses the rest, so
`deploy` must be registered with it:

    app.command("deploy", cls=DeployCommand)(deploy)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from ..client import Client, Item
from .image import DEFAULT_TAG, HOST_IMAGE, build_image, image_name_for, pinned_ref
from .instance import (
    DEFAULT_TIMEOUT_S,
    CooldownOption,
    DomainsOption,
    EnvOption,
    HardLimitOption,
    LaunchOptions,
    MemoryOption,
    NameOption,
    OutputOption,
    PortsOption,
    ReplicasOption,
    RestartOption,
    ScaleToZeroOption,
    ServiceOption,
    SoftLimitOption,
    StatefulOption,
    SubdomainsOption,
    TimeoutOption,
    instance_request,
    launch,
    launch_message,
    progress,
    report_launched,
)
from .service import BadArgument, connect, reporting_errors

COMMAND_KEY = "portway.deploy.command"  # where DeployCommand leaves the words after `--`


class DeployCommand(TyperCommand):
    """`deploy`'s command class: what follows the first `--` goes to `ctx.meta[COMMAND_KEY]`
    (None when there is no `--`), the rest to Click as usual."""

    # `ctx` is typer's vendored click Context, which has no public name to annotate with.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        before, command = split_command(args)
        ctx.meta[COMMAND_KEY] = command
        return super().parse_args(ctx, before)


def split_command(args: list[str]) -> tuple[list[str], list[str] | None]:
    if "--" not in args:
        return list(args), None
    cut = args.index("--")
    return args[:cut], args[cut + 1 :]


def command_of(ctx: typer.Context) -> list[str] | None:
    if COMMAND_KEY not in ctx.meta:
        # A registration mistake, not a user's: say how to fix it rather than guess.
        raise RuntimeError("register deploy with app.command('deploy', cls=DeployCommand)")
    command: list[str] | None = ctx.meta[COMMAND_KEY]
    return command


def deploy_source(
    directory: Path | None, command: list[str] | None
) -> tuple[Path | None, list[str]]:
    """(the directory to build, or None for the host image; the args). A directory and a
    command together mean: build it, and run it with these arguments instead of its own."""
    if command is not None and not command:
        raise BadArgument("name the command after --, e.g. -- python3 -m http.server")
    if command is not None and directory is None:
        return None, command
    return directory or Path("."), command or []


def deploy(
    ctx: typer.Context,
    directory: Annotated[
        Path | None,
        typer.Argument(
            metavar="DIR",
            help="The directory to build and run (default: the current one). Or, after --, a "
            "command to run on the host; after a DIR, arguments replacing the image's command.",
            show_default=False,
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
    no_start: Annotated[
        bool, typer.Option("--no-start", "-S", help="Create it, but do not start it.")
    ] = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    output: OutputOption = None,
) -> None:
    """Build a directory into an image and run it, or run a host command given after --."""
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
        start=not no_start,
        timeout_s=timeout,
    )
    with reporting_errors():
        source, args = deploy_source(directory, command_of(ctx))
        image_name = image_name_for(source) if source is not None else HOST_IMAGE
        image = f"{image_name}:{DEFAULT_TAG}" if source is not None else HOST_IMAGE
        # Every flag is checked before anything is uploaded.
        request = instance_request(image, args, options)
        with connect() as client:
            instances, image_args = build_and_launch(client, source, image_name, request)
            report_launched(client, instances, request, output, image_args=image_args)


def build_and_launch(
    client: Client, source: Path | None, image_name: str, request: dict[str, Any]
) -> tuple[list[Item], list[str]]:
    """Build `source` (if any) and point the request at the result, then create; a spinner on
    a terminal meanwhile. Returns the instances and the built image's command."""
    image_args: list[str] = []
    first_step = f"Building {image_name}:{DEFAULT_TAG}" if source else launch_message(request)
    with progress(first_step) as update:
        if source is not None:
            built = build_image(client, source, image_name, DEFAULT_TAG)
            request["image"] = pinned_ref(built, image_name, DEFAULT_TAG)
            image_args = [str(a) for a in built.get("args") or []]
            update(launch_message(request))
        return launch(client, request), image_args
