"""Instance use-cases and supervision: create, start, stop, wait, delete, logs, metrics, PATCH,
one supervised run per live instance, restart back-off, and the reconciler.

State lives in the store; the in-memory part is only what cannot be stored: the task that owns
each run, and who asked for the stop that is under way (so its end is recorded truthfully).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import shutil
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ..model import names
from ..model.errors import ErrorCode, Invalid, ItemError, not_found
from ..model.image import HOST_IMAGE, ImageRecord, parse_ref
from ..model.instance import (
    HALT,
    LIVE,
    NEVER,
    RUN,
    STANDBY_REASON,
    Autokill,
    CreateRules,
    Event,
    IllegalTransition,
    Instance,
    InstanceConfig,
    RunStatus,
    ScaleToZero,
    State,
    StopCause,
    app_name,
    check_create,
    instance_env,
    restart_delay,
    restarts_so_far,
    should_restart,
    stop_record,
    transition,
)
from ..model.instance_patch import META_PROPS, InstancePatch, apply_config_patch, apply_meta_patch
from ..model.refs import Ref
from ..model.service_group import GroupSpec, ServiceGroup, new_group
from ..runtime.base import LaunchSpec, Liveness, RuntimeDriver, RuntimeError_, Usage
from ..runtime.images import HOST_DIGEST, ImageContent, ImageFiles
from ..runtime.ipam import LOOPBACK_POOL, allocate, user_subnet
from ..runtime.logs import LogSlice
from ..runtime.logs import read as read_log
from ..runtime.logs import trim as trim_log
from .controller import Controller
from .users import User

log = logging.getLogger("portway.instances")
T = TypeVar("T")
NOUN = "instance"
STOP_GRACE_S = 10.0
QUICK_GRACE_S = 1.0
CLOSE_TASKS_TIMEOUT_S = 5.0
READY_POLL_S = 0.0005
READY_POLL_MAX_S = 0.005
READY_POLL_SLOW_S = 0.02
READY_TIMEOUT_S = 120.0
STANDBY_SETTLE_S = 30.0  # work that raced in before a standby gets this long to finish
# After a thaw, the held work goes before the `running` write: that write is Python on the store
# thread, which shares the interpreter with the gateway, and started at once it delayed the held
# request's dispatch and connect by 0.2-1 ms (bench/wake.py). The gateway counts the instance as
# awake meanwhile, so the only cost is that reads say `standby` for this long.
RESUME_WRITE_AFTER_S = 0.002
WAIT_FOREVER_S = 24 * 3600.0
LOG_CAP_BYTES = 1 << 20  # per instance, kept across restarts
LOG_DEFAULT_OFFSET = -(64 << 10)  # the last 64 KiB unless asked otherwise
LOG_DEFAULT_LIMIT = 1 << 20


class InstanceStore(Protocol):
    """The store calls this controller makes (SQLiteStore implements them)."""

    def create_instances(
        self, instances: Sequence[Instance], touched_group: str | None
    ) -> None: ...
    def save_instance(self, instance: Instance) -> None: ...
    def delete_instance(self, instance: Instance, now: float) -> bool: ...
    def instances_by_uuid(self, user: str, uuids: Sequence[str]) -> dict[str, Instance]: ...
    def instances_by_name(self, user: str, names: Sequence[str]) -> dict[str, Instance]: ...
    def list_instances(
        self, user: str, count: int | None, start: str | None, descending: bool
    ) -> list[Instance]: ...
    def all_instances(self) -> list[Instance]: ...
    def private_ips(self, user: str) -> set[str]: ...
    def subnet_index(self, user: str) -> int: ...
    def put_image(self, image: ImageRecord) -> None: ...
    def images(self, user: str) -> list[ImageRecord]: ...
    def image(self, user: str, name: str, tag: str) -> ImageRecord | None: ...
    def delete_image(self, user: str, name: str, tag: str) -> None: ...
    def digest_in_use(self, digest: str) -> bool: ...
    def groups_by_uuid(self, user: str, uuids: Sequence[str]) -> dict[str, ServiceGroup]: ...
    def groups_by_name(self, user: str, names: Sequence[str]) -> dict[str, ServiceGroup]: ...
    def create_group(self, group: ServiceGroup) -> None: ...
    def delete_group(self, user: str, uuid: str) -> None: ...


@dataclass(frozen=True)
class CreateRequest:
    """A create request, typed by the API layer; the rules are applied here and in model."""

    image: str
    name: str | None = None
    args: Sequence[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    memory_mb: int = 128
    vcpus: int = 1
    autostart: bool = False
    timeout_s: int | None = None
    replicas: int = 0
    restart_policy: str = "never"
    features: Sequence[str] = ()
    scale_to_zero: ScaleToZero | None = None
    hostname: str | None = None
    tags: Sequence[str] = ()
    autokill: Autokill = field(default_factory=Autokill)
    group_ref: Ref | None = None  # attach to an existing group
    inline_group: GroupSpec | None = None  # or create one that lives and dies with it


@dataclass(frozen=True)
class StopRequest:
    ref: Ref
    force: bool = False
    drain_timeout_ms: int = 0
    quick: bool = False
    ifstate: str | None = None


@dataclass(frozen=True)
class Waited:
    """The outcome of a wait: the instance as last seen, and whether it got there in time."""

    instance: Instance
    reached: bool


Outcome = Instance | ItemError


class TrafficReport(Protocol):
    """What the gateway tells control about an instance's traffic."""

    def inflight_of(self, instance: str) -> int: ...

    def traffic_of(self, instance: str) -> tuple[int, int, int, int]:
        """(nconns, nreqs, nqueued, ntotal)."""


