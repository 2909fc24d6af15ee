"""The Python client the CLI uses to talk to a Portway daemon (or any Unikraft Cloud metro)."""

from .api import (
    Client,
    ClientError,
    Endpoint,
    Item,
    Ref,
    find_endpoint,
    identifier_ref,
    normalize_metro,
)

__all__ = [
    "Client",
    "ClientError",
    "Endpoint",
    "Item",
    "Ref",
    "find_endpoint",
    "identifier_ref",
    "normalize_metro",
]
