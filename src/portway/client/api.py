"""An HTTP client for the Unikraft Cloud Platform API as Portway serves it (ukc-api.md §1, §2).

Theory of operation: every call goes through `Client._call`, which turns whatever can go wrong
into one `ClientError` carrying a single line a person can act on:

- the daemon cannot be reached        -> "cannot reach <url> (...): is the daemon running? ..."
- HTTP 4xx/5xx                         -> the envelope's `message` (else `errors[0].message`)
- HTTP 200 with failed items           -> the items' `message`s ("No service group with name 'x'")
- an answer that is not an envelope    -> "unexpected answer from <url>: ..."

So callers handle exactly one exception class and never see httpx's.

Where the daemon is (`find_endpoint`): UKC_METRO and UKC_TOKEN, as the official SDKs read them;
otherwise `<data dir>/client.json`, which `portway up` writes for this purpose.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from .. import __version__
from ..config import CLIENT_FILE, default_data_dir

Item = dict[str, Any]
# A reference to a resource on the wire: exactly one of {"uuid": ...} or {"name": ...}.
Ref = dict[str, str]

SERVICE_GROUPS = "service_groups"
PAGE_SIZE = 100
# A daemon on this machine answers in milliseconds; the read timeout only bounds a stuck one.
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
INSTANCES = "instances"
IMAGES = "images"
# A call that waits `timeout_s` on the daemon may take that long to answer, plus this margin
# (the SDK stretches its read timeout the same way).
WAIT_MARGIN_S = 10.0
# Building copies the upload into the data directory: bound it, but generously.
BUILD_TIMEOUT = httpx.Timeout(300.0, connect=5.0)
TAR_TYPE = "application/x-tar"
START_HINT = "is the daemon running? Start it with `portway up`, or set UKC_METRO"

_ERRNO = re.compile(r"\[Errno -?\d+\]")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


class ClientError(Exception):
    """The one failure callers see. `str(err)` is a single line fit to show as it is.

    `status_code` is the HTTP status when the daemon answered; `error_code` the first failed
    item's integer code (8 = not found, 23 = already exists, ukc-api.md §1.5); `items` every item
    of a bulk answer, so a caller can still report the ones that succeeded."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_code: int | None = None,
        items: Sequence[Item] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error_code = error_code
        self.items = list(items)


# --- where the daemon is ---------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """A base URL ending in `/v1` and the bearer token to send there."""

    url: str
    token: str


@dataclass(frozen=True)
class LocalDaemon:
    """What `portway up` wrote to `client.json`."""

    metro: str
    token_file: Path


def normalize_metro(metro: str) -> str:
    """`http://host`, `http://host/` and `http://host/v1` all mean `http://host/v1`, as in the
    Python SDK's `normalise_base_url` (ukc-api.md §1.1)."""
    url = metro.strip().rstrip("/")
    if "://" not in url:
        # kraft accepts metro codes such as `fra`; a self-hosted daemon has no such code.
        raise ClientError(
            f"UKC_METRO must be a URL such as http://127.0.0.1:7420/v1 (got {metro!r})"
        )
    if url.lower().endswith("/v1"):
        url = url[: -len("/v1")]
    return f"{url}/v1"


def read_local_daemon(data_dir: Path) -> LocalDaemon | None:
    """The daemon `portway up` last announced in `data_dir`, or None if it never ran there."""
    path = data_dir / CLIENT_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ClientError(f"cannot read {path}: {err}") from None
    metro, token_file = (
        (doc.get("metro"), doc.get("token_file")) if isinstance(doc, dict) else (None, None)
    )
    if not isinstance(metro, str) or not isinstance(token_file, str):
        raise ClientError(f"{path} needs string fields 'metro' and 'token_file'")
    return LocalDaemon(metro, Path(token_file))


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as err:
        raise ClientError(
            f"cannot read the token file {path}: {err.strerror}; set UKC_TOKEN"
        ) from None
    if not token:
        raise ClientError(f"the token file {path} is empty; set UKC_TOKEN")
    return token


