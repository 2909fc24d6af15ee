"""The hold-and-wake policy of `gateway.wake.Wakes`, with a waker the test completes by hand;
the same paths run for real in tests/e2e/test_scale_to_zero.py."""

from __future__ import annotations

import asyncio

import pytest

from portway.control.scaler import busy
from portway.gateway.wake import Held, Wakes, more_wakes_needed
from portway.model.instance import ScaleToZero
from portway.model.snapshot import Endpoint, Route


class HandWaker:
    def __init__(self) -> None:
        self.asked: dict[str, asyncio.Future[bool]] = {}

    def wake(self, user: str, instance: str) -> asyncio.Future[bool]:
        assert instance not in self.asked, "woken twice"
        self.asked[instance] = asyncio.get_running_loop().create_future()
        return self.asked[instance]


def _route(standby: int, soft_limit: int = 1) -> Route:
    sleepers = tuple(Endpoint(f"i{n}", f"i{n}", "127.0.0.1", 1) for n in range(standby))
    return Route("g", "grp", "alice", 80, False, (), sleepers, soft_limit, 100)


def _held(log: list[str], name: str, deadline: float = 1e12) -> Held:
    return Held("g", lambda: log.append(f"resume {name}"), lambda why: log.append(why), deadline)


@pytest.mark.parametrize(
    ("held", "waking", "soft", "needed"),
    [(1, 0, 1, True), (1, 1, 1, False), (2, 1, 1, True), (5, 1, 5, False), (6, 1, 5, True)],
)
def test_more_wakes_needed(held: int, waking: int, soft: int, needed: bool) -> None:
    assert more_wakes_needed(held, waking, soft) is needed


async def _case_concurrent_arrivals_share_one_wake_at_a_high_soft_limit() -> None:
    waker, log = HandWaker(), []
    wakes = Wakes(waker, 30.0)
    route = _route(standby=3, soft_limit=50)
    for n in range(50):
        wakes.hold(route, _held(log, str(n)))
    assert list(waker.asked) == ["i0"]
    waker.asked["i0"].set_result(True)
    await asyncio.sleep(0)
    assert log == [f"resume {n}" for n in range(50)]  # in arrival order


async def _case_soft_limit_one_wakes_one_instance_per_held_request() -> None:
    waker, log = HandWaker(), []
    wakes = Wakes(waker, 30.0)
    route = _route(standby=3, soft_limit=1)
    for n in range(4):
        wakes.hold(route, _held(log, str(n)))
    assert sorted(waker.asked) == ["i0", "i1", "i2"]  # three to wake, never a fourth


async def _case_a_failed_wake_with_nothing_else_fails_the_held_work() -> None:
    waker, log = HandWaker(), []
    wakes = Wakes(waker, 30.0)
    wakes.hold(_route(standby=1), _held(log, "a"))
    waker.asked["i0"].set_result(False)
    await asyncio.sleep(0)
    assert log == ["the instance did not wake (its state and log say why)"]
    assert wakes.held == {}


async def _case_held_work_past_the_wake_timeout_fails() -> None:
    waker, log = HandWaker(), []
    wakes = Wakes(waker, 2.0)
    wakes.hold(_route(standby=1), _held(log, "late", deadline=10.0))
    wakes.hold(_route(standby=1), _held(log, "early", deadline=20.0))
    wakes.expire(15.0)
    assert log == ["no instance woke within the wake timeout (2 s)"]
    assert len(wakes.held["g"]) == 1


@pytest.mark.parametrize(
    ("policy", "stateful", "inflight", "tcp_open", "expected"),
    [
        ("on", True, 0, 0, False),
        ("on", True, 1, 1, True),  # an open connection keeps `on` awake
        ("idle", True, 1, 1, False),  # ... but not `idle`, when the instance is frozen
        ("idle", True, 2, 1, True),  # an HTTP request in flight does
        ("idle", False, 1, 1, True),  # stateless would lose the connection: as `on`
    ],
)
def test_what_keeps_an_instance_awake(
    policy: str, stateful: bool, inflight: int, tcp_open: int, expected: bool
) -> None:
    stz = ScaleToZero(policy=policy, stateful=stateful)
    assert busy(stz, inflight, tcp_open) is expected


def test_concurrent_arrivals_share_one_wake_at_a_high_soft_limit() -> None:
    asyncio.run(_case_concurrent_arrivals_share_one_wake_at_a_high_soft_limit())


def test_soft_limit_one_wakes_one_instance_per_held_request() -> None:
    asyncio.run(_case_soft_limit_one_wakes_one_instance_per_held_request())


def test_a_failed_wake_with_nothing_else_fails_the_held_work() -> None:
    asyncio.run(_case_a_failed_wake_with_nothing_else_fails_the_held_work())


def test_held_work_past_the_wake_timeout_fails() -> None:
    asyncio.run(_case_held_work_past_the_wake_timeout_fails())
