"""`/v1/services`: service groups (ukc-api.md §2). Bulk forms, per-uuid forms, legacy list."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response

from ..control.controller import Controller, Outcome, PatchItem
from ..control.users import User
from ..model.errors import Invalid, ItemError
from ..model.refs import Ref, check_uuid, make_ref, unique_refs
from ..model.service_group import (
    DEL,
    Domain,
    DomainSpec,
    GroupSpec,
    Patch,
    ServiceGroup,
    ServiceSpec,
    normalize_domains,
    normalize_services,
)
from . import schemas as s
from .auth import authenticate
from .envelope import error_item, items_response

KEY = "service_groups"
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": s.ServiceGroupsEnvelope, "description": "One item per service group"},
    **s.ERROR_RESPONSES,
}

router = APIRouter(tags=["services"], responses=RESPONSES)


def controller(request: Request) -> Controller:
    ctl: Controller = request.app.state.controller
    return ctl


# --- wire <-> model -------------------------------------------------------------------------


def rfc3339(group: ServiceGroup) -> str:
    return group.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")


def group_item(group: ServiceGroup, **extra: Any) -> dict[str, Any]:
    c = group.config
    services = []
    for svc in c.services:
        out: dict[str, Any] = {
            "port": svc.port,
            "destination_port": svc.destination_port,
            "protocol": svc.protocol,
            "handlers": list(svc.handlers),
        }
        if svc.ip is not None:
            out["ip"] = svc.ip
        services.append(out)
    return {
        "status": "success",
        **extra,
        "uuid": group.uuid,
        "name": group.name,
        "created_at": rfc3339(group),
        "persistent": group.persistent,
        "autoscale": False,
        "soft_limit": c.soft_limit,
        "hard_limit": c.hard_limit,
        "services": services,
        "domains": [_domain_out(d) for d in c.domains],
        "instances": [{"uuid": i.uuid, "name": i.name} for i in group.instances],
        "autokill": {"time_ms": c.autokill_time_ms},
    }


def _domain_out(domain: Domain) -> dict[str, Any]:
    return {"fqdn": domain.fqdn}


def outcome_item(ref: Ref, outcome: Outcome, **extra: Any) -> dict[str, Any]:
    if isinstance(outcome, ItemError):
        return error_item(outcome, ref, **extra)
    return group_item(outcome, **extra)


def service_spec(svc: s.ServiceIn) -> ServiceSpec:
    return ServiceSpec(svc.port, svc.destination_port, svc.protocol, svc.handlers, svc.ip)


def domain_spec(domain: s.DomainIn) -> DomainSpec:
    cert = domain.certificate
    return DomainSpec(domain.name, None if cert is None else (cert.uuid or cert.name))


def group_spec(body: s.CreateServiceGroupRequest) -> GroupSpec:
    return GroupSpec(
        services=[service_spec(svc) for svc in body.services],
        name=body.name,
        domains=None if body.domains is None else [domain_spec(d) for d in body.domains],
        soft_limit=body.soft_limit,
        hard_limit=body.hard_limit,
        autokill_time_ms=None if body.autokill is None else body.autokill.time_ms,
    )


def ref_of(field: str, item: s.NameOrUUID) -> Ref:
    return make_ref(field, item.uuid, item.name)


_REFS = TypeAdapter(list[s.NameOrUUID])


async def body_refs(request: Request) -> list[Ref]:
    """Identifiers sent as a JSON body (the Go SDKs do this on GET and DELETE)."""
    raw = await request.body()
    if not raw.strip():
        return []
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Invalid("body", "not valid JSON") from None
    if isinstance(doc, dict):
        doc = [doc]
    try:
        items = _REFS.validate_python(doc)
    except ValidationError as err:
        raise Invalid("body", err.errors()[0]["msg"]) from None
    return [ref_of(f"body.{i}", item) for i, item in enumerate(items)]


def query_refs(uuids: Sequence[str], names: Sequence[str]) -> list[Ref]:
    return [Ref(uuid=check_uuid(u)) for u in uuids] + [Ref(name=n) for n in names]


# --- PATCH values ----------------------------------------------------------------------------

_SERVICES = TypeAdapter(list[s.ServiceIn])
_DOMAINS = TypeAdapter(list[s.DomainIn])
_LIMIT = TypeAdapter(int)
_AUTOKILL = TypeAdapter(s.AutokillIn)


def _typed(adapter: TypeAdapter[Any], value: Any) -> Any:
    try:
        return adapter.validate_python(value, strict=True)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in ("value", *first["loc"]))
        raise Invalid(where, first["msg"]) from None


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _service_keys(value: Any) -> list[tuple[int, str | None]]:
    """`del` on services names ports: 8443, {"port": 8443} or {"port": 53, "protocol": "udp"}."""
    keys: list[tuple[int, str | None]] = []
    for i, entry in enumerate(_listed(value)):
        if isinstance(entry, int) and not isinstance(entry, bool):
            keys.append((entry, None))
        elif isinstance(entry, dict) and isinstance(entry.get("port"), int):
            protocol = entry.get("protocol")
            keys.append((entry["port"], protocol if isinstance(protocol, str) else None))
        else:
            raise Invalid(f"value.{i}", 'name a published port: 8443 or {"port": 8443}')
    return keys


def _domain_keys(value: Any, platform_domain: str) -> list[str]:
    """`del` on domains names FQDNs as reads show them, or as create took them."""
    fqdns: list[str] = []
    for i, entry in enumerate(_listed(value)):
        text = entry.get("name") or entry.get("fqdn") if isinstance(entry, dict) else entry
        if not isinstance(text, str) or not text:
            raise Invalid(f"value.{i}", 'name a domain: "www.example.com" or {"name": ...}')
        text = text.lower()
        if text.endswith("."):
            fqdns.append(text[:-1])
        elif "." in text:
            fqdns.append(text)
        else:
            fqdns.append(f"{text}.{platform_domain}")
    return fqdns


def parse_patch(item: s.UpdateServiceGroupByUUIDRequest, user: User, platform_domain: str) -> Patch:
    """Give a triple's value the type its property needs, applying the same rules as create."""
    prop, op, value = item.prop, item.op, item.value
    if value is None:
        return Patch(prop, op, None)
    if prop == "services":
        if op == DEL:
            return Patch(prop, op, _service_keys(value))
        specs = [service_spec(x) for x in _typed(_SERVICES, _listed(value))]
        return Patch(prop, op, normalize_services(specs, user.addresses, "value"))
    if prop == "domains":
        if op == DEL:
            return Patch(prop, op, _domain_keys(value, platform_domain))
        domains = [domain_spec(x) for x in _typed(_DOMAINS, _listed(value))]
        return Patch(prop, op, normalize_domains(domains, platform_domain, "value"))
    if prop == "autokill":
        if op == DEL:
            return Patch(prop, op, True)
        time_ms = value if isinstance(value, int) else _typed(_AUTOKILL, value).time_ms
        return Patch(prop, op, _typed(_AUTOKILL, {"time_ms": time_ms}).time_ms)
    return Patch(prop, op, _typed(_LIMIT, value))