def find_endpoint(
    environ: Mapping[str, str] | None = None, data_dir: Path | None = None
) -> Endpoint:
    """UKC_METRO, else the metro in client.json. UKC_TOKEN, else the token file client.json
    names, but only when the metro is that local daemon's: the operator's admin token must not
    travel to whatever other server UKC_METRO points at."""
    env = os.environ if environ is None else environ
    metro = env.get("UKC_METRO", "").strip()
    token = env.get("UKC_TOKEN", "").strip()
    if metro and token:
        return Endpoint(normalize_metro(metro), token)
    where = default_data_dir() if data_dir is None else data_dir
    local = read_local_daemon(where)
    if not metro:
        if local is None:
            raise ClientError(
                f"no daemon to talk to: start one with `portway up` (it writes "
                f"{where / CLIENT_FILE}), or set UKC_METRO and UKC_TOKEN"
            )
        metro = local.metro
    url = normalize_metro(metro)
    if token:
        return Endpoint(url, token)
    if local is None or normalize_metro(local.metro) != url:
        raise ClientError(f"no API token for {url}: set UKC_TOKEN")
    return Endpoint(url, _read_token(local.token_file))


def identifier_ref(identifier: str) -> Ref:
    """A UUID-looking argument is a uuid, anything else a name (as kraft decides)."""
    key = "uuid" if _UUID.fullmatch(identifier) else "name"
    return {key: identifier}


# --- the client ------------------------------------------------------------------------------


