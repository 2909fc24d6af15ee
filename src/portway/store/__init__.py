"""Persistence: one Store protocol, SQLite by default."""