# --- routes ---------------------------------------------------------------------------------


@router.post("/v1/services", summary="Create a service group")
async def create_service_group(
    body: s.CreateServiceGroupRequest,
    user: User = Depends(authenticate),
    ctl: Controller = Depends(controller),
) -> Response:
    started = time.perf_counter()
    try:
        group = await ctl.create_group(user, group_spec(body))
    except ItemError as err:
        ref = Ref(name=body.name) if body.name else None
        return items_response(KEY, [error_item(err, ref)], started)
    return items_response(KEY, [group_item(group)], started)


async def _get(
    request: Request,
    ctl: Controller,
    user: User,
    refs: list[Ref],
    count: int | None,
    start: str | None,
    order: str,
) -> Response:
    started = time.perf_counter()
    refs = unique_refs(refs + await body_refs(request))
    if refs:
        outcomes = await ctl.get_groups(user, refs)
        items = [outcome_item(r, o) for r, o in zip(refs, outcomes, strict=True)]
        return items_response(KEY, items, started)
    groups = await ctl.list_groups(user, count, start, order == "desc")
    return items_response(KEY, [group_item(g) for g in groups], started)


ListOrder = Query("asc", pattern="^(asc|desc)$", description="Creation order")
# Documented as uuids so that a fuzzer reaches past validation; checked by check_uuid, whose
# message is the platform's own ("Invalid uuid 'x'").
UUID_FORMAT = {"format": "uuid"}
UuidPath = Path(..., description="The group's uuid", json_schema_extra=UUID_FORMAT)
UuidQuery = Query([], description="Repeat to ask for several", json_schema_extra=UUID_FORMAT)


@router.get("/v1/services", summary="Get service groups by uuid or name, or list them")
async def get_service_groups(
    request: Request,
    uuid: list[str] = UuidQuery,
    name: list[str] = Query([], description="Repeat to ask for several"),
    details: bool = Query(True, description="Full objects are always returned"),
    count: int | None = Query(None, ge=1, le=100_000, description="Page size"),
    from_: str | None = Query(
        None,
        alias="from",
        description="The uuid to start at (inclusive)",
        json_schema_extra=UUID_FORMAT,
    ),
    order: str = ListOrder,
    sortby: str | None = Query(None, pattern="^create_time$"),
    user: User = Depends(authenticate),
    ctl: Controller = Depends(controller),
) -> Response:
    start = None if from_ is None else _cursor(from_)
    return await _get(request, ctl, user, query_refs(uuid, name), count, start, order)