class Client:
    """Synchronous calls on `/v1/services`, `/v1/instances` and `/v1/images`; use it as a
    context manager to close the pool."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout = TIMEOUT,
    ) -> None:
        self.endpoint = endpoint
        self._http = httpx.Client(
            base_url=endpoint.url,
            headers={
                "Authorization": f"Bearer {endpoint.token}",
                "Accept": "application/json",
                "User-Agent": f"portway-cli/{__version__}",
            },
            timeout=timeout,
            transport=transport,
            follow_redirects=False,  # the API never redirects (ukc-api.md §1.3)
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def port_offset(self) -> int:
        """How the daemon maps public ports to the ports its gateway listens on (P + offset);
        0 for a server that does not say (a Unikraft Cloud metro)."""
        try:
            response = self._http.get("/healthz")
            gateway = response.json().get("data", {}).get("gateway") or {}
            return int(gateway.get("port_offset") or 0)
        except (httpx.HTTPError, ValueError, AttributeError, TypeError):
            return 0

    # --- service groups ------------------------------------------------------------------

    def create_service_group(self, request: Mapping[str, Any]) -> Item:
        """POST /v1/services. The answer is terser than a read; re-read it for display."""
        return self._one(self._call("POST", "/services", SERVICE_GROUPS, json=request))

    def get_service_groups(self, refs: Sequence[Ref]) -> list[Item]:
        """GET /v1/services?uuid=..&name=..: one item per reference, in order."""
        params = [(key, value) for ref in refs for key, value in ref.items()]
        return self._call("GET", "/services", SERVICE_GROUPS, params=params)

    def get_service_group(self, ref: Ref) -> Item:
        return self._one(self.get_service_groups([ref]))

    def list_service_groups(self, page_size: int = PAGE_SIZE) -> list[Item]:
        """Every group, page by page, the way the SDK pages (ukc-api.md §1.7)."""
        return self._list_all("/services", SERVICE_GROUPS, page_size)

    def delete_service_groups(self, refs: Sequence[Ref]) -> list[Item]:
        """DELETE /v1/services with `[{"uuid"|"name": ...}]`. If some items fail, the others
        were still deleted: the raised error's `items` has them all."""
        return self._call("DELETE", "/services", SERVICE_GROUPS, json=list(refs))

    # --- instances (ukc-api.md §3) ---------------------------------------------------------

    def create_instances(self, request: Mapping[str, Any]) -> list[Item]:
        """POST /v1/instances: one item per instance made (`replicas` + 1). With `timeout_s` the
        daemon answers only once they all run, so the read timeout grows to match."""
        wait_s = request.get("timeout_s") or 0
        return self._exchange(
            "POST", "/instances", INSTANCES, json=request, timeout=waiting_timeout(wait_s)
        )

    def get_instances(self, refs: Sequence[Ref]) -> list[Item]:
        """GET /v1/instances?uuid=..&name=..: one item per reference, in order."""
        params = [(key, value) for ref in refs for key, value in ref.items()]
        return self._exchange("GET", "/instances", INSTANCES, params=params)

    def get_instance(self, ref: Ref) -> Item:
        return self._one(self.get_instances([ref]))

    def list_instances(self, page_size: int = PAGE_SIZE) -> list[Item]:
        """Every instance, paged as `list_service_groups` pages."""
        return self._list_all("/instances", INSTANCES, page_size)

    def start_instances(self, refs: Sequence[Ref]) -> list[Item]:
        """PUT /v1/instances/start; items carry `state` and `previous_state`."""
        return self._exchange("PUT", "/instances/start", INSTANCES, json=list(refs))

    def stop_instances(self, requests: Sequence[Mapping[str, Any]]) -> list[Item]:
        """PUT /v1/instances/stop with `[{uuid|name, force?, drain_timeout_ms?}]`. It does not
        block: `wait_instances` for `stopped`."""
        return self._exchange("PUT", "/instances/stop", INSTANCES, json=list(requests))

    def wait_instances(self, refs: Sequence[Ref], state: str, timeout_s: int) -> list[Item]:
        """GET /v1/instances/wait, its parameters in the body as the SDK sends them."""
        body = [{**ref, "state": state, "timeout_s": timeout_s} for ref in refs]
        return self._exchange(
            "GET", "/instances/wait", INSTANCES, json=body, timeout=waiting_timeout(timeout_s)
        )

    def delete_instances(self, refs: Sequence[Ref]) -> list[Item]:
        """DELETE /v1/instances; as with groups, failed items leave the others deleted."""
        return self._exchange("DELETE", "/instances", INSTANCES, json=list(refs))

    def instance_log(self, ref: Ref, offset: int | None = None, limit: int | None = None) -> Item:
        """GET /v1/instances/log: base64 `output` for bytes `range`, of `available` ones.
        A negative offset counts from the end."""
        request: dict[str, Any] = dict(ref)
        if offset is not None:
            request["offset"] = offset
        if limit is not None:
            request["limit"] = limit
        return self._one(self._exchange("GET", "/instances/log", INSTANCES, json=[request]))

    # --- images (a Portway extension: a directory and its start command) -----------------

    def build_image(self, name: str, tag: str, tarball: bytes) -> Item:
        """POST /v1/images?name=&tag= with the directory as a tar; a bad manifest is a 400."""
        return self._one(
            self._exchange(
                "POST",
                "/images",
                IMAGES,
                params={"name": name, "tag": tag},
                content=tarball,
                headers={"Content-Type": TAR_TYPE},
                timeout=BUILD_TIMEOUT,
            )
        )

    def list_images(self) -> list[Item]:
        return self._exchange("GET", "/images", IMAGES)

    def delete_images(self, refs: Sequence[Ref]) -> list[Item]:
        """DELETE /v1/images with `[{"name": "app:latest"}]`."""
        return self._exchange("DELETE", "/images", IMAGES, json=list(refs))

    # --- generic plumbing for the resources above ----------------------------------------

    def _list_all(self, path: str, key: str, page_size: int) -> list[Item]:
        """Every item of a list endpoint, paged as the SDK pages: the cursor is the last uuid
        seen and inclusive, so later pages ask for one more and drop it; an empty page means
        the cursor's item went away meanwhile (resume from an earlier one); a page with
        nothing new means `from` was ignored (stop rather than loop forever)."""
        items = self._exchange("GET", path, key, params={"count": page_size})
        seen = {i.get("uuid") for i in items}
        more = len(items) >= page_size
        back = 0
        while more and back < len(items):
            cursor = items[-1 - back].get("uuid")
            params = {"count": page_size + 1, "from": cursor}
            page = self._exchange("GET", path, key, params=params)
            if not page:
                back += 1
                continue
            fresh = [i for i in page if i.get("uuid") not in seen]
            seen.update(i.get("uuid") for i in fresh)
            items.extend(fresh)
            more = len(page) >= page_size + 1 and bool(fresh)
            back = 0
        return items

    def _exchange(
        self,
        method: str,
        path: str,
        key: str,
        *,
        params: Any = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> list[Item]:
        """Send one request (optionally a raw body, extra headers, a per-call timeout) and
        return the items under `data.<key>`; whatever goes wrong is one ClientError."""
        url = self.endpoint.url
        try:
            response = self._http.request(
                method,
                path,
                params=params,
                json=json,
                content=content,
                headers=headers,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
        except httpx.TimeoutException:
            raise ClientError(f"no answer from {url} in time; {START_HINT}") from None
        except (httpx.HTTPError, httpx.InvalidURL) as err:
            # "[Errno 111] Connection refused" -> "connection refused"
            reason = _ERRNO.sub("", str(err)).strip() or type(err).__name__
            reason = reason[:1].lower() + reason[1:]
            raise ClientError(f"cannot reach {url} ({reason}); {START_HINT}") from None
        return items_of(response, key)

    # --- plumbing ------------------------------------------------------------------------

    def _one(self, items: list[Item]) -> Item:
        if len(items) != 1:
            raise ClientError(
                f"unexpected answer from {self.endpoint.url}: {len(items)} items where one was due"
            )
        return items[0]

    def _call(
        self,
        method: str,
        path: str,
        key: str,
        *,
        params: Any = None,
        json: Any = None,
    ) -> list[Item]:
        """Send one request and return the items under `data.<key>`, or raise ClientError."""
        return self._exchange(method, path, key, params=params, json=json)


def waiting_timeout(wait_s: float) -> httpx.Timeout:
    """The read timeout for a call the daemon holds for `wait_s` seconds (-1: indefinitely)."""
    if wait_s < 0:
        return httpx.Timeout(None, connect=5.0)
    read = TIMEOUT.read or 0.0
    return httpx.Timeout(max(read, wait_s + WAIT_MARGIN_S), connect=5.0)


def items_of(response: httpx.Response, key: str) -> list[Item]:
    """The items of an envelope (ukc-api.md §1.4), or ClientError with the daemon's own words."""
    doc = _envelope(response)
    if not response.is_success:
        raise ClientError(_envelope_message(doc, response), status_code=response.status_code)
    data = doc.get("data")
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        if doc.get("status") == "error" or doc.get("errors"):
            raise ClientError(_envelope_message(doc, response), status_code=response.status_code)
        raise ClientError(f"unexpected answer from {response.request.url}: no data.{key} list")
    failed = [i for i in items if i.get("status") == "error"]
    if failed:
        messages = [str(i.get("message") or f"error {i.get('error')}") for i in failed]
        code = failed[0].get("error")
        raise ClientError(
            "; ".join(dict.fromkeys(messages)),
            status_code=response.status_code,
            error_code=code if isinstance(code, int) else None,
            items=items,
        )
    if doc.get("errors"):
        # Any top-level error fails the call, even on HTTP 200, as in the SDK.
        raise ClientError(_envelope_message(doc, response), status_code=response.status_code)
    return items


def _envelope(response: httpx.Response) -> dict[str, Any]:
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        return doc
    if not response.is_success and not response.content:
        return {}  # an empty error body is allowed; the status line says enough
    kind = response.headers.get("content-type", "no content type")
    raise ClientError(
        f"unexpected answer from {response.request.url}: HTTP {response.status_code} ({kind}), "
        "not a Unikraft Cloud API envelope; check UKC_METRO"
    )


def _envelope_message(doc: Mapping[str, Any], response: httpx.Response) -> str:
    """The envelope's `message`, else the first `errors[].message`, else the status line."""
    message = doc.get("message")
    if isinstance(message, str) and message:
        return message
    errors = doc.get("errors")
    if isinstance(errors, list):
        for err in errors:
            text = err.get("message") if isinstance(err, dict) else err
            if isinstance(text, str) and text:
                return text
    return f"HTTP {response.status_code} {response.reason_phrase} from {response.request.url}"
