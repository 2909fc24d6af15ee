"""`portway up` itself: banner, health, auth, clean shutdown."""

from __future__ import annotations

import contextlib
import json
import signal
import stat
from pathlib import Path

import httpx

from portway import compiled
from tests.daemon import Daemon, free_offset


def test_banner_points_sdk_and_cli_at_the_daemon(daemon: Daemon) -> None:
    text = "".join(daemon.output)
    assert daemon.url.startswith("http://127.0.0.1:") and daemon.url.endswith("/v1")
    assert daemon.token == (daemon.data_dir / "admin.token").read_text().strip()
    assert "token file:" in text
    assert f"hot path:   {compiled.mode}\n" in text  # the daemon runs what this suite tests
    client = json.loads((daemon.data_dir / "client.json").read_text())
    assert client["metro"] == daemon.url


def test_secrets_are_private(daemon: Daemon) -> None:
    for name in ("admin.token", "users.json"):
        mode = stat.S_IMODE((daemon.data_dir / name).stat().st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}"
    users = (daemon.data_dir / "users.json").read_text()
    assert daemon.token not in users, "tokens are stored as digests only"


def test_healthz_needs_no_token(daemon: Daemon) -> None:
    r = httpx.get(f"{daemon.url}/healthz", timeout=5)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json()["data"]["checks"] == {"store": "ok"}


