"""Seed 000's publishing rules, table-driven: every rule accepting and rejecting."""

from __future__ import annotations

import random

import pytest

from portway.model.errors import Invalid
from portway.model.service_group import (
    DomainSpec,
    GroupConfig,
    GroupSpec,
    Patch,
    Service,
    ServiceSpec,
    apply_patch,
    check_config,
    check_limits,
    new_group,
    normalize_domain,
    normalize_service,
)

USER_IPS = frozenset({"203.0.113.7"})

ACCEPTED = [
    # (port, destination, protocol, handlers as sent, handlers as stored)
    (443, 8080, "tcp", ["tls", "http"], ("tls", "http")),
    (443, 8080, "tcp", ["http", "tls"], ("tls", "http")),  # order-insensitive, stored canonical
    (443, 8080, "tcp", None, ("tls", "http")),  # omitted: the only valid set for 443
    (80, 443, "tcp", ["http", "redirect"], ("http", "redirect")),
    (80, 443, "tcp", None, ("http", "redirect")),  # omitted and pointing at 443: the redirect
    (80, 8080, "tcp", ["http"], ("http",)),  # plain HTTP on 80
    (80, 8080, "tcp", None, ("http",)),
    (10000, 10000, "tcp", ["tls"], ("tls",)),  # any other port: TLS-terminated TCP
    (4443, 5, "tcp", ["tls"], ("tls",)),  # the legacy tunnel's control port
    (8443, 8080, "tcp", None, ("tls",)),
    (1, 65535, "tcp", ["tls"], ("tls",)),  # both ends of the port range
    (7777, 8080, "udp", None, ()),  # udp with an assigned address, no handlers
    (443, 443, "udp", [], ()),  # QUIC-style 443/udp is a different service from 443/tcp
]

REJECTED = [
    # (port, destination, protocol, handlers, words the message must contain)
    (80, 8080, "tcp", ["tls", "http"], "port 80 must have 'http' and must not have 'tls'"),
    (80, 8080, "tcp", ["tls"], "port 80 must have 'http'"),
    (80, 8080, "tcp", [], "port 80 must have 'http'"),
    (80, 8080, "tcp", ["http", "redirect"], "redirects to 443, not to 8080"),
    (443, 8080, "tcp", ["tls"], "port 443 must have both 'tls' and 'http'"),
    (443, 8080, "tcp", ["http"], "port 443 must have both 'tls' and 'http'"),
    (443, 8080, "tcp", [], "port 443 must have both"),
    (443, 8080, "tcp", ["tls", "http", "redirect"], "'redirect' is allowed only on port 80"),
    (8080, 8080, "tcp", ["http"], "port 8080 must have 'tls' and must not have 'http'"),
    (8080, 8080, "tcp", ["tls", "http"], "must not have 'http'"),
    (8080, 8080, "tcp", [], "port 8080 must have 'tls'"),
    (8080, 8080, "tcp", ["tls", "redirect"], "'redirect' is allowed only on port 80"),
    (10000, 10000, "tcp", ["tls", "tls"], "listed more than once"),
    (10000, 10000, "tcp", ["gzip"], "unknown handler 'gzip'"),
    (0, 8080, "tcp", ["tls"], "0 is not a port"),
    (65536, 8080, "tcp", ["tls"], "65536 is not a port"),
    (8443, 0, "tcp", ["tls"], "destination_port"),
    (8443, 70000, "tcp", ["tls"], "destination_port"),
    (8443, 8080, "sctp", ["tls"], "'sctp' is not tcp or udp"),
    (7777, 8080, "udp", ["tls"], "udp services take no handlers"),
]


@pytest.mark.parametrize(("port", "dest", "proto", "sent", "stored"), ACCEPTED)
def test_accepted(
    port: int, dest: int, proto: str, sent: list[str] | None, stored: tuple[str, ...]
) -> None:
    ip = "203.0.113.7" if proto == "udp" else None
    service = normalize_service("services.0", ServiceSpec(port, dest, proto, sent, ip), USER_IPS)
    assert service == Service(port, dest, proto, stored, ip)


@pytest.mark.parametrize(("port", "dest", "proto", "handlers", "message"), REJECTED)
def test_rejected(port: int, dest: int, proto: str, handlers: list[str], message: str) -> None:
    ip = "203.0.113.7" if proto == "udp" else None
    with pytest.raises(Invalid) as caught:
        normalize_service("services.0", ServiceSpec(port, dest, proto, handlers, ip), USER_IPS)
    assert message in caught.value.message
    assert caught.value.field.startswith("services.0")


def test_destination_defaults_to_port() -> None:
    assert normalize_service("s", ServiceSpec(9000), USER_IPS).destination_port == 9000


