"""Service groups: how the outside world reaches a set of instances (seed 000, ukc-api.md §2).

Everything here is pure: the API layer turns JSON into the `*Spec` values below (types only), and
these functions apply the platform's rules (ports, handlers, limits, domains) and return the
normalized values the store keeps. Every rule breach raises `Invalid` naming the field.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import cast

from . import names
from .errors import Invalid

PORT_MIN, PORT_MAX = 1, 65535
LIMIT_MIN, LIMIT_MAX = 1, 65535
SOFT_LIMIT_DEFAULT = 1
HARD_LIMIT_DEFAULT = 65535
SERVICES_MAX = 253
DOMAINS_MAX = 64
AUTOKILL_MAX_MS = 365 * 24 * 3600 * 1000

TLS, HTTP, REDIRECT = "tls", "http", "redirect"
# Handlers are reported in one canonical order, so `443:8080/tls+http` reads the same however
# the client listed them.
HANDLER_ORDER = (TLS, HTTP, REDIRECT)
TCP, UDP = "tcp", "udp"
HTTP_PORT, HTTPS_PORT = 80, 443


@dataclass(frozen=True)
class Service:
    """One published port of a group."""

    port: int
    destination_port: int
    protocol: str = TCP
    handlers: tuple[str, ...] = ()
    ip: str | None = None

    @property
    def key(self) -> tuple[int, str]:
        """A group publishes a port once per protocol."""
        return (self.port, self.protocol)

    def describe(self) -> str:
        """The kraft notation: `443:8080/tls+http` (UDP ports add `/udp`)."""
        text = f"{self.port}:{self.destination_port}"
        if self.handlers:
            text += "/" + "+".join(self.handlers)
        if self.protocol == UDP:
            text += "/udp"
        return text


@dataclass(frozen=True)
class Domain:
    """An FQDN that routes to the group, with the certificate it asked for (by name or uuid)."""

    fqdn: str
    certificate: str | None = None


@dataclass(frozen=True)
class ServiceSpec:
    """A service as a client wrote it: handlers and destination may be left out."""

    port: int
    destination_port: int | None = None
    protocol: str = TCP
    handlers: Sequence[str] | None = None
    ip: str | None = None


@dataclass(frozen=True)
class DomainSpec:
    """A domain as a client wrote it: a subdomain label, or an FQDN ending in `.`."""

    name: str
    certificate: str | None = None


@dataclass(frozen=True)
class GroupConfig:
    """The mutable part of a group: what PATCH changes and the gateway serves."""

    services: tuple[Service, ...]
    domains: tuple[Domain, ...]
    soft_limit: int = SOFT_LIMIT_DEFAULT
    hard_limit: int = HARD_LIMIT_DEFAULT
    autokill_time_ms: int = 0


@dataclass(frozen=True)
class InstanceRef:
    uuid: str
    name: str


@dataclass(frozen=True)
class ServiceGroup:
    """A group as the store keeps it. `empty_since` (epoch seconds) drives group autokill."""

    uuid: str
    user: str
    name: str
    created_at: datetime
    persistent: bool
    config: GroupConfig
    instances: tuple[InstanceRef, ...] = field(default=())
    empty_since: float | None = None


# --- services -----------------------------------------------------------------------------


def default_handlers(port: int, destination_port: int) -> tuple[str, ...]:
    """What a port gets when the client names no handlers: the only valid set for 443, plain
    HTTP (or the HTTPS redirect when it points at 443) for 80, TLS-terminated TCP elsewhere."""
    if port == HTTPS_PORT:
        return (TLS, HTTP)
    if port == HTTP_PORT:
        return (HTTP, REDIRECT) if destination_port == HTTPS_PORT else (HTTP,)
    return (TLS,)


def _check_port(where: str, value: int) -> int:
    if not PORT_MIN <= value <= PORT_MAX:
        raise Invalid(where, f"{value} is not a port ({PORT_MIN}-{PORT_MAX})")
    return value


def _ordered_handlers(where: str, handlers: Sequence[str]) -> tuple[str, ...]:
    unknown = [h for h in handlers if h not in HANDLER_ORDER]
    if unknown:
        raise Invalid(where, f"unknown handler '{unknown[0]}' (known: tls, http, redirect)")
    for handler in HANDLER_ORDER:
        if list(handlers).count(handler) > 1:
            raise Invalid(where, f"handler '{handler}' is listed more than once")
    return tuple(h for h in HANDLER_ORDER if h in handlers)


def check_tcp_handlers(where: str, port: int, destination_port: int, hs: tuple[str, ...]) -> None:
    """The publishing rules of seed 000, one clear sentence per broken rule."""
    shown = "+".join(hs) or "none"
    if port == HTTP_PORT:
        if HTTP not in hs or TLS in hs:
            raise Invalid(where, f"port 80 must have 'http' and must not have 'tls' (got {shown})")
        if REDIRECT in hs and destination_port != HTTPS_PORT:
            raise Invalid(
                where, f"'redirect' on port 80 redirects to 443, not to {destination_port}"
            )
        return
    if REDIRECT in hs:
        raise Invalid(where, f"'redirect' is allowed only on port 80 (got port {port})")
    if port == HTTPS_PORT:
        if HTTP not in hs or TLS not in hs:
            raise Invalid(where, f"port 443 must have both 'tls' and 'http' (got {shown})")
        return
    if TLS not in hs or HTTP in hs:
        raise Invalid(where, f"port {port} must have 'tls' and must not have 'http' (got {shown})")


def normalize_service(where: str, spec: ServiceSpec, user_ips: Collection[str]) -> Service:
    """Apply the port, protocol and handler rules to one service."""
    port = _check_port(f"{where}.port", spec.port)
    destination = port if spec.destination_port is None else spec.destination_port
    _check_port(f"{where}.destination_port", destination)
    if spec.protocol not in (TCP, UDP):
        raise Invalid(f"{where}.protocol", f"'{spec.protocol}' is not tcp or udp")
    if spec.protocol == UDP:
        if spec.handlers:
            raise Invalid(f"{where}.handlers", "udp services take no handlers")
        if not spec.ip:
            raise Invalid(f"{where}.ip", "a udp service needs 'ip', one of your assigned addresses")
        if spec.ip not in user_ips:
            raise Invalid(f"{where}.ip", f"{spec.ip} is not one of your assigned addresses")
        return Service(port, destination, UDP, (), spec.ip)
    if spec.ip is not None:
        raise Invalid(f"{where}.ip", "'ip' is only for udp services")
    if spec.handlers is None:
        handlers = default_handlers(port, destination)
    else:
        handlers = _ordered_handlers(f"{where}.handlers", spec.handlers)
    check_tcp_handlers(f"{where}.handlers", port, destination, handlers)
    return Service(port, destination, TCP, handlers, None)


def check_services(services: Sequence[Service]) -> None:
    """Group-level rules: at least one, each port once per protocol, redirects have a target."""
    if not services:
        raise Invalid("services", "at least one service is required")
    if len(services) > SERVICES_MAX:
        raise Invalid("services", f"at most {SERVICES_MAX} services are allowed")
    seen: set[tuple[int, str]] = set()
    for service in services:
        if service.key in seen:
            raise Invalid("services", f"port {service.port}/{service.protocol} is listed twice")
        seen.add(service.key)
    if any(REDIRECT in s.handlers for s in services) and (HTTPS_PORT, TCP) not in seen:
        raise Invalid("services", "port 80 redirects to 443, so the group must publish 443")


# --- domains ------------------------------------------------------------------------------


def normalize_domain(where: str, spec: DomainSpec, platform_domain: str) -> Domain:
    """`name.` is an FQDN taken as is; anything else is a subdomain of the platform domain."""
    if spec.name.endswith("."):
        fqdn = names.check_fqdn(f"{where}.name", spec.name[:-1])
        if fqdn == platform_domain or fqdn == f"www.{platform_domain}":
            raise Invalid(f"{where}.name", f"'{fqdn}' is reserved by the platform")
        return Domain(fqdn, spec.certificate)
    label = names.check_label(f"{where}.name", spec.name)
    if spec.certificate is not None:
        raise Invalid(
            f"{where}.certificate",
            "a subdomain of the platform domain uses the platform certificate; "
            "certificates are for full domain names (ending in '.')",
        )
    if label == "www":
        raise Invalid(f"{where}.name", f"'www.{platform_domain}' is reserved by the platform")
    return Domain(f"{label}.{platform_domain}", None)


def check_domains(domains: Sequence[Domain]) -> None:
    if len(domains) > DOMAINS_MAX:
        raise Invalid("domains", f"at most {DOMAINS_MAX} domains are allowed")
    fqdns = [d.fqdn for d in domains]
    for fqdn in fqdns:
        if fqdns.count(fqdn) > 1:
            raise Invalid("domains", f"'{fqdn}' is listed twice")


def generated_domain(
    name: str, named_by_user: bool, platform_domain: str, rng: random.Random
) -> Domain:
    """The FQDN a group gets when it asks for none: its random name, or `<name>-<8 alnum>`
    so that a chosen name cannot be used to squat another user's hostname."""
    if not named_by_user:
        return Domain(f"{name}.{platform_domain}")
    label = f"{name[: names.NAME_MAX - 9]}-{names.suffix(rng)}"
    return Domain(f"{label}.{platform_domain}")


