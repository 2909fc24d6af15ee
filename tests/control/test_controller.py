"""Service-group use-cases on a real SQLite file: tenancy, atomic PATCH, delete rules, autokill."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from portway.control.controller import Controller, PatchItem
from portway.control.users import User
from portway.model.errors import ErrorCode, Invalid, ItemError
from portway.model.refs import Ref
from portway.model.service_group import GroupSpec, Patch, ServiceGroup, ServiceSpec
from portway.store.sqlite import SQLiteStore

T = TypeVar("T")
ALICE, BOB = User("alice"), User("bob")
WEB = GroupSpec([ServiceSpec(443, 8080)], name="web")


def run(
    tmp_path: Path,
    body: Callable[[Controller], Awaitable[T]],
    clock: Callable[[], float] | None = None,
) -> T:
    async def main() -> T:
        ctl = Controller(
            SQLiteStore(tmp_path / "p.db"),
            platform_domain="apps.test",
            rng=random.Random(1),
            **({"clock": clock} if clock else {}),
        )
        try:
            return await body(ctl)
        finally:
            ctl.close()

    return asyncio.run(main())


def test_names_are_per_user_and_unique_within_one(tmp_path: Path) -> None:
    async def body(ctl: Controller) -> None:
        await ctl.create_group(ALICE, WEB)
        await ctl.create_group(BOB, WEB)
        with pytest.raises(ItemError) as caught:
            await ctl.create_group(ALICE, WEB)
        assert caught.value.code == ErrorCode.ALREADY_EXISTS

    run(tmp_path, body)


def test_another_users_group_is_exactly_like_a_missing_one(tmp_path: Path) -> None:
    async def body(ctl: Controller) -> None:
        group = await ctl.create_group(ALICE, WEB)
        [as_bob] = await ctl.get_groups(BOB, [Ref(uuid=group.uuid)])
        [missing] = await ctl.get_groups(BOB, [Ref(uuid="6f1b2c3d-0000-4000-8000-000000000000")])
        assert isinstance(as_bob, ItemError) and isinstance(missing, ItemError)
        assert as_bob.code == missing.code == ErrorCode.NOT_FOUND
        assert as_bob.message == f"No service group with uuid '{group.uuid}'"
        assert await ctl.list_groups(BOB, None, None, False) == []
        [deleted] = await ctl.delete_groups(BOB, [Ref(name="web")])
        assert isinstance(deleted, ItemError)
        [still] = await ctl.get_groups(ALICE, [Ref(name="web")])
        assert still == group

    run(tmp_path, body)


def test_domains_are_global(tmp_path: Path) -> None:
    async def body(ctl: Controller) -> None:
        from portway.model.service_group import DomainSpec

        spec = GroupSpec([ServiceSpec(443, 8080)], domains=[DomainSpec("shop.example.com.")])
        await ctl.create_group(ALICE, spec)
        with pytest.raises(ItemError, match=r"Domain 'shop\.example\.com' is already in use"):
            await ctl.create_group(BOB, spec)

    run(tmp_path, body)


def test_patch_checks_the_final_config_and_is_all_or_nothing(tmp_path: Path) -> None:
    async def body(ctl: Controller) -> None:
        group = await ctl.create_group(
            ALICE, GroupSpec([ServiceSpec(443, 8080)], name="web", hard_limit=5)
        )
        ref = Ref(name="web")
        # soft 10 alone would break soft <= hard; with hard 20 after it, the result is valid.
        await ctl.patch_groups(
            ALICE,
            [
                PatchItem(ref, Patch("soft_limit", "set", 10)),
                PatchItem(ref, Patch("hard_limit", "set", 20)),
            ],
        )
        [read] = await ctl.get_groups(ALICE, [ref])
        assert isinstance(read, ServiceGroup)
        assert (read.config.soft_limit, read.config.hard_limit) == (10, 20)
        with pytest.raises(Invalid, match="must not exceed"):
            await ctl.patch_groups(
                ALICE,
                [
                    PatchItem(ref, Patch("hard_limit", "set", 30)),
                    PatchItem(ref, Patch("soft_limit", "set", 40)),
                ],
            )
        [after] = await ctl.get_groups(ALICE, [ref])
        assert isinstance(after, ServiceGroup) and after.config == read.config
        assert after.uuid == group.uuid

    run(tmp_path, body)


def test_delete_is_refused_while_instances_are_attached(tmp_path: Path) -> None:
    async def body(ctl: Controller) -> None:
        group = await ctl.create_group(ALICE, WEB)
        db = sqlite3.connect(tmp_path / "p.db")
        db.execute(
            "INSERT INTO instances (uuid, user_id, name, group_uuid, created_at) "
            "VALUES ('i-1', 'alice', 'nginx-abcde', ?, '2026-01-01T00:00:00')",
            (group.uuid,),
        )
        db.commit()
        [refused] = await ctl.delete_groups(ALICE, [Ref(uuid=group.uuid)])
        assert isinstance(refused, ItemError) and refused.code == ErrorCode.ATTACHED
        [read] = await ctl.get_groups(ALICE, [Ref(uuid=group.uuid)])
        assert isinstance(read, ServiceGroup) and [i.name for i in read.instances] == [
            "nginx-abcde"
        ]
        db.execute("DELETE FROM instances")
        db.commit()
        db.close()
        [ok] = await ctl.delete_groups(ALICE, [Ref(uuid=group.uuid)])
        assert isinstance(ok, ServiceGroup)
        [gone] = await ctl.get_groups(ALICE, [Ref(uuid=group.uuid)])
        assert isinstance(gone, ItemError) and gone.code == ErrorCode.NOT_FOUND

    run(tmp_path, body)


def test_pagination_is_stable_and_inclusive(tmp_path: Path) -> None:
    async def body(ctl: Controller) -> None:
        made = [
            await ctl.create_group(ALICE, GroupSpec([ServiceSpec(443, 8080)])) for _ in range(7)
        ]
        await ctl.create_group(BOB, GroupSpec([ServiceSpec(443, 8080)]))
        uuids = [g.uuid for g in made]
        page = await ctl.list_groups(ALICE, 3, None, False)
        assert [g.uuid for g in page] == uuids[:3]
        page = await ctl.list_groups(ALICE, 3, uuids[2], False)
        assert [g.uuid for g in page] == uuids[2:5]
        page = await ctl.list_groups(ALICE, None, uuids[4], True)
        assert [g.uuid for g in page] == uuids[4::-1]
        assert await ctl.list_groups(ALICE, 3, "6f1b2c3d-0000-4000-8000-000000000000", False) == []

    run(tmp_path, body)


def test_autokill_deletes_empty_groups_after_their_time(tmp_path: Path) -> None:
    async def body(ctl: Controller) -> None:
        killer = asyncio.create_task(ctl.run_autokill())
        try:
            doomed = await ctl.create_group(
                ALICE, GroupSpec([ServiceSpec(443, 8080)], autokill_time_ms=300)
            )
            kept = await ctl.create_group(ALICE, GroupSpec([ServiceSpec(443, 8080)]))
            await asyncio.sleep(0.15)
            [early] = await ctl.get_groups(ALICE, [Ref(uuid=doomed.uuid)])
            assert isinstance(early, ServiceGroup), "deleted before its autokill time"
            for _ in range(100):  # bounded: 100 x 20 ms
                [state] = await ctl.get_groups(ALICE, [Ref(uuid=doomed.uuid)])
                if isinstance(state, ItemError):
                    break
                await asyncio.sleep(0.02)
            assert isinstance(state, ItemError), "the autokilled group was not deleted within 2 s"
            [other] = await ctl.get_groups(ALICE, [Ref(uuid=kept.uuid)])
            assert isinstance(other, ServiceGroup)
        finally:
            killer.cancel()

    run(tmp_path, body)
