"""The SQLite store: one file in the data directory, WAL, synchronous=FULL.

Why FULL: control-plane writes are rare and must survive a crash of the machine as well as of
the process once acknowledged; WAL with NORMAL may lose the last commits on power loss.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ..model.errors import ErrorCode, ItemError
from ..model.service_group import (
    Domain,
    GroupConfig,
    InstanceRef,
    Service,
    ServiceGroup,
)

# Each entry moves the schema one version forward; never edit one that has shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE service_groups (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL,
        persistent INTEGER NOT NULL,
        soft_limit INTEGER NOT NULL,
        hard_limit INTEGER NOT NULL,
        autokill_time_ms INTEGER NOT NULL DEFAULT 0,
        services TEXT NOT NULL,
        empty_since REAL,
        UNIQUE (user_id, name)
    );
    CREATE TABLE domains (
        fqdn TEXT PRIMARY KEY,
        group_uuid TEXT NOT NULL REFERENCES service_groups(uuid) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        certificate TEXT
    );
    CREATE INDEX domains_by_group ON domains(group_uuid);
    CREATE TABLE instances (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        name TEXT NOT NULL,
        group_uuid TEXT REFERENCES service_groups(uuid),
        created_at TEXT NOT NULL,
        UNIQUE (user_id, name)
    );
    CREATE INDEX instances_by_group ON instances(group_uuid);
    """,
)

_GROUP_COLUMNS = (
    "seq, uuid, user_id, name, created_at, persistent, soft_limit, hard_limit, "
    "autokill_time_ms, services, empty_since"
)


