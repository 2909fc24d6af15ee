"""Wire types: what clients send and what Portway answers, as the OpenAPI document shows them.

Requests are strict (no silent "5" -> 5, no unknown fields), so a typo is an error naming the
field rather than a setting that quietly does nothing. Responses list every field as optional,
as the SDK's models do, because a failed bulk item carries only a few of them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..model.service_group import AUTOKILL_MAX_MS, LIMIT_MAX, LIMIT_MIN, PORT_MAX, PORT_MIN

Status = Literal["success", "error", "partial_success"]
Handler = Literal["tls", "http", "redirect"]
Protocol = Literal["tcp", "udp"]
GroupProp = Literal["services", "domains", "soft_limit", "hard_limit", "autokill"]
PatchOp = Literal["set", "add", "del"]
Port = Field(ge=PORT_MIN, le=PORT_MAX)


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- requests -------------------------------------------------------------------------------


class NameOrUUID(Strict):
    """Exactly one of `uuid` or `name`."""

    uuid: str | None = Field(None, json_schema_extra={"format": "uuid"})
    name: str | None = None


class ServiceIn(Strict):
    port: int = Field(ge=PORT_MIN, le=PORT_MAX)
    destination_port: int | None = Field(None, ge=PORT_MIN, le=PORT_MAX)
    protocol: Protocol = "tcp"
    handlers: list[Handler] | None = None
    ip: str | None = None


class DomainIn(Strict):
    name: str = Field(min_length=1, max_length=254)
    certificate: NameOrUUID | None = None


class AutokillIn(Strict):
    time_ms: int = Field(0, ge=0, le=AUTOKILL_MAX_MS)


class CreateServiceGroupRequest(Strict):
    name: str | None = Field(None, min_length=1, max_length=63)
    services: list[ServiceIn] = Field(min_length=1, max_length=253)
    domains: list[DomainIn] | None = None
    soft_limit: int | None = Field(None, ge=LIMIT_MIN, le=LIMIT_MAX)
    hard_limit: int | None = Field(None, ge=LIMIT_MIN, le=LIMIT_MAX)
    autokill: AutokillIn | None = None


class UpdateServiceGroupByUUIDRequest(Strict):
    id: str | None = None
    prop: GroupProp
    op: PatchOp
    value: Any = None


class UpdateServiceGroupsRequestItem(UpdateServiceGroupByUUIDRequest):
    uuid: str | None = Field(None, json_schema_extra={"format": "uuid"})
    name: str | None = None


# --- responses ------------------------------------------------------------------------------


class ServiceOut(Open):
    port: int | None = None
    destination_port: int | None = None
    protocol: Protocol | None = None
    handlers: list[Handler] | None = None
    ip: str | None = None


class CertificateRef(Open):
    uuid: str | None = None
    name: str | None = None
    state: Literal["pending", "valid", "error"] | None = None


class DomainOut(Open):
    fqdn: str | None = None
    certificate: CertificateRef | None = None


class InstanceRefOut(Open):
    uuid: str | None = None
    name: str | None = None


class AutokillOut(Open):
    time_ms: int | None = None


class ServiceGroupItem(Open):
    """A service group with the per-item envelope fields merged in."""

    status: Status | None = None
    message: str | None = None
    error: int | None = None
    id: str | None = None
    uuid: str | None = None
    name: str | None = None
    created_at: str | None = None
    persistent: bool | None = None
    autoscale: bool | None = None
    soft_limit: int | None = None
    hard_limit: int | None = None
    services: list[ServiceOut] | None = None
    domains: list[DomainOut] | None = None
    instances: list[InstanceRefOut] | None = None
    autokill: AutokillOut | None = None


class ErrorEntry(Open):
    status: int | None = None
    message: str | None = None


class ServiceGroupsData(Open):
    service_groups: list[ServiceGroupItem] = Field(default_factory=list)


class ServiceGroupsEnvelope(Open):
    status: Status
    message: str | None = None
    data: ServiceGroupsData
    errors: list[ErrorEntry] | None = None
    op_time_us: int | None = None


class ErrorEnvelope(Open):
    status: Literal["error"]
    message: str
    errors: list[ErrorEntry] | None = None
    op_time_us: int | None = None


class HealthData(Open):
    checks: dict[str, str]
    versions: dict[str, str]


class HealthEnvelope(Open):
    status: Status
    message: str | None = None
    data: HealthData
    op_time_us: int | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorEnvelope, "description": "The request is malformed or breaks a rule"},
    401: {"model": ErrorEnvelope, "description": "No bearer token"},
    403: {"model": ErrorEnvelope, "description": "The token is not valid"},
}
