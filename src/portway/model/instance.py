"""Instances: the lifecycle as a transition table, stop reasons, restart back-off, and the rules
of a create request (ukc-api.md §3.2, §3.5, §3.6). Pure: time and randomness are passed in."""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from .errors import Invalid


class State(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPING = "stopping"
    STANDBY = "standby"
    DELETED = "deleted"


class Event(StrEnum):
    START = "start"  # a user's start, or a restart the policy scheduled
    READY = "ready"  # the destination port accepts connections (or there is none to wait for)
    STOP = "stop"  # a user's or the platform's stop, without draining
    DRAIN = "drain"  # a stop with a drain timeout: no new work, in-flight work finishes
    DRAINED = "drained"
    EXITED = "exited"  # the process tree is gone, whoever ended it
    STANDBY = "standby"  # scaled to zero
    WAKE = "wake"  # a cold start out of standby: the app starts again and must become ready
    RESUME = "resume"  # a frozen (stateful) instance thawed: it was ready when it froze
    DELETE = "delete"


S, E = State, Event
TRANSITIONS: Mapping[tuple[State, Event], State] = {
    (S.STOPPED, E.START): S.STARTING,
    (S.STANDBY, E.START): S.STARTING,
    (S.STANDBY, E.WAKE): S.STARTING,
    (S.STARTING, E.READY): S.RUNNING,
    (S.STARTING, E.STOP): S.STOPPING,
    (S.STARTING, E.EXITED): S.STOPPED,
    (S.RUNNING, E.STOP): S.STOPPING,
    (S.RUNNING, E.DRAIN): S.DRAINING,
    (S.RUNNING, E.EXITED): S.STOPPED,
    (S.RUNNING, E.STANDBY): S.STANDBY,
    (S.DRAINING, E.DRAINED): S.STOPPING,
    (S.DRAINING, E.STOP): S.STOPPING,
    (S.DRAINING, E.EXITED): S.STOPPED,
    (S.STOPPING, E.EXITED): S.STOPPED,
    (S.STANDBY, E.RESUME): S.RUNNING,
    (S.STANDBY, E.STOP): S.STOPPED,
    **{(state, E.DELETE): S.DELETED for state in State if state is not S.DELETED},
}


class IllegalTransition(Exception):
    def __init__(self, state: State, event: Event) -> None:
        super().__init__(f"cannot {event.value} an instance that is {state.value}")
        self.state, self.event = state, event


def transition(state: State, event: Event) -> State:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state, event) from None


#: States in which the instance's processes exist (or should, while starting).
LIVE = frozenset({S.STARTING, S.RUNNING, S.DRAINING, S.STOPPING})


# --- stop reasons (the platform's bitmask) ---------------------------------------------------

KERNEL, APP, PLATFORM, USER, FORCED, SCALE_TO_ZERO = 1, 2, 4, 8, 16, 32
STANDBY_REASON = SCALE_TO_ZERO | PLATFORM | APP | KERNEL  # 39: what `standby` reports
INITLEVEL_APP = 127 << 8
# stop_code low byte: 0 OK, 1 EXP, 2 MATH, 3 INVLOP, 4 PGFAULT, 5 SEGFAULT
_SIGNAL_REASON = {
    signal.SIGSEGV: 5,
    signal.SIGBUS: 5,
    signal.SIGFPE: 2,
    signal.SIGILL: 3,
    signal.SIGABRT: 1,
}
ENOMEM = 12


@dataclass(frozen=True)
class StopCause:
    """Who asked for the stop, if anyone: None means the app ended by itself."""

    by_user: bool = False
    by_platform: bool = False
    forced: bool = False
    scale_to_zero: bool = False


@dataclass(frozen=True)
class StopRecord:
    stop_reason: int
    exit_code: int | None
    stop_code: int
    crashed: bool  # what on-failure restarts on


def stop_record(
    cause: StopCause | None, code: int | None, signum: int | None, oom: bool = False
) -> StopRecord:
    """The truthful stop_reason/exit_code/stop_code for how a run ended.

    A process that exited by itself: K|A (3) with its exit code. One killed by a signal it did
    not get from us (a crash): K (1) with the signal in stop_code. What we asked for adds P,
    U for a user's request, F when forced, Z for scale to zero (standby is Z|P|A|K = 39)."""
    reason = KERNEL
    exit_code = code
    low = 0
    if code is not None:
        reason |= APP
    elif signum is not None:
        low = _SIGNAL_REASON.get(signal.Signals(signum), 1) if cause is None else 0
    if oom:
        low, reason = 4, KERNEL
    stop_code = INITLEVEL_APP | low | ((ENOMEM << 16) if oom else 0)
    if cause is not None:
        reason |= PLATFORM
        reason |= USER if cause.by_user else 0
        reason |= FORCED if cause.forced else 0
        reason |= SCALE_TO_ZERO if cause.scale_to_zero else 0
    crashed = cause is None and (oom or signum is not None or (code is not None and code != 0))
    return StopRecord(reason, exit_code, stop_code, crashed)


