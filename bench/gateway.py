"""The gateway against HAProxy and nginx, with wrk, over the same two backends. A benchmark.

    .venv/bin/python bench/gateway.py [--duration 10 | --quick] [--runs 1] [--max-steal 5]
                                      [--json] [--port-offset N] [--gateway-host H]
                                      [--data-dir DIR]

Needs wrk, HAProxy and nginx (and nginx's stream module for its TCP row):

    apt-get install -y wrk haproxy nginx libnginx-mod-stream

Starts `portway up` in a fresh data directory with its gateway on `--gateway-host`, public
ports shifted by `--port-offset` (a service on public port P listens on H:P+N), creates one
service group with `80:8080/http`, `443:8080/tls+http` and `10000:8080/tls` and two instances in
it. Each instance is an nginx (1 worker, no access log) run from the built-in `host` image by a
small `sh -c` wrapper that writes its config from $HOST and $PORT: `/` answers a 100-byte body,
`/1mb` a 1 MiB file. HAProxy 2.x (`balance leastconn`, `http-reuse always`, `nbthread 1`) and
nginx (`least_conn`, upstream `keepalive 64`, `proxy_http_version 1.1`, 1 worker) run as plain
processes of this script, configured in its temp directory, in front of the same two instances,
on free loopback ports, with one ECDSA P-256 self-signed certificate for all TLS.

Cases, each measured against every target with `wrk -t2 -cC -dDs --latency` after a 1 s warm-up:

- HTTP c=1 and HTTP c=64: plain HTTP keep-alive, GET / (rps, p50, p99).
- HTTPS c=64: TLS terminated at the proxy, HTTP keep-alive to the backends (rps, p50, p99).
- TCP 1 MB c=8: TLS terminated at the proxy, then a raw TCP relay (Portway's `tls` service,
  HAProxy `mode tcp`, nginx `stream`), GET /1mb over keep-alive: MB/s is wrk's Transfer/sec
  (MiB/s). Portway has no plain TCP service (every port but 80/443 is `tls`), so this is not
  the plain relay of perf-baseline.md's "TCP relay, 1 MB" row: wrk's own decryption shares
  the CPUs, and the figures are far lower.

Portway is reached as a client of the platform reaches it: wrk's URL names the group's FQDN,
so TLS carries it as SNI (a TCP-mode service is routed by SNI alone) and Host names it, and
a three-line Lua `wrk.resolve` override makes wrk connect to the gateway's address instead
of resolving the name. HAProxy and nginx are addressed by IP.

"direct" is wrk straight at ONE instance, plain HTTP (there is no TLS to terminate): the
ceiling of what the backend gives, not a balanced pair. Every target is checked with one
request per case first (status 200 and the exact body length), so a proxy that routes
wrongly fails loudly instead of looking fast; wrk's non-2xx/3xx responses and socket errors
are counted in the tables and make the run fail. With several --runs, each figure is the
median over runs and errors are summed.

"cpu us/req" is the proxy's own CPU time (user + system, from /proc; nginx's workers
included, the daemon alone for Portway) over the run, per request. Requests per second swing
with the machine's load; this figure is steadier, and compares how much work each proxy does
per request: at saturation a proxy's rps is about 1e6 / cpu us/req. "idle %" is the whole
machine's idle share during the runs (/proc/stat): wrk, the proxy and the backends share two
CPUs, so a proxy that leaves them idle is slowing the others by its latency (its single loop
sits on every connection's path), not only by the CPU it takes.

"steal %" is the share of the CPUs the hypervisor gave to other guests during the runs
(/proc/stat's steal). On a shared VM it comes in bursts of tens of percent that last minutes,
and while it lasts every figure measures the host's other guests as much as the proxy: a run
with more than --max-steal percent (5) is taken again, up to STEAL_TRIES runs in all, and the
least disturbed is kept. A repeated run is said in the target's note.

Goals (Portway against HAProxy, same run): HTTP c=64 rps >= 0.8x with p99 <= 1.5x, HTTPS rps
>= 0.7x, TCP 1 MB MB/s >= 0.8x. Portway/nginx ratios are reported without goals.

Everything runs on this machine: wrk, the proxy under test and both backends share its CPUs,
as in shared/testing/perf-baseline.md (whose figures were partly taken with pinned processes).

Exit status: 0 when every run worked (whether or not the goals were met); 1 when one failed
(a target that did not answer right, wrk errors, Portway's gateway missing); 2 when a tool
is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import pwd
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from _daemon import START_TIMEOUT_S, DaemonError, kill_processes_of, processes_of, running_daemon

TOOLS = ("wrk", "haproxy", "nginx")
INSTALL_HINT = "apt-get install -y wrk haproxy nginx libnginx-mod-stream"
DEFAULT_DURATION_S = 10
QUICK_DURATION_S = 3
WARMUP_S = 1
WRK_THREADS = 2
PROXY_TIMEOUT_S = 10.0  # a proxy to listen, or to exit
REQUEST_TIMEOUT_S = 30.0
GATEWAY_READY_TIMEOUT_S = 15.0  # from the instances running to the gateway routing to them
TEARDOWN_TIMEOUT_S = 15.0
WRK_SLACK_S = 30.0  # on top of -d before wrk counts as hung
DEFAULT_MAX_STEAL_PCT = 5.0
STEAL_TRIES = 3  # runs in all for one measurement while the hypervisor takes too much
POLL_S = 0.05

BACKEND_PORT = 8080
# Public ports of the group's services, as a client of the platform sees them.
HTTP_PORT, HTTPS_PORT, TCP_PORT = 80, 443, 10000
OFFSETS = (20000, 21000, 22000, 23000, 24000, 25000, 26000, 27000, 28000, 29000)
# The proxies' own listeners: below the usual ephemeral range (32768-60999), so that no
# outgoing connection takes one between the check and the proxy's bind; the gateway's ports are
# left out explicitly.
PROXY_PORTS = range(31000, 32700)
GROUP_NAME = "bench-gw"
BODY = ("portway gateway bench: a small keep-alive response body, one hundred bytes. " * 2)[:100]
ONE_MB = 1 << 20
MIB = float(1 << 20)

# Goal = (case, metric, bound); metric ratios are Portway / HAProxy of the same run; p99 is a
# ceiling, the others floors.
GOALS: tuple[tuple[str, str, float], ...] = (
    ("http-c64", "rps", 0.8),
    ("http-c64", "p99_ms", 1.5),
    ("https-c64", "rps", 0.7),
    ("tcp-1mb", "mb_s", 0.8),
)
CEILINGS = {"p50_ms", "p99_ms", "cpu_us"}  # lower is better

# The backend: an nginx the platform runs as an instance of the `host` image. The daemon gives
# HOST and PORT; the bench gives BENCH_DIR (where to write, removed at the end) and DOCROOT.
BACKEND_SH = f"""\
set -e
d=$(mktemp -d "$BENCH_DIR/backend-XXXXXX")
cat > "$d/nginx.conf" <<EOF
user $(id -un);
worker_processes 1;
pid $d/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    client_body_temp_path $d/body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    server {{
        listen $HOST:$PORT;
        location = / {{ return 200 "{BODY}"; }}
        location = /1mb {{ root $DOCROOT; }}
    }}
}}
EOF
exec nginx -e stderr -p "$d/" -c "$d/nginx.conf" -g 'daemon off;'
"""


# wrk sends its URL's host as SNI and resolves it to connect; this makes it connect to
# $WRK_CONNECT_HOST instead, so the SNI can be a name that no resolver knows. Only `resolve`
# is overridden: without `request`/`response` functions wrk sends its one prepared request
# and runs no Lua per request.
CONNECT_LUA = """\
function wrk.resolve(host, service)
    wrk.addrs = wrk.lookup(os.getenv("WRK_CONNECT_HOST"), service)