# --- limits, autokill, whole groups --------------------------------------------------------


def check_limits(soft_limit: int, hard_limit: int) -> None:
    for where, value in (("soft_limit", soft_limit), ("hard_limit", hard_limit)):
        if not LIMIT_MIN <= value <= LIMIT_MAX:
            raise Invalid(where, f"{value} is out of range ({LIMIT_MIN}-{LIMIT_MAX})")
    if soft_limit > hard_limit:
        raise Invalid("soft_limit", f"{soft_limit} must not exceed hard_limit ({hard_limit})")


def check_autokill(time_ms: int) -> int:
    if not 0 <= time_ms <= AUTOKILL_MAX_MS:
        raise Invalid("autokill.time_ms", f"{time_ms} is out of range (0-{AUTOKILL_MAX_MS})")
    return time_ms


def check_config(config: GroupConfig) -> GroupConfig:
    """Every group rule at once: run on create and on the result of each PATCH."""
    check_services(config.services)
    check_domains(config.domains)
    check_limits(config.soft_limit, config.hard_limit)
    check_autokill(config.autokill_time_ms)
    return config


# --- PATCH (set / add / del) ----------------------------------------------------------------

SET, ADD, DEL = "set", "add", "del"
PROPS = ("services", "domains", "soft_limit", "hard_limit", "autokill")