def describe_stop_reason(reason: int) -> str:
    """`Z--PAK`-style letters, as the platform prints them."""
    letters = "ZFUPAK"
    bits = (SCALE_TO_ZERO, FORCED, USER, PLATFORM, APP, KERNEL)
    return "".join(ch if reason & bit else "-" for ch, bit in zip(letters, bits, strict=True))


# --- restart policy -------------------------------------------------------------------------

NEVER, ALWAYS, ON_FAILURE = "never", "always", "on-failure"
RESTART_POLICIES = (NEVER, ALWAYS, ON_FAILURE)
BACKOFF_FIRST_S = 5.0
BACKOFF_CAP_S = 300.0
HEALTHY_RESET_S = 10.0


def should_restart(policy: str, cause: StopCause | None, record: StopRecord) -> bool:
    """`always` restarts whatever ended the run from inside; `on-failure` only a crash. A stop
    anyone asked for (user or platform) never restarts."""
    if cause is not None:
        return False
    return policy == ALWAYS or (policy == ON_FAILURE and record.crashed)


def restart_delay(attempt: int) -> float:
    """Immediate, then 5 s, 10 s, 20 s, 40 s ... capped at 5 minutes (attempt counts from 0)."""
    if attempt <= 0:
        return 0.0
    return float(min(BACKOFF_FIRST_S * 2.0 ** (attempt - 1), BACKOFF_CAP_S))


def restarts_so_far(attempt: int, ran_for_s: float) -> int:
    """How many restarts the current sequence has had: after 10 s of healthy running the
    sequence ends, and the next failure starts a new one (restarted immediately)."""
    return 0 if ran_for_s >= HEALTHY_RESET_S else attempt


# --- create requests --------------------------------------------------------------------

MEMORY_MIN_MB, MEMORY_MAX_MB, MEMORY_DEFAULT_MB = 16, 65536, 128
VCPUS_MIN, VCPUS_MAX, VCPUS_DEFAULT = 1, 64, 1
REPLICAS_MAX = 63
TIMEOUT_MAX_S = 3600
DELETE_ON_STOP = "delete-on-stop"
FEATURES = (DELETE_ON_STOP,)
STZ_POLICIES = ("off", "on", "idle")
COOLDOWN_DEFAULT_MS = 1000
COOLDOWN_MAX_MS = 86_400_000
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ScaleToZero:
    policy: str = "off"
    cooldown_time_ms: int = COOLDOWN_DEFAULT_MS
    stateful: bool = False
    notify_time_ms: int = 0

    @property
    def enabled(self) -> bool:
        return self.policy != "off"


@dataclass(frozen=True)
class Autokill:
    time_ms: int = 0
    num_requests: int = 0


def check_memory(memory_mb: int) -> int:
    if not MEMORY_MIN_MB <= memory_mb <= MEMORY_MAX_MB:
        raise Invalid("memory_mb", f"{memory_mb} is out of range ({MEMORY_MIN_MB}-{MEMORY_MAX_MB})")
    return memory_mb


def check_vcpus(vcpus: int) -> int:
    if not VCPUS_MIN <= vcpus <= VCPUS_MAX:
        raise Invalid("vcpus", f"{vcpus} is out of range ({VCPUS_MIN}-{VCPUS_MAX})")
    return vcpus


def check_env(field: str, env: Mapping[str, str]) -> dict[str, str]:
    for key, value in env.items():
        if not _ENV_NAME.match(key):
            raise Invalid(f"{field}.{key}", "is not a valid environment variable name")
        if "\0" in value:
            raise Invalid(f"{field}.{key}", "must not contain a NUL character")
    return dict(env)


def check_args(field: str, args: Sequence[str]) -> tuple[str, ...]:
    for i, arg in enumerate(args):
        if "\0" in arg:
            raise Invalid(f"{field}.{i}", "must not contain a NUL character")
    return tuple(args)


def check_scale_to_zero(stz: ScaleToZero) -> ScaleToZero:
    if stz.policy not in STZ_POLICIES:
        raise Invalid("scale_to_zero.policy", f"'{stz.policy}' is not one of off, on, idle")
    if not 0 <= stz.cooldown_time_ms <= COOLDOWN_MAX_MS:
        raise Invalid("scale_to_zero.cooldown_time_ms", f"{stz.cooldown_time_ms} is out of range")
    if stz.notify_time_ms < 0 or (
        stz.notify_time_ms and stz.notify_time_ms >= stz.cooldown_time_ms
    ):
        raise Invalid("scale_to_zero.notify_time_ms", "must be 0 or less than cooldown_time_ms")
    return stz


def check_autokill(autokill: Autokill) -> Autokill:
    if autokill.time_ms < 0 or autokill.num_requests < 0:
        raise Invalid("autokill", "time_ms and num_requests must not be negative")
    return autokill


