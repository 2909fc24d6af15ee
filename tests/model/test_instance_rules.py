"""The instance lifecycle table, stop reasons, restart back-off and create rules (pure)."""

from __future__ import annotations

import signal

import pytest

from portway.model.errors import Invalid
from portway.model.instance import (
    TRANSITIONS,
    CreateRules,
    Event,
    IllegalTransition,
    ScaleToZero,
    State,
    StopCause,
    app_name,
    check_create,
    describe_stop_reason,
    restart_delay,
    restarts_so_far,
    should_restart,
    stop_record,
    transition,
)


@pytest.mark.parametrize(
    ("state", "event", "after"),
    [
        (State.STOPPED, Event.START, State.STARTING),
        (State.STARTING, Event.READY, State.RUNNING),
        (State.RUNNING, Event.DRAIN, State.DRAINING),
        (State.DRAINING, Event.DRAINED, State.STOPPING),
        (State.STOPPING, Event.EXITED, State.STOPPED),
        (State.RUNNING, Event.EXITED, State.STOPPED),
        (State.RUNNING, Event.STANDBY, State.STANDBY),
        (State.STANDBY, Event.WAKE, State.STARTING),
        (State.RUNNING, Event.DELETE, State.DELETED),
    ],
)
def test_documented_paths(state: State, event: Event, after: State) -> None:
    assert transition(state, event) is after


def test_everything_else_is_refused() -> None:
    refused = [(s, e) for s in State for e in Event if (s, e) not in TRANSITIONS]
    assert len(refused) > 30
    for state, event in refused:
        with pytest.raises(IllegalTransition):
            transition(state, event)
    assert (State.DELETED, Event.START) in refused


def test_stop_reasons_match_the_platforms_values() -> None:
    clean_exit = stop_record(None, 0, None)
    assert (clean_exit.stop_reason, clean_exit.exit_code, clean_exit.crashed) == (3, 0, False)
    failed = stop_record(None, 2, None)
    assert failed.stop_reason == 3 and failed.crashed
    segv = stop_record(None, None, signal.SIGSEGV)
    assert segv.stop_reason == 1 and segv.stop_code & 0xFF == 5 and segv.crashed
    user = stop_record(StopCause(by_user=True, by_platform=True), 0, None)
    assert user.stop_reason == 15 and not user.crashed  # U|P|A|K
    killed = stop_record(StopCause(by_user=True, by_platform=True), None, signal.SIGKILL)
    assert killed.stop_reason == 13  # the app did not exit by itself: no A
    forced = stop_record(
        StopCause(by_user=True, by_platform=True, forced=True), None, signal.SIGKILL
    )
    assert forced.stop_reason == 29
    standby = stop_record(StopCause(by_platform=True, scale_to_zero=True), 0, None)
    assert standby.stop_reason == 39 and describe_stop_reason(39) == "Z--PAK"
    oom = stop_record(None, None, signal.SIGKILL, oom=True)
    assert oom.stop_code == 0x000C7F04 and oom.crashed


@pytest.mark.parametrize(
    ("policy", "cause", "code", "restart"),
    [
        ("never", None, 1, False),
        ("on-failure", None, 1, True),
        ("on-failure", None, 0, False),
        ("always", None, 0, True),
        ("always", StopCause(by_user=True, by_platform=True), 0, False),
        ("on-failure", StopCause(by_platform=True), 1, False),
    ],
)
def test_restart_policy(policy: str, cause: StopCause | None, code: int, restart: bool) -> None:
    assert should_restart(policy, cause, stop_record(cause, code, None)) is restart


def test_back_off_sequence_and_reset() -> None:
    assert [restart_delay(n) for n in range(8)] == [0, 5, 10, 20, 40, 80, 160, 300]
    assert restart_delay(30) == 300
    assert restarts_so_far(3, ran_for_s=2.0) == 3
    assert restarts_so_far(3, ran_for_s=10.0) == 0


def _rules(**kw: object) -> CreateRules:
    base: dict[str, object] = dict(
        autostart=True,
        timeout_s=None,
        restart_policy="never",
        features=(),
        scale_to_zero=None,
        has_service_group=True,
    )
    base.update(kw)
    return CreateRules(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        (_rules(autostart=False, timeout_s=5), "timeout_s"),
        (_rules(restart_policy="sometimes"), "restart_policy"),
        (_rules(features=["nested-virt"]), "features.0"),
        (_rules(features=["delete-on-stop"], restart_policy="always"), "features"),
        (_rules(scale_to_zero=ScaleToZero("on"), has_service_group=False), "scale_to_zero"),
        (_rules(scale_to_zero=ScaleToZero("on"), features=["delete-on-stop"]), "scale_to_zero"),
        (_rules(replicas=64), "replicas"),
    ],
)
def test_create_rules(rules: CreateRules, field: str) -> None:
    with pytest.raises(Invalid) as caught:
        check_create(rules)
    assert caught.value.field == field


def test_valid_create_passes() -> None:
    check_create(
        _rules(timeout_s=10, features=["delete-on-stop"], scale_to_zero=ScaleToZero("off"))
    )


@pytest.mark.parametrize(
    ("image", "app"),
    [
        ("nginx:latest", "nginx"),
        ("org/http-go121:1.2", "http-go121"),
        ("My_App", "my-app"),
        ("___", "app"),
    ],
)
def test_app_name(image: str, app: str) -> None:
    assert app_name(image) == app
