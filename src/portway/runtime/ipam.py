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


def daemon_pool(seed: bytes) -> ipaddress.IPv4Network:
    """A /16 of the loopback pool picked by `seed` (the data directory), so that two daemons
    on one host (tests, say) hand out different addresses: 256 users of 253 instances each."""
    index = int.from_bytes(seed[:2], "big") % 2 ** (DAEMON_POOL_PREFIX - LOOPBACK_POOL.prefixlen)
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
