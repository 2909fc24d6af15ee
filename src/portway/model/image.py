"""Image names: `name[:tag]` references, per user, pointing at content-addressed files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import Invalid

HOST_IMAGE = "host"  # the built-in empty image that runs a bare host command
DEFAULT_TAG = "latest"
_NAME = re.compile(r"^[a-z0-9]+([._/-][a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class ImageRecord:
    user: str
    name: str
    tag: str
    digest: str  # sha256:<hex>
    manifest: dict[str, Any]  # {"command": [...], "env": {...}, "port": int | None}
    size_bytes: int
    created_at: float

    @property
    def ref(self) -> str:
        """The pinned reference reads show: `name:tag@sha256:<digest>`."""
        return f"{self.name}:{self.tag}@{self.digest}"


def parse_ref(field: str, ref: str) -> tuple[str, str]:
    """`app`, `app:v2`, `app:v2@sha256:...` -> (name, tag); the digest part is ignored here
    and checked by the caller against what the name points at."""
    text = ref.split("@", 1)[0]
    name, _, tag = text.partition(":")
    tag = tag or DEFAULT_TAG
    if not _NAME.match(name) or len(name) > 128:
        raise Invalid(
            field, f"'{ref}' is not a valid image name (lower-case letters, digits, ._/-)"
        )
    if not _TAG.match(tag):
        raise Invalid(field, f"'{ref}' has an invalid tag")
    return name, tag
