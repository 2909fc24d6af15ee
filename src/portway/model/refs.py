"""References to resources: exactly one of a uuid or a name (ukc-api.md §1.3)."""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass

from .errors import Invalid


@dataclass(frozen=True)
class Ref:
    uuid: str | None = None
    name: str | None = None

    def describe(self) -> tuple[str, str]:
        """(key, value) for messages such as `No service group with name 'web'`."""
        return ("uuid", self.uuid) if self.uuid is not None else ("name", self.name or "")


def check_uuid(value: str) -> str:
    """A canonical lower-case UUID. A name sent where a uuid belongs fails here, as on UKC."""
    # The message is the platform's own words, which clients match on; it names the value.
    try:
        parsed = uuidlib.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise Invalid("", f"Invalid uuid '{value}'") from None
    if str(parsed) != value.lower():
        raise Invalid("", f"Invalid uuid '{value}'")
    return str(parsed)


def make_ref(field: str, uuid: str | None, name: str | None) -> Ref:
    if uuid is not None and name is not None:
        raise Invalid(field, "give either 'uuid' or 'name', not both")
    if uuid is not None:
        return Ref(uuid=check_uuid(uuid))
    if name is not None:
        return Ref(name=name)
    raise Invalid(field, "needs a 'uuid' or a 'name'")


def unique_refs(refs: list[Ref]) -> list[Ref]:
    """The union of references from the query and the body, first occurrence kept."""
    return list(dict.fromkeys(refs))
