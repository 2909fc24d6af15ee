"""Claiming a /16 of the loopback pool: real lock files, real flock, real holder processes."""

from __future__ import annotations

import ipaddress
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from portway.runtime.ipam import daemon_pools
from portway.runtime.pool_claim import RECORD, PoolClaim, PoolClaimError, claim_pool

SEED = b"\x00\x05"
PREFERRED, NEXT = daemon_pools(SEED)[:2]
WAIT_S = 10.0

# Holds the lock of the pool named in argv[2] under argv[1], says so, then sleeps.
HOLDER = """
import fcntl, os, sys, time
fd = os.open(os.path.join(sys.argv[1], sys.argv[2] + ".lock"), os.O_RDONLY | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("held", flush=True)
time.sleep(60)
"""


@pytest.fixture
def claims() -> Iterator[list[PoolClaim]]:
    made: list[PoolClaim] = []
    yield made
    for claim in made:
        claim.release()


def _data_dir(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return folder


def test_two_daemons_with_the_same_seed_get_different_pools(
    tmp_path: Path, claims: list[PoolClaim]
) -> None:
    locks = tmp_path / "locks"
    claims.append(claim_pool(SEED, _data_dir(tmp_path, "a"), locks))
    claims.append(claim_pool(SEED, _data_dir(tmp_path, "b"), locks))
    assert [c.network for c in claims] == [PREFERRED, NEXT]
    assert (tmp_path / "b" / RECORD).read_text() == f"{NEXT}\n"


def test_a_released_pool_is_claimed_again(tmp_path: Path, claims: list[PoolClaim]) -> None:
    locks = tmp_path / "locks"
    first = claim_pool(SEED, _data_dir(tmp_path, "a"), locks)
    first.release()
    first.release()  # twice is harmless
    claims.append(claim_pool(SEED, _data_dir(tmp_path, "b"), locks))
    assert claims[0].network == PREFERRED


def test_the_recorded_pool_is_tried_before_the_seeds(
    tmp_path: Path, claims: list[PoolClaim]
) -> None:
    data = _data_dir(tmp_path, "a")
    (data / RECORD).write_text("127.200.0.0/16\n")
    claims.append(claim_pool(SEED, data, tmp_path / "locks"))
    assert claims[0].network == ipaddress.IPv4Network("127.200.0.0/16")


@pytest.mark.parametrize("text", ["garbage", "10.0.0.0/16", "127.200.0.1/16", ""])
def test_a_damaged_or_foreign_record_is_replaced(
    tmp_path: Path, claims: list[PoolClaim], text: str
) -> None:
    data = _data_dir(tmp_path, "a")
    (data / RECORD).write_text(text)
    claims.append(claim_pool(SEED, data, tmp_path / "locks"))
    assert claims[0].network == PREFERRED
    assert (data / RECORD).read_text() == f"{PREFERRED}\n"


def test_a_lock_held_by_another_process_is_passed_over_until_it_is_killed(
    tmp_path: Path, claims: list[PoolClaim]
) -> None:
    locks = tmp_path / "locks"
    locks.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(locks), str(PREFERRED.network_address)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        claims.append(claim_pool(SEED, _data_dir(tmp_path, "a"), locks))
        assert claims[0].network == NEXT
        holder.send_signal(signal.SIGKILL)  # as a daemon killed -9: the kernel drops the lock
        holder.wait(WAIT_S)
        claims.append(claim_pool(SEED, _data_dir(tmp_path, "b"), locks))
        assert claims[1].network == PREFERRED
    finally:
        holder.kill()
        holder.wait(WAIT_S)


def test_the_lock_is_not_inherited_by_child_processes(
    tmp_path: Path, claims: list[PoolClaim]
) -> None:
    """Instances outlive a crashed daemon; they must not keep its pool locked."""
    locks = tmp_path / "locks"
    claim = claim_pool(SEED, _data_dir(tmp_path, "a"), locks)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], close_fds=False)
    try:
        claim.release()  # the child still runs: had it inherited the lock, it would hold it
        claims.append(claim_pool(SEED, _data_dir(tmp_path, "b"), locks))
        assert claims[0].network == PREFERRED
    finally:
        child.kill()
        child.wait(WAIT_S)


def test_no_free_pool_is_a_clear_error(tmp_path: Path, claims: list[PoolClaim]) -> None:
    locks = tmp_path / "locks"
    for index in range(len(daemon_pools(SEED))):
        claims.append(claim_pool(SEED, _data_dir(tmp_path, f"d{index}"), locks))
    assert len({c.network for c in claims}) == 128
    with pytest.raises(PoolClaimError, match="held by another Portway daemon") as caught:
        claim_pool(SEED, _data_dir(tmp_path, "last"), locks)
    assert str(locks) in str(caught.value)


def test_a_lock_directory_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PoolClaimError) as caught:
        claim_pool(SEED, _data_dir(tmp_path, "a"), blocker / "locks")
    assert str(blocker / "locks") in str(caught.value)


def test_the_lock_directory_is_shared_by_every_user(
    tmp_path: Path, claims: list[PoolClaim]
) -> None:
    locks = tmp_path / "locks"
    claims.append(claim_pool(SEED, _data_dir(tmp_path, "a"), locks))
    assert locks.stat().st_mode & 0o7777 == 0o1777