def test_auth_401_without_token_403_with_wrong_one(daemon: Daemon) -> None:
    r = httpx.get(f"{daemon.url}/services", timeout=5)
    assert r.status_code == 401 and r.json()["status"] == "error"
    r = httpx.get(f"{daemon.url}/services", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert r.status_code == 403 and r.json()["status"] == "error"
    r = httpx.get(f"{daemon.url}/services", headers={"Authorization": "Basic abc"}, timeout=5)
    assert r.status_code == 401


def test_unknown_route_is_404_json_and_no_redirects(daemon: Daemon) -> None:
    auth = {"Authorization": f"Bearer {daemon.token}"}
    r = httpx.get(f"{daemon.url}/nothing-here", headers=auth, timeout=5)
    assert r.status_code == 404 and r.json()["status"] == "error"
    r = httpx.get(f"{daemon.url}/services/", headers=auth, timeout=5, follow_redirects=False)
    assert not r.is_redirect


def test_sigterm_stops_cleanly(daemon: Daemon) -> None:
    assert daemon.kill(signal.SIGTERM) == 0


def test_daemons_whose_data_directories_pick_one_pool_serve_their_own_apps(
    tmp_path: Path,
) -> None:
    """Two daemons on one host must not give instances the same private address: the second
    app would fail to bind while its readiness check saw the first one's port, and its traffic
    would reach the other daemon's app. The data directories here hash to the same /16."""
    import hashlib
    import ipaddress
    import sys

    from portway.runtime.ipam import daemon_pools
    from portway.runtime.pool_claim import RECORD
    from tests.e2e.test_gateway import HTTP_APP

    by_pool: dict[ipaddress.IPv4Network, Path] = {}
    for index in range(129):  # 128 pools: two of 129 names share one
        candidate = tmp_path / f"data{index}"
        pool = daemon_pools(hashlib.sha256(str(candidate).encode()).digest())[0]
        if pool in by_pool:
            break
        by_pool[pool] = candidate
    pair = (by_pool[pool], candidate)
    app = tmp_path / "app.py"
    app.write_text(HTTP_APP)
    daemons = [Daemon(folder).start() for folder in pair]
    try:
        served = []
        for d in daemons:
            auth = {"Authorization": f"Bearer {d.token}"}
            body = {
                "image": "host",
                "args": [sys.executable, str(app)],
                "service_group": {
                    "services": [{"port": 80, "destination_port": 8080, "handlers": ["http"]}]
                },
                "autostart": True,
                "timeout_s": 20,
            }
            r = httpx.post(f"{d.url}/instances", headers=auth, json=body, timeout=30)
            [item] = r.json()["data"]["instances"]
            assert item["state"] == "running", item
            claimed = ipaddress.IPv4Network((d.data_dir / RECORD).read_text().strip())
            assert ipaddress.ip_address(item["private_ip"]) in claimed, item["private_ip"]
            host, port = d.gateway(80)
            fqdn = item["service_group"]["domains"][0]["fqdn"]
            answer = httpx.get(f"http://{host}:{port}/", headers={"Host": fqdn}, timeout=10)
            served.append((item["private_ip"], item["name"], answer.text))
        assert served[0][0] != served[1][0]
        assert [text for _, _, text in served] == [name for _, name, _ in served]
    finally:
        for d in daemons:
            d.stop()


def test_a_host_with_no_free_address_pool_refuses_to_start_and_says_why(tmp_path: Path) -> None:
    """Every /16 held by other daemons: `portway up` exits 1 naming the lock directory, not a
    traceback. The daemon's TMPDIR points its lock directory into this test's own folder."""
    import os
    import subprocess
    import sys

    from portway.runtime.pool_claim import PoolClaim, claim_pool

    locks = tmp_path / "portway-address-pools"
    held: list[PoolClaim] = []
    try:
        for index in range(128):
            folder = tmp_path / f"other{index}"
            folder.mkdir()
            held.append(claim_pool(b"\x00\x00", folder, locks))
        env = {**os.environ, "TMPDIR": str(tmp_path)}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "portway",
                "up",
                "--port",
                "0",
                "--port-offset",
                str(free_offset()),  # were it to start after all, on ports of its own
                "--data-dir",
                str(tmp_path / "data"),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    finally:
        for claim in held:
            claim.release()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "portway: cannot start:" in done.stderr and str(locks) in done.stderr
    assert "Traceback" not in done.stderr and "is up" not in done.stdout


def test_an_image_name_with_dots_or_underscores_gives_a_valid_instance_name(
    daemon: Daemon, tmp_path: Path
) -> None:
    """Random instance names are `<app>-<5 alnum>`, with <app> made a DNS label from the image
    name: `my_app.v2` must not yield a name the API itself would refuse."""
    import io
    import tarfile

    from portway.model.names import check_name

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = b'command = ["/bin/true"]\n'
        info = tarfile.TarInfo("portway.toml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    auth = {"Authorization": f"Bearer {daemon.token}"}
    r = httpx.post(
        f"{daemon.url}/images",
        params={"name": "my_app.v2"},
        headers=auth,
        content=buffer.getvalue(),
        timeout=10,
    )
    assert r.status_code == 200, r.text
    r = httpx.post(f"{daemon.url}/instances", headers=auth, json={"image": "my_app.v2"}, timeout=10)
    name = r.json()["data"]["instances"][0]["name"]
    assert name.startswith("my-app-v2-") and check_name("name", name) == name


def test_sigterm_during_a_long_api_wait_still_stops_promptly(daemon: Daemon) -> None:
    """uvicorn waits for running requests at shutdown; a `wait` with a long timeout must not
    keep the daemon from stopping (the API's graceful shutdown is bounded)."""
    import threading
    import time

    auth = {"Authorization": f"Bearer {daemon.token}"}
    body = {"image": "host", "args": ["/bin/sleep", "30"], "autostart": False}
    item = httpx.post(f"{daemon.url}/instances", headers=auth, json=body, timeout=10).json()
    uuid = item["data"]["instances"][0]["uuid"]

    def long_wait() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.request(
                "GET",
                f"{daemon.url}/instances/wait",
                headers=auth,
                json=[{"uuid": uuid, "state": "running", "timeout_s": 60}],
                timeout=70,
            )

    waiter = threading.Thread(target=long_wait, daemon=True)
    waiter.start()
    time.sleep(0.5)  # the wait is in progress
    started = time.monotonic()
    assert daemon.kill(signal.SIGTERM) == 0
    assert time.monotonic() - started < 15
    waiter.join(10)
