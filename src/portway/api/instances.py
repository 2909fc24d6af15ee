"""`/v1/instances`: create, read, start, stop, wait, delete, logs, metrics, PATCH (ukc-api §3)."""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from starlette.responses import Response

from ..control.instances import CreateRequest, InstanceController, StopRequest
from ..control.users import User
from ..model.errors import ErrorCode, Invalid, ItemError
from ..model.instance import (
    COOLDOWN_DEFAULT_MS,
    Autokill,
    Instance,
    ScaleToZero,
    State,
)
from ..model.instance_patch import InstancePatch, pending_updates
from ..model.refs import Ref, check_uuid, make_ref, unique_refs
from ..model.service_group import GroupSpec, ServiceGroup
from . import schemas as s
from .auth import authenticate
from .envelope import error_item, failed_items_response, items_response
from .services import body_refs, domain_spec, query_refs, service_spec

KEY = "instances"
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": s.InstancesEnvelope, "description": "One item per instance"},
    **s.ERROR_RESPONSES,
}
UUID_FORMAT = {"format": "uuid"}
UuidPath = Path(..., description="The instance's uuid", json_schema_extra=UUID_FORMAT)
UuidQuery = Query([], description="Repeat to ask for several", json_schema_extra=UUID_FORMAT)
STOPPED_DETAIL_STATES = (State.DRAINING, State.STOPPING, State.STOPPED, State.STANDBY)

router = APIRouter(tags=["instances"], responses=RESPONSES)


def controller(request: Request) -> InstanceController:
    ctl: InstanceController = request.app.state.instances
    return ctl


