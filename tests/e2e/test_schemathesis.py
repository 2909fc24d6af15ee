"""Property-based API tests: schemathesis against the OpenAPI document a real daemon serves.

`st run` loads `/openapi.json` from a real `portway up` and sends every operation generated
requests (boundary and invalid values in the coverage phase, random ones in the fuzzing phase)
with an API token. Whatever is sent, the daemon must never answer 5xx, and every answer must
match the response schema and the content type the document declares for its status code.

The CLI runs in a subprocess with a fixed seed and bounded examples; its JSON report is the
verdict. (schemathesis' pytest plugin cannot load a schema from a fixture under pytest 9.2:
`LazySchema.parametrize` reads `request.node._nodeid`, which pytest no longer has.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon import Daemon

pytestmark = pytest.mark.e2e

CHECKS = ("not_a_server_error", "response_schema_conformance", "content_type_conformance")
MAX_EXAMPLES = 50
SEED = 20261121
RUN_TIMEOUT_S = 150


def seed_groups(daemon: Daemon) -> None:
    """A few groups, so list reads answer full objects (and not only empty pages)."""
    auth = {"Authorization": f"Bearer {daemon.token}"}
    with httpx.Client(base_url=daemon.url, headers=auth, timeout=10) as client:
        for body in (
            {
                "name": "seed-web",
                "services": [
                    {"port": 443, "destination_port": 8080},
                    {"port": 80, "destination_port": 443},
                ],
                "domains": [{"name": "seed.example.com."}, {"name": "seed"}],
                "soft_limit": 2,
                "hard_limit": 8,
                "autokill": {"time_ms": 600_000},
            },
            {"services": [{"port": 8443, "handlers": ["tls"]}]},
        ):
            r = client.post("/services", json=body)
            assert r.status_code == 200 and r.json()["status"] == "success", r.text


Finished = subprocess.CompletedProcess[str]


def st_run(daemon: Daemon, workdir: Path) -> tuple[Finished, dict[str, Any]]:
    """`st run` against the daemon's served document; returns the process and its JSON report."""
    report = workdir / "report.json"
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{daemon.base}/openapi.json",
        "--header",
        f"Authorization: Bearer {daemon.token}",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--max-redirects",
        "0",
        "--generation-database",
        "none",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--no-color",
    ]
    proc = subprocess.run(
        cmd,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env={"PATH": "/usr/bin:/bin", "HOME": str(workdir), "NO_COLOR": "1"},
    )
    assert report.exists(), f"schemathesis wrote no report:\n{proc.stdout}\n{proc.stderr}"
    return proc, json.loads(report.read_text())


def test_api_conforms_to_its_openapi_document(daemon: Daemon, tmp_path: Path) -> None:
    seed_groups(daemon)
    documented = httpx.get(f"{daemon.base}/openapi.json", timeout=10).json()["paths"]
    n_ops = sum(len(methods) for methods in documented.values())

    proc, report = st_run(daemon, tmp_path)
    output = f"{proc.stdout[-8000:]}\n{proc.stderr[-2000:]}"

    assert report["failures"] == [], output
    assert report["errors"] == [], output
    assert report["test_cases"]["with_failures"] == 0, output
    assert proc.returncode == 0, output
    assert report["complete"] is True and report["stop_reason"] == "completed", output
    # Every documented operation was actually exercised, in both generating phases.
    ops = report["operations"]
    assert ops["total"] == ops["selected"] == ops["tested"] == n_ops >= 9, ops
    assert ops["errored"] == 0 and ops["skipped"] == 0, ops
    assert report["phases"]["coverage"]["status"] == "success", report["phases"]
    assert report["phases"]["fuzzing"]["status"] == "success", report["phases"]
    assert report["test_cases"]["generated"] >= 20 * n_ops, report["test_cases"]
    # The token was sent: no operation was reported as answering only "unauthorized".
    assert report["warnings"]["missing_auth"] == [], report["warnings"]
    # The daemon survived it all.
    assert daemon.proc is not None and daemon.proc.poll() is None, "".join(daemon.output)
    r = httpx.get(f"{daemon.url}/healthz", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "success"


def test_document_covers_the_service_group_routes(shared_daemon: Daemon) -> None:
    """The fuzzing reaches only what the document lists: make sure that is every route."""
    r = httpx.get(f"{shared_daemon.base}/openapi.json", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    ops = {(m.upper(), p) for p, methods in r.json()["paths"].items() for m in methods}
    assert {
        ("POST", "/v1/services"),
        ("GET", "/v1/services"),
        ("PATCH", "/v1/services"),
        ("DELETE", "/v1/services"),
        ("GET", "/v1/services/{uuid}"),
        ("PATCH", "/v1/services/{uuid}"),
        ("DELETE", "/v1/services/{uuid}"),
        ("GET", "/v1/services/list"),
        ("GET", "/v1/healthz"),
    } <= ops