@dataclass(frozen=True)
class Patch:
    """One typed update triple. `value` is already parsed for the property:
    services -> tuple[Service] (set/add) or tuple[(port, protocol|None)] (del);
    domains -> tuple[Domain] (set/add) or tuple[fqdn] (del); limits -> int | None;
    autokill -> int | None (time_ms)."""

    prop: str
    op: str
    value: object = None


def _del_services(
    current: tuple[Service, ...], keys: Iterable[tuple[int, str | None]]
) -> tuple[Service, ...]:
    remaining = list(current)
    for port, protocol in keys:
        match = [s for s in remaining if s.port == port and protocol in (None, s.protocol)]
        if not match:
            shown = f"{port}/{protocol}" if protocol else str(port)
            raise Invalid("value", f"port {shown} is not published by this group")
        remaining = [s for s in remaining if s not in match]
    return tuple(remaining)


def _del_domains(current: tuple[Domain, ...], fqdns: Iterable[str]) -> tuple[Domain, ...]:
    remaining = list(current)
    for fqdn in fqdns:
        if not any(d.fqdn == fqdn for d in remaining):
            raise Invalid("value", f"domain '{fqdn}' is not attached to this group")
        remaining = [d for d in remaining if d.fqdn != fqdn]
    return tuple(remaining)


