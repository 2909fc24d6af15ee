"""Users and their API tokens, kept in `users.json` in the data directory (seed 000's users.json).

The file is the operator's: it may be edited by hand (to assign public addresses for UDP, say),
and the daemon picks changes up without a restart. Tokens are stored only as SHA-256 digests;
the plain token is shown once, when it is made (and the first admin token is kept in a 0600 file
so that `portway up` on defaults works with nothing else).

    {"users": [{"name": "admin",
                "tokens": [{"sha256": "...", "created_at": "2026-11-21T10:00:00Z"}],
                "addresses": [{"ip": "203.0.113.7", "internal_ip": "10.0.0.7"}]}]}
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..model.names import check_name

USERS_FILE = "users.json"
ADMIN_TOKEN_FILE = "admin.token"
ADMIN = "admin"
TOKEN_PREFIX = "pw_"


@dataclass(frozen=True)
class User:
    name: str
    addresses: frozenset[str] = frozenset()


class UsersFileError(Exception):
    """The users file cannot be read; says which file and why."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(30)


def write_private(path: Path, text: str) -> None:
    """Write a secret file atomically, readable by its owner only (0600 from creation on)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UsersFileError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("users"), list):
        raise UsersFileError(f'{path}: expected {{"users": [...]}}')
    return doc


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def add_user(data_dir: Path, name: str) -> str:
    """Add a user (or a token to an existing one) and return the new plain token."""
    check_name("name", name)
    path = data_dir / USERS_FILE
    doc = _read(path) if path.exists() else {"users": []}
    token = new_token()
    entry = next((u for u in doc["users"] if u.get("name") == name), None)
    if entry is None:
        entry = {"name": name, "tokens": [], "addresses": []}
        doc["users"].append(entry)
    entry.setdefault("tokens", []).append({"sha256": digest(token), "created_at": _now()})
    write_private(path, json.dumps(doc, indent=2) + "\n")
    return token


def ensure_admin(data_dir: Path) -> Path:
    """On first start, create the admin user and keep its token in a 0600 file."""
    token_path = data_dir / ADMIN_TOKEN_FILE
    if not (data_dir / USERS_FILE).exists():
        token = add_user(data_dir, ADMIN)
        write_private(token_path, token + "\n")
    return token_path


class Users:
    """Looks tokens up; re-reads the file when it changes on disk."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._by_digest: dict[str, User] = {}
        self._by_name: dict[str, User] = {}
        self._reload()

    def authenticate(self, token: str) -> User | None:
        self._reload()
        return self._by_digest.get(digest(token))

    def get(self, name: str) -> User | None:
        self._reload()
        return self._by_name.get(name)

    def _reload(self) -> None:
        try:
            st = self._path.stat()
        except FileNotFoundError:
            self._by_digest, self._by_name, self._stamp = {}, {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            doc = _read(self._path)
        except UsersFileError:
            # A half-edited file must not lock everyone out: keep serving the last good one.
            if self._stamp is not None:
                return
            raise
        by_digest: dict[str, User] = {}
        by_name: dict[str, User] = {}
        for entry in doc["users"]:
            addresses = frozenset(a["ip"] for a in entry.get("addresses", []) if "ip" in a)
            user = User(entry["name"], addresses)
            by_name[user.name] = user
            for tok in entry.get("tokens", []):
                by_digest[tok["sha256"]] = user
        self._by_digest, self._by_name, self._stamp = by_digest, by_name, stamp
