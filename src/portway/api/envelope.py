"""The response envelope every answer travels in (ukc-api.md §1.4, §1.5)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from starlette.responses import Response

from ..model.errors import ItemError
from ..model.refs import Ref


class JSONBody(Response):
    media_type = "application/json"


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def op_time_us(started: float) -> int:
    return int((time.perf_counter() - started) * 1_000_000)


def error_item(err: ItemError, ref: Ref | None = None, **extra: Any) -> dict[str, Any]:
    """A failed item: `{"status":"error","error":8,"message":...,"uuid"|"name":...}`."""
    item: dict[str, Any] = {"status": "error", "error": int(err.code), "message": err.message}
    if ref is not None:
        key, value = ref.describe()
        item[key] = value
    item.update(extra)
    return item


def items_response(key: str, items: Sequence[dict[str, Any]], started: float) -> Response:
    """HTTP 200 with one item per requested reference; the envelope says whether all,
    some or none of them succeeded."""
    failed = sum(1 for item in items if item.get("status") == "error")
    doc: dict[str, Any] = {"status": "success"}
    if failed:
        doc["status"] = "error" if failed == len(items) else "partial_success"
        doc["message"] = (
            items[0]["message"] if len(items) == 1 else f"{failed} of {len(items)} items failed"
        )
    doc["data"] = {key: list(items)}
    doc["op_time_us"] = op_time_us(started)
    return JSONBody(_dump(doc))


def failed_items_response(
    key: str, items: Sequence[dict[str, Any]], message: str, started: float
) -> Response:
    """HTTP 200 with `status: error` and the items: how a lapsed wait reports the state each
    instance was last seen in (the SDK reads it for WaitTimeoutError)."""
    doc = {
        "status": "error",
        "message": message,
        "data": {key: list(items)},
        "op_time_us": op_time_us(started),
    }
    return JSONBody(_dump(doc))


def error_response(
    status_code: int,
    message: str,
    started: float | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A request-level failure: HTTP 4xx/5xx with the message naming what is wrong."""
    doc: dict[str, Any] = {
        "status": "error",
        "message": message,
        "errors": [{"status": status_code, "message": message}],
    }
    if started is not None:
        doc["op_time_us"] = op_time_us(started)
    return JSONBody(_dump(doc), status_code=status_code, headers=headers)


def data_response(data: dict[str, Any], started: float) -> Response:
    return JSONBody(_dump({"status": "success", "data": data, "op_time_us": op_time_us(started)}))
