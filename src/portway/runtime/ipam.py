"""Private addresses (pure): one subnet per user from a pool, one address per instance.

Loopback mode carves the pool out of 127.0.0.0/8, where Linux answers every address without any
set-up, so each instance can bind its own 127.x.y.z. The first address of each subnet is kept
for the user's gateway/resolver, the last is the broadcast address."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection

from ..model.errors import ErrorCode, ItemError

LOOPBACK_POOL = ipaddress.IPv4Network("127.128.0.0/9")
SUBNET_PREFIX = 24
DAEMON_POOL_PREFIX = 16


def daemon_pools(
    seed: bytes, first: ipaddress.IPv4Network | None = None
) -> list[ipaddress.IPv4Network]:
    """Every /16 of the loopback pool, in the order a daemon tries to claim one: `first` (the
    one it had before), then the one `seed` (its data directory) picks, then the ones after it.
    Two daemons on one host must hold different /16s (runtime/pool_claim.py sees to it): the
    same address on both would let one's readiness check see the other's app. 256 users of 253
    instances each fit in one."""
    count = 2 ** (DAEMON_POOL_PREFIX - LOOPBACK_POOL.prefixlen)
    start = int.from_bytes(seed[:2], "big") % count
    pools = [_daemon_pool((start + step) % count) for step in range(count)]
    if first is not None and first in pools:
        pools.remove(first)
        pools.insert(0, first)
    return pools


def _daemon_pool(index: int) -> ipaddress.IPv4Network:
    first = int(LOOPBACK_POOL.network_address) + index * 2 ** (32 - DAEMON_POOL_PREFIX)
    return ipaddress.IPv4Network((first, DAEMON_POOL_PREFIX))


def user_subnet(index: int, pool: ipaddress.IPv4Network = LOOPBACK_POOL) -> ipaddress.IPv4Network:
    """The `index`-th subnet of the pool (users are numbered as they first need one)."""
    subnets = 2 ** (SUBNET_PREFIX - pool.prefixlen)
    if not 0 <= index < subnets:
        raise ItemError(ErrorCode.NO_FREE, "no private network is left for a new user")
    first = int(pool.network_address) + index * 2 ** (32 - SUBNET_PREFIX)
    return ipaddress.IPv4Network((first, SUBNET_PREFIX))


def allocate(subnet: ipaddress.IPv4Network, used: Collection[str]) -> str:
    """The lowest free instance address (skipping the gateway and broadcast)."""
    taken = set(used)
    hosts = list(subnet.hosts())
    for address in hosts[1:]:
        if str(address) not in taken:
            return str(address)
    raise ItemError(
        ErrorCode.NO_FREE, f"the private network {subnet} has no free address (253 instances)"
    )
