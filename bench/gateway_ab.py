"""Two builds of Portway side by side: CPU time per request and rps under wrk, round by round.

    .venv/bin/python bench/gateway_ab.py A_SRC B_SRC [--rounds 6] [--duration 5]

A_SRC and B_SRC are `src` directories of two checkouts, each built (compiled) in place, e.g.
`git worktree add /tmp/a <commit> && make -C /tmp/a .venv/.test`, then `/tmp/a/src`. The
daemons run this checkout's Python with PYTHONPATH set to their own `src`.

Why: on these shared VMs CPU time per request swings by a quarter from one minute to the next,
which hides a 10-15% change between bench/gateway.py runs made minutes apart. Here both daemons
and their backends are up at once, and each round runs `wrk -c64` on one, then on the other (the
order alternates), so each pair of figures shares a minute. It prints every round, the medians
and B/A; a change is real when B wins most rounds, not only the medians.

Every wait is bounded; traffic stays on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

import gateway as g
from _daemon import running_daemon

CONNECTIONS = 64


@dataclass
class Side:
    name: str
    pid: int
    target: g.Target
    rows: list[g.WrkResult]


@contextlib.contextmanager
def side(name: str, src: Path, workdir: Path) -> Iterator[Side]:
    """One daemon importing Portway from `src`, serving two nginx backends on port 80."""
    data = workdir / name / "data"
    data.mkdir(parents=True)
    docroot = g.write_docroot(workdir / name / "www")
    offset = g.pick_offset("127.0.0.1", None)
    made: set[str] = set()
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(src)
    try:
        daemon_cm = running_daemon(
            data, "--gateway-host", "127.0.0.1", "--port-offset", str(offset)
        )
        daemon = daemon_cm.__enter__()
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = previous
    try:
        headers = {"Authorization": f"Bearer {daemon.token}"}
        with httpx.Client(base_url=daemon.url, headers=headers, timeout=30, trust_env=False) as c:
            backends = g.create_backends(c, workdir / name, docroot, made)
            listen = g.gateway_listeners(c, "127.0.0.1", offset)
            target = g.portway_target(backends, listen, daemon.pid)
            try:
                yield Side(name, daemon.pid, target, [])
            finally:
                g.delete_instances(c, backends.uuids)
    finally:
        daemon_cm.__exit__(*sys.exc_info())
        g.kill_processes_of(made)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a_src", type=Path)
    parser.add_argument("b_src", type=Path)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    args = parser.parse_args()
    case = next(c for c in g.CASES if c.key == "http-c64")
    assert case.connections == CONNECTIONS
    with tempfile.TemporaryDirectory(prefix="portway-ab-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        lua = workdir / "connect.lua"
        lua.write_text(g.CONNECT_LUA)
        sides = [
            stack.enter_context(side("A", args.a_src.resolve(), workdir)),
            stack.enter_context(side("B", args.b_src.resolve(), workdir)),
        ]
        for s in sides:
            g.run_wrk(s.target, case, g.WARMUP_S, lua)
        for n in range(args.rounds):
            for s in sides if n % 2 == 0 else sides[::-1]:
                r = g.run_wrk(s.target, case, args.duration, lua)
                s.rows.append(r)
                print(
                    f"round {n} {s.name}: rps {r.rps:8.0f}  cpu us/req {r.cpu_us:6.1f}  "
                    f"p99 {r.p99_ms:6.2f} ms",
                    flush=True,
                )
        report(sides)


def report(sides: list[Side]) -> None:
    a, b = sides
    wins = sum(rb.cpu_us < ra.cpu_us for ra, rb in zip(a.rows, b.rows, strict=True))
    for s in sides:
        print(
            f"{s.name} median: rps {statistics.median(r.rps for r in s.rows):8.0f}  "
            f"cpu us/req {statistics.median(r.cpu_us for r in s.rows):6.1f}"
        )
    rps = statistics.median(r.rps for r in b.rows) / statistics.median(r.rps for r in a.rows)
    cpu = statistics.median(r.cpu_us for r in b.rows) / statistics.median(r.cpu_us for r in a.rows)
    print(
        f"B/A: rps {rps:.2f}x  cpu us/req {cpu:.2f}x  (B used less CPU in {wins} of "
        f"{len(a.rows)} rounds)"
    )


if __name__ == "__main__":
    main()
