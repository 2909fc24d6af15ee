"""The Store protocol every backend implements (SQLite now; PostgreSQL when scaled out).

Calls are synchronous and made from one thread at a time (the controller's store thread), so a
backend needs no locking of its own. Every write is committed before the call returns: the API
answers 2xx only after that (durability before acknowledgement).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from ..model.instance import Instance
from ..model.service_group import GroupConfig, ServiceGroup


class Store(Protocol):
    def create_group(self, group: ServiceGroup) -> None:
        """Insert a group. Raises ItemError(ALREADY_EXISTS) if its name or a domain is taken."""

    def groups_by_uuid(self, user: str, uuids: Sequence[str]) -> dict[str, ServiceGroup]: ...

    def groups_by_name(self, user: str, names: Sequence[str]) -> dict[str, ServiceGroup]: ...

    def list_groups(
        self, user: str, count: int | None, start: str | None, descending: bool
    ) -> list[ServiceGroup]:
        """A page in creation order, starting at (and including) the group `start`.
        An unknown `start` gives an empty page."""

    def all_groups(self) -> list[ServiceGroup]:
        """Every user's groups, for the gateway's Snapshot."""

    def all_instances(self) -> list[Instance]:
        """Every user's instances."""

    def groups_anyone(self, uuids: Collection[str]) -> list[ServiceGroup]:
        """These groups, whoever owns them (for the Snapshot; never for a user's request)."""

    def instances_in_groups(self, uuids: Collection[str]) -> list[Instance]:
        """The instances attached to these groups, whoever owns them."""

    def update_group(self, user: str, uuid: str, config: GroupConfig) -> None:
        """Replace a group's config. Raises ItemError(ALREADY_EXISTS) if a new domain is taken."""

    def delete_group(self, user: str, uuid: str) -> None: ...

    def domain_owners(self, fqdns: Sequence[str]) -> dict[str, str]:
        """fqdn -> uuid of the group (of any user) it routes to, for those that are taken."""

    def autokill_due(self, now: float) -> list[tuple[str, str]]:
        """(user, uuid) of empty groups whose autokill time has passed at `now` (epoch s)."""

    def next_autokill_at(self) -> float | None:
        """The earliest epoch second at which a group's autokill falls due, if any."""

    def ping(self) -> None:
        """Raise if the store cannot answer a trivial read."""

    def close(self) -> None: ...
