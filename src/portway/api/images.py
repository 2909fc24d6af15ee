"""`/v1/images`: build from an uploaded directory, list, remove (a Portway extension: the
process runtime cannot pull OCI images, so images are uploaded directory snapshots)."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Request
from starlette.responses import Response

from ..control.images import ImageController
from ..control.users import User
from ..model.errors import Invalid, ItemError
from ..model.image import ImageRecord
from ..model.refs import Ref
from . import schemas as s
from .auth import authenticate
from .envelope import error_item, items_response

KEY = "images"
MAX_UPLOAD_BYTES = 1 << 30
SPOOL_IN_MEMORY = 8 << 20
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": s.ImagesEnvelope, "description": "One item per image"},
    **s.ERROR_RESPONSES,
}
router = APIRouter(tags=["images"], responses=RESPONSES)


def controller(request: Request) -> ImageController:
    ctl: ImageController = request.app.state.images
    return ctl


def image_item(image: ImageRecord) -> dict[str, Any]:
    return {
        "status": "success",
        "name": image.name,
        "tag": image.tag,
        "digest": image.digest,
        "ref": image.ref,
        "tags": [f"{image.name}:{image.tag}"],
        "size_in_bytes": image.size_bytes,
        "args": list(image.manifest.get("command") or []),
        "env": dict(image.manifest.get("env") or {}),
        "port": image.manifest.get("port"),
        "created_at": datetime.fromtimestamp(image.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@router.post(
    "/v1/images",
    summary="Build an image from a tar of a directory (portway.toml inside is its manifest)",
    # Documented as octet-stream (what generic clients can send); any content type is read as tar.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def build_image(
    request: Request,
    name: str = Query(..., min_length=1, max_length=128, description="The image name"),
    tag: str = Query("latest", min_length=1, max_length=128),
    user: User = Depends(authenticate),
    ctl: ImageController = Depends(controller),
) -> Response:
    started = time.perf_counter()
    # Spooled: small uploads stay in memory, large ones go to disk, none is held whole twice.
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as upload:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                raise Invalid("body", f"the upload is larger than {MAX_UPLOAD_BYTES >> 20} MiB")
            upload.write(chunk)
        if size == 0:
            raise Invalid("body", "send the directory as a tar (Content-Type: application/x-tar)")
        upload.seek(0)
        image = await ctl.build(user, name, tag, upload)
    return items_response(KEY, [image_item(image)], started)


@router.get("/v1/images", summary="List your images")
@router.get("/v1/images/list", summary="List your images (legacy alias)")
async def list_images(
    user: User = Depends(authenticate),
    ctl: ImageController = Depends(controller),
) -> Response:
    started = time.perf_counter()
    return items_response(KEY, [image_item(i) for i in await ctl.list(user)], started)


@router.delete("/v1/images", summary="Remove image names (instances keep running from their copy)")
async def delete_images(
    body: list[s.ImageNameIn] = Body(..., min_length=1),
    user: User = Depends(authenticate),
    ctl: ImageController = Depends(controller),
) -> Response:
    started = time.perf_counter()
    items = []
    for i, entry in enumerate(body):
        ref = entry.name or entry.tag
        if not ref:
            raise Invalid(f"{i}.name", "give the image as name:tag")
        outcome = await ctl.remove(user, ref)
        if isinstance(outcome, ItemError):
            items.append(error_item(outcome, Ref(name=ref)))
        else:
            items.append({"status": "success", "name": ref, "digest": outcome.digest})
    return items_response(KEY, items, started)
