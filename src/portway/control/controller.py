"""Service-group use-cases: the only way the API changes or reads state.

All store calls run on one dedicated thread, one at a time. That keeps SQLite's fsync off the
event loop (the gateway shares the loop) and makes every use-case atomic with respect to the
others without locks: a name check and the insert after it cannot interleave with another write.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid as uuidlib
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypeVar

from ..model.errors import ErrorCode, ItemError, not_found
from ..model.instance import Instance
from ..model.refs import Ref
from ..model.service_group import (
    Domain,
    GroupSpec,
    Patch,
    ServiceGroup,
    apply_patch,
    check_config,
    new_group,
)
from ..store.base import Store
from .publisher import Publisher, SnapshotSink
from .users import User

T = TypeVar("T")
NOUN = "service group"

#: One result per requested item: the group, or why that item failed.
Outcome = ServiceGroup | ItemError


@dataclass(frozen=True)
class PatchItem:
    ref: Ref
    patch: Patch
    id: str | None = None


@dataclass(frozen=True)
class PatchOutcome:
    ref: Ref
    id: str | None
    result: Outcome


class Controller:
    def __init__(
        self,
        store: Store,
        *,
        platform_domain: str,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        sink: SnapshotSink | None = None,
    ) -> None:
        self._store = store
        self._platform_domain = platform_domain
        self._rng = rng or random.SystemRandom()
        self._clock = clock
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="portway-store")
        self._changed = asyncio.Event()
        self._publisher = Publisher(self._routing_state, sink) if sink is not None else None

    async def _db(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    #: The store thread, shared with the other controllers so every use-case stays atomic.
    in_store = _db

    def changed(self) -> None:
        """Wake the autokill loop: a group may have become empty."""
        self._changed.set()

    async def publish(self, groups: Iterable[str | None] | None = None) -> None:
        """The apply barrier: returns once the data plane serves the store as it is now.
        `groups` names the groups whose routing changed (None: any may have)."""
        if self._publisher is not None:
            await self._publisher.publish(groups)

    async def _routing_state(
        self, groups: Collection[str] | None
    ) -> tuple[list[ServiceGroup], list[Instance]]:
        return await self._db(self._read_routing_state, groups)

    def _read_routing_state(
        self, groups: Collection[str] | None
    ) -> tuple[list[ServiceGroup], list[Instance]]:
        if groups is None:
            return self._store.all_groups(), self._store.all_instances()
        return self._store.groups_anyone(groups), self._store.instances_in_groups(groups)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self._store.close()

    async def healthy(self) -> bool:
        try:
            await asyncio.wait_for(self._db(self._store.ping), timeout=2.0)
        except Exception:
            return False
        return True

    # --- create / read ------------------------------------------------------------------

    async def create_group(self, user: User, spec: GroupSpec) -> ServiceGroup:
        """Raises Invalid (HTTP 400) for a rule breach, ItemError for a taken name or domain."""
        group = new_group(
            spec,
            user=user.name,
            uuid=str(uuidlib.uuid4()),
            now=datetime.fromtimestamp(self._clock(), UTC),
            persistent=True,
            platform_domain=self._platform_domain,
            user_ips=user.addresses,
            rng=self._rng,
        )
        await self._db(self._create, group)
        self._changed.set()
        await self.publish([group.uuid])
        return group

    def _create(self, group: ServiceGroup) -> None:
        self._check_domains(None, group.config.domains)
        self._store.create_group(group)

    async def get_groups(self, user: User, refs: Sequence[Ref]) -> list[Outcome]:
        return await self._db(self._resolve, user.name, refs)

    async def list_groups(
        self, user: User, count: int | None, start: str | None, descending: bool
    ) -> list[ServiceGroup]:
        return await self._db(self._store.list_groups, user.name, count, start, descending)

    def _resolve(self, user: str, refs: Sequence[Ref]) -> list[Outcome]:
        """One outcome per ref; another user's group answers exactly like a missing one."""
        by_uuid = self._store.groups_by_uuid(user, [r.uuid for r in refs if r.uuid is not None])
        by_name = self._store.groups_by_name(user, [r.name for r in refs if r.name is not None])
        outcomes: list[Outcome] = []
        for ref in refs:
            found = by_uuid.get(ref.uuid) if ref.uuid is not None else by_name.get(ref.name or "")
            outcomes.append(found if found is not None else not_found(NOUN, *ref.describe()))
        return outcomes

    # --- update -------------------------------------------------------------------------

    async def patch_groups(self, user: User, items: Sequence[PatchItem]) -> list[PatchOutcome]:
        """Apply the triples in order, all of one group's triples in one transaction.

        The rules are checked on each group's final config, so `set soft_limit 10` followed by
        `set hard_limit 20` works whatever the old hard limit was. A rule breach raises Invalid
        before anything is written, for the whole request."""
        outcomes = await self._db(self._patch, user.name, items)
        self._changed.set()
        await self.publish(_uuids(o.result for o in outcomes))
        return outcomes

    def _patch(self, user: str, items: Sequence[PatchItem]) -> list[PatchOutcome]:
        refs = list(dict.fromkeys(item.ref for item in items))
        found = dict(zip(refs, self._resolve(user, refs), strict=True))
        configs = {g.uuid: g.config for g in found.values() if isinstance(g, ServiceGroup)}
        for item in items:
            group = found[item.ref]
            if isinstance(group, ServiceGroup):
                configs[group.uuid] = apply_patch(configs[group.uuid], item.patch)
        groups = {g.uuid: g for g in found.values() if isinstance(g, ServiceGroup)}
        for uuid in groups:
            check_config(configs[uuid])
        results: dict[str, Outcome] = {}
        for uuid, group in groups.items():
            try:
                if configs[uuid] != group.config:
                    self._check_domains(uuid, configs[uuid].domains)
                    self._store.update_group(user, uuid, configs[uuid])
                results[uuid] = replace(group, config=configs[uuid])
            except ItemError as err:
                results[uuid] = err
        return [
            PatchOutcome(item.ref, item.id, self._patched(found[item.ref], results))
            for item in items
        ]

    @staticmethod
    def _patched(found: Outcome, results: dict[str, Outcome]) -> Outcome:
        return results[found.uuid] if isinstance(found, ServiceGroup) else found

    # --- delete -------------------------------------------------------------------------

    async def delete_groups(self, user: User, refs: Sequence[Ref]) -> list[Outcome]:
        outcomes = await self._db(self._delete, user.name, refs)
        self._changed.set()
        await self.publish(_uuids(outcomes))
        return outcomes

    def _delete(self, user: str, refs: Sequence[Ref]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        deleted: set[str] = set()
        for outcome in self._resolve(user, refs):
            if isinstance(outcome, ServiceGroup):
                if outcome.uuid in deleted:
                    outcome = not_found(NOUN, "uuid", outcome.uuid)
                elif outcome.instances:
                    outcome = ItemError(
                        ErrorCode.ATTACHED,
                        f"Service group '{outcome.name}' still has {len(outcome.instances)} "
                        "instance(s) attached; delete or detach them first",
                    )
                else:
                    self._store.delete_group(user, outcome.uuid)
                    deleted.add(outcome.uuid)
            outcomes.append(outcome)
        return outcomes

    # --- autokill -----------------------------------------------------------------------

    async def run_autokill(self) -> None:
        """Delete empty groups once their `autokill.time_ms` has passed. Sleeps until the next
        deadline, or until a write may have moved it."""
        while True:
            due = await self._db(self._store.autokill_due, self._clock())
            for user, uuid in due:
                await self._db(self._delete, user, [Ref(uuid=uuid)])
            if due:
                await self.publish([uuid for _user, uuid in due])
            next_at = await self._db(self._store.next_autokill_at)
            delay = 3600.0 if next_at is None else max(0.0, next_at - self._clock())
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(delay, 3600.0))

    # --- rules that need the store ------------------------------------------------------

    def _check_domains(self, uuid: str | None, domains: Sequence[Domain]) -> None:
        """Domains are global: one that routes to any other group (any user's) is taken."""
        # Certificates are not stored yet, so any named certificate is one this user lacks.
        for domain in domains:
            if domain.certificate is not None:
                raise not_found("certificate", "name", domain.certificate)
        owners = self._store.domain_owners([d.fqdn for d in domains])
        for domain in domains:
            owner = owners.get(domain.fqdn)
            if owner is not None and owner != uuid:
                raise ItemError(
                    ErrorCode.ALREADY_EXISTS, f"Domain '{domain.fqdn}' is already in use"
                )


def _uuids(outcomes: Iterable[Outcome]) -> list[str]:
    return [o.uuid for o in outcomes if isinstance(o, ServiceGroup)]