end
"""


class BenchError(Exception):
    """Something the figures depend on failed: the run cannot be trusted."""


# --- what is measured -----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    path: str
    connections: int
    tcp: bool  # the proxy relays TCP (MB/s is the figure)

    @property
    def expected_length(self) -> int:
        return ONE_MB if self.path == "/1mb" else len(BODY)


CASES = (
    Case("http-c1", "HTTP keep-alive, GET / (100 B), c=1", "/", 1, False),
    Case("http-c64", "HTTP keep-alive, GET / (100 B), c=64", "/", 64, False),
    Case("https-c64", "HTTPS keep-alive (TLS terminated), GET / (100 B), c=64", "/", 64, False),
    Case("tcp-1mb", "TLS-terminated TCP relay, GET /1mb keep-alive, c=8", "/1mb", 8, True),
)


@dataclass(frozen=True)
class Target:
    """Where wrk goes for each case. With a `server_name`, wrk's URL names it (so TLS sends
    it as SNI, which the gateway routes TCP-mode connections by) and CONNECT_LUA makes wrk
    connect to the address in `bases` instead of resolving it; Host is the bare name, as a
    client on the real ports 80/443 sends it."""

    name: str
    bases: dict[str, str]  # case key -> scheme://address:port; a missing case is not applicable
    server_name: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # case key -> why not measured
    # The proxy's process, whose CPU time per request is measured (its worker children too:
    # nginx). None: not measured (direct).
    pid: int | None = None


@dataclass
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    mb_s: float  # wrk's Transfer/sec in MiB/s
    non_2xx: int  # wrk's "Non-2xx or 3xx responses"
    socket_errors: int  # connect + read + write + timeout
    cpu_us: float | None = None  # the proxy's CPU time (user + system) per request
    idle_pct: float | None = None  # the whole machine's idle share during the run
    steal_pct: float | None = None  # the share the hypervisor gave to other guests


@dataclass
class Row:
    """One target in one case: the median of its runs, or why there is none."""

    target: str
    runs: int = 0
    rps: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    mb_s: float | None = None
    cpu_us: float | None = None
    idle_pct: float | None = None
    steal_pct: float | None = None
    repeated: int = 0  # runs taken again because the hypervisor took too much
    requests: int = 0
    non_2xx: int = 0
    socket_errors: int = 0
    failure: str | None = None  # the run did not work
    skipped: str | None = None  # not applicable, or a tool missing: not a failure

    @property
    def ok(self) -> bool:
        return (
            self.failure is None
            and self.skipped is None
            and self.non_2xx == 0
            and self.socket_errors == 0
            and self.runs > 0
        )

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


# --- wrk ------------------------------------------------------------------------------------

_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_NUMBER_UNIT = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)$")


def parse_time_ms(text: str) -> float:
    """`606.00us`, `1.05ms`, `2.00s` (wrk's format_time_us) -> milliseconds."""
    m = _NUMBER_UNIT.match(text)
    if not m or m.group(2) not in _TIME_UNITS_MS:
        raise ValueError(f"not a wrk time: {text!r}")
    return float(m.group(1)) * _TIME_UNITS_MS[m.group(2)]


def parse_size_bytes(text: str) -> float:
    """`10.43MB`, `78.93KB`, `512.00B` (wrk's format_binary, powers of 1024) -> bytes."""
    m = _NUMBER_UNIT.match(text)
    unit = m.group(2) if m else ""
    if not m or not unit.endswith("B") or unit[:-1] not in _SIZE_UNITS:
        raise ValueError(f"not a wrk size: {text!r}")
    return float(m.group(1)) * _SIZE_UNITS[unit[:-1]]


def parse_wrk(text: str) -> WrkResult:
    """The figures of `wrk --latency` output; ValueError when a needed line is missing."""
    percentiles: dict[str, float] = {}
    requests = non_2xx = socket_errors = 0
    rps = transfer = None
    for raw in text.splitlines():
        line = raw.strip()
        if m := re.match(r"^(50|99)(?:\.0+)?%\s+(\S+)$", line):
            percentiles[m.group(1)] = parse_time_ms(m.group(2))
        elif m := re.match(r"^(\d+) requests in ", line):
            requests = int(m.group(1))
        elif m := re.match(r"^Socket errors: (.*)$", line):
            socket_errors = sum(int(n) for n in re.findall(r"\w+ (\d+)", m.group(1)))
        elif m := re.match(r"^Non-2xx or 3xx responses: (\d+)$", line):
            non_2xx = int(m.group(1))
        elif m := re.match(r"^Requests/sec:\s+([0-9.]+)$", line):
            rps = float(m.group(1))
        elif m := re.match(r"^Transfer/sec:\s+(\S+)$", line):
            transfer = parse_size_bytes(m.group(1))
    if rps is None or transfer is None or set(percentiles) != {"50", "99"}:
        raise ValueError("wrk output lacks Requests/sec, Transfer/sec or the --latency lines")
    return WrkResult(
        requests=requests,
        rps=rps,
        p50_ms=percentiles["50"],
        p99_ms=percentiles["99"],
        mb_s=transfer / MIB,
        non_2xx=non_2xx,
        socket_errors=socket_errors,
    )


def cpu_ticks(pid: int) -> int:
    """utime + stime of `pid` and of its direct children (nginx's workers), in clock ticks.
    The rate of requests depends on the machine's mood; the CPU a proxy spends on each is
    steadier, and says how far a proxy is from its ceiling."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        # After the name: state ppid ...; utime and stime are fields 14 and 15 of the line.
        if entry.name == str(pid) or fields[1] == str(pid):
            total += int(fields[11]) + int(fields[12])
    return total


class MachineTicks(NamedTuple):
    """Clock ticks of every CPU since boot, from /proc/stat's first line."""

    busy: int  # neither idle nor iowait (steal included: the CPU was not ours to use)
    steal: int  # given by the hypervisor to other guests
    every: int

    @classmethod
    def now(cls) -> MachineTicks:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        idle = ticks[3] + ticks[4]  # idle and iowait
        return cls(sum(ticks) - idle, ticks[7], sum(ticks))


def run_wrk(target: Target, case: Case, duration_s: int, lua: Path) -> WrkResult:
    """One wrk run; `lua` is CONNECT_LUA's file, used for targets with a server name."""
    base = target.bases[case.key]
    url = base + case.path
    argv = [
        "wrk",
        f"-t{min(WRK_THREADS, case.connections)}",
        f"-c{case.connections}",
        f"-d{duration_s}s",
        "--latency",
    ]
    env = None
    if target.server_name:
        parts = urlsplit(base)
        url = f"{parts.scheme}://{target.server_name}:{parts.port}{case.path}"
        argv += ["-H", f"Host: {target.server_name}", "-s", str(lua)]
        env = {**os.environ, "WRK_CONNECT_HOST": parts.hostname or ""}
    argv.append(url)
    before = cpu_ticks(target.pid) if target.pid is not None else None
    machine_before = MachineTicks.now()
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=duration_s + WRK_SLACK_S,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise BenchError(f"wrk {url} did not finish within {duration_s + WRK_SLACK_S:g} s") from err
    if done.returncode != 0:
        raise BenchError(
            f"wrk {url} exited {done.returncode}: {(done.stderr or done.stdout)[-400:]}"
        )
    try:
        result = parse_wrk(done.stdout)
    except ValueError as err:
        raise BenchError(f"wrk {url}: {err}:\n{done.stdout[-600:]}") from err
    if result.requests == 0:
        raise BenchError(f"wrk {url}: not one request completed:\n{done.stdout[-600:]}")
    machine = MachineTicks.now()
    if machine.every > machine_before.every:
        every = machine.every - machine_before.every
        result.idle_pct = 100 * (1 - (machine.busy - machine_before.busy) / every)
        result.steal_pct = 100 * (machine.steal - machine_before.steal) / every
    if before is not None and target.pid is not None:
        ticks = cpu_ticks(target.pid) - before
        result.cpu_us = ticks * 1_000_000 / os.sysconf("SC_CLK_TCK") / result.requests
    return result


# --- files: certificate, docroot, proxy configs ---------------------------------------------


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path
    combined: Path  # certificate then key, as HAProxy's `crt` wants


def write_cert(directory: Path) -> Cert:
    """A self-signed ECDSA P-256 certificate for localhost names; wrk does not verify it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portway bench")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.DNSName("*.portway.localhost")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    paths = Cert(directory / "cert.pem", directory / "key.pem", directory / "combined.pem")
    paths.cert.write_bytes(cert_pem)
    paths.key.write_bytes(key_pem)
    paths.combined.write_bytes(cert_pem + key_pem)
    for path in (paths.key, paths.combined):
        path.chmod(0o600)
    return paths


def write_docroot(directory: Path) -> Path:
    directory.mkdir()
    (directory / "1mb").write_bytes(random.Random(1).randbytes(ONE_MB))
    return directory


@dataclass(frozen=True)
class ProxyPorts:
    http: int
    https: int
    tcp: int


def haproxy_config(backends: list[str], ports: ProxyPorts, cert: Cert) -> str:
    servers = "\n".join(f"    server b{i} {b}" for i, b in enumerate(backends, 1))
    return f"""\
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s

frontend http_in
    bind 127.0.0.1:{ports.http}
    bind 127.0.0.1:{ports.https} ssl crt {cert.combined}
    default_backend app

backend app
    balance leastconn
    http-reuse always
{servers}

frontend tcp_in
    mode tcp
    bind 127.0.0.1:{ports.tcp} ssl crt {cert.combined}
    default_backend app_tcp

backend app_tcp
    mode tcp
    balance leastconn
{servers}
"""


def nginx_config(
    prefix: Path, backends: list[str], ports: ProxyPorts, cert: Cert, stream: str | None
) -> str:
    """`stream`: None without the stream module, "" when built in, else the module's path."""
    servers = "\n".join(f"        server {b};" for b in backends)
    load = f"load_module {stream};\n" if stream else ""
    tcp = (
        ""
        if stream is None
        else f"""
stream {{
    upstream app_tcp {{
        least_conn;
{servers}
    }}
    server {{
        listen 127.0.0.1:{ports.tcp} ssl;
        ssl_certificate {cert.cert};
        ssl_certificate_key {cert.key};
        proxy_pass app_tcp;
    }}
}}
"""
    )
    return f"""\
{load}user {pwd.getpwuid(os.geteuid()).pw_name};
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream app {{
        least_conn;
{servers}
        keepalive 64;
        keepalive_requests 1000000000;
    }}
    server {{
        listen 127.0.0.1:{ports.http};
        listen 127.0.0.1:{ports.https} ssl;
        ssl_certificate {cert.cert};
        ssl_certificate_key {cert.key};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
{tcp}"""


def nginx_stream_module() -> str | None:
    """How this nginx gets its stream module: a load_module path, "" if built in, None if
    it has none (Debian builds it as a module, in the libnginx-mod-stream package)."""
    info = subprocess.run(
        ["nginx", "-V"], capture_output=True, text=True, timeout=PROXY_TIMEOUT_S, check=False
    ).stderr
    if "--with-stream=dynamic" in info:
        m = re.search(r"--modules-path=(\S+)", info)
        path = Path(m.group(1) if m else "/usr/lib/nginx/modules") / "ngx_stream_module.so"
        return str(path) if path.exists() else None
    return "" if re.search(r"--with-stream(\s|$)", info) else None


# --- processes ------------------------------------------------------------------------------


def accepts(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def pick_ports(count: int, taken: set[int]) -> list[int]:
    candidates = [p for p in PROXY_PORTS if p not in taken]
    random.SystemRandom().shuffle(candidates)
    chosen = []
    for port in candidates:
        if port_free("127.0.0.1", port):
            chosen.append(port)
            taken.add(port)
            if len(chosen) == count:
                return chosen
    raise BenchError(f"no {count} free loopback ports in {PROXY_PORTS}")


def pick_offset(host: str, wanted: int | None) -> int:
    for offset in (wanted,) if wanted is not None else OFFSETS:
        if all(port_free(host, p + offset) for p in (HTTP_PORT, HTTPS_PORT, TCP_PORT)):
            return offset
    tried = wanted if wanted is not None else f"any of {OFFSETS}"
    raise BenchError(f"ports 80, 443 and 10000 + offset are not free on {host} for {tried}")


def stop_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM to the process group this script started (the process leads it), SIGKILL if
    it outlives `timeout`: nginx and HAProxy workers go with their master."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)


@contextmanager
def running_proxy(
    name: str, argv: list[str], log_path: Path, ports: list[int]
) -> Iterator[subprocess.Popen[bytes]]:
    """A proxy in its own session, ready once each of `ports` accepts; stopped on the way out."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + PROXY_TIMEOUT_S
        while not all(accepts("127.0.0.1", p) for p in ports):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(
                    f"{name} did not listen on {ports}:\n{log_path.read_text()[-800:]}"
                )
            time.sleep(POLL_S)
        yield proc
    finally:
        stop_group(proc, PROXY_TIMEOUT_S)


def check_config(argv: list[str]) -> None:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=PROXY_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)}:\n{(done.stderr + done.stdout)[-800:]}")


def tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


# --- the daemon -----------------------------------------------------------------------------


def gateway_built() -> bool:
    """Whether this build's `portway up` has the gateway's options."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    done = subprocess.run(
        [sys.executable, "-m", "portway", "up", "--help"],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        env=env,
        check=False,
    )
    return "--port-offset" in done.stdout


def checked(response: httpx.Response) -> dict[str, Any]:
    doc: dict[str, Any] = response.json()
    if response.status_code != 200 or doc.get("status") != "success":
        raise BenchError(f"{response.request.method} {response.request.url}: {response.text[:400]}")
    return doc


@dataclass
class Backends:
    fqdn: str
    endpoints: list[str]  # private_ip:port of each instance
    uuids: list[str]


def create_backends(client: httpx.Client, workdir: Path, docroot: Path, made: set[str]) -> Backends:
    """The group with its three services, then two nginx instances in it, running."""
    services = [
        {"port": HTTP_PORT, "destination_port": BACKEND_PORT, "handlers": ["http"]},
        {"port": HTTPS_PORT, "destination_port": BACKEND_PORT, "handlers": ["tls", "http"]},
        {"port": TCP_PORT, "destination_port": BACKEND_PORT, "handlers": ["tls"]},
    ]
    doc = checked(client.post("/services", json={"name": GROUP_NAME, "services": services}))
    [group] = doc["data"]["service_groups"]
    fqdn: str = group["domains"][0]["fqdn"]
    endpoints, uuids = [], []
    for _ in range(2):
        body = {
            "image": "host",
            "args": ["sh", "-c", BACKEND_SH],
            "env": {"BENCH_DIR": str(workdir), "DOCROOT": str(docroot)},
            "autostart": True,
            "timeout_s": 10,
            "service_group": {"uuid": group["uuid"]},
        }
        [item] = checked(client.post("/instances", json=body))["data"]["instances"]
        made.add(item["uuid"])
        uuids.append(item["uuid"])
        if item["state"] != "running":
            raise BenchError(f"backend instance {item['name']} is {item['state']}, not running")
        endpoints.append(f"{item['private_ip']}:{BACKEND_PORT}")
    return Backends(fqdn, endpoints, uuids)


def delete_instances(client: httpx.Client, uuids: list[str]) -> str | None:
    """None when deleted, else why not (reported: the daemon's stop still ends them)."""
    if not uuids:
        return None
    try:
        body = [{"uuid": u, "timeout_s": 10} for u in uuids]
        checked(client.request("DELETE", "/instances", json=body))
    except (BenchError, httpx.HTTPError) as err:
        return str(err)
    return None


def gateway_listeners(client: httpx.Client, host: str, offset: int) -> dict[int, str]:
    """Public port -> `address:port` the gateway serves it on: host:P+offset as asked, checked
    against what /v1/healthz shows (data.gateway.listeners) when it shows it."""
    address = f"[{host}]" if ":" in host else host
    listen = {p: f"{address}:{p + offset}" for p in (HTTP_PORT, HTTPS_PORT, TCP_PORT)}
    doc: dict[str, Any] = checked(client.get("/healthz"))
    info = doc["data"].get("gateway", doc.get("gateway"))
    if not isinstance(info, dict):
        return listen  # a build that does not show it: trust the contract
    if info.get("problems"):
        raise BenchError(f"the gateway reports problems: {json.dumps(info['problems'])[:600]}")
    shown = info.get("listeners")
    for port, expected in listen.items():
        if isinstance(shown, dict) and shown.get(str(port)) != expected:
            raise BenchError(f"healthz shows port {port} on {shown.get(str(port))}, not {expected}")
    return listen


# --- checking and measuring -----------------------------------------------------------------


def check_answers(target: Target, case: Case, deadline: float) -> None:
    """One request must get 200 and the exact body, retried until `deadline` (a gateway may
    take a moment to route to instances that just started)."""
    url = target.bases[case.key] + case.path
    headers, extensions = {}, {}
    if target.server_name:
        headers["Host"] = target.server_name
        extensions["sni_hostname"] = target.server_name
    problem = ""
    with httpx.Client(verify=False, trust_env=False, timeout=REQUEST_TIMEOUT_S) as client:
        while True:
            try:
                r = client.get(url, headers=headers, extensions=extensions)
                if r.status_code == 200 and len(r.content) == case.expected_length:
                    return
                problem = f"status {r.status_code}, {len(r.content)} bytes: {r.text[:200]!r}"
            except httpx.HTTPError as err:
                problem = f"{type(err).__name__}: {err}"
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{url}: expected 200 with {case.expected_length} bytes, got {problem}"
                )
            time.sleep(0.2)