def connect(path: Path) -> sqlite3.Connection:
    """Open the database with the pragmas every connection needs."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _services_json(services: Iterable[Service]) -> str:
    return json.dumps(
        [
            {
                "port": s.port,
                "destination_port": s.destination_port,
                "protocol": s.protocol,
                "handlers": list(s.handlers),
                "ip": s.ip,
            }
            for s in services
        ]
    )


def _services_from_json(text: str) -> tuple[Service, ...]:
    return tuple(
        Service(
            port=s["port"],
            destination_port=s["destination_port"],
            protocol=s["protocol"],
            handlers=tuple(s["handlers"]),
            ip=s["ip"],
        )
        for s in json.loads(text)
    )


class SQLiteStore:
    """The default Store. Used from one thread at a time (see store/base.py)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = connect(path)
        self._migrate()

    def close(self) -> None:
        self._db.close()

    def ping(self) -> None:
        self._db.execute("SELECT 1").fetchone()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript commits; the version bump is in the same script so a crash mid-way
            # re-runs nothing half-applied (each migration is one transaction).
            self._db.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")

    # --- writes -------------------------------------------------------------------------

    def create_group(self, group: ServiceGroup) -> None:
        c = group.config
        try:
            with self._transaction():
                self._db.execute(
                    f"INSERT INTO service_groups ({_GROUP_COLUMNS}) "
                    "VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        group.uuid,
                        group.user,
                        group.name,
                        group.created_at.isoformat(),
                        int(group.persistent),
                        c.soft_limit,
                        c.hard_limit,
                        c.autokill_time_ms,
                        _services_json(c.services),
                        group.empty_since,
                    ),
                )
                self._insert_domains(group.uuid, c.domains)
        except sqlite3.IntegrityError as err:
            raise self._taken(err, group.name) from None

    def update_group(self, user: str, uuid: str, config: GroupConfig) -> None:
        try:
            with self._transaction():
                self._db.execute(
                    "UPDATE service_groups SET soft_limit=?, hard_limit=?, autokill_time_ms=?, "
                    "services=? WHERE uuid=? AND user_id=?",
                    (
                        config.soft_limit,
                        config.hard_limit,
                        config.autokill_time_ms,
                        _services_json(config.services),
                        uuid,
                        user,
                    ),
                )
                self._db.execute("DELETE FROM domains WHERE group_uuid=?", (uuid,))
                self._insert_domains(uuid, config.domains)
        except sqlite3.IntegrityError as err:
            raise self._taken(err, "") from None

    def delete_group(self, user: str, uuid: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM service_groups WHERE uuid=? AND user_id=?", (uuid, user))

    def _insert_domains(self, uuid: str, domains: Sequence[Domain]) -> None:
        self._db.executemany(
            "INSERT INTO domains (fqdn, group_uuid, position, certificate) VALUES (?, ?, ?, ?)",
            [(d.fqdn, uuid, i, d.certificate) for i, d in enumerate(domains)],
        )

    def _taken(self, err: sqlite3.IntegrityError, name: str) -> ItemError:
        text = str(err)
        if "domains.fqdn" in text:
            return ItemError(ErrorCode.ALREADY_EXISTS, "a domain of this group is already in use")
        if "service_groups.user_id" in text:
            return ItemError(ErrorCode.ALREADY_EXISTS, f"Service group '{name}' already exists")
        raise err

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    # --- reads --------------------------------------------------------------------------

    def groups_by_uuid(self, user: str, uuids: Sequence[str]) -> dict[str, ServiceGroup]:
        groups = self._select_groups("uuid", user, uuids)
        return {g.uuid: g for g in groups}

    def groups_by_name(self, user: str, names: Sequence[str]) -> dict[str, ServiceGroup]:
        groups = self._select_groups("name", user, names)
        return {g.name: g for g in groups}

    def list_groups(
        self, user: str, count: int | None, start: str | None, descending: bool
    ) -> list[ServiceGroup]:
        where, params = "user_id=?", list[str | int]([user])
        if start is not None:
            row = self._db.execute(
                "SELECT seq FROM service_groups WHERE uuid=? AND user_id=?", (start, user)
            ).fetchone()
            if row is None:
                return []
            where += " AND seq <= ?" if descending else " AND seq >= ?"
            params.append(row[0])
        order = "DESC" if descending else "ASC"
        sql = f"SELECT {_GROUP_COLUMNS} FROM service_groups WHERE {where} ORDER BY seq {order}"
        if count is not None:
            sql += " LIMIT ?"
            params.append(count)
        return self._hydrate(self._db.execute(sql, params).fetchall())

    def domain_owners(self, fqdns: Sequence[str]) -> dict[str, str]:
        if not fqdns:
            return {}
        marks = ",".join("?" * len(fqdns))
        rows = self._db.execute(
            f"SELECT fqdn, group_uuid FROM domains WHERE fqdn IN ({marks})", list(fqdns)
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def autokill_due(self, now: float) -> list[tuple[str, str]]:
        rows = self._db.execute(
            "SELECT user_id, uuid FROM service_groups WHERE autokill_time_ms > 0 "
            "AND empty_since IS NOT NULL AND empty_since + autokill_time_ms / 1000.0 <= ?",
            (now,),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def next_autokill_at(self) -> float | None:
        row = self._db.execute(
            "SELECT MIN(empty_since + autokill_time_ms / 1000.0) FROM service_groups "
            "WHERE autokill_time_ms > 0 AND empty_since IS NOT NULL"
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def _select_groups(self, column: str, user: str, keys: Sequence[str]) -> list[ServiceGroup]:
        if not keys:
            return []
        marks = ",".join("?" * len(keys))
        rows = self._db.execute(
            f"SELECT {_GROUP_COLUMNS} FROM service_groups "
            f"WHERE user_id=? AND {column} IN ({marks})",
            [user, *keys],
        ).fetchall()
        return self._hydrate(rows)

    def _hydrate(self, rows: list[Any]) -> list[ServiceGroup]:
        """Turn rows into groups, loading domains and instances with one query each."""
        if not rows:
            return []
        uuids = [r[1] for r in rows]
        marks = ",".join("?" * len(uuids))
        domains: dict[str, list[Domain]] = {u: [] for u in uuids}
        for group_uuid, fqdn, certificate in self._db.execute(
            f"SELECT group_uuid, fqdn, certificate FROM domains WHERE group_uuid IN ({marks}) "
            "ORDER BY group_uuid, position",
            uuids,
        ):
            domains[group_uuid].append(Domain(fqdn, certificate))
        instances: dict[str, list[InstanceRef]] = {u: [] for u in uuids}
        for group_uuid, uuid, name in self._db.execute(
            f"SELECT group_uuid, uuid, name FROM instances WHERE group_uuid IN ({marks}) "
            "ORDER BY seq",
            uuids,
        ):
            instances[group_uuid].append(InstanceRef(uuid, name))
        return [
            ServiceGroup(
                uuid=r[1],
                user=r[2],
                name=r[3],
                created_at=datetime.fromisoformat(r[4]),
                persistent=bool(r[5]),
                config=GroupConfig(
                    services=_services_from_json(r[9]),
                    domains=tuple(domains[r[1]]),
                    soft_limit=r[6],
                    hard_limit=r[7],
                    autokill_time_ms=r[8],
                ),
                instances=tuple(instances[r[1]]),
                empty_since=r[10],
            )
            for r in rows
        ]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error. The connection is in autocommit mode
    (isolation_level=None) so that transactions are exactly what this says."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