def _cursor(value: str) -> str:
    try:
        return check_uuid(value)
    except Invalid:
        # An unknown cursor is an empty page (the SDK resumes from an earlier one), and a
        # cursor that cannot be a uuid is unknown.
        return "00000000-0000-0000-0000-000000000000"


@router.get("/v1/services/list", summary="List service groups (legacy alias)")
async def list_service_groups_legacy(
    request: Request,
    user: User = Depends(authenticate),
    ctl: Controller = Depends(controller),
) -> Response:
    return await _get(request, ctl, user, [], None, None, "asc")


@router.get("/v1/services/{uuid}", summary="Get a service group by uuid")
async def get_service_group(
    request: Request,
    uuid: str = UuidPath,
    details: bool = Query(True),
    user: User = Depends(authenticate),
    ctl: Controller = Depends(controller),
) -> Response:
    started = time.perf_counter()
    ref = Ref(uuid=check_uuid(uuid))
    outcomes = await ctl.get_groups(user, [ref])
    return items_response(KEY, [outcome_item(ref, outcomes[0])], started)


async def _patch(
    request: Request,
    ctl: Controller,
    user: User,
    triples: Sequence[tuple[Ref, s.UpdateServiceGroupByUUIDRequest]],
) -> Response:
    started = time.perf_counter()
    domain = request.app.state.platform_domain
    items = [PatchItem(ref, parse_patch(t, user, domain), t.id) for ref, t in triples]
    outcomes = await ctl.patch_groups(user, items)
    extra = [{} if o.id is None else {"id": o.id} for o in outcomes]
    return items_response(
        KEY,
        [_patched_item(o.ref, o.result, e) for o, e in zip(outcomes, extra, strict=True)],
        started,
    )


def _patched_item(ref: Ref, outcome: Outcome, extra: dict[str, Any]) -> dict[str, Any]:
    if isinstance(outcome, ItemError):
        return error_item(outcome, ref, **extra)
    return {"status": "success", **extra, "uuid": outcome.uuid, "name": outcome.name}


@router.patch("/v1/services", summary="Update service groups (set, add, del)")
async def update_service_groups(
    request: Request,
    body: list[s.UpdateServiceGroupsRequestItem] = Body(..., min_length=1),
    user: User = Depends(authenticate),
    ctl: Controller = Depends(controller),
) -> Response:
    triples = [(make_ref(f"{i}", t.uuid, t.name), t) for i, t in enumerate(body)]
    return await _patch(request, ctl, user, triples)


@router.patch("/v1/services/{uuid}", summary="Update a service group by uuid")
async def update_service_group(
    request: Request,
    body: s.UpdateServiceGroupByUUIDRequest,
    uuid: str = UuidPath,
    user: User = Depends(authenticate),
    ctl: Controller = Depends(controller),
) -> Response:
    ref = Ref(uuid=check_uuid(uuid))
    return await _patch(request, ctl, user, [(ref, body)])


async def _delete(ctl: Controller, user: User, refs: list[Ref]) -> Response:
    started = time.perf_counter()
    outcomes = await ctl.delete_groups(user, refs)
    items = [
        error_item(o, r)
        if isinstance(o, ItemError)
        else {"status": "success", "uuid": o.uuid, "name": o.name}
        for r, o in zip(refs, outcomes, strict=True)
    ]
    return items_response(KEY, items, started)


@router.delete(
    "/v1/services", summary="Delete service groups (refused while instances are attached)"
)
async def delete_service_groups(
    body: list[s.NameOrUUID] | None = Body(None),
    uuid: list[str] = UuidQuery,
    name: list[str] = Query([]),
    user: User = Depends(authenticate),
    ctl: Controller = Depends(controller),
) -> Response:
    refs = query_refs(uuid, name) + [ref_of(f"{i}", item) for i, item in enumerate(body or [])]
    refs = unique_refs(refs)
    if not refs:
        raise Invalid("body", 'name the service groups to delete: [{"uuid": ...} or {"name": ...}]')
    return await _delete(ctl, user, refs)


@router.delete("/v1/services/{uuid}", summary="Delete a service group by uuid")
async def delete_service_group(
    uuid: str = UuidPath,
    user: User = Depends(authenticate),
    ctl: Controller = Depends(controller),
) -> Response:
    return await _delete(ctl, user, [Ref(uuid=check_uuid(uuid))])