def _rotated(targets: list[Target], by: int) -> list[Target]:
    """`targets`, starting `by` places later. Each round starts one target later, so no target
    always follows the same one: in a fixed order every run of Portway came right after
    "direct" (wrk at full speed on both CPUs), whatever state that leaves the machine in."""
    if not targets:
        return []
    by %= len(targets)
    return targets[by:] + targets[:by]


def least_stolen_run(
    target: Target, case: Case, duration_s: int, lua: Path, max_steal_pct: float, row: Row
) -> WrkResult:
    """One run, taken again (STEAL_TRIES in all) while the hypervisor takes more than
    `max_steal_pct` of the CPUs; the least disturbed is kept. Chosen by steal alone, never by
    its figures, and the same rule for every target."""
    kept = run_wrk(target, case, duration_s, lua)
    for _ in range(STEAL_TRIES - 1):
        if kept.steal_pct is None or kept.steal_pct <= max_steal_pct:
            break
        row.repeated += 1
        again = run_wrk(target, case, duration_s, lua)
        if again.steal_pct is not None and again.steal_pct < kept.steal_pct:
            kept = again
    return kept


def measure_case(
    case: Case,
    targets: list[Target],
    duration_s: int,
    runs: int,
    lua: Path,
    max_steal_pct: float,
) -> list[Row]:
    """Warm up and check each target, then `runs` rounds over all targets (interleaved, so a
    drift of the machine touches them alike, and rotated); one Row per target."""
    results: dict[str, list[WrkResult]] = {t.name: [] for t in targets}
    rows = {t.name: Row(t.name) for t in targets}
    live = []
    for target in targets:
        if case.key not in target.bases:
            rows[target.name].skipped = target.skipped.get(case.key, "not applicable")
            continue
        try:
            wait = GATEWAY_READY_TIMEOUT_S if target.name == "portway" else 2.0
            check_answers(target, case, time.monotonic() + wait)
            run_wrk(target, case, WARMUP_S, lua)
        except BenchError as err:
            rows[target.name].failure = str(err)
            continue
        live.append(target)
    for run in range(runs):
        for target in _rotated(live, run):
            row = rows[target.name]
            if row.failure is not None:
                continue
            try:
                kept = least_stolen_run(target, case, duration_s, lua, max_steal_pct, row)
                results[target.name].append(kept)
            except BenchError as err:
                row.failure = str(err)
    for name, done in results.items():
        row = rows[name]
        if not done or row.failure is not None:
            continue
        row.runs = len(done)
        row.rps = statistics.median(r.rps for r in done)
        row.p50_ms = statistics.median(r.p50_ms for r in done)
        row.p99_ms = statistics.median(r.p99_ms for r in done)
        row.mb_s = statistics.median(r.mb_s for r in done)
        cpu = [r.cpu_us for r in done if r.cpu_us is not None]
        row.cpu_us = statistics.median(cpu) if cpu else None
        idle = [r.idle_pct for r in done if r.idle_pct is not None]
        row.idle_pct = statistics.median(idle) if idle else None
        steal = [r.steal_pct for r in done if r.steal_pct is not None]
        row.steal_pct = statistics.median(steal) if steal else None
        row.requests = sum(r.requests for r in done)
        row.non_2xx = sum(r.non_2xx for r in done)
        row.socket_errors = sum(r.socket_errors for r in done)
    return [rows[t.name] for t in targets]


