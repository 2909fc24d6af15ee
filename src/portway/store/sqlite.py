"""The SQLite store: one file in the data directory, WAL, synchronous=FULL.

Why FULL: control-plane writes are rare and must survive a crash of the machine as well as of
the process once acknowledged; WAL with NORMAL may lose the last commits on power loss.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from ..model.errors import ErrorCode, ItemError
from ..model.image import ImageRecord
from ..model.instance import (
    Autokill,
    Instance,
    InstanceConfig,
    RunStatus,
    ScaleToZero,
    State,
)
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
    # Instances carry their private address, state and the rest of their record; images are
    # per-user names for content-addressed files; each user has one private subnet.
    """
    ALTER TABLE instances ADD COLUMN private_ip TEXT NOT NULL DEFAULT '';
    ALTER TABLE instances ADD COLUMN state TEXT NOT NULL DEFAULT 'stopped';
    ALTER TABLE instances ADD COLUMN desired TEXT NOT NULL DEFAULT 'stopped';
    ALTER TABLE instances ADD COLUMN record TEXT NOT NULL DEFAULT '{}';
    CREATE TABLE images (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id TEXT NOT NULL,
        name TEXT NOT NULL,
        tag TEXT NOT NULL,
        digest TEXT NOT NULL,
        manifest TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        created_at REAL NOT NULL,
        UNIQUE (user_id, name, tag)
    );
    CREATE TABLE user_networks (
        user_id TEXT PRIMARY KEY,
        subnet_index INTEGER NOT NULL UNIQUE
    );
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


_INSTANCE_COLUMNS = (
    "uuid, user_id, name, group_uuid, created_at, private_ip, state, desired, record"
)


def _config_json(config: InstanceConfig) -> dict[str, Any]:
    doc = asdict(config)
    doc["env"] = dict(config.env)
    return doc


def _config_from(doc: dict[str, Any]) -> InstanceConfig:
    return InstanceConfig(
        image=doc["image"],
        digest=doc["digest"],
        args=tuple(doc["args"]),
        env=dict(doc["env"]),
        memory_mb=doc["memory_mb"],
        vcpus=doc["vcpus"],
        restart_policy=doc["restart_policy"],
        features=tuple(doc["features"]),
        scale_to_zero=ScaleToZero(**doc["scale_to_zero"]),
        hostname=doc["hostname"],
        autokill=Autokill(**doc["autokill"]),
    )


def _instance_record(instance: Instance) -> str:
    return json.dumps(
        {
            "config": _config_json(instance.config),
            "pending": None if instance.pending is None else _config_json(instance.pending),
            "status": asdict(instance.status),
            "tags": list(instance.tags),
            "delete_lock": instance.delete_lock,
        }
    )


def _instance_from(row: Any) -> Instance:
    record = json.loads(row[8])
    return Instance(
        uuid=row[0],
        user=row[1],
        name=row[2],
        group_uuid=row[3],
        created_at=float(row[4]),
        private_ip=row[5],
        state=State(row[6]),
        desired=row[7],
        config=_config_from(record["config"]),
        pending=None if record["pending"] is None else _config_from(record["pending"]),
        status=RunStatus(**record["status"]),
        tags=tuple(record["tags"]),
        delete_lock=record["delete_lock"],
    )


