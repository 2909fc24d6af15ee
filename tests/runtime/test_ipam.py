"""Private addresses: per-user subnets from the loopback pool, lowest free address first."""

from __future__ import annotations

import ipaddress

import pytest

from portway.model.errors import ErrorCode, ItemError
from portway.runtime.ipam import allocate, user_subnet


def test_users_get_disjoint_subnets_inside_loopback() -> None:
    a, b = user_subnet(0), user_subnet(1)
    assert not a.overlaps(b)
    assert a.subnet_of(ipaddress.IPv4Network("127.0.0.0/8"))
    assert str(a) == "127.128.0.0/24" and str(b) == "127.128.1.0/24"


def test_allocation_skips_the_gateway_and_reuses_freed_addresses() -> None:
    subnet = user_subnet(3)
    first = allocate(subnet, set())
    assert first == "127.128.3.2"
    second = allocate(subnet, {first})
    assert second == "127.128.3.3"
    assert allocate(subnet, {second}) == first


def test_a_full_subnet_is_a_clear_error() -> None:
    subnet = user_subnet(0)
    used = {str(h) for h in subnet.hosts()}
    with pytest.raises(ItemError) as caught:
        allocate(subnet, used)
    assert caught.value.code == ErrorCode.NO_FREE and "no free address" in caught.value.message


def test_the_pool_has_an_end() -> None:
    with pytest.raises(ItemError):
        user_subnet(1 << 15)


def test_a_daemon_tries_every_loopback_16_starting_from_its_seed() -> None:
    from portway.runtime.ipam import LOOPBACK_POOL, daemon_pools

    pools = daemon_pools(b"\x00\x05")
    assert len(set(pools)) == 128
    assert all(p.prefixlen == 16 and p.subnet_of(LOOPBACK_POOL) for p in pools)
    assert [str(p) for p in pools[:2]] == ["127.133.0.0/16", "127.134.0.0/16"]
    assert str(pools[-1]) == "127.132.0.0/16"  # wraps round to the ones before the seed's
    assert user_subnet(1, pools[0]) == ipaddress.IPv4Network("127.133.1.0/24")
    assert daemon_pools(b"\x00\x06")[0] != pools[0]


def test_the_pool_a_daemon_had_comes_first_and_a_foreign_one_is_ignored() -> None:
    from portway.runtime.ipam import daemon_pools

    had = ipaddress.IPv4Network("127.200.0.0/16")
    pools = daemon_pools(b"\x00\x05", had)
    assert pools[0] == had and len(set(pools)) == 128
    assert pools[1:3] == daemon_pools(b"\x00\x05")[:2]
    assert daemon_pools(b"\x00\x05", ipaddress.IPv4Network("10.0.0.0/16")) == daemon_pools(
        b"\x00\x05"
    )
