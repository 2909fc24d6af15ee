"""The frozen view of the configuration that the data plane serves (architecture.md rule 5).

Control builds a `Snapshot` from the store after every change that matters to traffic and hands
it to the gateway before the API call that caused it answers (the apply barrier). The gateway
never reads the store: it serves the last Snapshot it was given, and a connection keeps the
routes it began with.

Shape: one `Listener` per published (public) port. A listener knows its mode, from the port's
handlers (seed 000): port 443 (`tls+http`) and port 80 (`http`) speak HTTP and are balanced per
request; every other port is `tls` (terminated at the gateway) and balanced per connection. On
a listener, hosts (the `Host` header in HTTP mode, SNI in TCP mode) pick a `Route`, which is one
group as seen on that port: where to send traffic (`Endpoint`s of the eligible instances), and
the group's limits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .instance import Instance, State
from .service_group import HTTP, REDIRECT, TCP, TLS, ServiceGroup

HTTP_MODE, TCP_MODE = "http", "tcp"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One instance as a port of its group reaches it: `host:port` on the private network."""

    instance: str  # uuid: the key of in-flight counts, summed over every port of the group
    name: str
    host: str
    port: int
    # `host:port`, made once: the key of the gateway's pool of idle connections, looked up
    # twice per request. A str keeps its hash; a `(host, port)` tuple is built and hashed anew.
    address: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", f"{self.host}:{self.port}")


@dataclass(frozen=True, slots=True)
class Route:
    """One group as one of its published ports serves it."""

    group: str  # uuid
    group_name: str
    user: str
    port: int  # the public port
    redirect: bool  # port 80 with `redirect`: 301 to https, never proxied
    # Instances that may take new work: running, attached, not draining (semantics.md).
    endpoints: tuple[Endpoint, ...]
    # Instances of the group that are asleep and could be woken (the scale-to-zero issue).
    standby: tuple[Endpoint, ...]
    soft_limit: int
    hard_limit: int


@dataclass(frozen=True, slots=True)
class Listener:
    """A public port and the groups that publish it, by the hosts they answer to."""

    port: int
    mode: str  # HTTP_MODE or TCP_MODE
    tls: bool
    routes: Mapping[str, Route]
    # The route a connection without a name gets: the only group on the port, if only one.
    default: Route | None

    def route(self, host: str | None) -> Route | None:
        """A named host routes only to the group that has it; no name (a TLS client that sent
        no SNI) reaches the port's only group, and nothing when several share the port."""
        return self.routes.get(host) if host else self.default


@dataclass(frozen=True)
class Snapshot:
    version: int
    listeners: Mapping[int, Listener] = field(default_factory=dict)

    @property
    def hosts(self) -> frozenset[str]:
        """Every name some TLS listener answers to: the certificates the gateway must hold."""
        return frozenset(h for lst in self.listeners.values() if lst.tls for h in lst.routes)


EMPTY = Snapshot(version=0)


def eligible(instance: Instance) -> bool:
    """May take new requests or connections: running (not draining, stopping or asleep)."""
    return instance.state is State.RUNNING


def build(version: int, groups: Iterable[ServiceGroup], instances: Iterable[Instance]) -> Snapshot:
    """The Snapshot for these groups and instances. Pure: the same input gives the same value.

    A group's FQDNs are unique across all users (control checks that on every write), so two
    routes never claim one host on one port."""
    members: dict[str, list[Instance]] = {}
    for instance in instances:
        if instance.group_uuid is not None:
            members.setdefault(instance.group_uuid, []).append(instance)
    ports: dict[int, dict[str, Route]] = {}
    modes: dict[int, tuple[str, bool]] = {}
    for group in groups:
        attached = members.get(group.uuid, [])
        for service in group.config.services:
            if service.protocol != TCP:
                continue  # UDP is served by no listener yet
            route = _route(
                group, service.port, service.destination_port, service.handlers, attached
            )
            modes[service.port] = _mode(service.handlers)
            hosts = ports.setdefault(service.port, {})
            for domain in group.config.domains:
                hosts[domain.fqdn] = route
    listeners: dict[int, Listener] = {}
    for port, hosts in ports.items():
        mode, tls = modes[port]
        groups_here = {r.group for r in hosts.values()}
        default = next(iter(hosts.values())) if len(groups_here) == 1 else None
        listeners[port] = Listener(port, mode, tls, MappingProxyType(hosts), default)
    return Snapshot(version, MappingProxyType(listeners))


def _mode(handlers: tuple[str, ...]) -> tuple[str, bool]:
    return (HTTP_MODE if HTTP in handlers else TCP_MODE), TLS in handlers


def _route(
    group: ServiceGroup,
    port: int,
    destination_port: int,
    handlers: tuple[str, ...],
    attached: list[Instance],
) -> Route:
    def endpoint(i: Instance) -> Endpoint:
        return Endpoint(i.uuid, i.name, i.private_ip, destination_port)

    return Route(
        group=group.uuid,
        group_name=group.name,
        user=group.user,
        port=port,
        redirect=REDIRECT in handlers,
        endpoints=tuple(endpoint(i) for i in attached if eligible(i)),
        standby=tuple(endpoint(i) for i in attached if i.state is State.STANDBY),
        soft_limit=group.config.soft_limit,
        hard_limit=group.config.hard_limit,
    )