# --- reporting ------------------------------------------------------------------------------


def metrics_of(case: Case) -> tuple[str, ...]:
    figures = ("rps", "p50_ms", "p99_ms", "cpu_us")
    return ("mb_s", *figures) if case.tcp else figures


def ratios(case: Case, rows: list[Row], against: str) -> dict[str, float] | None:
    """Portway / `against` for each figure of the case; None unless both rows are good."""
    by_name = {r.target: r for r in rows}
    ours, theirs = by_name.get("portway"), by_name.get(against)
    if ours is None or theirs is None or not (ours.ok and theirs.ok):
        return None
    out = {}
    for metric in metrics_of(case):
        a, b = getattr(ours, metric), getattr(theirs, metric)
        if a is not None and b:
            out[metric] = a / b
    return out


def verdicts(case: Case, rows: list[Row]) -> list[dict[str, Any]]:
    """The goals of this case against HAProxy: PASS, MISS, or ERROR when there is no ratio."""
    vs_haproxy = ratios(case, rows, "haproxy")
    found = []
    for key, metric, bound in GOALS:
        if key != case.key:
            continue
        ceiling = metric in CEILINGS
        value = None if vs_haproxy is None else vs_haproxy.get(metric)
        if value is None:
            result = "ERROR"
        else:
            result = "PASS" if (value <= bound if ceiling else value >= bound) else "MISS"
        found.append(
            {
                "case": key,
                "metric": metric,
                "goal": f"{'<=' if ceiling else '>='} {bound:g}x HAProxy",
                "ratio": value,
                "result": result,
            }
        )
    return found


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


