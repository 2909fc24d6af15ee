"""Portway: a self-hosted services platform that speaks the Unikraft Cloud Platform API."""

from . import compiled

__version__ = "0.1.0"

# Before anything imports the gateway: a compiled build older than its source must not run.
compiled.select()
