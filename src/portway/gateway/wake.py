"""The wake hook: how the gateway asks control to wake an instance that is asleep
(semantics.md "Soft and hard limits" rule 2). Control implements it; until scale to zero
exists there is nothing to wake, and the balancer then falls through to rule 3."""

from __future__ import annotations

from typing import Protocol

from ..model.snapshot import Route


class Waker(Protocol):
    def can_wake(self, route: Route) -> bool:
        """Whether the group has an instance asleep that a wake could bring up."""


class NothingToWake:
    def can_wake(self, route: Route) -> bool:
        return False
