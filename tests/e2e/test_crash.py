"""Crash consistency: SIGKILL `portway up` in the middle of a stream of writes, restart it on the
same data directory, and check that every acknowledged write survived and the database is intact.

Each cycle restarts the daemon, checks the state the previous crash left behind, then runs a few
concurrent writers (create, PATCH soft_limit, DELETE) and kills the daemon after a random delay.
A write counts only once acknowledged: HTTP 2xx and the item's status "success". The request
each writer had in flight at the kill may or may not have landed, so the check accepts both
outcomes for it and then adopts whichever it finds, so that later cycles stay exact.

Writers never share a group: each owns a disjoint set, so the order of the acknowledged writes
to one group is the order they were sent in, and "the last acknowledged soft_limit" is defined.

Reproduce a run's choices with PORTWAY_CRASH_SEED=<the seed the test prints>. (Timing still
varies from run to run, so the kill lands elsewhere; the seed fixes what is written.)
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from tests.daemon import Daemon

CYCLES = 20
WRITERS = 4
KILL_DELAY_S = (0.05, 0.4)
# Bounds, so that no loop or wait can run away whatever the daemon does.
MAX_OPS_PER_WRITER = 2_000
REQUEST_TIMEOUT_S = 5.0
JOIN_TIMEOUT_S = 15.0
READY_TIMEOUT_S = 10.0
# Odds of each operation once a writer owns a group; the rest are creates, so the set grows.
P_DELETE = 0.15
P_PATCH = 0.30
SOFT_LIMIT_RANGE = (1, 1_000)  # below the default hard_limit, so every value is valid

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(150)]


# --- what the writers were told happened ----------------------------------------------------


@dataclass
class Group:
    uuid: str
    name: str
    soft_limit: int


@dataclass(frozen=True)
class Op:
    kind: Literal["create", "patch", "delete"]
    name: str = ""
    uuid: str = ""
    soft_limit: int = 0

    def __str__(self) -> str:
        target = self.name or self.uuid
        limit = f" soft_limit={self.soft_limit}" if self.kind != "delete" else ""
        return f"{self.kind} {target}{limit}"


@dataclass
class Ledger:
    """Every acknowledged write, shared by the writer threads."""

    live: dict[str, Group] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=lambda: {"create": 0, "patch": 0, "delete": 0})
    # What became of the ops in doubt, to show that the kills do land on both sides of a commit.
    # A patch whose value equals the acknowledged one cannot be told apart, so it is not counted.
    landed: int = 0
    not_landed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, op: Op, item: dict[str, Any]) -> None:
        with self.lock:
            self.acked[op.kind] += 1
            if op.kind == "create":
                self.live[item["uuid"]] = Group(item["uuid"], op.name, op.soft_limit)
            elif op.kind == "patch":
                self.live[op.uuid].soft_limit = op.soft_limit
            else:
                del self.live[op.uuid]
                self.deleted.add(op.uuid)

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)


# --- the writers ----------------------------------------------------------------------------


def acked_item(response: httpx.Response) -> dict[str, Any] | None:
    """The one item of a 2xx answer whose status is success, or None for anything else."""
    if not response.is_success:
        return None
    items = response.json().get("data", {}).get("service_groups", [])
    if len(items) != 1 or items[0].get("status") != "success":
        return None
    item: dict[str, Any] = items[0]
    return item


class Writer:
    """Sends one write at a time until stopped or until the daemon goes away mid-request."""

    def __init__(
        self,
        daemon: Daemon,
        ledger: Ledger,
        owned: list[str],
        rng: random.Random,
        prefix: str,
        ready: threading.Barrier,
        stop: threading.Event,
    ) -> None:
        self.daemon = daemon
        self.ledger = ledger
        self.owned = owned
        self.rng = rng
        self.prefix = prefix
        self.ready = ready
        self.stop = stop
        self.created = 0
        self.in_flight: Op | None = None

    def run(self) -> None:
        auth = {"Authorization": f"Bearer {self.daemon.token}"}
        with httpx.Client(base_url=self.daemon.url, headers=auth, timeout=REQUEST_TIMEOUT_S) as c:
            # Making a client takes tens of ms; start the kill clock only once all can write.
            self.ready.wait(READY_TIMEOUT_S)
            for _ in range(MAX_OPS_PER_WRITER):
                if self.stop.is_set():
                    return
                op = self.next_op()
                # Set before sending: if the kill cuts the request, this is the op in doubt.
                self.in_flight = op
                try:
                    response = self.send(c, op)
                except httpx.TransportError:
                    return  # the daemon died under us; the op may or may not have landed
                item = acked_item(response)
                if item is None:
                    # Not an acknowledgement, yet the daemon was alive: a bug to report. Stop
                    # here and leave the op in doubt, since we cannot tell what it wrote.
                    self.ledger.problem(f"{op}: HTTP {response.status_code} {response.text[:300]}")
                    return
                self.ledger.ack(op, item)
                self.track(op, item)
                self.in_flight = None

    def next_op(self) -> Op:
        roll = self.rng.random()
        if self.owned and roll < P_DELETE:
            return Op("delete", uuid=self.rng.choice(self.owned))
        if self.owned and roll < P_DELETE + P_PATCH:
            return Op("patch", uuid=self.rng.choice(self.owned), soft_limit=self.soft_limit())
        self.created += 1
        return Op("create", name=f"{self.prefix}-{self.created}", soft_limit=self.soft_limit())

    def soft_limit(self) -> int:
        return self.rng.randint(*SOFT_LIMIT_RANGE)

    @staticmethod
    def send(client: httpx.Client, op: Op) -> httpx.Response:
        if op.kind == "create":
            body = {
                "name": op.name,
                "soft_limit": op.soft_limit,
                "services": [{"port": 443, "destination_port": 8080}],
            }
            return client.post("/services", json=body)
        if op.kind == "patch":
            body = {"prop": "soft_limit", "op": "set", "value": op.soft_limit}
            return client.patch(f"/services/{op.uuid}", json=body)
        return client.delete(f"/services/{op.uuid}")

    def track(self, op: Op, item: dict[str, Any]) -> None:
        if op.kind == "create":
            self.owned.append(item["uuid"])
        elif op.kind == "delete":
            self.owned.remove(op.uuid)


# --- one cycle: write, kill -----------------------------------------------------------------


def write_until_killed(
    daemon: Daemon, ledger: Ledger, cycle: int, seed: int, delay_s: float
) -> list[Op]:
    """Run the writers, SIGKILL the daemon after `delay_s`, return the ops left in doubt."""
    stop = threading.Event()
    ready = threading.Barrier(WRITERS + 1)
    uuids = sorted(ledger.live)
    writers = [
        Writer(
            daemon,
            ledger,
            owned=uuids[w::WRITERS],
            rng=random.Random(f"{seed}-{cycle}-{w}"),
            prefix=f"c{cycle}-w{w}",
            ready=ready,
            stop=stop,
        )
        for w in range(WRITERS)
    ]
    threads = [threading.Thread(target=w.run, name=f"writer-{i}") for i, w in enumerate(writers)]
    for t in threads:
        t.start()
    try:
        ready.wait(READY_TIMEOUT_S)
        time.sleep(delay_s)
    finally:
        daemon.kill(signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join(JOIN_TIMEOUT_S)
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"writers still running {JOIN_TIMEOUT_S}s after the kill: {stuck}"
    return [w.in_flight for w in writers if w.in_flight is not None]


# --- checks ---------------------------------------------------------------------------------


def list_groups(daemon: Daemon) -> dict[str, dict[str, Any]]:
    """Every group the daemon has, by uuid."""
    r = httpx.get(
        f"{daemon.url}/services",
        headers={"Authorization": f"Bearer {daemon.token}"},
        timeout=REQUEST_TIMEOUT_S,
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "success", doc
    items = doc["data"]["service_groups"]
    names = [item["name"] for item in items]
    assert len(set(names)) == len(names), "a name appears twice in the listing"
    return {item["uuid"]: item for item in items}


def reconcile(ledger: Ledger, in_doubt: list[Op], found: dict[str, dict[str, Any]]) -> list[str]:
    """What is wrong with `found` given the acknowledged writes. Then adopt the outcome of the
    ops in doubt (now durable, since the daemon has restarted on them) into the ledger."""
    problems: list[str] = []
    patching = {op.uuid: op.soft_limit for op in in_doubt if op.kind == "patch"}
    deleting = {op.uuid for op in in_doubt if op.kind == "delete"}
    creating = {op.name: op for op in in_doubt if op.kind == "create"}

    for uuid, group in list(ledger.live.items()):
        item = found.get(uuid)
        if item is None:
            if uuid in deleting:  # the delete in flight landed
                ledger.landed += 1
                del ledger.live[uuid]
                ledger.deleted.add(uuid)
            else:
                problems.append(f"acknowledged group {group.name} ({uuid}) is missing")
            continue
        allowed = {group.soft_limit, patching.get(uuid, group.soft_limit)}
        if item["name"] != group.name or item["soft_limit"] not in allowed:
            problems.append(
                f"group {group.name} ({uuid}): found name={item['name']} "
                f"soft_limit={item['soft_limit']}, acknowledged soft_limit={group.soft_limit}"
                + (f" (in flight: {patching[uuid]})" if uuid in patching else "")
            )
        if uuid in deleting:
            ledger.not_landed += 1
        elif uuid in patching and patching[uuid] != group.soft_limit:
            landed = item["soft_limit"] == patching[uuid]
            ledger.landed += landed
            ledger.not_landed += not landed
        group.soft_limit = item["soft_limit"]

    for uuid in sorted(ledger.deleted & found.keys()):
        problems.append(f"acknowledged delete of {found[uuid]['name']} ({uuid}) was undone")

    for uuid, item in found.items():
        if uuid in ledger.live or uuid in ledger.deleted:
            continue
        op = creating.get(item["name"])
        if op is None:
            problems.append(f"group {item['name']} ({uuid}) was never created by anyone")
        elif item["soft_limit"] != op.soft_limit:
            problems.append(f"in-flight create {op} landed with soft_limit={item['soft_limit']}")
        else:
            ledger.landed += 1
        ledger.live[uuid] = Group(uuid, item["name"], item["soft_limit"])
    ledger.not_landed += len(creating.keys() - {item["name"] for item in found.values()})
    return problems


def check_database(db: Path) -> None:
    """The file SQLite left behind is sound. Read-only, so this inspection neither checkpoints
    nor repairs anything: the daemon must cope with the files exactly as the crash left them."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    try:
        integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        orphans = conn.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        conn.close()
    assert integrity == ["ok"], f"integrity_check: {integrity[:10]}"
    assert orphans == [], f"foreign_key_check: {orphans[:10]}"