def _merge_services(
    current: tuple[Service, ...], added: tuple[Service, ...]
) -> tuple[Service, ...]:
    taken = {s.key for s in current}
    for service in added:
        if service.key in taken:
            raise Invalid("value", f"port {service.port}/{service.protocol} is already published")
    return current + added


def apply_patch(config: GroupConfig, patch: Patch) -> GroupConfig:
    """Apply one triple. `set` replaces (no value clears), `add` merges, `del` removes members."""
    prop, op, value = patch.prop, patch.op, patch.value
    if prop in ("soft_limit", "hard_limit"):
        return _patch_limit(config, prop, op, cast(int | None, value))
    if prop == "autokill":
        if op == DEL:
            return replace(config, autokill_time_ms=0) if value else config
        return replace(config, autokill_time_ms=cast(int | None, value) or 0)
    if prop == "services":
        if op == DEL:
            keys = cast(Iterable[tuple[int, str | None]], value or ())
            return replace(config, services=_del_services(config.services, keys))
        services = tuple(cast(Iterable[Service], value or ()))
        if op == ADD:
            services = _merge_services(config.services, services)
        return replace(config, services=services)
    if prop == "domains":
        if op == DEL:
            fqdns = cast(Iterable[str], value or ())
            return replace(config, domains=_del_domains(config.domains, fqdns))
        domains = tuple(cast(Iterable[Domain], value or ()))
        return replace(config, domains=config.domains + domains if op == ADD else domains)
    raise Invalid("prop", f"'{prop}' cannot be changed (one of: {', '.join(PROPS)})")


def _patch_limit(config: GroupConfig, prop: str, op: str, value: int | None) -> GroupConfig:
    if op != SET:
        raise Invalid("op", f"{prop} is a number: only 'set' applies to it")
    if prop == "soft_limit":
        return replace(config, soft_limit=SOFT_LIMIT_DEFAULT if value is None else value)
    return replace(config, hard_limit=HARD_LIMIT_DEFAULT if value is None else value)


# --- creating a group ------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupSpec:
    """A create request, typed but not yet checked against the rules."""

    services: Sequence[ServiceSpec]
    name: str | None = None
    domains: Sequence[DomainSpec] | None = None
    soft_limit: int | None = None
    hard_limit: int | None = None
    autokill_time_ms: int | None = None


def normalize_services(
    specs: Sequence[ServiceSpec], user_ips: Collection[str], where: str = "services"
) -> tuple[Service, ...]:
    return tuple(normalize_service(f"{where}.{i}", s, user_ips) for i, s in enumerate(specs))


def normalize_domains(
    specs: Sequence[DomainSpec], platform_domain: str, where: str = "domains"
) -> tuple[Domain, ...]:
    return tuple(normalize_domain(f"{where}.{i}", s, platform_domain) for i, s in enumerate(specs))


def new_group(
    spec: GroupSpec,
    *,
    user: str,
    uuid: str,
    now: datetime,
    persistent: bool,
    platform_domain: str,
    user_ips: Collection[str],
    rng: random.Random,
) -> ServiceGroup:
    """Check a create request and build the group it describes (names and FQDN included)."""
    name = names.check_name("name", spec.name) if spec.name is not None else None
    services = normalize_services(spec.services, user_ips)
    domains = normalize_domains(spec.domains, platform_domain) if spec.domains else ()
    group_name = name or names.random_group_name(rng)
    if not domains:
        domains = (generated_domain(group_name, name is not None, platform_domain, rng),)
    config = check_config(
        GroupConfig(
            services=services,
            domains=domains,
            soft_limit=SOFT_LIMIT_DEFAULT if spec.soft_limit is None else spec.soft_limit,
            hard_limit=HARD_LIMIT_DEFAULT if spec.hard_limit is None else spec.hard_limit,
            autokill_time_ms=check_autokill(spec.autokill_time_ms or 0),
        )
    )
    return ServiceGroup(
        uuid=uuid,
        user=user,
        name=group_name,
        created_at=now,
        persistent=persistent,
        config=config,
        empty_since=now.timestamp(),
    )