@dataclass(frozen=True)
class CreateRules:
    """The combinations a create request may not make (ukc-api.md §3.2)."""

    autostart: bool
    timeout_s: int | None
    restart_policy: str
    features: Sequence[str]
    scale_to_zero: ScaleToZero | None
    has_service_group: bool
    replicas: int = 0
    extra: Mapping[str, object] = field(default_factory=dict)


def check_create(rules: CreateRules) -> None:
    if rules.timeout_s is not None and rules.timeout_s != 0:
        if not rules.autostart:
            raise Invalid("timeout_s", "waiting needs autostart: true")
        if not -1 <= rules.timeout_s <= TIMEOUT_MAX_S:
            raise Invalid("timeout_s", f"{rules.timeout_s} is out of range (-1-{TIMEOUT_MAX_S})")
    if rules.restart_policy not in RESTART_POLICIES:
        raise Invalid(
            "restart_policy", f"'{rules.restart_policy}' is not never, always or on-failure"
        )
    for i, feature in enumerate(rules.features):
        if feature not in FEATURES:
            raise Invalid(
                f"features.{i}", f"'{feature}' is not supported (supported: delete-on-stop)"
            )
    delete_on_stop = DELETE_ON_STOP in rules.features
    if delete_on_stop and rules.restart_policy != NEVER:
        raise Invalid("features", "delete-on-stop needs restart_policy 'never'")
    stz = rules.scale_to_zero
    if stz is not None and stz.enabled:
        if not rules.has_service_group:
            raise Invalid("scale_to_zero", "scale to zero needs a service group to wake it")
        if delete_on_stop:
            raise Invalid("scale_to_zero", "scale to zero cannot be combined with delete-on-stop")
    if not 0 <= rules.replicas <= REPLICAS_MAX:
        raise Invalid("replicas", f"{rules.replicas} is out of range (0-{REPLICAS_MAX})")


def app_name(image_name: str) -> str:
    """The `<app>` of a random instance name: the image's last path part, as a DNS label."""
    base = image_name.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0].lower()
    label = re.sub(r"[^a-z0-9-]+", "-", base).strip("-")
    return (label or "app")[:50]


# --- the instance as the store keeps it ----------------------------------------------------

RUN, HALT = "running", "stopped"  # what the user wants: the reconciler drives toward it


@dataclass(frozen=True)
class InstanceConfig:
    """What a run is made from. Changing any of it takes effect at the next start."""

    image: str  # the reference as asked (`app:latest`, `host`)
    digest: str  # the content it resolved to
    args: tuple[str, ...]
    env: Mapping[str, str]
    memory_mb: int = MEMORY_DEFAULT_MB
    vcpus: int = VCPUS_DEFAULT
    restart_policy: str = NEVER
    features: tuple[str, ...] = ()
    scale_to_zero: ScaleToZero = ScaleToZero()
    hostname: str = ""
    autokill: Autokill = Autokill()

    @property
    def delete_on_stop(self) -> bool:
        return DELETE_ON_STOP in self.features


@dataclass(frozen=True)
class RunStatus:
    """What happened to the instance's runs (all times are epoch seconds)."""

    stop_reason: int | None = None
    exit_code: int | None = None
    stop_code: int | None = None
    start_count: int = 0
    restart_count: int = 0
    restart_attempt: int = 0
    next_restart_at: float | None = None
    started_at: float | None = None
    stopped_at: float | None = None
    boot_time_us: int | None = None


@dataclass(frozen=True)
class Instance:
    uuid: str
    user: str
    name: str
    created_at: float
    group_uuid: str | None
    private_ip: str
    config: InstanceConfig
    state: State = State.STOPPED
    desired: str = HALT
    status: RunStatus = RunStatus()
    pending: InstanceConfig | None = None  # queued by PATCH while running
    tags: tuple[str, ...] = ()
    delete_lock: bool = False

    @property
    def private_fqdn(self) -> str:
        return f"{self.name}.internal"


def instance_env(
    instance: Instance, manifest_env: Mapping[str, str], port: int | None
) -> dict[str, str]:
    """The environment of a run: a minimal base, the image's env, the request's env over it,
    then what Portway tells the app about itself (which the app cannot override by accident)."""
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": "/tmp",
    }
    env.update(manifest_env)
    env.update(instance.config.env)
    env.update(
        {
            "HOST": instance.private_ip,
            "PORTWAY_NAME": instance.name,
            "PORTWAY_UUID": instance.uuid,
            "PORTWAY_HOSTNAME": instance.config.hostname or instance.name,
            "PORTWAY_PRIVATE_IP": instance.private_ip,
            "PORTWAY_PRIVATE_FQDN": instance.private_fqdn,
            # Sent `notify_time_ms` before a scale to zero (docs/scale-to-zero.md).
            "PORTWAY_STANDBY_SIGNAL": "SIGWINCH",
        }
    )
    if port is not None:
        env["PORT"] = str(port)
    return env
