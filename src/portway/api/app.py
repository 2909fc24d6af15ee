"""The FastAPI application: routes, and one table from failures to HTTP answers."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from ..control.controller import Controller
from ..control.images import ImageController
from ..control.instances import InstanceController
from ..control.users import ADMIN, User, Users
from ..model.errors import Invalid
from . import images as image_routes
from . import instances as instance_routes
from . import services
from .auth import AuthError, authenticate
from .envelope import data_response, error_response
from .schemas import ERROR_RESPONSES, ErrorEnvelope, HealthEnvelope

log = logging.getLogger("portway.api")
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class DataPlane(Protocol):
    """What the API shows of the gateway (app.py adapts the gateway to it)."""

    def describe(self) -> dict[str, Any]:
        """Where the gateway listens and how public ports map to listening ports."""

    def metrics(self, user: str | None) -> bytes:
        """Prometheus text for `user`'s groups and instances (everyone's for None)."""


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def validation_message(err: RequestValidationError) -> str:
    """Name the fields: `services.0.port: Input should be less than or equal to 65535`."""
    problems = []
    for e in err.errors()[:3]:
        if e.get("type") == "json_invalid":
            problems.append("body: not valid JSON")
        elif e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",):
            problems.append("body: a JSON request body is required")
        else:
            problems.append(f"{_field_path(tuple(e.get('loc', ())))}: {e.get('msg')}")
    return "; ".join(dict.fromkeys(problems)) or "invalid request"


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Invalid)
    return error_response(400, exc.message)


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, validation_message(exc))


async def _auth(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuthError)
    return error_response(exc.status_code, exc.message, headers={"WWW-Authenticate": "Bearer"})


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no such route: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal error; the daemon's log has the details")


class JSONOnly:
    """The API takes only JSON, so a body sent without a JSON content type (curl -d, some Go
    clients on GET/DELETE) is read as JSON rather than rejected as a form."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            original = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
            if b"json" not in original:
                scope = dict(scope, headers=[*headers, (b"content-type", b"application/json")])
        await self.app(scope, receive, send)


def create_app(
    controller: Controller,
    users: Users,
    platform_domain: str,
    instances: InstanceController | None = None,
    images: ImageController | None = None,
    data_plane: DataPlane | None = None,
) -> FastAPI:
    app = FastAPI(
        title="Portway",
        version=__version__,
        summary="A self-hosted services platform speaking the Unikraft Cloud Platform API",
        redirect_slashes=False,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.controller = controller
    app.state.users = users
    app.state.platform_domain = platform_domain
    app.add_exception_handler(Invalid, _invalid)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(AuthError, _auth)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(services.router)
    if instances is not None:
        app.state.instances = instances
        app.include_router(instance_routes.router)
    if images is not None:
        app.state.images = images
        app.include_router(image_routes.router)
    app.add_middleware(JSONOnly)

    @app.get(
        "/v1/healthz",
        tags=["health"],
        summary="Liveness and versions (no token needed)",
        responses={200: {"model": HealthEnvelope}, 503: {"model": ErrorEnvelope}},
    )
    async def healthz() -> Response:
        started = time.perf_counter()
        store = "ok" if await controller.healthy() else "failing"
        if store != "ok":
            return error_response(503, "the store is not answering", started)
        data: dict[str, Any] = {
            "checks": {"store": store},
            "versions": {"portway": __version__, "api": "v1"},
        }
        if data_plane is not None:
            data["gateway"] = data_plane.describe()
        return data_response(data, started)

    if data_plane is not None:

        @app.get(
            "/metrics",
            tags=["health"],
            summary="Gateway counters in the Prometheus text format (your own; all for admin)",
            response_class=Response,
            responses={200: {"content": {PROMETHEUS_TEXT: {}}}, **ERROR_RESPONSES},
        )
        async def metrics(user: User = Depends(authenticate)) -> Response:
            scope = None if user.name == ADMIN else user.name
            return Response(data_plane.metrics(scope), media_type=PROMETHEUS_TEXT)

    def openapi() -> dict[str, Any]:
        # Validation failures answer 400 (the platform's code), never FastAPI's 422.
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/v1/openapi.json", include_in_schema=False)
    async def openapi_v1() -> dict[str, Any]:
        return app.openapi()

    return app