_LABELS = {"rps": "rps", "p50_ms": "p50", "p99_ms": "p99", "mb_s": "MB/s", "cpu_us": "cpu/req"}


def print_case(case: Case, rows: list[Row], duration_s: int, runs: int) -> None:
    threads = min(WRK_THREADS, case.connections)
    print(f"== {case.title}  (wrk -t{threads} -c{case.connections} -d{duration_s}s, {runs} run(s))")
    mb = case.tcp
    print(
        f"   {'target':<9}{'MB/s' if mb else '':>9}{'rps':>11}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'cpu us/req':>11}{'idle %':>8}{'steal %':>8}{'errors':>8}  note"
    )
    for r in rows:
        if r.skipped or r.failure:
            dashes = f"{'-':>11}{'-':>9}{'-':>9}{'-':>11}{'-':>8}{'-':>8}{'-':>8}"
            print(f"   {r.target:<9}{'':>9}{dashes}  ", end="")
            print(r.skipped or f"FAILED: {r.failure.splitlines()[0] if r.failure else ''}")
            continue
        note = "one instance, plain HTTP: the ceiling" if r.target == "direct" else ""
        if r.repeated:
            note = f"{note}; " if note else ""
            note += f"{r.repeated} run(s) taken again for steal"
        if r.errors:
            note = f"ERRORS: {r.non_2xx} non-2xx/3xx, {r.socket_errors} socket"
        print(
            f"   {r.target:<9}{fmt(r.mb_s, '9.1f') if mb else '':>9}{fmt(r.rps, '11,.0f')}"
            f"{fmt(r.p50_ms, '9.3f')}{fmt(r.p99_ms, '9.3f')}{fmt(r.cpu_us, '.1f'):>11}"
            f"{fmt(r.idle_pct, '.1f'):>8}{fmt(r.steal_pct, '.1f'):>8}{r.errors:>8}  {note}"
        )
    for against in ("haproxy", "nginx"):
        ratio = ratios(case, rows, against)
        label = f"Portway/{'HAProxy' if against == 'haproxy' else 'nginx'}"
        if ratio is None:
            print(f"   {label:<16} -  (needs both rows without errors)")
            continue
        shown = "  ".join(f"{_LABELS[m]} {v:.2f}x" for m, v in ratio.items())
        print(f"   {label:<16} {shown}")
    for v in verdicts(case, rows):
        ratio_text = "-" if v["ratio"] is None else f"{v['ratio']:.2f}x"
        print(f"   goal {_LABELS[v['metric']]} {v['goal']}: {ratio_text}  {v['result']}")
    print()