class _InstanceQueries:
    """Instances, images and private networks: mixed into SQLiteStore."""

    _db: sqlite3.Connection

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def create_instances(self, instances: Sequence[Instance], touched_group: str | None) -> None:
        try:
            with self._transaction():
                self._db.executemany(
                    f"INSERT INTO instances ({_INSTANCE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                    [_instance_row(i) for i in instances],
                )
                if touched_group is not None:
                    self._db.execute(
                        "UPDATE service_groups SET empty_since=NULL WHERE uuid=?", (touched_group,)
                    )
        except sqlite3.IntegrityError as err:
            if "instances.user_id" in str(err):
                name = instances[0].name if len(instances) == 1 else "an instance name"
                raise ItemError(
                    ErrorCode.ALREADY_EXISTS, f"Instance '{name}' already exists"
                ) from None
            raise

    def save_instance(self, instance: Instance) -> None:
        """Write the mutable part of an instance (state, desired state, record)."""
        with self._transaction():
            self._db.execute(
                "UPDATE instances SET state=?, desired=?, record=? WHERE uuid=?",
                (instance.state.value, instance.desired, _instance_record(instance), instance.uuid),
            )

    def delete_instance(self, instance: Instance, now: float) -> bool:
        """Delete the row; a group left empty starts its autokill clock, and an instance-owned
        (non-persistent) group left empty is deleted with it. True if that group was deleted."""
        with self._transaction():
            self._db.execute("DELETE FROM instances WHERE uuid=?", (instance.uuid,))
            group = instance.group_uuid
            if group is None:
                return False
            left = self._db.execute(
                "SELECT COUNT(*) FROM instances WHERE group_uuid=?", (group,)
            ).fetchone()[0]
            if left:
                return False
            row = self._db.execute(
                "SELECT persistent FROM service_groups WHERE uuid=?", (group,)
            ).fetchone()
            if row is not None and not row[0]:
                self._db.execute("DELETE FROM service_groups WHERE uuid=?", (group,))
                return True
            self._db.execute("UPDATE service_groups SET empty_since=? WHERE uuid=?", (now, group))
            return False

    def instances_by_uuid(self, user: str, uuids: Sequence[str]) -> dict[str, Instance]:
        return {i.uuid: i for i in self._select_instances("uuid", user, uuids)}

    def instances_by_name(self, user: str, names: Sequence[str]) -> dict[str, Instance]:
        return {i.name: i for i in self._select_instances("name", user, names)}

    def list_instances(
        self, user: str, count: int | None, start: str | None, descending: bool
    ) -> list[Instance]:
        where, params = "user_id=?", list[str | int]([user])
        if start is not None:
            row = self._db.execute(
                "SELECT seq FROM instances WHERE uuid=? AND user_id=?", (start, user)
            ).fetchone()
            if row is None:
                return []
            where += " AND seq <= ?" if descending else " AND seq >= ?"
            params.append(row[0])
        sql = (
            f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE {where} "
            f"ORDER BY seq {'DESC' if descending else 'ASC'}"
        )
        if count is not None:
            sql += " LIMIT ?"
            params.append(count)
        return [_instance_from(r) for r in self._db.execute(sql, params)]

    def instances_in_groups(self, uuids: Collection[str]) -> list[Instance]:
        if not uuids:
            return []
        marks = ",".join("?" * len(uuids))
        rows = self._db.execute(
            f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE group_uuid IN ({marks}) ORDER BY seq",
            list(uuids),
        )
        return [_instance_from(r) for r in rows]

    def all_instances(self) -> list[Instance]:
        """Every user's instances: what the reconciler compares the host with."""
        rows = self._db.execute(f"SELECT {_INSTANCE_COLUMNS} FROM instances ORDER BY seq")
        return [_instance_from(r) for r in rows]

    def _select_instances(self, column: str, user: str, keys: Sequence[str]) -> list[Instance]:
        if not keys:
            return []
        marks = ",".join("?" * len(keys))
        rows = self._db.execute(
            f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE user_id=? AND {column} IN ({marks})",
            [user, *keys],
        )
        return [_instance_from(r) for r in rows]

    def private_ips(self, user: str) -> set[str]:
        rows = self._db.execute("SELECT private_ip FROM instances WHERE user_id=?", (user,))
        return {r[0] for r in rows}

    def subnet_index(self, user: str) -> int:
        """The user's private subnet number, given out on first need and kept."""
        row = self._db.execute(
            "SELECT subnet_index FROM user_networks WHERE user_id=?", (user,)
        ).fetchone()
        if row is not None:
            return int(row[0])
        with self._transaction():
            index = self._db.execute(
                "SELECT COALESCE(MAX(subnet_index) + 1, 0) FROM user_networks"
            ).fetchone()[0]
            self._db.execute(
                "INSERT INTO user_networks (user_id, subnet_index) VALUES (?, ?)", (user, index)
            )
        return int(index)

    # --- images -------------------------------------------------------------------------

    def put_image(self, image: ImageRecord) -> None:
        """Name (or re-point) `name:tag` for a user at some content."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO images (user_id, name, tag, digest, manifest, size_bytes, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, name, tag) DO UPDATE SET "
                "digest=excluded.digest, manifest=excluded.manifest, "
                "size_bytes=excluded.size_bytes, created_at=excluded.created_at",
                (
                    image.user,
                    image.name,
                    image.tag,
                    image.digest,
                    json.dumps(image.manifest),
                    image.size_bytes,
                    image.created_at,
                ),
            )

    def images(self, user: str) -> list[ImageRecord]:
        rows = self._db.execute(
            "SELECT user_id, name, tag, digest, manifest, size_bytes, created_at FROM images "
            "WHERE user_id=? ORDER BY seq",
            (user,),
        )
        return [_image_from(r) for r in rows]

    def image(self, user: str, name: str, tag: str) -> ImageRecord | None:
        row = self._db.execute(
            "SELECT user_id, name, tag, digest, manifest, size_bytes, created_at FROM images "
            "WHERE user_id=? AND name=? AND tag=?",
            (user, name, tag),
        ).fetchone()
        return None if row is None else _image_from(row)

    def delete_image(self, user: str, name: str, tag: str) -> None:
        with self._transaction():
            self._db.execute(
                "DELETE FROM images WHERE user_id=? AND name=? AND tag=?", (user, name, tag)
            )

    def digest_in_use(self, digest: str) -> bool:
        """Whether any user's image name or instance still refers to this content."""
        named = self._db.execute("SELECT 1 FROM images WHERE digest=? LIMIT 1", (digest,))
        if named.fetchone() is not None:
            return True
        like = f'%"digest": "{digest}"%'
        used = self._db.execute("SELECT 1 FROM instances WHERE record LIKE ? LIMIT 1", (like,))
        return used.fetchone() is not None


def _instance_row(i: Instance) -> tuple[Any, ...]:
    return (
        i.uuid,
        i.user,
        i.name,
        i.group_uuid,
        repr(i.created_at),
        i.private_ip,
        i.state.value,
        i.desired,
        _instance_record(i),
    )


def _image_from(row: Any) -> ImageRecord:
    return ImageRecord(
        user=row[0],
        name=row[1],
        tag=row[2],
        digest=row[3],
        manifest=json.loads(row[4]),
        size_bytes=row[5],
        created_at=row[6],
    )


class SQLiteStore(_InstanceQueries):
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

    def groups_anyone(self, uuids: Collection[str]) -> list[ServiceGroup]:
        if not uuids:
            return []
        marks = ",".join("?" * len(uuids))
        sql = f"SELECT {_GROUP_COLUMNS} FROM service_groups WHERE uuid IN ({marks})"
        return self._hydrate(self._db.execute(sql, list(uuids)).fetchall())

    def all_groups(self) -> list[ServiceGroup]:
        sql = f"SELECT {_GROUP_COLUMNS} FROM service_groups ORDER BY seq"
        return self._hydrate(self._db.execute(sql).fetchall())

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
