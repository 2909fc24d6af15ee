"""One /16 of the loopback pool per live daemon on the host, held with a lock file.

Why: in loopback mode an instance's private address is a 127.x.y.z of its daemon's /16, and
readiness is "the destination port accepts". Two daemons on one host with the same /16 (picked
by a hash of the data directory: one chance in 128 per pair, and the test suite runs dozens)
gave two instances the same address: the second app failed to bind while its readiness check
saw the first one's port, and its traffic went to the other daemon's app.

How: each /16 has a lock file in a host-wide directory; a daemon holds an exclusive `flock` on
the one it uses for as long as it runs. The kernel drops the lock when the process ends, kill -9
included, so a stale file never holds a pool. The descriptor is not inherited (PEP 446), so
instances that outlive a crashed daemon do not keep its lock. The /16 it got is written into the
data directory and tried first next time: instances adopted after a restart keep addresses of
the pool that new instances get too.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import logging
import os
import tempfile
from pathlib import Path

from .ipam import LOOPBACK_POOL, daemon_pools

log = logging.getLogger("portway.runtime")

#: Shared by every daemon and every user on the host, hence the sticky, world-writable mode.
LOCK_DIR = Path(tempfile.gettempdir()) / "portway-address-pools"
#: In the data directory: the /16 this daemon held last.
RECORD = "address_pool"


class PoolClaimError(Exception):
    """No /16 could be claimed; the message says why and where."""


class PoolClaim:
    """A /16 held for as long as this object's descriptor is open."""

    def __init__(self, network: ipaddress.IPv4Network, fd: int) -> None:
        self.network = network
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def claim_pool(seed: bytes, data_dir: Path, lock_dir: Path = LOCK_DIR) -> PoolClaim:
    """Claim the first free /16 in `ipam.daemon_pools` order and record it in `data_dir`."""
    _make_lock_dir(lock_dir)
    for network in daemon_pools(seed, _recorded(data_dir / RECORD)):
        fd = _try_lock(lock_dir / f"{network.network_address}.lock")
        if fd is not None:
            _record(data_dir / RECORD, network)
            return PoolClaim(network, fd)
    raise PoolClaimError(
        f"every /16 of {LOOPBACK_POOL} is held by another Portway daemon on this host "
        f"(their locks are in {lock_dir}); stop one to start this one"
    )


def _make_lock_dir(lock_dir: Path) -> None:
    try:
        lock_dir.mkdir(mode=0o1777, exist_ok=True)
        if lock_dir.stat().st_uid == os.geteuid():
            lock_dir.chmod(0o1777)  # past the umask: daemons of other users lock here too
    except OSError as err:
        raise PoolClaimError(
            f"cannot use {lock_dir} for the address-pool locks: {err.strerror}"
        ) from None


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding `path`'s exclusive lock, or None if another daemon holds it."""
    try:
        # Read-only is enough for flock, and opens a file another user created (mode 0644).
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as err:
        raise PoolClaimError(f"cannot open the address-pool lock {path}: {err.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise PoolClaimError(f"cannot lock {path}: {err.strerror}") from None
    return fd


def _recorded(path: Path) -> ipaddress.IPv4Network | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        log.warning("cannot read %s (%s); picking an address pool afresh", path, err.strerror)
        return None
    try:
        network = ipaddress.IPv4Network(text)
    except ValueError:
        log.warning("%s holds %r, not a network; picking an address pool afresh", path, text)
        return None
    return network


def _record(path: Path, network: ipaddress.IPv4Network) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{network}\n")
    tmp.replace(path)