def machine_info(data_dir: Path) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "wrk": tool_version(["wrk", "-v"]),
        "haproxy": tool_version(["haproxy", "-v"]),
        "nginx": tool_version(["nginx", "-v"]),
        "data_dir": str(data_dir),
    }


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--duration", type=int, default=DEFAULT_DURATION_S, help="seconds per wrk run (10)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_DURATION_S} s runs: a smoke test"
    )
    parser.add_argument("--runs", type=int, default=1, help="runs per target and case; medians")
    parser.add_argument(
        "--max-steal",
        type=float,
        default=DEFAULT_MAX_STEAL_PCT,
        metavar="PCT",
        help="take a run again while the hypervisor takes more than PCT%% of the CPUs (5)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    parser.add_argument(
        "--port-offset",
        type=int,
        default=None,
        help=f"the gateway's public port offset (default: the first free of {OFFSETS[0]}, ...)",
    )
    parser.add_argument(
        "--gateway-host", default="127.0.0.1", help="the gateway's listen address (127.0.0.1)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="parent directory for the run's fresh temp directory (default: system temp)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration = QUICK_DURATION_S
    if args.duration < 1:
        parser.error("--duration must be at least 1")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if not 0 <= args.max_steal <= 100:
        parser.error("--max-steal must be a percentage, between 0 and 100")
    if args.port_offset is not None and not 0 <= args.port_offset <= 65535 - TCP_PORT:
        parser.error(f"--port-offset must be between 0 and {65535 - TCP_PORT}")
    return args


@dataclass
class Outcome:
    rows: dict[str, list[Row]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # each makes the exit status 1


def run_benchmark(args: argparse.Namespace, tmp: Path, data_dir: Path, out: Outcome) -> None:
    made: set[str] = set()
    built = gateway_built()
    offset = pick_offset(args.gateway_host, args.port_offset) if built else 0
    if not built:
        out.problems.append("`portway up` has no --port-offset: no gateway to measure")
    cert = write_cert(tmp)
    docroot = write_docroot(tmp / "www")
    stream = nginx_stream_module()
    try:
        gateway = (
            ["--gateway-host", args.gateway_host, "--port-offset", str(offset)] if built else []
        )
        with (
            running_daemon(data_dir, *gateway) as daemon,
            httpx.Client(
                base_url=daemon.url,
                headers={"Authorization": f"Bearer {daemon.token}"},
                timeout=REQUEST_TIMEOUT_S,
                trust_env=False,
            ) as client,
        ):
            backends = create_backends(client, tmp, docroot, made)
            try:
                targets = [direct_target(backends)]
                if built:
                    listen = gateway_listeners(client, args.gateway_host, offset)
                    targets.append(portway_target(backends, listen, daemon.pid))
                else:
                    why = dict.fromkeys((c.key for c in CASES), "no gateway in this build")
                    targets.append(Target("portway", {}, skipped=why))
                taken = {p + offset for p in (HTTP_PORT, HTTPS_PORT, TCP_PORT)}
                measure_proxies(args, taken, tmp, backends, cert, stream, targets, out)
            finally:
                problem = delete_instances(client, backends.uuids)
                if problem:
                    out.notes.append(f"deleting the backends: {problem}")
    finally:
        deadline = time.monotonic() + TEARDOWN_TIMEOUT_S
        while processes_of(made) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        left = kill_processes_of(made)
        if left:
            out.problems.append(f"killed {left} leftover backend processes")


def direct_target(backends: Backends) -> Target:
    base = f"http://{backends.endpoints[0]}"
    return Target(
        "direct",
        {"http-c1": base, "http-c64": base, "tcp-1mb": base},
        skipped={"https-c64": "n/a: the backends speak plain HTTP"},
    )


def portway_target(backends: Backends, listen: dict[int, str], pid: int) -> Target:
    return Target(
        "portway",
        {
            "http-c1": f"http://{listen[HTTP_PORT]}",
            "http-c64": f"http://{listen[HTTP_PORT]}",
            "https-c64": f"https://{listen[HTTPS_PORT]}",
            "tcp-1mb": f"https://{listen[TCP_PORT]}",
        },
        server_name=backends.fqdn,
        pid=pid,
    )


def proxy_target(name: str, ports: ProxyPorts, tcp_skipped: str | None, pid: int) -> Target:
    bases = {
        "http-c1": f"http://127.0.0.1:{ports.http}",
        "http-c64": f"http://127.0.0.1:{ports.http}",
        "https-c64": f"https://127.0.0.1:{ports.https}",
    }
    if tcp_skipped is None:
        bases["tcp-1mb"] = f"https://127.0.0.1:{ports.tcp}"
        return Target(name, bases, pid=pid)
    return Target(name, bases, skipped={"tcp-1mb": tcp_skipped}, pid=pid)


def measure_proxies(
    args: argparse.Namespace,
    taken: set[int],
    tmp: Path,
    backends: Backends,
    cert: Cert,
    stream: str | None,
    targets: list[Target],
    out: Outcome,
) -> None:
    """Start HAProxy and nginx in front of the backends, then measure every case. `taken`:
    ports the proxies must not use (the gateway's)."""
    haproxy_ports = ProxyPorts(*pick_ports(3, taken))
    nginx_ports = ProxyPorts(*pick_ports(3, taken))
    lua = tmp / "connect.lua"
    lua.write_text(CONNECT_LUA)
    haproxy_cfg = tmp / "haproxy.cfg"
    haproxy_cfg.write_text(haproxy_config(backends.endpoints, haproxy_ports, cert))
    check_config(["haproxy", "-c", "-q", "-f", str(haproxy_cfg)])
    prefix = tmp / "nginx-proxy"
    prefix.mkdir()
    nginx_cfg = prefix / "nginx.conf"
    nginx_cfg.write_text(nginx_config(prefix, backends.endpoints, nginx_ports, cert, stream))
    nginx_argv = ["nginx", "-e", "stderr", "-p", f"{prefix}/", "-c", str(nginx_cfg)]
    check_config([*nginx_argv, "-t", "-q"])
    nginx_listens = [nginx_ports.http, nginx_ports.https]
    if stream is not None:
        nginx_listens.append(nginx_ports.tcp)
    no_stream = None if stream is not None else f"n/a: no nginx stream module ({INSTALL_HINT})"
    with (
        running_proxy(
            "haproxy",
            ["haproxy", "-db", "-f", str(haproxy_cfg)],
            tmp / "haproxy.log",
            [haproxy_ports.http, haproxy_ports.https, haproxy_ports.tcp],
        ) as haproxy,
        running_proxy(
            "nginx", [*nginx_argv, "-g", "daemon off;"], tmp / "nginx-proxy.log", nginx_listens
        ) as nginx,
    ):
        targets = [
            *targets,
            proxy_target("haproxy", haproxy_ports, None, haproxy.pid),
            proxy_target("nginx", nginx_ports, no_stream, nginx.pid),
        ]
        for case in CASES:
            if not args.json:
                print(f"measuring {case.key} ...", file=sys.stderr, flush=True)
            out.rows[case.key] = measure_case(
                case, targets, args.duration, args.runs, lua, args.max_steal
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        print(f"bench/gateway.py: missing {', '.join(missing)}; install with:", file=sys.stderr)
        print(f"    {INSTALL_HINT}", file=sys.stderr)
        return 2
    out = Outcome()
    with tempfile.TemporaryDirectory(prefix="portway-bench-gw-", dir=args.data_dir) as name:
        tmp = Path(name)
        data_dir = tmp / "data"
        machine = machine_info(data_dir)
        try:
            run_benchmark(args, tmp, data_dir, out)
        except (
            BenchError,
            DaemonError,
            httpx.HTTPError,
            OSError,
            subprocess.SubprocessError,
        ) as err:
            out.problems.append(str(err))
    for case in CASES:
        for row in out.rows.get(case.key, []):
            if row.steal_pct is not None and row.steal_pct > args.max_steal:
                out.notes.append(
                    f"{case.key} {row.target}: the hypervisor took {row.steal_pct:.1f}% of the "
                    f"CPUs in its kept runs (median), above --max-steal: its figures measure "
                    f"the host's other guests too"
                )
            if row.failure:
                out.problems.append(f"{case.key} {row.target}: {row.failure}")
            elif row.errors:
                out.problems.append(
                    f"{case.key} {row.target}: {row.non_2xx} non-2xx/3xx responses, "
                    f"{row.socket_errors} socket errors"
                )
    goals = [v for case in CASES for v in verdicts(case, out.rows.get(case.key, []))]
    if args.json:
        doc = {
            "machine": machine,
            "duration_s": args.duration,
            "runs": args.runs,
            "max_steal_pct": args.max_steal,
            "cases": [
                {
                    "case": case.key,
                    "title": case.title,
                    "connections": case.connections,
                    "rows": [asdict(r) for r in out.rows.get(case.key, [])],
                    "portway_vs_haproxy": ratios(case, out.rows.get(case.key, []), "haproxy"),
                    "portway_vs_nginx": ratios(case, out.rows.get(case.key, []), "nginx"),
                }
                for case in CASES
            ],
            "goals": goals,
            "notes": out.notes,
            "problems": out.problems,
        }
        print(json.dumps(doc, indent=2))
    else:
        print(f"machine: {machine['cpu_count']} CPUs, {machine['python']}, {machine['platform']}")
        print(f"{machine['wrk']}; {machine['haproxy']}; {machine['nginx']}")
        print()
        for case in CASES:
            if case.key in out.rows:
                print_case(case, out.rows[case.key], args.duration, args.runs)
        if goals:
            print("goals (Portway / HAProxy, same run):")
            for v in goals:
                ratio_text = "-" if v["ratio"] is None else f"{v['ratio']:.2f}x"
                label = f"{v['case']} {_LABELS[v['metric']]} {v['goal']}"
                print(f"   {label:<34} {ratio_text:>7}  {v['result']}")
        for note in out.notes:
            print(f"note: {note}")
    for problem in out.problems:
        print(f"bench/gateway.py: {problem}", file=sys.stderr)
    return 1 if out.problems else 0


if __name__ == "__main__":
    sys.exit(main())