def check_after_restart(daemon: Daemon, ledger: Ledger, in_doubt: list[Op], seed: int) -> None:
    problems = reconcile(ledger, in_doubt, list_groups(daemon))
    assert not problems, f"seed {seed}: " + "; ".join(problems[:20])


# --- the test -------------------------------------------------------------------------------


def crash_seed() -> int:
    env = os.environ.get("PORTWAY_CRASH_SEED")
    return int(env) if env else random.SystemRandom().randrange(2**32)


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    seed = crash_seed()
    print(f"PORTWAY_CRASH_SEED={seed}")
    rng = random.Random(seed)
    ledger = Ledger()
    daemon = Daemon(tmp_path / "data")
    db = daemon.data_dir / "portway.db"
    in_doubt: list[Op] = []
    try:
        for cycle in range(CYCLES):
            daemon.start()
            check_after_restart(daemon, ledger, in_doubt, seed)
            delay_s = rng.uniform(*KILL_DELAY_S)
            before = dict(ledger.acked)
            in_doubt = write_until_killed(daemon, ledger, cycle, seed, delay_s)
            assert not ledger.problems, f"seed {seed}: " + "; ".join(ledger.problems[:20])
            check_database(db)
            acked = {k: ledger.acked[k] - before[k] for k in before}
            print(
                f"cycle {cycle:2}: killed after {delay_s * 1000:3.0f} ms, acked {acked}, "
                f"in doubt {len(in_doubt)}, live {len(ledger.live)}"
            )
        daemon.start()
        check_after_restart(daemon, ledger, in_doubt, seed)
        check_database(db)  # now with the daemon running: WAL lets a reader in
    finally:
        daemon.stop()
    print(
        f"total acked {ledger.acked}, live {len(ledger.live)}, deleted {len(ledger.deleted)}; "
        f"ops in doubt at a kill: {ledger.landed} landed, {ledger.not_landed} did not"
    )
    assert sum(ledger.acked.values()) > CYCLES, "too few writes were acknowledged to prove much"
