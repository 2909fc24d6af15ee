"""Placeholder: replaced by the service verbs."""

import typer

app = typer.Typer()
