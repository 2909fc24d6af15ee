"""`portway image build|list|remove`: Portway's images, a directory snapshot and its start
command (semantics.md "Images"; a Portway extension, not part of the Unikraft Cloud API).

`build` packs the directory with `client.tarball.pack` (its `portway.toml` is the manifest; the
`--command`/`--port`/`--env` flags replace it) and uploads it to `POST /v1/images`.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from ..client import Client, ClientError, Item, Ref
from ..client.tarball import PackError, pack
from .instance import EnvOption, output_option, parse_env
from .output import OutputFormat, show_images
from .service import BadArgument, connect, reporting_errors

DEFAULT_TAG = "latest"
HOST_IMAGE = "host"  # the daemon's built-in image for bare host commands: not a name to build
PORT_MIN, PORT_MAX = 1, 65535
# Instance names are `<image name>-<5 characters>` and must stay DNS labels (63 at most).
NAME_MAX = 57
_NOT_NAME = re.compile(r"[^a-z0-9]+")

app = typer.Typer(
    no_args_is_help=True,
    help="Build and manage images: a directory snapshot and its start command.",
)


# --- pure: arguments -> request ---------------------------------------------------------------


def image_name_for(directory: Path) -> str:
    """`~/src/My App` -> `my-app`. Only letters, digits and single dashes: the daemon also
    allows `._/` in image names, but the instance names made from them must be DNS labels."""
    name = _NOT_NAME.sub("-", directory.resolve().name.lower()).strip("-")
    name = name[:NAME_MAX].rstrip("-") or "app"
    # A directory called `host` must not collide with the built-in image.
    return f"{name}-app" if name == HOST_IMAGE else name


def parse_image(text: str) -> tuple[str, str]:
    """`app` -> (app, latest), `app:v2` -> (app, v2); the daemon checks the characters."""
    name, colon, tag = text.partition(":")
    if not name or (colon and not tag):
        raise BadArgument(f"image {text!r}: use NAME or NAME:TAG")
    return name, tag or DEFAULT_TAG


def image_manifest(
    command: str | None, port: int | None, env: Mapping[str, str]
) -> dict[str, Any] | None:
    """The `portway.toml` the flags describe, None when no flag is given (the directory's own
    manifest is used then). `--command` is split as a shell would, without running one."""
    manifest: dict[str, Any] = {}
    if command is not None:
        try:
            words = shlex.split(command)
        except ValueError as err:
            raise BadArgument(f"--command {command!r}: {err}") from None
        if not words:
            raise BadArgument("--command needs a command, e.g. --command 'python3 server.py'")
        manifest["command"] = words
    if port is not None:
        if not PORT_MIN <= port <= PORT_MAX:
            raise BadArgument(f"--port {port} is out of range {PORT_MIN}-{PORT_MAX}")
        manifest["port"] = port
    if env:
        manifest["env"] = dict(env)
    return manifest or None


def pack_directory(directory: Path, manifest: Mapping[str, Any] | None = None) -> bytes:
    try:
        return pack(directory, extra_manifest=manifest)
    except PackError as err:
        raise BadArgument(str(err)) from None


def build_image(
    client: Client,
    directory: Path,
    name: str,
    tag: str,
    manifest: Mapping[str, Any] | None = None,
) -> Item:
    """Pack and upload; the daemon answers with the image, `ref` pinned to its digest."""
    return client.build_image(name, tag, pack_directory(directory, manifest))


def pinned_ref(image: Item, name: str, tag: str) -> str:
    """What to run: the digest just built (`app:latest@sha256:...`), so a build of the same
    name meanwhile cannot swap the image under the deploy."""
    ref = image.get("ref")
    return ref if isinstance(ref, str) and ref else f"{name}:{tag}"


# --- commands ---------------------------------------------------------------------------------


@app.command("build")
def build(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="The directory to snapshot.")
    ] = Path("."),
    tag: Annotated[
        str | None,
        typer.Option(
            "--tag",
            "-t",
            metavar="NAME[:TAG]",
            help="Name the image (default: the directory's name, tag latest).",
            show_default=False,
        ),
    ] = None,
    command: Annotated[
        str | None,
        typer.Option(
            "--command",
            metavar="'CMD ARGS'",
            help="The start command (replaces the directory's portway.toml).",
            show_default=False,
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", help="The port the app listens on.", show_default=False),
    ] = None,
    env: EnvOption = None,
    output: OutputFormat = output_option(OutputFormat.LIST),
) -> None:
    """Build an image from a directory and show it."""
    with reporting_errors():
        name, image_tag = (
            parse_image(tag) if tag is not None else (image_name_for(directory), DEFAULT_TAG)
        )
        manifest = image_manifest(command, port, parse_env(env or ()))
        with connect() as client:
            image = build_image(client, directory, name, image_tag, manifest)
    show_images([image], output, now=datetime.now(UTC))


@app.command("list")
def list_images(output: OutputFormat = output_option(OutputFormat.TABLE)) -> None:
    """List your images (alias: ls)."""
    with reporting_errors(), connect() as client:
        images = client.list_images()
    show_images(images, output, now=datetime.now(UTC))


@app.command("remove")
def remove(
    images: Annotated[
        list[str], typer.Argument(metavar="NAME[:TAG]...", help="The images to remove.")
    ],
) -> None:
    """Remove image names; instances keep running from their copy (aliases: delete, rm)."""
    with reporting_errors():
        refs: list[Ref] = [{"name": "{}:{}".format(*parse_image(text))} for text in images]
        with connect() as client:
            report_removed(client, refs)


def report_removed(client: Client, refs: Sequence[Ref]) -> None:
    """One line per removed image, as asked for (items answer refs in order); if some failed,
    the others are still reported first."""
    try:
        items = client.delete_images(refs)
    except ClientError as err:
        _print_removed(refs, err.items)
        raise
    _print_removed(refs, items)


def _print_removed(refs: Sequence[Ref], items: Iterable[Item]) -> None:
    for ref, item in zip(refs, items, strict=False):
        if item.get("status") != "error":
            print(f"removed {ref['name']}")


app.command("ls", hidden=True)(list_images)
for _alias in ("delete", "del", "rm"):
    app.command(_alias, hidden=True)(remove)