def _time(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- wire <-> model -------------------------------------------------------------------------


class Reader:
    """Everything a full read shows beside the instance itself: its group and image names."""

    def __init__(
        self, groups: dict[str, ServiceGroup], image_refs: dict[str, str], ctl: InstanceController
    ) -> None:
        self.groups = groups
        self.image_refs = image_refs
        self.ctl = ctl

    @classmethod
    async def load(cls, ctl: InstanceController, user: User, instances: Sequence[object]) -> Reader:
        uuids = {i.group_uuid for i in instances if isinstance(i, Instance) and i.group_uuid}
        groups = await ctl.groups_of(user, sorted(uuids)) if uuids else {}
        return cls(groups, await ctl.image_refs(user), ctl)

    def item(self, i: Instance, **extra: Any) -> dict[str, Any]:
        c, st = i.config, i.status
        item: dict[str, Any] = {
            "status": "success",
            **extra,
            "uuid": i.uuid,
            "name": i.name,
            "created_at": _time(i.created_at),
            "state": i.state.value,
            "image": self.image_refs.get(c.digest, f"{c.image}@{c.digest}"),
            "memory_mb": c.memory_mb,
            "vcpus": c.vcpus,
            "args": list(self.ctl.effective_args(i)),
            "env": dict(c.env),
            "restart_policy": c.restart_policy,
            "private_ip": i.private_ip,
            "private_fqdn": i.private_fqdn,
            "hostname": c.hostname or i.name,
            "network_interfaces": [{"private_ip": i.private_ip, "name": "eth0"}],
            "scale_to_zero": {
                "enabled": c.scale_to_zero.enabled,
                "policy": c.scale_to_zero.policy,
                "cooldown_time_ms": c.scale_to_zero.cooldown_time_ms,
                "notify_time_ms": c.scale_to_zero.notify_time_ms,
                "stateful": c.scale_to_zero.stateful,
            },
            "start_count": st.start_count,
            "restart_count": st.restart_count,
            "restart": {"attempt": st.restart_attempt, **_next_at(st.next_restart_at)},
            "features": list(c.features),
            "tags": list(i.tags),
            "delete_lock": i.delete_lock,
            "autokill": {"time_ms": c.autokill.time_ms, "num_requests": c.autokill.num_requests},
            "volumes": [],
            "updates": pending_updates(i),
        }
        for key, value in (
            ("boot_time_us", st.boot_time_us),
            ("started_at", _time(st.started_at)),
            ("stopped_at", _time(st.stopped_at)),
        ):
            if value is not None:
                item[key] = value
        if i.state is State.RUNNING and st.started_at is not None:
            item["uptime_ms"] = int((time.time() - st.started_at) * 1000)
        if i.state in STOPPED_DETAIL_STATES and st.stop_reason is not None:
            item["stop_reason"] = st.stop_reason
            item["stop_code"] = st.stop_code
            if st.exit_code is not None:
                item["exit_code"] = st.exit_code
        group = self.groups.get(i.group_uuid or "")
        if group is not None:
            item["service_group"] = {
                "uuid": group.uuid,
                "name": group.name,
                "domains": [{"fqdn": d.fqdn} for d in group.config.domains],
            }
            if group.config.domains:
                item["fqdn"] = group.config.domains[0].fqdn
            item["services"] = [f"{svc.protocol}:{svc.port}" for svc in group.config.services]
        return item


def _next_at(epoch: float | None) -> dict[str, Any]:
    if epoch is None or epoch <= time.time():
        return {}
    return {"next_at": _time(epoch) or ""}


def _create_request(body: s.CreateInstanceRequest) -> CreateRequest:
    for field in s.UNSUPPORTED_CREATE_FIELDS:
        if getattr(body, field) is not None:
            raise Invalid(field, "is not supported by Portway")
    timeout_s = body.timeout_s
    if timeout_s is None and body.wait_timeout_ms:
        timeout_s = -(-body.wait_timeout_ms // 1000)  # deprecated; rounded up to whole seconds
    stz = body.scale_to_zero
    return CreateRequest(
        image=body.image,
        name=body.name,
        args=body.args,
        env=dict(body.env or {}),
        memory_mb=128 if body.memory_mb is None else body.memory_mb,
        vcpus=1 if body.vcpus is None else body.vcpus,
        autostart=body.autostart,
        timeout_s=timeout_s,
        replicas=body.replicas,
        restart_policy=body.restart_policy,
        features=body.features,
        scale_to_zero=None
        if stz is None
        else ScaleToZero(
            stz.policy,
            stz.cooldown_time_ms if stz.cooldown_time_ms is not None else COOLDOWN_DEFAULT_MS,
            stz.stateful,
            stz.notify_time_ms,
        ),
        hostname=body.hostname,
        tags=body.tags,
        autokill=Autokill()
        if body.autokill is None
        else Autokill(body.autokill.time_ms, body.autokill.num_requests),
        **_group_fields(body.service_group),
    )


def _group_fields(group: s.InstanceServiceGroupIn | None) -> dict[str, Any]:
    if group is None:
        return {}
    by_ref = group.uuid is not None or group.name is not None
    described = (
        group.services is not None
        or group.domains is not None
        or (group.soft_limit is not None or group.hard_limit is not None)
    )
    if by_ref and described:
        raise Invalid(
            "service_group", "give an existing group (uuid or name) or services, not both"
        )
    if by_ref:
        return {"group_ref": make_ref("service_group", group.uuid, group.name)}
    if not group.services:
        raise Invalid("service_group.services", "at least one service is required")
    return {
        "inline_group": GroupSpec(
            services=[service_spec(x) for x in group.services],
            domains=None if group.domains is None else [domain_spec(d) for d in group.domains],
            soft_limit=group.soft_limit,
            hard_limit=group.hard_limit,
        )
    }


def _item_ref(field: str, item: s.InstanceRefIn | Any) -> Ref:
    return make_ref(field, item.uuid, item.name)


async def _items(
    ctl: InstanceController,
    user: User,
    pairs: Sequence[tuple[Ref, object, dict[str, Any]]],
    started: float,
) -> Response:
    """Render one item per (ref, outcome) with the extra fields each carries."""
    reader = await Reader.load(ctl, user, [o for _r, o, _e in pairs])
    items = []
    for ref, outcome, extra in pairs:
        if isinstance(outcome, ItemError):
            items.append(error_item(outcome, ref, **extra))
        elif isinstance(outcome, Instance):
            items.append(reader.item(outcome, **extra))
    return items_response(KEY, items, started)


def _brief(i: Instance, **extra: Any) -> dict[str, Any]:
    return {"status": "success", "uuid": i.uuid, "name": i.name, "state": i.state.value, **extra}


# --- create and read --------------------------------------------------------------------------


@router.post("/v1/instances", summary="Create instances (optionally with a service group)")
async def create_instances(
    body: s.CreateInstanceRequest,
    user: User = Depends(authenticate),
    ctl: InstanceController = Depends(controller),
) -> Response:
    started = time.perf_counter()
    req = _create_request(body)
    try:
        instances, in_time = await ctl.create(user, req)
    except ItemError as err:
        ref = Ref(name=body.name) if body.name else None
        return items_response(KEY, [error_item(err, ref)], started)
    reader = await Reader.load(ctl, user, instances)
    if in_time:
        return items_response(KEY, [reader.item(i) for i in instances], started)
    return _not_running(reader, instances, started)


def _not_running(reader: Reader, instances: Sequence[Instance], started: float) -> Response:
    """A create whose wait lapsed, or whose instance stopped first: the shapes the SDK reads
    (WaitTimeoutError with the last state; InstanceStoppedError for a stopped one)."""
    stopped = [i for i in instances if i.state in (State.STOPPED, State.DELETED)]
    items = []
    for i in instances:
        extra: dict[str, Any]
        if i.state in (State.STOPPED, State.DELETED):
            extra = {"status": "error", "message": _stopped_message(i)}
        elif i.state is State.RUNNING:
            extra = {}
        else:
            extra = {
                "status": "error",
                "error": int(ErrorCode.TIMED_OUT),
                "message": f"Timed out waiting for instance '{i.name}' to be running",
            }
        items.append({**reader.item(i), **extra})
    message = (
        items[0]["message"]
        if stopped and len(instances) == 1
        else "Timed out waiting for the instances to be running"
    )
    return failed_items_response(KEY, items, message, started)


def _stopped_message(i: Instance) -> str:
    code = i.status.exit_code
    why = f" (exit code {code})" if code is not None else ""
    return f"Instance '{i.name}' stopped before it was running{why}; see its log"


async def _get(
    request: Request,
    ctl: InstanceController,
    user: User,
    refs: list[Ref],
    count: int | None,
    start: str | None,
    order: str,
    tags: Sequence[str],
) -> Response:
    started = time.perf_counter()
    refs = unique_refs(refs + await body_refs(request))
    if refs:
        outcomes = await ctl.get(user, refs)
        return await _items(
            ctl, user, [(r, o, {}) for r, o in zip(refs, outcomes, strict=True)], started
        )
    found = await ctl.list_instances(user, count, start, order == "desc", tags)
    reader = await Reader.load(ctl, user, found)
    return items_response(KEY, [reader.item(i) for i in found], started)


@router.get("/v1/instances", summary="Get instances by uuid or name, or list them")
async def get_instances(
    request: Request,
    uuid: list[str] = UuidQuery,
    name: list[str] = Query([], description="Repeat to ask for several"),
    details: bool = Query(True, description="Full objects are always returned"),
    count: int | None = Query(None, ge=1, le=100_000),
    from_: str | None = Query(None, alias="from", json_schema_extra=UUID_FORMAT),
    order: str = Query("asc", pattern="^(asc|desc)$"),
    sortby: str | None = Query(None, pattern="^create_time$"),
    tags: str | None = Query(None, description="Comma-separated: instances with all of them"),
    user: User = Depends(authenticate),
    ctl: InstanceController = Depends(controller),
) -> Response:
    start = None if from_ is None else _cursor(from_)
    wanted = [t for t in (tags or "").split(",") if t]
    return await _get(request, ctl, user, query_refs(uuid, name), count, start, order, wanted)


def _cursor(value: str) -> str:
    try:
        return check_uuid(value)
    except Invalid:
        return "00000000-0000-0000-0000-000000000000"  # unknown: an empty page


@router.get("/v1/instances/list", summary="List instances (legacy alias)")
async def list_instances_legacy(
    request: Request,
    user: User = Depends(authenticate),
    ctl: InstanceController = Depends(controller),
) -> Response:
    return await _get(request, ctl, user, [], None, None, "asc", [])


# --- start / stop -----------------------------------------------------------------------------


async def _start(ctl: InstanceController, user: User, refs: list[Ref]) -> Response:
    started = time.perf_counter()
    results = await ctl.start(user, refs)
    items = [
        error_item(o, r)
        if isinstance(o, ItemError)
        else _brief(o, previous_state=(prev or o.state).value)
        for r, (o, prev) in zip(refs, results, strict=True)
    ]
    return items_response(KEY, items, started)


@router.put("/v1/instances/start", summary="Start instances")
async def start_instances(
    body: list[s.StartInstancesRequestItem] = Body(..., min_length=1),
    user: User = Depends(authenticate),
    ctl: InstanceController = Depends(controller),
) -> Response:
    return await _start(ctl, user, [_item_ref(str(i), x) for i, x in enumerate(body)])


def _stop_request(ref: Ref, body: s.StopInstanceBody) -> StopRequest:
    if body.force and body.drain_timeout_ms:
        raise Invalid("drain_timeout_ms", "cannot be combined with force")
    if body.dump:
        raise Invalid("dump", "is not supported by Portway")
    return StopRequest(ref, body.force, body.drain_timeout_ms, body.quick, body.ifstate)


async def _stop(ctl: InstanceController, user: User, reqs: list[StopRequest]) -> Response:
    started = time.perf_counter()
    results = await ctl.stop(user, reqs)
    items = [
        error_item(o, q.ref, **({} if prev is None else {"state": prev.value}))
        if isinstance(o, ItemError)
        else _brief(o, previous_state=(prev or o.state).value)
        for q, (o, prev) in zip(reqs, results, strict=True)
    ]
    return items_response(KEY, items, started)


@router.put("/v1/instances/stop", summary="Stop instances (does not block; use wait)")
async def stop_instances(
    body: list[s.StopInstancesRequestItem] = Body(..., min_length=1),
    user: User = Depends(authenticate),
    ctl: InstanceController = Depends(controller),
) -> Response:
    reqs = [_stop_request(_item_ref(str(i), x), x) for i, x in enumerate(body)]
    return await _stop(ctl, user, reqs)


# --- wait -------------------------------------------------------------------------------------


def _wait_item(ref: Ref, body: s.WaitInstanceBody) -> tuple[Ref, State, float]:
    timeout = body.timeout_s
    if timeout is None and body.timeout_ms is not None:
        timeout = -1 if body.timeout_ms < 0 else -(-body.timeout_ms // 1000)
    return (
        ref,
        State(body.state) if body.state in State.__members__.values() else _bad_state(body.state),
        float(timeout or 0),
    )


def _bad_state(state: str) -> State:
    raise Invalid("state", f"'{state}' is not a state Portway instances reach")


async def _wait(
    ctl: InstanceController, user: User, items: list[tuple[Ref, State, float]]
) -> Response:
    started = time.perf_counter()
    results = await ctl.wait(user, items)
    out: list[dict[str, Any]] = []
    late = 0
    for (ref, state, _t), result in zip(items, results, strict=True):
        if isinstance(result, ItemError):
            out.append(error_item(result, ref))
        elif result.reached:
            out.append(_brief(result.instance))
        else:
            late += 1
            out.append(
                _brief(
                    result.instance,
                    status="error",
                    error=int(ErrorCode.TIMED_OUT),
                    message=f"Timed out waiting for instance '{result.instance.name}' to be "
                    f"{state.value}; it is {result.instance.state.value}",
                )
            )
    if not late:
        return items_response(KEY, out, started)
    return failed_items_response(KEY, out, "Timed out waiting for the instances", started)


WAIT_DOC = (
    "Block until instances reach a state (default running); GET as the SDK, PUT as the old API"
)


@router.get("/v1/instances/wait", summary=WAIT_DOC, operation_id="wait_instances")
@router.put("/v1/instances/wait", summary=WAIT_DOC, operation_id="wait_instances_put")
async def wait_instances(
    body: list[s.WaitInstancesRequestItem] = Body(..., min_length=1),
    user: User = Depends(authenticate),
    ctl: InstanceController = Depends(controller),
) -> Response:
    return await _wait(ctl, user, [_wait_item(_item_ref(str(i), x), x) for i, x in enumerate(body)])


# --- delete -----------------------------------------------------------------------------------


async def _delete(
    ctl: InstanceController, user: User, items: list[tuple[Ref, int | None]]
) -> Response:
    started = time.perf_counter()
    results = await ctl.delete(user, items)
    out = [
        error_item(o, ref)
        if isinstance(o, ItemError)
        else {
            "status": "success",
            "uuid": o.uuid,
            "name": o.name,
            "previous_state": (prev or o.state).value,
        }
        for (ref, _t), (o, prev) in zip(items, results, strict=True)
    ]
    return items_response(KEY, out, started)


@router.delete("/v1/instances", summary="Delete instances (stopping them first)")
async def delete_instances(
    body: list[s.DeleteInstanceRequestItem] | None = Body(None),
    uuid: list[str] = UuidQuery,
    name: list[str] = Query([]),
    user: User = Depends(authenticate),
    ctl: InstanceController = Depends(controller),
) -> Response:
    items = [(r, None) for r in query_refs(uuid, name)] + [
        (_item_ref(str(i), x), x.timeout_s) for i, x in enumerate(body or [])
    ]
    if not items:
        raise Invalid("body", 'name the instances to delete: [{"uuid": ...} or {"name": ...}]')
    return await _delete(ctl, user, items)


# --- logs and metrics -------------------------------------------------------------------------


async def _logs(
    ctl: InstanceController, user: User, items: list[tuple[Ref, int | None, int | None]]
) -> Response:
    started = time.perf_counter()
    results = await ctl.logs(user, items)
    out = []
    for (ref, _o, _l), (outcome, chunk) in zip(items, results, strict=True):
        if isinstance(outcome, ItemError) or chunk is None:
            assert isinstance(outcome, ItemError)
            out.append(error_item(outcome, ref))
            continue
        out.append(
            {
                "status": "success",
                "uuid": outcome.uuid,
                "name": outcome.name,
                "state": outcome.state.value,
                "output": base64.b64encode(chunk.data).decode(),
                "available": {"start": chunk.available_start, "end": chunk.available_end},
                "range": {"start": chunk.start, "end": chunk.end},
            }
        )
    return items_response(KEY, out, started)


LOG_DOC = "Console output (stdout and stderr), base64, kept across restarts"


@router.get("/v1/instances/log", summary=LOG_DOC)
@router.get("/v1/instances/logs", summary=LOG_DOC + " (the docs' spelling)")
async def instance_logs(
    request: Request,
    body: list[s.LogsRequestItem] | None = Body(None),
    uuid: list[str] = UuidQuery,
    name: list[str] = Query([]),
    offset: int | None = Query(None),
    limit: int | None = Query(None, ge=0, le=1 << 24),
    user: User = Depends(authenticate),
    ctl: InstanceController = Depends(controller),
) -> Response:
    items = [(r, offset, limit) for r in query_refs(uuid, name)] + [
        (_item_ref(str(i), x), x.offset, x.limit) for i, x in enumerate(body or [])
    ]
    if not items:
        raise Invalid("body", 'name the instances: [{"uuid": ...} or {"name": ...}]')
    return await _logs(ctl, user, items)


async def _metrics(ctl: InstanceController, user: User, refs: list[Ref]) -> Response:
    started = time.perf_counter()
    results = await ctl.metrics(user, refs)
    out = []
    for ref, (outcome, usage) in zip(refs, results, strict=True):
        if isinstance(outcome, ItemError) or usage is None:
            assert isinstance(outcome, ItemError)
            out.append(error_item(outcome, ref))
            continue
        nconns, nreqs, nqueued, ntotal = ctl.traffic(outcome.uuid)
        out.append(
            {
                "status": "success",
                "uuid": outcome.uuid,
                "name": outcome.name,
                "rss_bytes": usage.rss_bytes,
                "cpu_time_ms": usage.cpu_time_ms,
                "boot_time_us": outcome.status.boot_time_us or 0,
                "net_time_us": 0,
                "rx_bytes": 0,
                "rx_packets": 0,
                "tx_bytes": 0,
                "tx_packets": 0,
                "nconns": nconns,
                "nreqs": nreqs,
                "nqueued": nqueued,
                "ntotal": ntotal,
            }
        )
    return items_response(KEY, out, started)


@router.get("/v1/instances/metrics", summary="Resource figures and counters of instances")
async def instance_metrics(
    request: Request,
    uuid: list[str] = UuidQuery,
    name: list[str] = Query([]),
    user: User = Depends(authenticate),
    ctl: InstanceController = Depends(controller),
) -> Response:
    refs = unique_refs(query_refs(uuid, name) + await body_refs(request))
    if not refs:
        raise Invalid("uuid", "name the instances: ?uuid=... or ?name=...")
    return await _metrics(ctl, user, refs)


# --- PATCH ------------------------------------------------------------------------------------


async def _patch(ctl: InstanceController, user: User, patches: list[InstancePatch]) -> Response:
    started = time.perf_counter()
    results = await ctl.patch(user, patches)
    out = []
    for patch, outcome in zip(patches, results, strict=True):
        extra = {} if patch.id is None else {"id": patch.id}
        if isinstance(outcome, ItemError):
            out.append(error_item(outcome, patch.ref, **extra))
        else:
            out.append({"status": "success", **extra, "uuid": outcome.uuid, "name": outcome.name})
    return items_response(KEY, out, started)


@router.patch("/v1/instances", summary="Update instances (set, add, del)")
async def update_instances(
    body: list[s.UpdateInstancesRequestItem] = Body(..., min_length=1),
    user: User = Depends(authenticate),
    ctl: InstanceController = Depends(controller),
) -> Response:
    patches = [
        InstancePatch(_item_ref(str(i), x), x.prop, x.op, x.value, x.id) for i, x in enumerate(body)
    ]
    return await _patch(ctl, user, patches)


# --- per-uuid forms ---------------------------------------------------------------------------


def _uuid_ref(uuid: str) -> Ref:
    return Ref(uuid=check_uuid(uuid))


@router.get("/v1/instances/{uuid}", summary="Get an instance by uuid")
async def get_instance(
    request: Request,
    uuid: str = UuidPath,
    details: bool = Query(True),
    user: User = Depends(authenticate),
    ctl: InstanceController = Depends(controller),
) -> Response:
    return await _get(request, ctl, user, [_uuid_ref(uuid)], None, None, "asc", [])


@router.delete("/v1/instances/{uuid}", summary="Delete an instance by uuid")
async def delete_instance(
    body: s.DeleteInstanceBody | None = Body(None),
    uuid: str = UuidPath,
    user: User = Depends(authenticate),
    ctl: InstanceController = Depends(controller),
) -> Response:
    return await _delete(ctl, user, [(_uuid_ref(uuid), None if body is None else body.timeout_s)])


@router.patch("/v1/instances/{uuid}", summary="Update an instance by uuid")
async def update_instance(
    body: s.UpdateInstanceBody,
    uuid: str = UuidPath,
    user: User = Depends(authenticate),
    ctl: InstanceController = Depends(controller),
) -> Response:
    return await _patch(
        ctl, user, [InstancePatch(_uuid_ref(uuid), body.prop, body.op, body.value, body.id)]
    )


@router.put("/v1/instances/{uuid}/start", summary="Start an instance by uuid")
async def start_instance(
    uuid: str = UuidPath,
    user: User = Depends(authenticate),
    ctl: InstanceController = Depends(controller),
) -> Response:
    return await _start(ctl, user, [_uuid_ref(uuid)])


@router.put("/v1/instances/{uuid}/stop", summary="Stop an instance by uuid")
async def stop_instance(
    body: s.StopInstanceBody | None = Body(None),
    uuid: str = UuidPath,
    user: User = Depends(authenticate),
    ctl: InstanceController = Depends(controller),
) -> Response:
    return await _stop(ctl, user, [_stop_request(_uuid_ref(uuid), body or s.StopInstanceBody())])


@router.get(
    "/v1/instances/{uuid}/wait", summary="Wait for an instance", operation_id="wait_instance"
)
@router.put(
    "/v1/instances/{uuid}/wait", summary="Wait for an instance", operation_id="wait_instance_put"
)
async def wait_instance(
    body: s.WaitInstanceBody | None = Body(None),
    uuid: str = UuidPath,
    user: User = Depends(authenticate),
    ctl: InstanceController = Depends(controller),
) -> Response:
    return await _wait(ctl, user, [_wait_item(_uuid_ref(uuid), body or s.WaitInstanceBody())])


@router.get("/v1/instances/{uuid}/log", summary="Console output of an instance by uuid")
@router.get("/v1/instances/{uuid}/logs", summary="Console output of an instance by uuid")
async def instance_log(
    body: s.LogsBody | None = Body(None),
    uuid: str = UuidPath,
    offset: int | None = Query(None),
    limit: int | None = Query(None, ge=0, le=1 << 24),
    user: User = Depends(authenticate),
    ctl: InstanceController = Depends(controller),
) -> Response:
    off = offset if body is None or body.offset is None else body.offset
    lim = limit if body is None or body.limit is None else body.limit
    return await _logs(ctl, user, [(_uuid_ref(uuid), off, lim)])


@router.get("/v1/instances/{uuid}/metrics", summary="Metrics of an instance by uuid")
async def instance_metric(
    uuid: str = UuidPath,
    user: User = Depends(authenticate),
    ctl: InstanceController = Depends(controller),
) -> Response:
    return await _metrics(ctl, user, [_uuid_ref(uuid)])