@pytest.mark.parametrize(
    ("ip", "message"),
    [(None, "a udp service needs 'ip'"), ("198.51.100.1", "not one of your assigned addresses")],
)
def test_udp_needs_one_of_the_users_addresses(ip: str | None, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        normalize_service("s", ServiceSpec(7777, 7777, "udp", None, ip), USER_IPS)


def test_ip_only_for_udp() -> None:
    with pytest.raises(Invalid, match="only for udp"):
        normalize_service("s", ServiceSpec(8443, 8443, "tcp", ["tls"], "203.0.113.7"), USER_IPS)


def _svc(port: int, dest: int, *handlers: str, proto: str = "tcp") -> Service:
    return Service(port, dest, proto, handlers)


@pytest.mark.parametrize(
    ("services", "message"),
    [
        ((), "at least one service is required"),
        (
            (_svc(443, 8080, "tls", "http"), _svc(443, 9090, "tls", "http")),
            "port 443/tcp is listed twice",
        ),
        ((_svc(80, 443, "http", "redirect"),), "the group must publish 443"),
        (tuple(_svc(p, p, "tls") for p in range(1000, 1254)), "at most 253"),
    ],
)
def test_group_level_service_rules(services: tuple[Service, ...], message: str) -> None:
    with pytest.raises(Invalid, match=message):
        check_config(GroupConfig(services=services, domains=()))


def test_same_port_on_tcp_and_udp_is_two_services() -> None:
    config = GroupConfig((_svc(443, 8080, "tls", "http"), _svc(443, 443, proto="udp")), ())
    assert check_config(config) is config


@pytest.mark.parametrize(
    ("soft", "hard", "ok"),
    [
        (1, 65535, True),
        (5, 5, True),
        (5, 4, False),
        (0, 10, False),
        (1, 65536, False),
        (65535, 65535, True),
    ],
)
def test_limits(soft: int, hard: int, ok: bool) -> None:
    if ok:
        check_limits(soft, hard)
    else:
        with pytest.raises(Invalid):
            check_limits(soft, hard)


def test_soft_above_hard_names_both() -> None:
    with pytest.raises(Invalid) as caught:
        check_limits(6, 5)
    assert caught.value.message == "soft_limit: 6 must not exceed hard_limit (5)"


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("web", True),
        ("a", True),
        ("my-app-2", True),
        ("Web", False),
        ("-web", False),
        ("web-", False),
        ("we_b", False),
        ("a" * 64, False),
        ("", False),
        ("9bfe76ea-2679-482a-954e-577de7d122b3", False),
    ],
)
def test_names(name: str, ok: bool) -> None:
    from portway.model.names import check_name

    if ok:
        assert check_name("name", name) == name
    else:
        with pytest.raises(Invalid, match=r"^name: "):
            check_name("name", name)


@pytest.mark.parametrize(
    ("name", "fqdn"),
    [
        ("my-app", "my-app.apps.test"),
        ("www.example.com.", "www.example.com"),
        ("WWW.Example.COM.", "www.example.com"),
        ("*.example.com.", "*.example.com"),
    ],
)
def test_domains(name: str, fqdn: str) -> None:
    assert normalize_domain("domains.0", DomainSpec(name), "apps.test").fqdn == fqdn


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bad_label", "not a valid subdomain"),
        ("-x", "not a valid subdomain"),
        ("a" * 64, "not a valid subdomain"),
        ("localhost.", "not a fully qualified domain name"),
        ("exa mple.com.", "not a valid domain name"),
        ("apps.test.", "reserved"),
        ("www", "reserved"),
    ],
)
def test_bad_domains(name: str, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        normalize_domain("domains.0", DomainSpec(name), "apps.test")


def test_random_names_and_generated_fqdns() -> None:
    group = new_group(
        GroupSpec([ServiceSpec(443, 8080)]),
        user="u",
        uuid="x",
        now=__import__("datetime").datetime(2026, 1, 1),
        persistent=True,
        platform_domain="apps.test",
        user_ips=(),
        rng=random.Random(7),
    )
    word, noun, tail = group.name.split("-")
    assert word and noun and len(tail) == 8
    assert group.config.domains[0].fqdn == f"{group.name}.apps.test"
    named = new_group(
        GroupSpec([ServiceSpec(443, 8080)], name="web"),
        user="u",
        uuid="y",
        now=__import__("datetime").datetime(2026, 1, 1),
        persistent=True,
        platform_domain="apps.test",
        user_ips=(),
        rng=random.Random(7),
    )
    label = named.config.domains[0].fqdn.removesuffix(".apps.test")
    assert named.name == "web" and label.startswith("web-") and len(label) == len("web-") + 8


def test_patch_set_add_del() -> None:
    base = GroupConfig((_svc(443, 8080, "tls", "http"),), ())
    added = apply_patch(base, Patch("services", "add", (_svc(8443, 8443, "tls"),)))
    assert [s.port for s in added.services] == [443, 8443]
    removed = apply_patch(added, Patch("services", "del", [(8443, None)]))
    assert removed.services == base.services
    with pytest.raises(Invalid, match="already published"):
        apply_patch(added, Patch("services", "add", (_svc(8443, 9000, "tls"),)))
    with pytest.raises(Invalid, match="not published"):
        apply_patch(base, Patch("services", "del", [(9999, None)]))
    with pytest.raises(Invalid, match="only 'set'"):
        apply_patch(base, Patch("soft_limit", "add", 3))
    assert apply_patch(base, Patch("hard_limit", "set", None)).hard_limit == 65535
