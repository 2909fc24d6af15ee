"""The publisher: Snapshots built from what changed, coalesced, and the last good one kept."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable
from datetime import UTC, datetime

from portway.control.publisher import Publisher
from portway.model.instance import Instance, InstanceConfig, State
from portway.model.service_group import Domain, GroupConfig, Service, ServiceGroup
from portway.model.snapshot import Snapshot


def group(name: str) -> ServiceGroup:
    config = GroupConfig(
        services=(Service(443, 8080, "tcp", ("tls", "http")),),
        domains=(Domain(f"{name}.portway.test"),),
    )
    return ServiceGroup(f"g-{name}", "alice", name, datetime.now(UTC), True, config)


def instance(name: str, group_uuid: str, state: State = State.RUNNING) -> Instance:
    config = InstanceConfig("host", "sha256:0", ("true",), {})
    return Instance(f"i-{name}", "alice", name, 0.0, group_uuid, "127.0.0.9", config, state)


class Store:
    """Groups and instances as the store would return them, counting what was read."""

    def __init__(self) -> None:
        self.groups: dict[str, ServiceGroup] = {}
        self.instances: dict[str, Instance] = {}
        self.reads: list[Collection[str] | None] = []

    async def read(
        self, uuids: Collection[str] | None
    ) -> tuple[Iterable[ServiceGroup], Iterable[Instance]]:
        self.reads.append(None if uuids is None else set(uuids))
        await asyncio.sleep(0)
        chosen = [g for g in self.groups.values() if uuids is None or g.uuid in uuids]
        members = [i for i in self.instances.values() if uuids is None or i.group_uuid in uuids]
        return chosen, members


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.applied: list[Snapshot] = []
        self.fail = fail

    async def apply(self, snapshot: Snapshot) -> None:
        if self.fail:
            raise RuntimeError("listener trouble")
        self.applied.append(snapshot)


def endpoints(snapshot: Snapshot, host: str) -> set[str]:
    route = snapshot.listeners[443].route(host)
    return set() if route is None else {e.name for e in route.endpoints}


def test_only_changed_groups_are_read_again() -> None:
    async def main() -> None:
        store, sink = Store(), Sink()
        publisher = Publisher(store.read, sink)
        for name in ("a", "b"):
            store.groups[f"g-{name}"] = group(name)
            store.instances[f"i-{name}1"] = instance(f"{name}1", f"g-{name}")
        await publisher.publish()
        store.instances["i-b2"] = instance("b2", "g-b")
        store.instances["i-a1"] = instance("a1", "g-a", State.DRAINING)  # not re-read: stale
        await publisher.publish(["g-b"])
        assert store.reads == [None, {"g-b"}]
        last = sink.applied[-1]
        assert endpoints(last, "b.portway.test") == {"b1", "b2"}
        assert endpoints(last, "a.portway.test") == {"a1"}  # kept from the first read
        del store.groups["g-b"]
        await publisher.publish(["g-b"])
        assert sink.applied[-1].listeners[443].route("b.portway.test") is None

    asyncio.run(main())


def test_concurrent_publishes_share_builds() -> None:
    async def main() -> None:
        store, sink = Store(), Sink()
        publisher = Publisher(store.read, sink)
        store.groups["g-a"] = group("a")
        await asyncio.gather(*(publisher.publish(["g-a"]) for _ in range(20)))
        assert len(sink.applied) <= 2
        assert sink.applied[-1].version == 20

    asyncio.run(main())


def test_a_failed_apply_is_logged_and_the_next_publish_reads_everything() -> None:
    async def main() -> None:
        store, sink = Store(), Sink()
        publisher = Publisher(store.read, sink)
        await publisher.publish()  # the first publish reads everything
        store.groups["g-a"] = group("a")
        sink.fail = True
        await publisher.publish(["g-a"])  # does not raise: the change itself is committed
        sink.fail = False
        await publisher.publish(["g-b"])
        assert store.reads == [None, {"g-a"}, None]
        assert endpoints(sink.applied[-1], "a.portway.test") == set()

    asyncio.run(main())
