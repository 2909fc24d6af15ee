"""The gateway of a real `portway up`, reached the way users reach it: real instances (Python
processes), public ports under the daemon's port offset, real TLS with the daemon's local CA.

Covers the apply barrier with a drain under load, the redirect handler, an unknown host, SNI
choosing certificates, TCP mode with half-close, and what /metrics, the access log and the
instance metrics report. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import socket
import ssl
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from tests.daemon import Daemon

pytestmark = pytest.mark.e2e

TIMEOUT = httpx.Timeout(30.0)
WAIT_S = 20.0

# An HTTP/1.1 keep-alive app that prints one JSON line per request: the gateway's receipt time
# (X-Request-Start, µs) and the forwarded headers it saw.
HTTP_APP = textwrap.dedent(
    """
    import json, os, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            start = self.headers.get("X-Request-Start", "t=0")[2:]
            print(json.dumps({"t": int(start), "path": self.path,
                              "xff": self.headers.get("X-Forwarded-For"),
                              "proto": self.headers.get("X-Forwarded-Proto")}), flush=True)
            body = os.environ["PORTWAY_NAME"].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
    """
)

# Echo until the client's end of stream, then close: half-close shows as the echo completing.
ECHO_APP = textwrap.dedent(
    """
    import os, socket, threading

    def serve(conn):
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)

    server = socket.create_server((os.environ["HOST"], int(os.environ["PORT"])), backlog=512)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
    """
)


class Api:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.http = httpx.Client(
            base_url=daemon.url,
            headers={"Authorization": f"Bearer {daemon.token}"},
            timeout=TIMEOUT,
            trust_env=False,
        )

    def items(self, method: str, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        r = self.http.request(method, path, **kwargs)
        assert r.status_code == 200, r.text
        doc = r.json()
        key = "service_groups" if path.startswith("/services") else "instances"
        items: list[dict[str, Any]] = doc["data"][key]
        assert all(i["status"] == "success" for i in items), doc
        return items

    def group(self, name: str, services: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        body = {"name": name, "services": services, **extra}
        [group] = self.items("POST", "/services", json=body)
        return group

    def instances(self, group: str, script: Path, count: int, port: int) -> list[dict[str, Any]]:
        body = {
            "image": "host",
            "args": [sys.executable, str(script)],
            "service_group": {"name": group},
            "replicas": count - 1,
            "autostart": True,
            "timeout_s": 20,
        }
        made = self.items("POST", "/instances", json=body)
        assert all(i["state"] == "running" for i in made), made
        return made


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("apps")
    (folder / "http_app.py").write_text(HTTP_APP)
    (folder / "echo_app.py").write_text(ECHO_APP)
    return {"http": folder / "http_app.py", "echo": folder / "echo_app.py"}


@pytest.fixture(scope="module")
def api(shared_daemon: Daemon) -> Iterator[Api]:
    client = Api(shared_daemon)
    yield client
    client.http.close()


def _console(daemon: Daemon, uuid: str) -> list[dict[str, Any]]:
    path = daemon.data_dir / "instances" / uuid / "console.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.startswith("{")]


def _tls_context(daemon: Daemon) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(daemon.data_dir / "tls" / "ca.pem"))


# --- the apply barrier under load -------------------------------------------------------------


def test_drain_under_load_loses_nothing_and_sends_nothing_after(
    api: Api, shared_daemon: Daemon, apps: dict[str, Path]
) -> None:
    group = api.group("drain", [{"port": 80, "destination_port": 8080, "handlers": ["http"]}])
    fqdn = group["domains"][0]["fqdn"]
    made = api.instances("drain", apps["http"], 3, 8080)
    victim = made[0]
    address = shared_daemon.gateway(80)
    failures: list[str] = []
    served: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(rate: float) -> None:
        conn = http.client.HTTPConnection(*address, timeout=10)
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                conn.request("GET", "/", headers={"Host": fqdn})
                response = conn.getresponse()
                body = response.read().decode()
                with lock:
                    (served if response.status == 200 else failures).append(
                        body if response.status == 200 else f"{response.status} {body}"
                    )
            except (OSError, http.client.HTTPException) as err:
                with lock:
                    failures.append(repr(err))
                conn.close()
                conn = http.client.HTTPConnection(*address, timeout=10)
            next_at += 1 / rate
            time.sleep(max(0.0, next_at - time.monotonic()))
        conn.close()

    workers = [threading.Thread(target=client, args=(25.0,), daemon=True) for _ in range(8)]
    for w in workers:
        w.start()  # 8 x 25 = 200 requests a second
    time.sleep(1.5)
    [stopped] = api.items(
        "PUT", "/instances/stop", json=[{"uuid": victim["uuid"], "drain_timeout_ms": 5000}]
    )
    returned_us = int(time.time() * 1_000_000)
    time.sleep(1.5)
    stop.set()
    for w in workers:
        w.join(WAIT_S)
    assert stopped["state"] in ("draining", "stopping", "stopped")
    assert failures == [], failures[:5]
    assert len(served) >= 300  # about 3 s at 200 rps (600), with room for a loaded machine
    seen = _console(shared_daemon, victim["uuid"])
    assert seen, "the instance served nothing before its stop"
    late = [r for r in seen if r["t"] >= returned_us]
    assert late == [], f"{len(late)} requests reached the instance after its stop returned"
    others = {i["name"] for i in made[1:]}
    assert {name for name in served[-100:]} <= others
    [after] = api.items("GET", "/instances", json=[{"uuid": victim["uuid"]}])
    assert after["state"] in ("stopping", "stopped")


# --- handlers, hosts and certificates ---------------------------------------------------------


def test_redirect_and_unknown_host(api: Api, shared_daemon: Daemon, apps: dict[str, Path]) -> None:
    group = api.group(
        "redirects",
        [
            {"port": 443, "destination_port": 8080},
            {"port": 80, "destination_port": 443, "handlers": ["http", "redirect"]},
        ],
    )
    fqdn = group["domains"][0]["fqdn"]
    [instance] = api.instances("redirects", apps["http"], 1, 8080)
    host, port = shared_daemon.gateway(80)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/a/b?c=d", headers={"Host": fqdn})
    response = conn.getresponse()
    response.read()
    assert response.status == 301
    https_port = 443 + shared_daemon.port_offset
    assert response.getheader("Location") == f"https://{fqdn}:{https_port}/a/b?c=d"
    conn.request("GET", "/", headers={"Host": "nobody.example.test"})
    response = conn.getresponse()
    assert response.status == 404
    assert b"nobody.example.test" in response.read()
    conn.close()
    # And the HTTPS side serves the app, with the forwarded headers set.
    context = _tls_context(shared_daemon)
    with (
        socket.create_connection(shared_daemon.gateway(443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=fqdn) as tls,
    ):
        tls.sendall(
            f"GET /x HTTP/1.1\r\nHost: {fqdn}\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n".encode()
        )
        response = http.client.HTTPResponse(tls)  # type: ignore[arg-type]
        response.begin()
        assert response.status == 200
        response.read()
    [seen] = [r for r in _console(shared_daemon, instance["uuid"]) if r["path"] == "/x"]
    assert seen["xff"] == "203.0.113.9, 127.0.0.1"
    assert seen["proto"] == "https"


def _peer_names(daemon: Daemon, sni: str) -> list[str]:
    context = _tls_context(daemon)
    with (
        socket.create_connection(daemon.gateway(443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=sni) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return san.value.get_values_for_type(x509.DNSName)


def test_sni_picks_the_certificate(api: Api, shared_daemon: Daemon) -> None:
    api.group("sni-a", [{"port": 443, "destination_port": 8080}])
    api.group(
        "sni-b",
        [{"port": 443, "destination_port": 8080}],
        domains=[{"name": "shop.example.test."}],
    )
    platform = _peer_names(shared_daemon, "sni-a.portway.localhost")
    assert "*.portway.localhost" in platform
    custom = _peer_names(shared_daemon, "shop.example.test")
    assert custom == ["shop.example.test"]  # verified against the CA and the name


# --- TCP mode ---------------------------------------------------------------------------------


class HalfCloseClient:
    """TLS over a blocking socket with memory BIOs, so the client can send close_notify (its
    end of stream) and still read the echo that follows: what `ssl.SSLSocket` cannot do."""

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext, sni: str) -> None:
        self.sock = socket.create_connection(address, timeout=WAIT_S)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=sni)
        self._pump(self.tls.do_handshake)

    def _flush(self) -> None:
        if data := self.outgoing.read():
            self.sock.sendall(data)

    def _pump(self, step: Any) -> Any:
        while True:
            try:
                result = step()
                self._flush()
                return result
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                if not data:
                    self.incoming.write_eof()
                    raise ConnectionError("closed during TLS") from None
                self.incoming.write(data)

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def send_eof(self) -> None:
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.unwrap()  # our close_notify goes out; the peer's comes later
        self._flush()

    def read_all(self) -> bytes:
        out = bytearray()
        while True:
            try:
                out += self.tls.read(65536)
            except ssl.SSLWantReadError:
                data = self.sock.recv(65536)
                if not data:
                    return bytes(out)
                self.incoming.write(data)
            except ssl.SSLZeroReturnError:
                return bytes(out)

    def close(self) -> None:
        self.sock.close()


def test_tcp_echo_with_half_close(api: Api, shared_daemon: Daemon, apps: dict[str, Path]) -> None:
    group = api.group("echo", [{"port": 10000, "destination_port": 9000, "handlers": ["tls"]}])
    fqdn = group["domains"][0]["fqdn"]
    api.instances("echo", apps["echo"], 2, 9000)
    context = _tls_context(shared_daemon)
    address = shared_daemon.gateway(10000)

    def one(seed: int) -> bool:
        payload = hashlib.sha512(str(seed).encode()).digest() * 1024  # 64 KiB
        client = HalfCloseClient(address, context, fqdn)
        try:
            client.send(payload)
            client.send_eof()
            return client.read_all() == payload
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(one, range(200)))
    assert results.count(True) == 200


# --- what the gateway reports -----------------------------------------------------------------


def test_metrics_access_log_and_instance_metrics(
    api: Api, shared_daemon: Daemon, apps: dict[str, Path]
) -> None:
    group = api.group("counted", [{"port": 80, "destination_port": 8080, "handlers": ["http"]}])
    fqdn = group["domains"][0]["fqdn"]
    [instance] = api.instances("counted", apps["http"], 1, 8080)
    conn = http.client.HTTPConnection(*shared_daemon.gateway(80), timeout=10)
    for _ in range(5):
        conn.request("GET", "/m", headers={"Host": fqdn})
        response = conn.getresponse()
        response.read()
        assert response.status == 200
    conn.close()
    text = api.http.get(shared_daemon.base + "/metrics").text
    name = instance["name"]
    line = f'portway_instance_requests_total{{group="counted",instance="{name}",user="admin"}} 5.0'
    assert line in text
    assert 'portway_group_responses_total{code="2xx",group="counted",user="admin"} 5.0' in text
    [metrics] = api.items("GET", "/instances/metrics", json=[{"uuid": instance["uuid"]}])
    assert metrics["ntotal"] == 5 and metrics["nreqs"] == 0
    log_file = shared_daemon.data_dir / "logs" / "access.log"
    deadline = time.monotonic() + 5
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if log_file.exists():
            lines = [json.loads(x) for x in log_file.read_text().splitlines()]
            lines = [x for x in lines if x["group"] == "counted"]
            if len(lines) >= 5:
                break
        time.sleep(0.05)
    assert len(lines) == 5
    assert {(x["status"], x["target"], x["instance"]) for x in lines} == {
        (200, "/m", instance["name"])
    }
    # Another user sees none of it.
    token = shared_daemon.add_user("mallory")
    other = httpx.get(
        shared_daemon.base + "/metrics",
        headers={"Authorization": f"Bearer {token}"},
        trust_env=False,
    )
    assert other.status_code == 200 and "counted" not in other.text
    assert os.stat(log_file).st_size > 0


def test_the_ca_the_banner_names_exists_from_the_start(shared_daemon: Daemon) -> None:
    ca_file = shared_daemon.data_dir / "tls" / "ca.pem"
    assert any(str(ca_file) in line for line in shared_daemon.output)
    cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (ca_file.parent / "ca.key").stat().st_mode & 0o777 == 0o600
