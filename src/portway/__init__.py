"""Portway: a self-hosted services platform that speaks the Unikraft Cloud Platform API."""

__version__ = "0.1.0"
