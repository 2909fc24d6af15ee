"""`portway`: the daemon (`up`), operator verbs (`user`), and the kraft-style resource verbs."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from .. import __version__
from .deploy import DeployCommand, deploy
from .image import app as image_app
from .instance import app as instance_app
from .service import app as service_app

app = typer.Typer(
    name="portway",
    help="Portway: a self-hosted services platform that speaks the Unikraft Cloud API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(service_app, name="service", help="Manage service groups (kraft cloud service).")
app.add_typer(instance_app, name="instance", help="Manage instances (kraft cloud instance).")
app.add_typer(image_app, name="image", help="Build and manage images (a Portway extension).")
app.command("deploy", cls=DeployCommand)(deploy)
user_app = typer.Typer(help="Manage users and API tokens (edits users.json in the data directory).")
app.add_typer(user_app, name="user")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"portway {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Portway: a self-hosted services platform that speaks the Unikraft Cloud API."""


@app.command()
def up(
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Where state lives [env PORTWAY_DATA_DIR; default: user data dir]"
    ),
    host: str | None = typer.Option(
        None, "--host", help="API address [env PORTWAY_API_HOST; 127.0.0.1]"
    ),
    port: int | None = typer.Option(
        None, "--port", "-p", help="API port, 0 for any free one [env PORTWAY_API_PORT; 7420]"
    ),
    domain: str | None = typer.Option(
        None,
        "--domain",
        help="Platform domain for generated FQDNs [env PORTWAY_DOMAIN; portway.localhost]",
    ),
    gateway_host: str | None = typer.Option(
        None,
        "--gateway-host",
        help="Address the gateway's public ports listen on [env PORTWAY_GATEWAY_HOST; 127.0.0.1]",
    ),
    port_offset: int | None = typer.Option(
        None,
        "--port-offset",
        help="Public port P listens on P+N [env PORTWAY_PORT_OFFSET; 0 as root, else 8000]",
    ),
    wake_timeout: float | None = typer.Option(
        None,
        "--wake-timeout",
        help="Seconds a request waits for an instance to wake from standby before a 503 "
        "[env PORTWAY_WAKE_TIMEOUT_S; 30]",
    ),
) -> None:
    """Run the Portway daemon in the foreground until Ctrl-C or SIGTERM."""
    from .. import config
    from ..app import Ready, SetupError, run

    try:
        settings = config.load(
            data_dir, host, port, domain, gateway_host, port_offset, wake_timeout
        )
    except ValueError as err:
        _fail(str(err))

    def ready(info: Ready) -> None:
        token = _read_token(info.token_file)
        lines = [
            f"Portway {__version__} is up.",
            f"  API:        {info.api_url}",
            f"  gateway:    {info.gateway}",
            f"  hot path:   {info.hot_path}",
            f"  CA:         {info.ca_file} (trust it for https; `portway ca` prints it)",
            f"  data:       {info.data_dir}",
            f"  token file: {info.token_file}",
            "",
            "Point the official SDK and the CLI at it:",
            f"  export UKC_METRO={info.api_url}",
            f"  export UKC_TOKEN={token or '<a token from users.json>'}",
        ]
        print("\n".join(lines), flush=True)

    try:
        run(settings, ready)
    except (SetupError, OSError) as err:
        _fail(f"cannot start: {err}")


def _read_token(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _fail(message: str) -> None:
    print(f"portway: {message}", file=sys.stderr)
    raise typer.Exit(1)


@app.command()
def ca(
    data_dir: Path | None = typer.Option(None, "--data-dir", help="[env PORTWAY_DATA_DIR]"),
    path: bool = typer.Option(False, "--path", help="Print only the file's path."),
) -> None:
    """Print the local CA certificate (PEM) that signs the gateway's certificates.

    Trust it to use https without warnings, e.g. `curl --cacert "$(portway ca --path)" ...`."""
    from .. import config
    from ..app import SetupError, ca_certificate

    try:
        file, pem = ca_certificate(config.load(data_dir))
    except SetupError as err:
        _fail(str(err))
    print(file if path else pem, end="\n" if path else "")


@user_app.command("add")
def user_add(
    name: str = typer.Argument(..., help="The user's name (a DNS label)"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="[env PORTWAY_DATA_DIR]"),
) -> None:
    """Add a user, or a new token to an existing one, and print the token (shown only once)."""
    from .. import config
    from ..app import SetupError, add_user

    try:
        token = add_user(config.load(data_dir), name)
    except SetupError as err:
        _fail(str(err))
    print(token)


def main() -> None:
    app()