class InstanceController:
    def __init__(
        self,
        groups: Controller,
        store: InstanceStore,
        driver: RuntimeDriver,
        images: ImageFiles,
        data_dir: Path,
        *,
        platform_domain: str,
        address_pool: ipaddress.IPv4Network = LOOPBACK_POOL,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        traffic: TrafficReport | None = None,
    ) -> None:
        self._traffic = traffic
        self._pool = address_pool
        self._groups = groups
        self._store = store
        self._driver = driver
        self._images = images
        self._dir = data_dir / "instances"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._platform_domain = platform_domain
        self._rng = rng or random.SystemRandom()
        self._clock = clock
        self._runs: dict[str, asyncio.Task[None]] = {}
        self._causes: dict[str, StopCause] = {}
        self._teardowns: dict[str, asyncio.Task[None]] = {}
        self._changed = asyncio.Condition()
        self._contents: dict[str, ImageContent] = {}
        # One lifecycle operation (start, stop, delete) at a time per instance, each deciding
        # on a fresh read: concurrent API calls would otherwise act on each other's stale state.
        self._locks: dict[str, asyncio.Lock] = {}
        self._starting: set[str] = set()  # entered `starting` before its run task began
        # Told of every instance as written (the scale-to-zero scaler watches states).
        self.on_change: Callable[[Instance], None] | None = None
        self._frozen: set[str] = set()  # put to standby by a freeze (this daemon's run)
        # Called once the instance can serve, before its new state is written: a wake's
        # held work need not wait for the commit.
        self._ready_hooks: dict[str, Callable[[], None]] = {}

    async def _db(self, fn: Callable[..., T], *args: object) -> T:
        return await self._groups.in_store(fn, *args)

    def _lock(self, uuid: str) -> asyncio.Lock:
        return self._locks.setdefault(uuid, asyncio.Lock())

    @staticmethod
    def _track(tasks: dict[str, asyncio.Task[None]], uuid: str, task: asyncio.Task[None]) -> None:
        """Keep a task under its instance until it ends (unless a newer one replaced it), and
        log what it raised: a supervisor that dies must not die silently."""
        tasks[uuid] = task

        def done(finished: asyncio.Task[None]) -> None:
            if tasks.get(uuid) is finished:
                del tasks[uuid]
            if not finished.cancelled() and finished.exception() is not None:
                log.error("task %s failed", finished.get_name(), exc_info=finished.exception())

        task.add_done_callback(done)

    def paths(self, uuid: str) -> tuple[Path, Path]:
        """(the instance's files, its console log)."""
        home = self._dir / uuid
        return home / "root", home / "console.log"

    # --- create -------------------------------------------------------------------------

    async def create(self, user: User, req: CreateRequest) -> tuple[list[Instance], bool]:
        """Create `replicas + 1` instances; returns them and whether a requested wait was met.
        Raises Invalid (400) for a rule breach and ItemError for an unknown image or group or
        a taken name; nothing is created in either case."""
        check_create(
            CreateRules(
                autostart=req.autostart,
                timeout_s=req.timeout_s,
                restart_policy=req.restart_policy,
                features=req.features,
                scale_to_zero=req.scale_to_zero,
                has_service_group=req.group_ref is not None or req.inline_group is not None,
                replicas=req.replicas,
            )
        )
        if req.name is not None:
            names.check_name("name", req.name)
        if req.hostname is not None:
            names.check_name("hostname", req.hostname)
        image = await self._db(self._resolve_image, user.name, req.image)
        if not (req.args or image.manifest.get("command")):
            raise Invalid("args", f"the image '{req.image}' has no command: give args to run")
        instances, group = await self._db(self._insert, user, req, image)
        await asyncio.gather(*(self._prepare_files(i) for i in instances))
        if group is not None:
            self._groups.changed()
            # Its domains answer from now on (503 until an instance runs).
            await self._groups.publish([group.uuid])
        if not req.autostart:
            return instances, True
        for instance in instances:
            await self._begin_run(instance)
        timeout = req.timeout_s or 0
        if timeout == 0:
            return await self._reread(instances), True
        waits = await asyncio.gather(
            *(self._wait_for(i.uuid, State.RUNNING, timeout, user.name, True) for i in instances)
        )
        return [w.instance for w in waits], all(w.reached for w in waits)

    def _resolve_image(self, user: str, ref: str) -> ImageRecord:
        if ref == HOST_IMAGE:
            content = self._images.host()
            return ImageRecord(user, HOST_IMAGE, "latest", content.digest, {}, 0, 0.0)
        name, tag = parse_ref("image", ref)
        image = self._store.image(user, name, tag)
        if image is None or ("@" in ref and not ref.endswith(image.digest)):
            raise ItemError(ErrorCode.NOT_FOUND, f"No image '{ref}'")
        return image

    def _insert(
        self, user: User, req: CreateRequest, image: ImageRecord
    ) -> tuple[list[Instance], ServiceGroup | None]:
        group_uuid, new = self._group_for(user, req)
        count = req.replicas + 1
        taken = self._store.instances_by_name(user.name, self._names(req, image, count))
        if taken:
            raise ItemError(
                ErrorCode.ALREADY_EXISTS, f"Instance '{next(iter(taken))}' already exists"
            )
        subnet = user_subnet(self._store.subnet_index(user.name), self._pool)
        used = self._store.private_ips(user.name)
        instances = []
        for name in self._names(req, image, count):
            ip = allocate(subnet, used)
            used.add(ip)
            instances.append(self._new_instance(user, req, image, name, ip, group_uuid))
        if new is not None:
            self._store.create_group(new)
        try:
            self._store.create_instances(instances, group_uuid)
        except ItemError:
            if new is not None:
                self._store.delete_group(user.name, new.uuid)
            raise
        return instances, new

    def _names(self, req: CreateRequest, image: ImageRecord, count: int) -> list[str]:
        if req.name is not None:
            return [req.name] + [f"{req.name}-{i}" for i in range(1, count)]
        app = app_name(image.name)
        return [f"{app}-{names.suffix(self._rng, 5)}" for _ in range(count)]

    def _group_for(self, user: User, req: CreateRequest) -> tuple[str | None, ServiceGroup | None]:
        if req.group_ref is not None:
            ref = req.group_ref
            found = (
                self._store.groups_by_uuid(user.name, [ref.uuid])
                if ref.uuid is not None
                else self._store.groups_by_name(user.name, [ref.name or ""])
            )
            if not found:
                raise not_found("service group", *ref.describe())
            return next(iter(found.values())).uuid, None
        if req.inline_group is not None:
            group = new_group(
                req.inline_group,
                user=user.name,
                uuid=str(uuidlib.uuid4()),
                now=_utc(self._clock()),
                persistent=False,
                platform_domain=self._platform_domain,
                user_ips=user.addresses,
                rng=self._rng,
            )
            return group.uuid, group
        return None, None

    def _new_instance(
        self,
        user: User,
        req: CreateRequest,
        image: ImageRecord,
        name: str,
        ip: str,
        group_uuid: str | None,
    ) -> Instance:
        config = InstanceConfig(
            image=image.name if image.name == HOST_IMAGE else f"{image.name}:{image.tag}",
            digest=image.digest,
            args=tuple(req.args or ()),
            env=dict(req.env),
            memory_mb=req.memory_mb,
            vcpus=req.vcpus,
            restart_policy=req.restart_policy,
            features=tuple(req.features),
            scale_to_zero=req.scale_to_zero or ScaleToZero(),
            hostname=req.hostname or name,
            autokill=req.autokill,
        )
        return Instance(
            uuid=str(uuidlib.uuid4()),
            user=user.name,
            name=name,
            created_at=self._clock(),
            group_uuid=group_uuid,
            private_ip=ip,
            config=config,
            tags=tuple(req.tags),
            desired=RUN if req.autostart else HALT,
        )

    async def _prepare_files(self, instance: Instance) -> None:
        root, _log = self.paths(instance.uuid)
        await asyncio.to_thread(self._copy_files, instance.config.digest, root)

    def _copy_files(self, digest: str, root: Path) -> None:
        if root.exists():
            shutil.rmtree(root)
        root.parent.mkdir(parents=True, exist_ok=True)
        self._images.copy_to(digest, root)

    # --- reads --------------------------------------------------------------------------

    async def get(self, user: User, refs: Sequence[Ref]) -> list[Outcome]:
        return await self._db(self._resolve, user.name, refs)

    async def list_instances(
        self,
        user: User,
        count: int | None,
        start: str | None,
        descending: bool,
        tags: Sequence[str] = (),
    ) -> list[Instance]:
        found = await self._db(self._store.list_instances, user.name, count, start, descending)
        return [i for i in found if set(tags) <= set(i.tags)]

    def _resolve(self, user: str, refs: Sequence[Ref]) -> list[Outcome]:
        by_uuid = self._store.instances_by_uuid(user, [r.uuid for r in refs if r.uuid])
        by_name = self._store.instances_by_name(user, [r.name for r in refs if r.name])
        out: list[Outcome] = []
        for ref in refs:
            found = by_uuid.get(ref.uuid) if ref.uuid is not None else by_name.get(ref.name or "")
            out.append(found if found is not None else not_found(NOUN, *ref.describe()))
        return out

    async def _reread(self, instances: Sequence[Instance]) -> list[Instance]:
        return [await self._current(i) for i in instances]

    async def _current(self, instance: Instance) -> Instance:
        found = await self._db(self._store.instances_by_uuid, instance.user, [instance.uuid])
        return found.get(instance.uuid, replace(instance, state=State.DELETED))

    def effective_args(self, instance: Instance) -> tuple[str, ...]:
        """The command a run executes: the instance's args, else its image's command."""
        if instance.config.args:
            return instance.config.args
        content = self._content(instance.config.digest)
        return content.manifest.command if content is not None else ()

    def _content(self, digest: str) -> ImageContent | None:
        """Image content by digest, remembered: content never changes, and an instance's image
        is never removed while the instance exists."""
        content = self._contents.get(digest)
        if content is None:
            content = self._images.get(digest)
            if content is not None:
                self._contents[digest] = content
        return content

    async def groups_of(self, user: User, uuids: Sequence[str]) -> dict[str, ServiceGroup]:
        return await self._db(self._store.groups_by_uuid, user.name, list(uuids))

    async def image_refs(self, user: User) -> dict[str, str]:
        """digest -> `name:tag@digest` for this user's images (what reads show)."""
        images = await self._db(self._store.images, user.name)
        refs = {i.digest: i.ref for i in images}
        refs.setdefault(HOST_DIGEST, f"{HOST_IMAGE}@{HOST_DIGEST}")
        return refs

    # --- start / stop -------------------------------------------------------------------

    async def start(self, user: User, refs: Sequence[Ref]) -> list[tuple[Outcome, State | None]]:
        """Start stopped instances; a running one is left as it is, a stopping one starts again
        once stopped. A manual start ends any restart back-off sequence."""
        results: list[tuple[Outcome, State | None]] = []
        for outcome in await self.get(user, refs):
            if isinstance(outcome, ItemError):
                results.append((outcome, None))
                continue
            async with self._lock(outcome.uuid):
                results.append(await self._start_one(outcome))
        return results

    async def _start_one(self, outcome: Instance) -> tuple[Outcome, State | None]:
        fresh = await self._current(outcome)
        if fresh.state is State.DELETED:
            return not_found(NOUN, "uuid", outcome.uuid), None
        previous = fresh.state
        if previous is State.STANDBY:
            await self._wake_one(fresh)
            return await self._current(fresh), previous
        instance = await self._set(
            fresh,
            desired=RUN,
            status=_status(restart_attempt=0, next_restart_at=None),
        )
        if previous is State.STOPPED or instance.uuid not in self._runs:
            await self._begin_run(instance)
        return await self._current(instance), previous

    async def stop(
        self, user: User, reqs: Sequence[StopRequest]
    ) -> list[tuple[Outcome, State | None]]:
        """Ask instances to stop; does not block (use wait). Draining instances take no new
        work; they stop when their in-flight work is done or the drain timeout passes."""
        results: list[tuple[Outcome, State | None]] = []
        outcomes = await self.get(user, [r.ref for r in reqs])
        for req, outcome in zip(reqs, outcomes, strict=True):
            if isinstance(outcome, ItemError):
                results.append((outcome, None))
                continue
            async with self._lock(outcome.uuid):
                results.append(await self._stop_one(outcome, req))
        return results

    async def _stop_one(self, outcome: Instance, req: StopRequest) -> tuple[Outcome, State | None]:
        fresh = await self._current(outcome)
        if fresh.state is State.DELETED:
            return not_found(NOUN, "uuid", outcome.uuid), None
        previous = fresh.state
        if req.ifstate is not None and fresh.state.value != req.ifstate:
            error = ItemError(
                ErrorCode.FAILED_WRONG_VM_STATE,
                f"Instance '{fresh.name}' is {fresh.state.value}, not {req.ifstate}",
            )
            return error, previous
        cause = StopCause(by_user=True, by_platform=True, forced=req.force)
        return await self._request_stop(fresh, cause, req), previous

    async def _request_stop(
        self, instance: Instance, cause: StopCause, req: StopRequest
    ) -> Instance:
        # A stop ends any restart sequence: the next failure starts a new one.
        instance = await self._set(
            instance,
            desired=HALT,
            status=_status(next_restart_at=None, restart_attempt=0),
        )
        run = self._runs.get(instance.uuid)
        if instance.state is State.STANDBY:
            # A frozen (stateful) tree still exists: thawed and stopped like any other.
            self._causes[instance.uuid] = cause
            self._frozen.discard(instance.uuid)
            instance = await self._advance(instance, Event.STOP)
            self._spawn_teardown(instance.uuid, self._driver.stop(instance.uuid, grace_of(req)))
            return instance
        if instance.state not in LIVE or run is None:
            if run is not None:
                run.cancel()  # a scheduled restart that has not started yet
            return instance
        self._causes[instance.uuid] = cause
        grace = grace_of(req)
        if req.drain_timeout_ms and not req.force and instance.state is State.RUNNING:
            instance = await self._advance(instance, Event.DRAIN)
            self._spawn_teardown(
                instance.uuid, self._drain_then_stop(instance, req.drain_timeout_ms, grace)
            )
        else:
            if instance.state in (State.STARTING, State.RUNNING, State.DRAINING):
                instance = await self._advance(instance, Event.STOP)
            self._spawn_teardown(instance.uuid, self._driver.stop(instance.uuid, grace))
        return instance

    async def _drain_then_stop(self, instance: Instance, drain_ms: int, grace: float) -> None:
        # The drain began with a published Snapshot without the instance, so nothing new
        # arrives; what is in flight gets until the drain timeout to finish.
        if self.inflight(instance.uuid) > 0:
            deadline = time.monotonic() + (WAIT_FOREVER_S if drain_ms < 0 else drain_ms / 1000)
            while self.inflight(instance.uuid) > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        current = await self._current(instance)
        if current.state is State.DRAINING:
            await self._advance(current, Event.DRAINED)
        await self._driver.stop(instance.uuid, grace)

    def inflight(self, uuid: str) -> int:
        """Requests or connections in flight at the instance, as the gateway counts them."""
        return self._traffic.inflight_of(uuid) if self._traffic is not None else 0

    def traffic(self, uuid: str) -> tuple[int, int, int, int]:
        """(nconns, nreqs, nqueued, ntotal) for the metrics API."""
        return self._traffic.traffic_of(uuid) if self._traffic is not None else (0, 0, 0, 0)

    def _spawn_teardown(self, uuid: str, work: Coroutine[Any, Any, None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("stopping instance %s failed", uuid)

        task = asyncio.create_task(run(), name=f"stop-{uuid}")
        # A task cancelled before its first step (the controller closing) never runs `run`,
        # so `work` is never awaited; closed here, it goes without a "never awaited" warning.
        # (Closing a coroutine that finished does nothing.)
        task.add_done_callback(lambda _: work.close())
        self._track(self._teardowns, uuid, task)

    # --- scale to zero -------------------------------------------------------------------

    async def standby(self, user: str, uuid: str, still_idle: Callable[[], bool]) -> bool:
        """Scale a running instance to zero (the scaler found it idle for its cooldown): out of
        new traffic first (the published Snapshot), then frozen (stateful) or stopped. Work
        that raced in before the Snapshot finishes first. False if it no longer qualifies."""
        async with self._lock(uuid):
            instance = await self._by_uuid(user, uuid)
            stz = instance.config.scale_to_zero if instance is not None else None
            if instance is None or instance.state is not State.RUNNING or stz is None:
                return False
            if not stz.enabled or not still_idle():
                return False
            instance = await self._advance(
                instance,
                Event.STANDBY,
                status=_status(stop_reason=STANDBY_REASON, stopped_at=self._clock()),
            )
            if instance.state is not State.STANDBY:
                return False
            deadline = time.monotonic() + STANDBY_SETTLE_S
            while not still_idle() and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            if stz.stateful:
                return await self._freeze(instance)
            self._causes[uuid] = StopCause(by_platform=True, scale_to_zero=True)
            self._spawn_teardown(uuid, self._driver.stop(uuid, STOP_GRACE_S))
            return True

    async def _freeze(self, instance: Instance) -> bool:
        try:
            await self._driver.freeze(instance.uuid)
        except (RuntimeError_, OSError) as err:
            log.warning("instance %s did not freeze (%s): it stays running", instance.name, err)
            await self._resumed(instance.user, instance.uuid, someone_waits=False)
            return False
        self._frozen.add(instance.uuid)
        return True

    async def wake(
        self,
        user: str,
        uuid: str,
        ready: Callable[[], None] | None = None,
        timeout_s: float = READY_TIMEOUT_S,
    ) -> bool:
        """Bring an instance in standby back to running (the gateway holds work for it): a
        thaw for a frozen tree, else a cold start that is done when the app is ready. True
        once it runs and the Snapshot that says so is applied; `ready` is called as soon as
        it can serve, before that state is written."""
        async with self._lock(uuid):
            if uuid in self._frozen:
                # The fast path (a request is waiting): thaw, let it serve, then write it.
                self._frozen.discard(uuid)
                await self._driver.thaw(uuid)
                if ready is not None:
                    ready()
                resumed = await self._resumed(user, uuid, someone_waits=ready is not None)
                return resumed is not None and resumed.state is State.RUNNING
            instance = await self._by_uuid(user, uuid)
            if instance is None:
                return False
            if instance.state is State.STANDBY:
                if ready is not None:
                    self._ready_hooks[uuid] = ready
                await self._wake_one(instance)
        try:
            waited = await self._wait_for(uuid, State.RUNNING, timeout_s, user, for_create=True)
        finally:
            self._ready_hooks.pop(uuid, None)
        return waited.reached

    async def _resumed(self, user: str, uuid: str, someone_waits: bool) -> Instance | None:
        """Write `running` for a tree that is running again (thawed, or never frozen). When a
        wake's work waits on it, that work goes first (RESUME_WRITE_AFTER_S)."""
        if someone_waits:
            await asyncio.sleep(RESUME_WRITE_AFTER_S)
        return await self._mutate_ref(
            user, uuid, Event.RESUME, {"status": _status(stop_reason=None)}
        )

    def _call_ready_hook(self, uuid: str) -> bool:
        """Tell a waiting wake that the instance can serve; whether one was waiting."""
        hook = self._ready_hooks.pop(uuid, None)
        if hook is not None:
            hook()
        return hook is not None

    async def _wake_one(self, instance: Instance) -> None:
        """Under the instance's lock, from standby."""
        uuid = instance.uuid
        self._frozen.discard(uuid)
        # Only a frozen tree is thawed: a live one is a stateless standby still stopping.
        if self._driver.usage(uuid).liveness is Liveness.FROZEN:
            await self._driver.thaw(uuid)
            await self._resumed(instance.user, uuid, someone_waits=self._call_ready_hook(uuid))
            return
        # Cold: the run that stopped for standby must be over before the next begins.
        self._driver.expect_start(uuid)
        for task in (self._teardowns.get(uuid), self._runs.get(uuid)):
            if task is not None and not task.done():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(task), STOP_GRACE_S + 5)
        fresh = await self._current(instance)
        if fresh.state is not State.STANDBY:
            return
        if fresh.status.restart_attempt or fresh.status.next_restart_at or fresh.desired != RUN:
            fresh = await self._set(
                fresh, desired=RUN, status=_status(restart_attempt=0, next_restart_at=None)
            )
        await self._begin_run(fresh)

    def notify(self, uuid: str) -> None:
        """The standby notice (`notify_time_ms`), if anything runs to hear it."""
        self._driver.notify(uuid)

    async def all_instances(self) -> list[Instance]:
        return await self._db(self._store.all_instances)

    async def autokill(self, user: str, uuid: str, why: str) -> None:
        """Delete an instance its autokill says is done (`stopped` long enough, or `served`
        its requests); a delete_lock set meanwhile keeps it."""
        instance = await self._by_uuid(user, uuid)
        if instance is None or instance.delete_lock:
            return
        log.info("autokill (%s): deleting instance %s", why, instance.name)
        async with self._lock(uuid):
            await self._delete_one(instance)
        self._locks.pop(uuid, None)

    # --- runs ---------------------------------------------------------------------------

    async def _begin_run(self, instance: Instance) -> None:
        old = self._runs.get(instance.uuid)
        if old is not None and not old.done():
            if instance.state in LIVE:
                return
            old.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await old
        # The transition happens before the task exists, so the answer to the API call that
        # started it already says `starting`.
        await self._begin_starting(instance, hand_over=True)
        task = asyncio.create_task(
            self._supervise(instance.uuid, instance.user), name=f"run-{instance.uuid}"
        )
        self._track(self._runs, instance.uuid, task)

    async def _supervise(self, uuid: str, user: str, adopted: bool = False) -> None:
        """Own every run of one instance: start it, see it ready, record how it ended, and
        restart it as its policy and back-off say, until it should stay stopped."""
        while True:
            instance = await self._by_uuid(user, uuid)
            if instance is None or instance.desired != RUN:
                return
            started = time.monotonic()
            ended = await (self._watch_adopted(instance) if adopted else self._run_once(instance))
            adopted = False
            if ended is None:
                return
            ran_for = time.monotonic() - started
            instance = await self._by_uuid(user, uuid)
            if instance is None:
                return
            cause = self._causes.pop(uuid, None)
            record = stop_record(cause, *ended)
            instance = await self._record_stop(instance, record)
            if instance.state is State.STANDBY:
                return  # scaled to zero: a wake begins the next run
            if instance.config.delete_on_stop:
                await self._teardown_deleted(instance)
                return
            if instance.desired != RUN:
                return
            if cause is not None:
                continue  # stopped on request, then started again before the stop finished
            if not should_restart(instance.config.restart_policy, cause, record):
                await self._set(instance, desired=HALT)
                return
            await self._back_off(instance, ran_for)

    async def _back_off(self, instance: Instance, ran_for: float) -> None:
        """Wait out the back-off, then count the restart: `restart.attempt` and
        `restart_count` count restarts that happened; `restart.next_at` says when the next
        one will."""
        seq = restarts_so_far(instance.status.restart_attempt, ran_for)
        delay = restart_delay(seq)
        await self._set(instance, status=_status(next_restart_at=self._clock() + delay))
        if delay:
            await asyncio.sleep(delay)
        current = await self._current(instance)
        await self._set(
            current,
            status=lambda st: replace(
                st, restart_attempt=seq + 1, restart_count=st.restart_count + 1
            ),
        )

    async def _run_once(self, instance: Instance) -> tuple[int | None, int | None, bool] | None:
        """One run from start to exit; None if the instance went away meanwhile."""
        instance = await self._apply_pending(instance)
        begun = await self._begin_starting(instance)
        if begun is None:
            self._causes.pop(instance.uuid, None)
            return None
        instance = begun
        self._causes.pop(instance.uuid, None)  # a stop before this run began is moot now
        spec, port = await self._launch_spec(instance)
        if port is not None and await _accepts(instance.private_ip, port):
            # Readiness is "the port accepts": with another process answering there already,
            # the app would fail to listen while its check saw the other one, and the gateway
            # would send its traffic there.
            _append_log(spec.log_path, _taken(instance.private_ip, port))
            return (127, None, False)
        began = time.perf_counter()
        try:
            await self._driver.start(spec)
        except RuntimeError_ as err:
            _append_log(spec.log_path, f"portway: cannot start: {err}\n")
            return (127, None, False)
        # A stop accepted while this run was being set up found nothing to signal yet: it
        # set `desired` first, so seeing it now means this run must end at once.
        latest = await self._current(instance)
        if latest.desired != RUN or latest.state is State.DELETED:
            await self._driver.stop(instance.uuid, QUICK_GRACE_S)
        ready = asyncio.create_task(self._become_ready(instance, port, began))
        try:
            ended = await self._driver.wait(instance.uuid)
        finally:
            ready.cancel()
        return (ended.code, ended.signal, ended.oom_killed)

    async def _begin_starting(self, instance: Instance, hand_over: bool = False) -> Instance | None:
        """Enter `starting` and count the start, once per run: a run begun by an API call has
        already done so (`hand_over`), and its task finds it done. A stop that came before
        any process of the run existed (then a start after it) left `stopping` behind: that
        run ended before it began."""
        current = await self._current(instance)
        if current.uuid in self._starting:
            self._starting.discard(current.uuid)
            if current.state is State.STARTING:
                return current
        if current.state is State.STOPPING:
            current = await self._advance(current, Event.EXITED)
            if current.desired != RUN:
                return None  # the stop stands: nothing of this run ever ran

        def counted(st: RunStatus) -> RunStatus:
            return replace(
                st,
                start_count=st.start_count + 1,
                next_restart_at=None,
                stop_reason=None,
                exit_code=None,
                stop_code=None,
            )

        # One write for the move and the count: each write is a commit.
        event = None if current.state is State.STARTING else Event.START
        started = await self._mutate(current, event, {"status": counted})
        if hand_over:
            self._starting.add(started.uuid)
        return started

    async def _watch_adopted(
        self, instance: Instance
    ) -> tuple[int | None, int | None, bool] | None:
        if instance.state not in (State.RUNNING, State.STANDBY):  # a frozen tree stays asleep
            instance = await self._set(instance, state=State.RUNNING)
        ended = await self._driver.wait(instance.uuid)
        return (ended.code, ended.signal, ended.oom_killed)

    async def _become_ready(self, instance: Instance, port: int | None, began: float) -> None:
        """Running = the destination port accepts a connection (or there is none to check)."""
        if port is not None:
            deadline = time.monotonic() + READY_TIMEOUT_S
            pause = READY_POLL_S
            while time.monotonic() < deadline:
                if await _accepts(instance.private_ip, port):
                    break
                await asyncio.sleep(pause)
                # Fine-grained at first (a fast app is seen at once), backing off so that many
                # apps starting together do not spend the CPU they need on being polled.
                # A wake has work waiting on this start: it stays fine-grained for longer.
                slow = time.perf_counter() - began >= 1.0
                waited_on = instance.uuid in self._ready_hooks
                ceiling = READY_POLL_S * 2 if waited_on else READY_POLL_MAX_S
                pause = READY_POLL_SLOW_S if slow else min(pause * 1.5, ceiling)
            else:
                log.warning("instance %s never accepted on port %s", instance.name, port)
                return
        boot_us = int((time.perf_counter() - began) * 1_000_000)
        self._call_ready_hook(instance.uuid)
        current = await self._current(instance)
        if current.state is State.STARTING:
            await self._advance(
                current,
                Event.READY,
                status=_status(started_at=self._clock(), boot_time_us=boot_us),
            )

    async def _launch_spec(self, instance: Instance) -> tuple[LaunchSpec, int | None]:
        content = self._content(instance.config.digest)
        manifest = content.manifest if content is not None else None
        port = await self._destination_port(instance, manifest.port if manifest else None)
        argv = instance.config.args or (manifest.command if manifest else ())
        root, console = self.paths(instance.uuid)
        if not root.exists():
            await asyncio.to_thread(self._copy_files, instance.config.digest, root)
        env = instance_env(instance, manifest.env if manifest else {}, port)
        spec = LaunchSpec(instance.uuid, tuple(argv), root, env, instance.config.memory_mb, console)
        return spec, port

    async def _destination_port(self, instance: Instance, image_port: int | None) -> int | None:
        if instance.group_uuid is not None:
            groups = await self._db(
                self._store.groups_by_uuid, instance.user, [instance.group_uuid]
            )
            group = groups.get(instance.group_uuid)
            if group is not None and group.config.services:
                return group.config.services[0].destination_port
        return image_port

    async def _apply_pending(self, instance: Instance) -> Instance:
        if instance.pending is None:
            return instance
        config = instance.pending
        if config.digest != instance.config.digest:
            root, _ = self.paths(instance.uuid)
            await asyncio.to_thread(self._copy_files, config.digest, root)
        return await self._set(instance, config=config, pending=None)

    async def _record_stop(self, instance: Instance, record: Any) -> Instance:
        asleep = instance.state is State.STANDBY
        status = _status(
            stop_reason=STANDBY_REASON if asleep else record.stop_reason,
            exit_code=record.exit_code,
            stop_code=record.stop_code,
            stopped_at=self._clock(),
        )
        if instance.state is State.STARTING or instance.state in LIVE:
            return await self._advance(instance, Event.EXITED, status=status)
        return await self._set(instance, status=status)

    # --- state changes ------------------------------------------------------------------

    async def _advance(self, instance: Instance, event: Event, **changes: Any) -> Instance:
        """Move the instance along the lifecycle table from the state it is in now. A move
        the table refuses means another operation got there first (a stop and an exit
        crossing): the instance is left as that one left it, and the refusal is logged."""
        return await self._mutate(instance, event, changes)

    async def _set(self, instance: Instance, **changes: Any) -> Instance:
        """Change fields of the instance as it is now, and wake waiters."""
        return await self._mutate(instance, None, changes)

    async def _mutate(
        self, instance: Instance, event: Event | None, changes: dict[str, Any]
    ) -> Instance:
        updated = await self._mutate_ref(instance.user, instance.uuid, event, changes)
        return updated if updated is not None else replace(instance, state=State.DELETED)

    async def _mutate_ref(
        self, user: str, uuid: str, event: Event | None, changes: dict[str, Any]
    ) -> Instance | None:
        updated, routed_by = await self._db(self._read_modify_write, user, uuid, event, changes)
        if routed_by:
            # Before anyone hears of the change: a stop or drain that returns has taken the
            # instance out of new traffic, and a create that saw `running` can be reached.
            await self._groups.publish(routed_by)
        async with self._changed:
            self._changed.notify_all()
        if updated is not None and self.on_change is not None:
            self.on_change(updated)
        return updated

    def _read_modify_write(
        self, user: str, uuid: str, event: Event | None, changes: dict[str, Any]
    ) -> tuple[Instance | None, set[str | None]]:
        """One step on the store thread, so that no other write can fall between the read and
        the write (a supervisor's status update must not put back a `desired` that a stop
        has just changed). Returns the instance as written, and the groups whose routing the
        change touched."""
        current = self._store.instances_by_uuid(user, [uuid]).get(uuid)
        if current is None:
            return None, set()
        if event is not None:
            try:
                changes = {**changes, "state": transition(current.state, event)}
            except IllegalTransition as refused:
                log.info("instance %s: %s", current.name, refused)
                return current, set()
        # A change may be a function of the current value (status fields): applied here, on
        # the row as it is now, so a concurrent writer's fields are never put back stale.
        resolved = {k: v(getattr(current, k)) if callable(v) else v for k, v in changes.items()}
        updated = replace(current, **resolved)
        if updated != current:
            self._store.save_instance(updated)
        if _routing(updated) == _routing(current):
            return updated, set()
        return updated, {current.group_uuid, updated.group_uuid} - {None}

    async def _by_uuid(self, user: str, uuid: str) -> Instance | None:
        found = await self._db(self._store.instances_by_uuid, user, [uuid])
        return found.get(uuid)

    # --- wait ---------------------------------------------------------------------------

    async def wait(
        self, user: User, items: Sequence[tuple[Ref, State, float]]
    ) -> list[Waited | ItemError]:
        outcomes = await self.get(user, [ref for ref, _state, _t in items])
        waits: list[Awaitable[Waited | ItemError]] = []
        for (_ref, state, timeout), outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, ItemError):
                waits.append(_done(outcome))
            else:
                waits.append(self._answer(self._wait_for(outcome.uuid, state, timeout, user.name)))
        return list(await asyncio.gather(*waits))

    @staticmethod
    async def _answer(work: Awaitable[Waited]) -> Waited | ItemError:
        """An item that fails (deleted meanwhile) answers for itself, not for the request."""
        try:
            return await work
        except ItemError as err:
            return err

    async def _wait_for(
        self, uuid: str, state: State, timeout_s: float, user: str, for_create: bool = False
    ) -> Waited:
        """Until the instance is in `state` (gone, for `deleted`), for at most `timeout_s`
        (-1: as long as it takes, within a day). A create's wait for `running` ends early when
        the new instance stopped and will not run again (it crashed, with no restart): a plain
        wait keeps waiting, since somebody may start it."""
        budget = WAIT_FOREVER_S if timeout_s < 0 else timeout_s
        deadline = time.monotonic() + budget
        last: Instance | None = None
        while True:
            async with self._changed:
                current = await self._by_uuid(user, uuid)
                if current is None:
                    if last is None:
                        raise not_found(NOUN, "uuid", uuid)
                    return Waited(replace(last, state=State.DELETED), state is State.DELETED)
                last = current
                if current.state is state:
                    return Waited(current, True)
                if for_create and state is State.RUNNING and _given_up(current):
                    return Waited(current, False)
                left = deadline - time.monotonic()
                if left <= 0:
                    return Waited(current, False)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=min(left, 0.5))

    # --- delete -------------------------------------------------------------------------

    async def delete(
        self, user: User, items: Sequence[tuple[Ref, int | None]]
    ) -> list[tuple[Outcome, State | None]]:
        outcomes = await self.get(user, [ref for ref, _t in items])
        results: list[tuple[Outcome, State | None]] = []
        waits = []
        for (_ref, timeout), outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, ItemError):
                results.append((outcome, None))
                continue
            if outcome.delete_lock:
                results.append(
                    (
                        ItemError(
                            ErrorCode.NOT_ALLOWED, f"Instance '{outcome.name}' has delete_lock set"
                        ),
                        outcome.state,
                    )
                )
                continue
            async with self._lock(outcome.uuid):
                task = await self._delete_one(outcome)
            self._locks.pop(outcome.uuid, None)
            if timeout:
                waits.append(
                    asyncio.wait_for(asyncio.shield(task), None if timeout < 0 else timeout)
                )
            results.append((outcome, outcome.state))
        for wait in waits:
            with contextlib.suppress(TimeoutError):
                await wait
        return results

    async def _delete_one(self, instance: Instance) -> asyncio.Task[None]:
        """The row goes at once (the name is free again, reads say not found); the processes
        and files go in the background, and the reconciler finishes the job after a crash."""
        group_gone = await self._db(self._store.delete_instance, instance, self._clock())
        self._groups.changed()
        await self._groups.publish([instance.group_uuid])
        if group_gone:
            log.info("deleted the instance-owned service group of %s", instance.name)
        run = self._runs.pop(instance.uuid, None)
        self._frozen.discard(instance.uuid)
        self._causes[instance.uuid] = StopCause(by_platform=True)
        async with self._changed:
            self._changed.notify_all()
        task = asyncio.create_task(
            self._teardown(instance.uuid, run), name=f"delete-{instance.uuid}"
        )
        self._track(self._teardowns, instance.uuid, task)
        return task

    async def _teardown(self, uuid: str, run: asyncio.Task[None] | None) -> None:
        try:
            await self._driver.stop(uuid, QUICK_GRACE_S)
            if run is not None:
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run
            await self._driver.remove(uuid)
            await asyncio.to_thread(shutil.rmtree, self._dir / uuid, True)
        finally:
            self._causes.pop(uuid, None)

    async def _teardown_deleted(self, instance: Instance) -> None:
        await self._db(self._store.delete_instance, instance, self._clock())
        self._groups.changed()
        await self._groups.publish([instance.group_uuid])
        async with self._changed:
            self._changed.notify_all()
        await self._driver.remove(instance.uuid)
        await asyncio.to_thread(shutil.rmtree, self._dir / instance.uuid, True)

    # --- logs and metrics ---------------------------------------------------------------

    async def logs(
        self, user: User, items: Sequence[tuple[Ref, int | None, int | None]]
    ) -> list[tuple[Outcome, LogSlice | None]]:
        outcomes = await self.get(user, [ref for ref, _o, _l in items])
        results: list[tuple[Outcome, LogSlice | None]] = []
        for (_ref, offset, limit), outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, ItemError):
                results.append((outcome, None))
                continue
            _root, console = self.paths(outcome.uuid)
            chunk = await asyncio.to_thread(
                read_log,
                console,
                LOG_DEFAULT_OFFSET if offset is None else offset,
                LOG_DEFAULT_LIMIT if limit is None else limit,
            )
            results.append((outcome, chunk))
        return results

    async def metrics(self, user: User, refs: Sequence[Ref]) -> list[tuple[Outcome, Usage | None]]:
        outcomes = await self.get(user, refs)
        return [
            (o, None if isinstance(o, ItemError) else self._driver.usage(o.uuid)) for o in outcomes
        ]

    def trim_logs(self) -> None:
        """Trim every running instance's log. Safe from a worker thread: `list()` copies the
        keys in one step under the GIL, so runs coming and going cannot break the loop."""
        self._trim_logs(list(self._runs))

    def _trim_logs(self, uuids: Sequence[str]) -> None:
        for uuid in uuids:
            try:
                trim_log(self.paths(uuid)[1], LOG_CAP_BYTES)
            except OSError as err:  # a log deleted meanwhile, say: never worth stopping for
                log.debug("trimming the log of %s: %s", uuid, err)

    async def run_log_trimmer(self) -> None:
        """Keep every running instance's console log within its cap. The list of runs is
        copied here, on the loop: the thread must not iterate a dict the loop changes."""
        while True:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(self._trim_logs, list(self._runs))

    # --- PATCH --------------------------------------------------------------------------

    async def patch(self, user: User, items: Sequence[InstancePatch]) -> list[Outcome]:
        """Apply the triples in order. Changes to what a run is made of (image, args, env,
        memory, vcpus, hostname) wait for the next start when the instance is live, and show
        in `updates` until then; the rest applies at once."""
        outcomes = await self.get(user, [item.ref for item in items])
        current: dict[str, Instance] = {o.uuid: o for o in outcomes if isinstance(o, Instance)}
        failed: dict[str, ItemError] = {}  # an instance one of whose triples failed
        for item, outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, Instance) and outcome.uuid not in failed:
                try:
                    current[outcome.uuid] = await self._patched(user, current[outcome.uuid], item)
                except ItemError as err:
                    failed[outcome.uuid] = err
        for uuid, updated in current.items():
            if uuid not in failed:
                # Only what PATCH owns is written: a run may have changed the state meanwhile.
                current[uuid] = await self._set(
                    updated,
                    config=updated.config,
                    pending=updated.pending,
                    tags=updated.tags,
                    delete_lock=updated.delete_lock,
                )
        results: list[Outcome] = []
        for outcome in outcomes:
            if isinstance(outcome, ItemError):
                results.append(outcome)
            else:
                results.append(failed.get(outcome.uuid) or current[outcome.uuid])
        async with self._changed:
            self._changed.notify_all()
        return results

    async def _patched(self, user: User, instance: Instance, item: InstancePatch) -> Instance:
        prop, op, value = item.prop, item.op, item.value
        if prop in META_PROPS:
            return apply_meta_patch(instance, prop, op, value, bool(instance.group_uuid))
        base = instance.pending or instance.config
        if prop == "image":
            if op != "set" or not isinstance(value, str):
                raise Invalid("value", "image takes 'set' with an image name")
            image = await self._db(self._resolve_image, user.name, value)
            await self._ensure_files(image.digest)
            config = replace(base, image=value, digest=image.digest)
        else:
            config = apply_config_patch(base, prop, op, value)
        if instance.state in LIVE or instance.state is State.STANDBY:
            return replace(instance, pending=None if config == instance.config else config)
        return replace(instance, config=config, pending=None)

    async def _ensure_files(self, digest: str) -> None:
        if self._images.get(digest) is None:
            raise ItemError(ErrorCode.NOT_FOUND, f"No image with digest '{digest}'")

    # --- reconcile ----------------------------------------------------------------------

    async def reconcile(self) -> None:
        """After a start, including one after kill -9: every instance that should run runs
        (adopting trees that survived), none runs twice, and nothing of a deleted one survives."""
        instances = await self._db(self._store.all_instances)
        known = {i.uuid for i in instances}
        alive = self._driver.running()
        for orphan in alive - known:
            await self._driver.remove(orphan)
        for stale in (p.name for p in self._dir.iterdir() if p.name not in known):
            await asyncio.to_thread(shutil.rmtree, self._dir / stale, True)
        for instance in instances:
            if instance.desired == RUN:
                adopted = self._driver.adopt(instance.uuid)
                if not adopted and instance.state is State.STANDBY:
                    continue  # asleep with nothing running: a wake starts it cold
                if not adopted and _ended_unseen(instance):
                    await self._record_unseen_end(instance)
                    continue
                self._spawn_supervisor(instance, adopted)
            elif instance.state in LIVE or instance.uuid in alive:
                # Asked to stop (the stop may not have finished before the crash).
                await self._driver.stop(instance.uuid, QUICK_GRACE_S)
                if instance.state is not State.STANDBY:
                    await self._set(instance, state=State.STOPPED)

    async def _record_unseen_end(self, instance: Instance) -> None:
        """The app of a `never` instance ended while the daemon was down (a clean shutdown
        marks what it stops as stopped, so this was not one): it stays stopped, with an
        unknown exit, as if the daemon had seen it end."""
        record = stop_record(None, None, None)
        status = _status(
            stop_reason=record.stop_reason,
            exit_code=None,
            stop_code=record.stop_code,
            stopped_at=self._clock(),
        )
        await self._set(instance, state=State.STOPPED, desired=HALT, status=status)

    def _spawn_supervisor(self, instance: Instance, adopted: bool) -> None:
        async def run() -> None:
            if not adopted and instance.state is not State.STOPPED:
                await self._set(instance, state=State.STOPPED)
            await self._supervise(instance.uuid, instance.user, adopted)

        task = asyncio.create_task(run(), name=f"run-{instance.uuid}")
        self._track(self._runs, instance.uuid, task)

    async def close(self) -> None:
        """A clean shutdown (SIGINT/SIGTERM) stops every instance and keeps what the user
        wants, so the next start runs them again. (After kill -9 they keep running and the
        next start adopts them.)"""
        tasks = [*self._runs.values(), *self._teardowns.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task that does not end when cancelled must not hold the shutdown.
            _done, stuck = await asyncio.wait(tasks, timeout=CLOSE_TASKS_TIMEOUT_S)
            for task in stuck:
                log.warning("task %s did not end when cancelled", task.get_name())
        running = self._driver.running()
        await asyncio.gather(
            *(self._driver.stop(uuid, QUICK_GRACE_S) for uuid in running), return_exceptions=True
        )
        # Marked stopped (still wanted running): the next start runs them again, and tells
        # them apart from apps that ended unseen while the daemon was down.
        for instance in await self._db(self._store.all_instances):
            if instance.state in LIVE:
                await self._db(self._store.save_instance, replace(instance, state=State.STOPPED))


def grace_of(req: StopRequest) -> float:
    return 0.0 if req.force else QUICK_GRACE_S if req.quick else STOP_GRACE_S


def _routing(instance: Instance) -> tuple[object, ...]:
    """What the gateway's Snapshot holds of an instance."""
    return (instance.state, instance.group_uuid, instance.private_ip, instance.name)


async def _done(value: T) -> T:
    return value


def _status(**fields: Any) -> Callable[[RunStatus], RunStatus]:
    """A change to some fields of the run status, applied to the status as it is when written."""
    return lambda current: replace(current, **fields)


def _ended_unseen(instance: Instance) -> bool:
    return instance.state in LIVE and instance.config.restart_policy == NEVER


def _given_up(instance: Instance) -> bool:
    return (
        instance.state is State.STOPPED
        and instance.desired == HALT
        and instance.status.start_count > 0
    )


def _taken(address: str, port: int) -> str:
    return (
        f"portway: cannot start: {address}:{port} already accepts connections, from a process "
        f"that is not this instance (one listening on 0.0.0.0:{port} or on {address}, such as "
        f"another instance whose app ignores $HOST); it will not start while that process "
        f"holds the port\n"
    )


async def _accepts(host: str, port: int) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _append_log(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(text)


def _utc(epoch: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)
