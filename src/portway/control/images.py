"""Image use-cases: a user's names (`name:tag`) for content-addressed files."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import IO

from ..model.errors import Invalid, ItemError, not_found
from ..model.image import HOST_IMAGE, ImageRecord, parse_ref
from ..runtime.images import ImageContent, ImageFiles
from .controller import Controller
from .instances import InstanceStore
from .users import User


class ImageController:
    def __init__(
        self,
        groups: Controller,
        store: InstanceStore,
        files: ImageFiles,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._groups = groups
        self._store = store
        self._files = files
        self._clock = clock

    async def build(self, user: User, name: str, tag: str, upload: IO[bytes]) -> ImageRecord:
        """Unpack an uploaded tar into content-addressed files and name it for the user."""
        parse_ref("name", f"{name}:{tag}")
        if name == HOST_IMAGE:
            raise Invalid("name", "'host' is the built-in image for bare host commands")
        content = await asyncio.to_thread(self._files.add_tar, upload)
        record = _record(user.name, name, tag, content, self._clock())
        await self._groups.in_store(self._store.put_image, record)
        return record

    async def list(self, user: User) -> list[ImageRecord]:
        return await self._groups.in_store(self._store.images, user.name)

    async def remove(self, user: User, ref: str) -> ImageRecord | ItemError:
        """Forget a name; the files go once no name and no instance refers to them (instances
        run from their own copy, so removing an image never disturbs one)."""
        name, tag = parse_ref("name", ref)
        record = await self._groups.in_store(self._store.image, user.name, name, tag)
        if record is None:
            return not_found("image", "name", ref)
        await self._groups.in_store(self._store.delete_image, user.name, name, tag)
        if not await self._groups.in_store(self._store.digest_in_use, record.digest):
            await asyncio.to_thread(self._files.remove, record.digest)
        return record


def _record(user: str, name: str, tag: str, content: ImageContent, now: float) -> ImageRecord:
    manifest = {
        "command": list(content.manifest.command),
        "env": dict(content.manifest.env),
        "port": content.manifest.port,
    }
    return ImageRecord(user, name, tag, content.digest, manifest, content.size_bytes, now)
