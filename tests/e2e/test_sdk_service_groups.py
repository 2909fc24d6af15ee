"""The official `unikraft-cloud` SDK (0.3.0) against a real `portway up`: service groups.

Everything here goes through the SDK's idiomatic layer, exactly as a user's script would, so a
response the SDK cannot parse, a pagination cursor it cannot follow or an error it classifies
differently fails here. The SDK is async; each test drives it with `asyncio.run`, bounded.
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from unikraft_cloud import (
    REMOVE,
    AlreadyExistsError,
    NotFoundError,
    PatchItem,
    UnikraftCloud,
    UnikraftCloudError,
    or_absent,
)

from tests.daemon import Daemon

# A warning the API sends back (deprecations, adjusted requests) is a failure here.
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("error::unikraft_cloud.UnikraftCloudWarning"),
]

T = TypeVar("T")
RUN_TIMEOUT_S = 60.0

# A group with every create field set: all three kinds of TCP publishing, a platform subdomain,
# an FQDN given with its trailing dot, both limits and an autokill.
SERVICES = [
    {"port": 443, "destination_port": 8080, "handlers": ["tls", "http"]},
    {"port": 80, "destination_port": 443, "handlers": ["http", "redirect"]},
    {"port": 8443, "destination_port": 9000, "handlers": ["tls"]},
]
SERVICES_READ = [
    {"port": 443, "destination_port": 8080, "protocol": "tcp", "handlers": ["tls", "http"]},
    {"port": 80, "destination_port": 443, "protocol": "tcp", "handlers": ["http", "redirect"]},
    {"port": 8443, "destination_port": 9000, "protocol": "tcp", "handlers": ["tls"]},
]


def run(
    factory: Callable[[UnikraftCloud], Coroutine[Any, Any, T]],
    daemon: Daemon,
    token: str | None = None,
) -> T:
    """Run one SDK session against the daemon, bounded in time."""

    async def session() -> T:
        async with UnikraftCloud(
            base_url=daemon.url, token=token or daemon.token, trust_env=False
        ) as ukc:
            return await factory(ukc)

    async def bounded() -> T:
        return await asyncio.wait_for(session(), timeout=RUN_TIMEOUT_S)

    return asyncio.run(bounded())


def unique(prefix: str) -> str:
    return f"{prefix}-{uuidlib.uuid4().hex[:10]}"


def services_of(group: Any) -> list[dict[str, Any]]:
    return [s.model_dump(exclude_none=True) for s in group.services or []]


def fqdns_of(group: Any) -> list[str]:
    return [d.fqdn for d in group.domains or []]


async def raises(work: Awaitable[Any], kind: type[BaseException]) -> Any:
    """Await `work` and return the exception of class `kind` it raised (fail otherwise)."""
    try:
        result = await work
    except kind as err:
        return err
    raise AssertionError(f"expected {kind.__name__}, got a result: {result!r}")


# --- create and read ------------------------------------------------------------------------


def test_create_then_read_by_name_and_by_uuid(shared_daemon: Daemon) -> None:
    name = unique("sdk-web")
    fqdn = f"{unique('www')}.example.com"
    label = unique("app")

    async def scenario(ukc: UnikraftCloud) -> None:
        created = await ukc.services.create(
            name=name,
            services=SERVICES,
            domains=[{"name": label}, {"name": f"{fqdn}."}],
            soft_limit=5,
            hard_limit=10,
            autokill={"time_ms": 300_000},
        )
        # The create's handle re-reads the group: every field is the full read's.
        assert created.name == name
        assert uuidlib.UUID(created.uuid or "").version == 4
        assert created.status == "success"
        assert created.persistent is True
        assert created.autoscale is False
        assert (created.soft_limit, created.hard_limit) == (5, 10)
        assert created.autokill is not None and created.autokill.time_ms == 300_000
        assert services_of(created) == SERVICES_READ
        got_fqdns = fqdns_of(created)
        assert len(got_fqdns) == 2
        assert got_fqdns[0].startswith(f"{label}.") and not got_fqdns[0].endswith(".")
        assert len(got_fqdns[0]) > len(label) + 1
        assert got_fqdns[1] == fqdn, "an FQDN given with a trailing dot reads back without it"
        assert created.instances == []
        assert isinstance(created.created_at, datetime)
        assert created.created_at.tzinfo is not None

        by_name = await ukc.services.get(name=name)
        by_uuid = await ukc.services.get(uuid=created.uuid)
        refreshed = await ukc.services.get(name=name).refresh()
        assert by_name.model_dump() == created.model_dump()
        assert by_uuid.model_dump() == created.model_dump()
        assert refreshed.model_dump() == created.model_dump()

        # `each()` finds exactly the one match in the one metro.
        matches = await ukc.services.each(name=name).refresh()
        assert [m.uuid for m in matches] == [created.uuid]

    run(scenario, shared_daemon)


def test_create_with_defaults_fills_in_name_domain_limits(shared_daemon: Daemon) -> None:
    async def scenario(ukc: UnikraftCloud) -> None:
        anonymous = await ukc.services.create(services=[{"port": 443, "destination_port": 8080}])
        assert anonymous.name and anonymous.uuid
        assert (anonymous.soft_limit, anonymous.hard_limit) == (1, 65535)
        assert anonymous.autokill is not None and anonymous.autokill.time_ms == 0
        assert services_of(anonymous) == [
            {"port": 443, "destination_port": 8080, "protocol": "tcp", "handlers": ["tls", "http"]}
        ]
        # No domains asked for: the generated FQDN is the random name under the platform domain.
        [fqdn] = fqdns_of(anonymous)
        assert fqdn.startswith(f"{anonymous.name}.")

        named = await ukc.services.create(
            name=unique("sdk-named"), services=[{"port": 10000, "handlers": ["tls"]}]
        )
        [named_fqdn] = fqdns_of(named)
        # A chosen name gets a random suffix, so it cannot squat another user's hostname.
        assert named_fqdn.startswith(f"{named.name}-")
        assert services_of(named) == [
            {"port": 10000, "destination_port": 10000, "protocol": "tcp", "handlers": ["tls"]}
        ]

    run(scenario, shared_daemon)


# --- list and pagination --------------------------------------------------------------------


def test_list_pages_through_more_than_100_groups_exactly_once(daemon: Daemon) -> None:
    total = 130
    pages: list[tuple[dict[str, list[str]], int]] = []

    async def record(response: httpx.Response) -> None:
        """Note each list page: the query the SDK sent, and how many items came back."""
        request = response.request
        if request.method == "GET" and request.url.path.endswith("/v1/services"):
            query = parse_qs(urlsplit(str(request.url)).query)
            if "count" in query:
                await response.aread()
                pages.append((query, len(response.json()["data"]["service_groups"])))

    async def scenario(ukc: UnikraftCloud) -> dict[str, list[str]]:
        limit = asyncio.Semaphore(16)

        async def create(i: int) -> str:
            async with limit:
                group = await ukc.services.create(
                    name=f"page-{i:03d}", services=[{"port": 443, "destination_port": 8080}]
                )
                assert group.uuid is not None
                return group.uuid

        created = await asyncio.gather(*(create(i) for i in range(total)))
        pages.clear()
        default = [g.uuid for g in await ukc.services.list()]
        streamed = [g.uuid async for g in ukc.services.list(page_size=7)]
        detailed = await ukc.services.list(details=True)
        assert all(g.soft_limit == 1 and g.services for g in detailed)
        return {
            "created": list(created),
            "default": [u for u in default if u],
            "streamed": [u for u in streamed if u],
            "detailed": [g.uuid for g in detailed if g.uuid],
        }

    async def session() -> dict[str, list[str]]:
        async with (
            httpx.AsyncClient(
                event_hooks={"response": [record]}, timeout=30, trust_env=False
            ) as http,
            UnikraftCloud(base_url=daemon.url, token=daemon.token, http=http) as ukc,
        ):
            return await scenario(ukc)

    result = asyncio.run(asyncio.wait_for(session(), timeout=RUN_TIMEOUT_S))
    created = result["created"]
    assert len(set(created)) == total
    for key in ("default", "streamed", "detailed"):
        seen = Counter(result[key])
        duplicated = [u for u, n in seen.items() if n > 1]
        assert not duplicated, f"{key}: listed more than once: {duplicated}"
        assert set(seen) == set(created), f"{key}: missing {set(created) - set(seen)}"
        assert len(result[key]) == total
        # A stable order, whatever the page size.
        assert result[key] == result["default"], key

    # The SDK really paged: count=100 first, then count=101 from an inclusive cursor.
    sizes = [(q.get("count"), q.get("from"), n) for q, n in pages]
    assert sizes[0] == (["100"], None, 100)
    assert sizes[1] == (["101"], [result["default"][99]], 31), (
        "the cursor's own item comes first, then the remaining 30"
    )
    small = [(q["count"], n) for q, n in pages if q["count"] in (["7"], ["8"])]
    assert small[0] == (["7"], 7)
    assert len(small) == total // 7 + 1 and all(n <= 8 for _, n in small)


def test_list_is_in_creation_order_and_survives_a_deleted_cursor(daemon: Daemon) -> None:
    async def scenario(ukc: UnikraftCloud) -> None:
        made = []
        for i in range(5):
            group = await ukc.services.create(
                name=f"ordered-{i}", services=[{"port": 443, "destination_port": 8080}]
            )
            made.append((group.uuid, group.name))
        listed = [(g.uuid, g.name) async for g in ukc.services.list(page_size=2)]
        assert listed == made

        # The cursor item vanishes mid-listing: the daemon answers an empty page for the
        # unknown cursor, and the SDK resumes from an earlier one without losing its place.
        seen = []
        async for g in ukc.services.list(page_size=2):
            seen.append(g.name)
            if g.name == "ordered-1":  # the last item of the first page: the next cursor
                await ukc.services.get(name="ordered-1").delete()
        assert seen == [name for _, name in made]
        remaining = [(g.uuid, g.name) for g in await ukc.services.list(page_size=2)]
        assert remaining == [m for m in made if m[1] != "ordered-1"]

    run(scenario, daemon)


# --- update -----------------------------------------------------------------------------------


def test_update_limits_and_edit_services_and_domains(shared_daemon: Daemon) -> None:
    name = unique("sdk-edit")
    first = f"{unique('one')}.example.net"
    second = f"{unique('two')}.example.net"
    sub = unique("sdk-sub")

    async def scenario(ukc: UnikraftCloud) -> None:
        group = await ukc.services.create(
            name=name,
            services=[{"port": 443, "destination_port": 8080}],
            domains=[{"name": f"{first}."}],
        )
        handle = ukc.services.get(uuid=group.uuid)

        async def read() -> Any:
            return await ukc.services.get(name=name)

        # Limits via update(): each keyword is a `set`.
        updated = await ukc.services.get(name=name).update(soft_limit=3, hard_limit=7)
        assert (updated.status, updated.uuid, updated.name) == ("success", group.uuid, name)
        now = await read()
        assert (now.soft_limit, now.hard_limit) == (3, 7)

        # Both in one request, in an order that is only valid as a whole (10 > old hard 7).
        await ukc.services.get(name=name).update(soft_limit=10, hard_limit=20)
        now = await read()
        assert (now.soft_limit, now.hard_limit) == (10, 20)

        await handle.update(autokill={"time_ms": 60_000})
        now = await read()
        assert now.autokill.time_ms == 60_000
        await ukc.services.get(name=name).update(autokill=REMOVE)
        now = await read()
        assert now.autokill.time_ms == 0

        # Services: set replaces ...
        await ukc.services.get(name=name).edit().set(services=SERVICES).apply()
        now = await read()
        assert services_of(now) == SERVICES_READ
        # ... add merges ...
        await (
            ukc.services.get(name=name)
            .edit()
            .add(services=[{"port": 9443, "destination_port": 9443, "handlers": ["tls"]}])
            .apply()
        )
        now = await read()
        assert services_of(now) == [
            *SERVICES_READ,
            {"port": 9443, "destination_port": 9443, "protocol": "tcp", "handlers": ["tls"]},
        ]
        # ... del removes members, named by port (as read back).
        await (
            ukc.services.get(name=name)
            .edit()
            .delete(services=[{"port": 8443}, {"port": 9443, "protocol": "tcp"}])
            .apply()
        )
        now = await read()
        assert services_of(now) == SERVICES_READ[:2]

        # Domains: add an FQDN and a platform subdomain ...
        await (
            ukc.services.get(name=name)
            .edit()
            .add(domains=[{"name": f"{second}."}, {"name": sub}])
            .apply()
        )
        now = await read()
        fqdns = fqdns_of(now)
        assert fqdns[:2] == [first, second] and len(fqdns) == 3
        assert fqdns[2].startswith(f"{sub}.")
        # ... del by name (with its trailing dot, as create took it) ...
        await ukc.services.get(name=name).edit().delete(domains=[{"name": f"{first}."}]).apply()
        now = await read()
        assert fqdns_of(now) == fqdns[1:]
        # ... set replaces them all; the released domain is free again.
        await ukc.services.get(name=name).edit().set(domains=[{"name": f"{first}."}]).apply()
        now = await read()
        assert fqdns_of(now) == [first]

        # Several operations, one request, applied in order.
        await (
            ukc.services.get(name=name)
            .edit()
            .set(hard_limit=50)
            .add(services=[{"port": 7000, "handlers": ["tls"]}])
            .delete(services=[{"port": 80}])
            .add(domains=[{"name": f"{second}."}])
            .apply()
        )
        now = await read()
        assert now.hard_limit == 50 and now.soft_limit == 10
        assert [s["port"] for s in services_of(now)] == [443, 7000]
        assert fqdns_of(now) == [first, second]

        # The raw triples, as the API models them.
        reply = await ukc.services.get(name=name).patch(
            [PatchItem(prop="soft_limit", op="set", value=2)]
        )
        assert reply.uuid == group.uuid
        assert (await read()).soft_limit == 2

        # Nothing else moved along the way.
        final = await read()
        assert final.uuid == group.uuid and final.created_at == group.created_at
        assert final.persistent is True

    run(scenario, shared_daemon)


def test_update_soft_above_hard_is_http_400_and_changes_nothing(shared_daemon: Daemon) -> None:
    name = unique("sdk-bad-update")

    async def scenario(ukc: UnikraftCloud) -> None:
        await ukc.services.create(
            name=name,
            services=[{"port": 443, "destination_port": 8080}],
            soft_limit=2,
            hard_limit=4,
        )
        before = (await ukc.services.get(name=name)).model_dump()
        err = await raises(ukc.services.get(name=name).update(soft_limit=9), UnikraftCloudError)
        assert type(err) is UnikraftCloudError
        assert (err.kind, err.status) == ("http", 400)
        assert "soft_limit" in str(err)
        err = await raises(
            ukc.services.get(name=name).edit().set(hard_limit=1).apply(), UnikraftCloudError
        )
        assert (type(err), err.kind, err.status) == (UnikraftCloudError, "http", 400)
        assert (await ukc.services.get(name=name)).model_dump() == before

    run(scenario, shared_daemon)


# --- errors -----------------------------------------------------------------------------------


def test_create_soft_above_hard_is_http_400(shared_daemon: Daemon) -> None:
    name = unique("sdk-bad-limits")

    async def scenario(ukc: UnikraftCloud) -> None:
        err = await raises(
            ukc.services.create(
                name=name,
                services=[{"port": 443, "destination_port": 8080}],
                soft_limit=10,
                hard_limit=5,
            ),
            UnikraftCloudError,
        )
        # A plain HTTP error (not a not-found, conflict, auth or server error), status 400.
        assert type(err) is UnikraftCloudError
        assert (err.kind, err.status) == ("http", 400)
        assert "soft_limit" in str(err)
        assert isinstance(err.body, dict) and err.body.get("status") == "error"
        # Nothing was created.
        missing = await raises(ukc.services.get(name=name), NotFoundError)
        assert missing.absent is True

    run(scenario, shared_daemon)


def test_duplicate_name_is_already_exists(shared_daemon: Daemon) -> None:
    name = unique("sdk-dup")

    async def scenario(ukc: UnikraftCloud) -> None:
        original = await ukc.services.create(
            name=name, services=[{"port": 443, "destination_port": 8080}]
        )
        err = await raises(
            ukc.services.create(name=name, services=[{"port": 8443, "handlers": ["tls"]}]),
            AlreadyExistsError,
        )
        assert err.status == 409
        assert err.errors and [e.code for e in err.errors] == [23]
        # The original is untouched, and still the only one of that name.
        again = await ukc.services.get(name=name)
        assert again.model_dump() == original.model_dump()
        assert [g.uuid for g in await ukc.services.list() if g.name == name] == [original.uuid]

    run(scenario, shared_daemon)


def test_not_found_is_absent(shared_daemon: Daemon) -> None:
    missing_name = unique("sdk-never")
    missing_uuid = str(uuidlib.uuid4())

    async def scenario(ukc: UnikraftCloud) -> None:
        for work in (
            ukc.services.get(name=missing_name),
            ukc.services.get(uuid=missing_uuid),
            ukc.services.get(name=missing_name).refresh(),
            ukc.services.get(name=missing_name).update(soft_limit=2),
            ukc.services.get(uuid=missing_uuid).edit().add(domains=[{"name": "x"}]).apply(),
            ukc.services.get(name=missing_name).delete(),
            ukc.services.delete([missing_name]),
            ukc.services.delete({"uuid": missing_uuid}),
        ):
            err = await raises(work, NotFoundError)
            assert err.absent is True, f"{err!r} should say the group is absent"
            assert err.status == 404
            assert err.errors and {e.code for e in err.errors} == {8}
            assert "No service group with" in str(err)
        # `each()` searches the metro (a filtered read) and finds nothing: absent too.
        err = await raises(ukc.services.each(name=missing_name).refresh(), NotFoundError)
        assert err.absent is True

    run(scenario, shared_daemon)


# --- delete -----------------------------------------------------------------------------------


def test_delete_then_missing_ok(shared_daemon: Daemon) -> None:
    names = [unique("sdk-del") for _ in range(4)]
    fqdn = f"{unique('gone')}.example.org"

    async def scenario(ukc: UnikraftCloud) -> None:
        groups = [
            await ukc.services.create(
                name=n,
                services=[{"port": 443, "destination_port": 8080}],
                domains=[{"name": f"{fqdn}."}] if i == 0 else None,
            )
            for i, n in enumerate(names)
        ]
        deleted = await ukc.services.get(name=names[0]).delete()
        assert (deleted.status, deleted.uuid, deleted.name) == ("success", groups[0].uuid, names[0])
        gone = await raises(ukc.services.get(uuid=groups[0].uuid), NotFoundError)
        assert gone.absent is True

        # The SDK spells `missing_ok` for service groups as `or_absent(...)`: an absent group
        # resolves to None, any other failure still raises.
        assert await or_absent(ukc.services.get(name=names[0]).delete()) is None
        assert await or_absent(ukc.services.get(uuid=groups[0].uuid).delete()) is None
        assert await or_absent(ukc.services.delete([names[0]])) is None

        # The released domain can be used again at once.
        reuse = await ukc.services.create(
            name=unique("sdk-reuse"),
            services=[{"port": 443, "destination_port": 8080}],
            domains=[{"name": f"{fqdn}."}],
        )
        assert fqdns_of(reuse) == [fqdn]

        # Bulk: by name and by uuid in one call.
        bulk = await ukc.services.delete([names[1], {"uuid": groups[2].uuid}])
        assert sorted(str(d.uuid) for d in bulk) == sorted(
            [str(groups[1].uuid), str(groups[2].uuid)]
        )
        assert all(d.status == "success" for d in bulk)

        # A bulk delete with one missing ref raises, and reports what it did delete.
        err = await raises(ukc.services.delete([names[3], names[1]]), NotFoundError)
        assert [r.uuid for r in err.results] == [groups[3].uuid]
        assert err.absent is True
        remaining = {g.name for g in await ukc.services.list()}
        assert not remaining & set(names)

    run(scenario, shared_daemon)


def test_other_token_sees_nothing_through_the_sdk(daemon: Daemon) -> None:
    bob = daemon.add_user("bob")
    name = unique("sdk-alice")

    async def as_admin(ukc: UnikraftCloud) -> str:
        group = await ukc.services.create(
            name=name, services=[{"port": 443, "destination_port": 8080}]
        )
        assert group.uuid is not None
        return group.uuid

    uuid = run(as_admin, daemon)

    async def as_bob(ukc: UnikraftCloud) -> None:
        assert await ukc.services.list() == []
        for work in (ukc.services.get(name=name), ukc.services.get(uuid=uuid)):
            err = await raises(work, NotFoundError)
            assert err.absent is True
        assert await or_absent(ukc.services.get(uuid=uuid).delete()) is None

    run(as_bob, daemon, token=bob)

    async def still_there(ukc: UnikraftCloud) -> None:
        assert (await ukc.services.get(uuid=uuid)).name == name

    run(still_there, daemon)
