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
    gateway: dict[str, Any] | None = None


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


# --- instances --------------------------------------------------------------------------

InstanceStateName = Literal[
    "stopped",
    "starting",
    "running",
    "draining",
    "stopping",
    "template",
    "standby",
    "deleted",
    "checkpoint",
]
RestartPolicy = Literal["never", "always", "on-failure"]
STZPolicy = Literal["on", "off", "idle"]
# Fields of the platform's create request that Portway does not serve: a clear 400 each.
UNSUPPORTED_CREATE_FIELDS = (
    "volumes",
    "roms",
    "plugins",
    "template",
    "branch_from",
    "checkpoint",
    "gpus",
    "type",
    "network_interfaces",
    "schedules",
    "sched_priority",
    "dependencies",
    "annotations",
    "gateway",
    "nameserver",
)


class ScaleToZeroIn(Strict):
    policy: STZPolicy = "off"
    cooldown_time_ms: int = Field(1000, ge=0, le=86_400_000)
    stateful: bool = False
    notify_time_ms: int = Field(0, ge=0, le=86_400_000)


class InstanceAutokillIn(Strict):
    time_ms: int = Field(0, ge=0)
    num_requests: int = Field(0, ge=0)


class InstanceServiceGroupIn(Strict):
    """Attach to a group (`uuid` or `name`), or describe one to create with the instance."""

    uuid: str | None = Field(None, json_schema_extra={"format": "uuid"})
    name: str | None = None
    services: list[ServiceIn] | None = Field(None, min_length=1, max_length=253)
    domains: list[DomainIn] | None = None
    soft_limit: int | None = Field(None, ge=LIMIT_MIN, le=LIMIT_MAX)
    hard_limit: int | None = Field(None, ge=LIMIT_MIN, le=LIMIT_MAX)


class CreateInstanceRequest(Strict):
    image: str = Field(min_length=1, max_length=512)
    name: str | None = Field(None, min_length=1, max_length=63)
    args: list[str] | None = None
    env: dict[str, str] | None = None
    memory_mb: int | None = Field(None, ge=16, le=65536)
    vcpus: int | None = Field(None, ge=1, le=64)
    autostart: bool = False
    timeout_s: int | None = Field(None, ge=-1, le=3600)
    wait_timeout_ms: int | None = Field(None, ge=-1, le=3_600_000)
    replicas: int = Field(0, ge=0, le=63)
    restart_policy: RestartPolicy = "never"
    features: list[str] = Field(default_factory=list)
    scale_to_zero: ScaleToZeroIn | None = None
    hostname: str | None = Field(None, min_length=1, max_length=63)
    tags: list[str] = Field(default_factory=list)
    autokill: InstanceAutokillIn | None = None
    delete_lock: bool = False
    service_group: InstanceServiceGroupIn | None = None
    volumes: Any = None
    roms: Any = None
    plugins: Any = None
    template: Any = None
    branch_from: Any = None
    checkpoint: Any = None
    gpus: Any = None
    type: Any = None
    network_interfaces: Any = None
    schedules: Any = None
    sched_priority: Any = None
    dependencies: Any = None
    annotations: Any = None
    gateway: Any = None
    nameserver: Any = None


class InstanceRefIn(Strict):
    uuid: str | None = Field(None, json_schema_extra={"format": "uuid"})
    name: str | None = None


class StartInstancesRequestItem(InstanceRefIn):
    timeout_s: int | None = Field(None, ge=-1, le=3600)
    wait_timeout_ms: int | None = None


class StopInstanceBody(Strict):
    force: bool = False
    drain_timeout_ms: int = Field(0, ge=-1, le=3_600_000)
    quick: bool = False
    ifstate: InstanceStateName | None = None
    dump: bool = False


class StopInstancesRequestItem(StopInstanceBody):
    uuid: str | None = Field(None, json_schema_extra={"format": "uuid"})
    name: str | None = None


class WaitInstanceBody(Strict):
    state: InstanceStateName = "running"
    timeout_s: int | None = Field(None, ge=-1, le=3600)
    timeout_ms: int | None = Field(None, ge=-1, le=3_600_000)


class WaitInstancesRequestItem(WaitInstanceBody):
    uuid: str | None = Field(None, json_schema_extra={"format": "uuid"})
    name: str | None = None


class DeleteInstanceBody(Strict):
    timeout_s: int | None = Field(None, ge=-1, le=3600)
    dont_retain: bool = False


class DeleteInstanceRequestItem(DeleteInstanceBody):
    uuid: str | None = Field(None, json_schema_extra={"format": "uuid"})
    name: str | None = None


class LogsBody(Strict):
    offset: int | None = None
    limit: int | None = Field(None, ge=0, le=1 << 24)


class LogsRequestItem(LogsBody):
    uuid: str | None = Field(None, json_schema_extra={"format": "uuid"})
    name: str | None = None


InstanceProp = Literal[
    "image",
    "args",
    "env",
    "memory_mb",
    "vcpus",
    "scale_to_zero",
    "tags",
    "delete_lock",
    "autokill",
    "hostname",
]


class UpdateInstanceBody(Strict):
    id: str | None = None
    prop: InstanceProp
    op: PatchOp
    value: Any = None


class UpdateInstancesRequestItem(UpdateInstanceBody):
    uuid: str | None = Field(None, json_schema_extra={"format": "uuid"})
    name: str | None = None


class InstanceItem(Open):
    """An instance (or a per-item result about one) with the envelope fields merged in."""

    status: Status | None = None
    message: str | None = None
    error: int | None = None
    id: str | None = None
    uuid: str | None = None
    name: str | None = None
    state: InstanceStateName | None = None
    previous_state: InstanceStateName | None = None
    created_at: str | None = None
    image: str | None = None
    memory_mb: int | None = None
    vcpus: int | None = None
    args: list[str] | None = None
    env: dict[str, str] | None = None
    restart_policy: RestartPolicy | None = None
    private_ip: str | None = None
    private_fqdn: str | None = None
    features: list[Literal["delete-on-stop", "nested-virt"]] | None = None
    output: str | None = None


class InstancesData(Open):
    instances: list[InstanceItem] = Field(default_factory=list)


class InstancesEnvelope(Open):
    status: Status
    message: str | None = None
    data: InstancesData
    errors: list[ErrorEntry] | None = None
    op_time_us: int | None = None


class ImageItem(Open):
    status: Status | None = None
    message: str | None = None
    error: int | None = None
    name: str | None = None
    tag: str | None = None
    digest: str | None = None
    ref: str | None = None
    size_in_bytes: int | None = None
    args: list[str] | None = None
    env: dict[str, str] | None = None
    port: int | None = None
    created_at: str | None = None


class ImagesData(Open):
    images: list[ImageItem] = Field(default_factory=list)


class ImagesEnvelope(Open):
    status: Status
    message: str | None = None
    data: ImagesData
    errors: list[ErrorEntry] | None = None
    op_time_us: int | None = None


class ImageNameIn(Strict):
    name: str | None = Field(None, description="name:tag")
    digest: str | None = None
    tag: str | None = Field(None, description="name:tag (the legacy field)")
