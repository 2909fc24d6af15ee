"""Data-plane outcomes that the gateway answers itself, mapped to status codes in one table
(architecture.md rule 4): the request path returns an `Outcome`, this module turns it into bytes.
"""

from __future__ import annotations

from enum import Enum
from http import HTTPStatus


class Outcome(Enum):
    NO_ROUTE = "no_route"  # no group answers to the host on this port
    NO_INSTANCE = "no_instance"  # the group has no running instance
    HARD_LIMIT = "hard_limit"  # every instance is at its hard limit
    CONNECT_FAILED = "connect_failed"  # no instance accepted a connection
    UPSTREAM_TIMEOUT = "upstream_timeout"  # no response head within the first-byte deadline
    UPSTREAM_BROKEN = "upstream_broken"  # the instance closed or sent garbage before a response
    HEADER_TIMEOUT = "header_timeout"  # the client took too long to send the request head
    BAD_REQUEST = "bad_request"
    REDIRECT = "redirect"
    WAKE_FAILED = "wake_failed"  # held for a wake that failed or did not finish in time


STATUS: dict[Outcome, int] = {
    Outcome.NO_ROUTE: 404,
    Outcome.NO_INSTANCE: 503,
    Outcome.HARD_LIMIT: 503,
    Outcome.CONNECT_FAILED: 502,
    Outcome.UPSTREAM_TIMEOUT: 504,
    Outcome.UPSTREAM_BROKEN: 502,
    Outcome.HEADER_TIMEOUT: 408,
    Outcome.BAD_REQUEST: 400,
    Outcome.REDIRECT: 301,
    Outcome.WAKE_FAILED: 503,
}
# Outcomes a client should retry after a moment (the work was refused, not failed).
RETRY_AFTER_S: dict[Outcome, int] = {
    Outcome.NO_INSTANCE: 1,
    Outcome.HARD_LIMIT: 1,
    Outcome.WAKE_FAILED: 1,
}


def reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def error_response(
    status: int, message: str, *, close: bool, retry_after: int | None = None
) -> bytes:
    """A small plain-text answer from the gateway itself; the body says why."""
    body = (message + "\n").encode("utf-8", "replace")
    extra = b"Retry-After: %d\r\n" % retry_after if retry_after is not None else b""
    if close:
        extra += b"Connection: close\r\n"
    return b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n" % (
        status,
        reason(status),
    ) + b"Content-Length: %d\r\n%sServer: portway\r\n\r\n%s" % (len(body), extra, body)


def outcome_response(outcome: Outcome, message: str, *, close: bool) -> bytes:
    return error_response(
        STATUS[outcome], message, close=close, retry_after=RETRY_AFTER_S.get(outcome)
    )


def redirect_response(location: bytes, *, close: bool) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    return (
        b"HTTP/1.1 301 Moved Permanently\r\nLocation: %s\r\nContent-Length: 0\r\n%s"
        b"Server: portway\r\n\r\n" % (location, extra)
    )
