"""Request and response heads: what the gateway keeps, drops and adds (sans-I/O, bytes in and out).

llhttp (through httptools) already refuses most framing attacks: CL with TE, duplicate or
invalid Content-Length, bare LF, obs-fold, bad chunk sizes, invalid tokens. What it leaves to
us is done here, one header at a time as the parser reports it, so the upstream head is built in
the same pass (the prototype measured header rewriting as the dearest part of a request):

* hop-by-hop headers (RFC 9110 §7.6.1) and the ones `Connection` names are not forwarded;
* framing is never forwarded as the client wrote it: the gateway writes `Content-Length` or
  `Transfer-Encoding: chunked` for the body it actually parsed, so the instance cannot read the
  message differently from the gateway (no desync, whatever the client sent);
* a transfer coding other than `chunked` answers 501 (RFC 9112 §6.1);
* `X-Forwarded-For` gets the client address appended; `-Proto` and `-Host` are set;
  `X-Request-Start: t=<µs since the epoch>` says when the gateway received the request (the
  Heroku convention APM tools read to measure queueing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

MAX_TARGET: Final = 8 * 1024  # longer → 414
MAX_HEAD: Final = 64 * 1024  # request line and fields together; larger → 431
MAX_FIELDS: Final = 100  # more → 431

# Not forwarded in either direction. `Trailer` goes too: trailers are not forwarded.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",  # framing is rewritten, see above
    }
)
# Set by the gateway, never taken from the client.
REPLACED: Final = frozenset({b"x-forwarded-proto", b"x-forwarded-host", b"x-request-start"})
_SPECIAL: Final = HOP_BY_HOP | REPLACED | {b"host", b"x-forwarded-for", b"expect"}
IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

# Field names as clients commonly spell them, lowercased ahead: a dict lookup per field instead
# of a call of `bytes.lower` (and the new object's hash) for most of them.
_COMMON_FIELDS: Final = (
    b"Host",
    b"User-Agent",
    b"Accept",
    b"Accept-Encoding",
    b"Accept-Language",
    b"Authorization",
    b"Cache-Control",
    b"Connection",
    b"Content-Length",
    b"Content-Type",
    b"Cookie",
    b"Expect",
    b"If-Modified-Since",
    b"If-None-Match",
    b"Origin",
    b"Pragma",
    b"Referer",
    b"Transfer-Encoding",
    b"Upgrade",
    b"X-Forwarded-For",
    b"X-Request-Id",
)
_LOWERED: Final = {n: n.lower() for n in _COMMON_FIELDS} | {
    n.lower(): n.lower() for n in _COMMON_FIELDS
}

# Host: a name or address, optional port; anything else is not a host (RFC 9110 §7.2).
_HOST_BYTES: Final = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:[]"


class Refused(Exception):
    """The request cannot be served: the status to answer (the connection then closes)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RequestHead:
    """What the gateway learnt from one request's fields, and the fields it forwards. Class
    attributes are the defaults: one of these is made per request."""

    size = 0
    count = 0
    host_field: bytes | None = None  # the Host field as the client sent it
    hosts = 0
    chunked = False
    content_length: int | None = None
    forwarded_for: bytes | None = None
    connection: tuple[bytes, ...] = ()
    upgrade: bytes | None = None
    expect_continue = False

    def __init__(self) -> None:
        self.lines: list[bytes] = []  # forwarded fields, each `name: value\r\n`

    def add(self, name: bytes, value: bytes) -> None:
        """One field as the parser reports it."""
        self.size += len(name) + len(value) + 4
        self.count += 1
        if self.size > MAX_HEAD or self.count > MAX_FIELDS:
            raise Refused(431, "request header fields too large")
        lname = _LOWERED.get(name)
        if lname is None:
            lname = name.lower()
        if lname not in _SPECIAL:  # most fields: forwarded as they came
            self.lines.append(b"%s: %s\r\n" % (name, value))
        elif lname in HOP_BY_HOP:
            self._framing_or_hop(lname, value)
        elif lname == b"host":
            self.hosts += 1
            self.host_field = value
        elif lname == b"x-forwarded-for":
            previous = self.forwarded_for
            self.forwarded_for = value if previous is None else b"%s, %s" % (previous, value)
        elif lname == b"expect":
            self.expect_continue = value.lower() == b"100-continue"
            self.lines.append(b"%s: %s\r\n" % (name, value))

    def _framing_or_hop(self, lname: bytes, value: bytes) -> None:
        if lname == b"transfer-encoding":
            # llhttp treats the body as chunked only when chunked is the final coding; any
            # other coding (gzip, chunked then gzip, x-chunked ...) is one we would have to
            # pass on undecoded under a framing of our own: refuse it instead.
            if value.strip(b" \t").lower() != b"chunked" or self.chunked:
                raise Refused(501, "unsupported transfer coding")
            self.chunked = True
        elif lname == b"content-length":
            self.content_length = _content_length(value)
        elif lname == b"connection":
            self.connection += tuple(t.strip(b" \t").lower() for t in value.split(b","))
        elif lname == b"upgrade":
            self.upgrade = value

    def finish(self, version: str) -> bytes:
        """Check the whole head once every field is in; returns the normalized host name."""
        if self.hosts > 1:
            raise Refused(400, "more than one Host field")
        if self.host_field is None:
            if version == "1.1":
                raise Refused(400, "no Host field")
            return b""
        return normalize_host(self.host_field)

    def repeat(self, other: RequestHead) -> None:
        """Take the fields of `other`, a head parsed from these very bytes."""
        self.size = other.size
        self.count = other.count
        self.host_field = other.host_field
        self.hosts = other.hosts
        self.chunked = other.chunked
        self.content_length = other.content_length
        self.forwarded_for = other.forwarded_for
        self.connection = other.connection
        self.upgrade = other.upgrade
        self.expect_continue = other.expect_continue
        self.lines = other.lines  # not changed once the head is in: shared

    def drop_connection_listed(self) -> None:
        """Fields the client's `Connection` names are hop-by-hop too (RFC 9110 §7.6.1)."""
        named = {t for t in self.connection if t not in (b"close", b"keep-alive", b"upgrade")}
        if named:
            self.lines = [ln for ln in self.lines if ln.split(b":", 1)[0].lower() not in named]


def _content_length(value: bytes) -> int:
    digits = value.strip(b" \t")
    if not digits or not digits.isdigit() or len(digits) > 18:
        raise Refused(400, "invalid Content-Length")
    return int(digits)


def normalize_host(raw: bytes) -> bytes:
    """`App.Example.com:8443` → `app.example.com`; refuses what is not a host."""
    if not raw or raw.translate(None, _HOST_BYTES):  # bytes left over are not host bytes
        raise Refused(400, "invalid Host field")
    host = raw.lower()
    if host.startswith(b"["):
        end = host.find(b"]")
        if end < 0:
            raise Refused(400, "invalid Host field")
        return host[: end + 1]
    name, _, port = host.partition(b":")
    if port and not port.isdigit():
        raise Refused(400, "invalid Host field")
    return name.rstrip(b".")


def upstream_head(
    method: bytes,
    target: bytes,
    head: RequestHead,
    client_ip: bytes,
    proto: bytes,
    host: bytes,
    framing: bytes,
    received_us: int,
) -> bytes:
    """The request head the instance sees, as one bytes object (one write)."""
    forwarded = client_ip if head.forwarded_for is None else head.forwarded_for + b", " + client_ip
    original_host = head.host_field if head.host_field is not None else host
    return b"".join(
        (
            b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, target, original_host),
            *head.lines,
            b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Host: %s\r\n"
            b"X-Request-Start: t=%d\r\n" % (forwarded, proto, original_host, received_us),
            framing,
            b"\r\n",
        )
    )


def origin_form(target: bytes, method: bytes) -> bytes:
    """The target as the instance should see it: absolute-form becomes origin-form
    (RFC 9112 §3.2.2: the gateway is the origin's front); asterisk-form only for OPTIONS."""
    if target.startswith(b"/"):
        return target
    if target == b"*":
        if method != b"OPTIONS":
            raise Refused(400, "asterisk-form target is only for OPTIONS")
        return target
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        raise Refused(400, "invalid request target")
    slash = rest.find(b"/")
    query = rest.find(b"?")
    if slash < 0 or (0 <= query < slash):
        return b"/" + rest[query:] if query >= 0 else b"/"
    return rest[slash:]


def authority(target: bytes) -> bytes | None:
    """The host of an absolute-form target, which wins over the Host field (RFC 9112 §3.2.2)."""
    if target.startswith(b"/") or target == b"*":
        return None
    rest = target.partition(b"://")[2]
    end = len(rest)
    for stop in (b"/", b"?"):
        at = rest.find(stop)
        if 0 <= at < end:
            end = at
    return rest[:end].rpartition(b"@")[2] or None


# --- responses ----------------------------------------------------------------------------


# Fields of a response the client does not get as the instance sent them, as they start a line
# of the lowercased head (llhttp allows no space before the colon).
_RESPONSE_HOP: Final = (
    b"\r\nconnection:",
    b"\r\ncontent-length:",
    b"\r\ntransfer-encoding:",
    b"\r\nkeep-alive:",
    b"\r\nproxy-connection:",
    b"\r\nte:",
    b"\r\ntrailer:",
    b"\r\nupgrade:",
)
MAX_RESPONSE_HEAD: Final = 4 * MAX_HEAD
_COMMON_TOKENS: Final = frozenset({b"close", b"keep-alive", b"upgrade"})


@dataclass(slots=True)
class ResponseHead:
    """One instance response head, as the client gets it (without framing fields)."""

    kept: bytes  # status line and the fields that pass, without the final CRLFs
    content_length: bytes | None = None  # as the instance sent it (llhttp checked it)
    chunked: bool = False
    connection: tuple[bytes, ...] = ()


def parse_response_head(raw: bytes) -> ResponseHead:
    """`raw` is a whole head, blank line included, that llhttp has already accepted. A few
    `find`s over the lowercased head (C speed) instead of a Python call per field: this runs
    for every response."""
    if len(raw) > MAX_RESPONSE_HEAD:
        raise Refused(502, "instance response header too large")
    text = raw[:-4]
    lowered = text.lower()
    head = ResponseHead(text)
    cuts: list[tuple[int, int]] = []
    for key in _RESPONSE_HOP:
        at = lowered.find(key)
        while at >= 0:
            end = lowered.find(b"\r\n", at + 2)
            end = len(text) if end < 0 else end
            cuts.append((at, end))
            value = text[at + len(key) : end].strip(b" \t")
            if key == b"\r\ncontent-length:":
                head.content_length = value
            elif key == b"\r\ntransfer-encoding:":
                head.chunked = True  # llhttp refuses a response whose last coding is not
            elif key == b"\r\nconnection:":
                head.connection += tuple(t.strip(b" \t") for t in value.lower().split(b","))
            at = lowered.find(key, end)
    if cuts:
        cuts.sort()
        kept, start = [], 0
        for at, end in cuts:
            kept.append(text[start:at])
            start = end
        kept.append(text[start:])
        head.kept = b"".join(kept)
    if head.connection and not _COMMON_TOKENS.issuperset(head.connection):
        named = set(head.connection) - _COMMON_TOKENS
        first, *fields = head.kept.split(b"\r\n")
        kept = [f for f in fields if f.split(b":", 1)[0].strip().lower() not in named]
        head.kept = b"\r\n".join((first, *kept))
    return head


def response_head(head: ResponseHead, extra: bytes) -> bytes:
    """The head the client gets: the instance's, then the gateway's framing lines."""
    return b"%s\r\n%s\r\n" % (head.kept, extra)


# How an instance response's body reaches the client.
NO_BODY, AS_IS, RECHUNK = 0, 1, 2
# What `client_head` is told about the exchange, as bits of one int (a cheap memo key).
HEAD_REQUEST, CLIENT_HTTP10, CLOSING = 1, 2, 4


class ClientHead(NamedTuple):
    """A final response head as the client gets it, and how its body follows."""

    head: bytes
    body_mode: int  # NO_BODY, AS_IS or RECHUNK
    until_close: bool  # the body ends when the instance closes
    close: bool  # the client connection closes after this response
    length: int = -1  # the body's Content-Length, when it is passed AS_IS by that length


# Heads already rewritten, by the instance's head, then by `client_head`'s flags. An instance
# sends the same head again and again (only `Date` changes, once a second), so nearly every
# response is a dict lookup instead of a parse. Bounded: emptied when full.
_MEMO: Final[dict[bytes, list[ClientHead | None]]] = {}
MEMO_SIZE: Final = 256


def client_head(raw: bytes, status: int, flags: int) -> ClientHead:
    """The head of a final (status >= 200, not 101) response for the client, from the
    instance's `raw` head (blank line included, accepted by llhttp) and `flags`:
    HEAD_REQUEST (the request was HEAD), CLIENT_HTTP10 (the client speaks HTTP/1.0),
    CLOSING (the client connection closes after this response, whatever the instance says)."""
    known = _MEMO.get(raw)
    if known is not None:
        hit = known[flags]
        if hit is not None:
            return hit
    else:
        if len(_MEMO) >= MEMO_SIZE:
            _MEMO.clear()
        known = _MEMO[raw] = [None] * 8
    made = known[flags] = _client_head(parse_response_head(raw), status, flags)
    return made


def _client_head(response: ResponseHead, status: int, flags: int) -> ClientHead:
    close = bool(flags & CLOSING)
    http10 = bool(flags & CLIENT_HTTP10)
    until_close = False
    length = -1
    if flags & HEAD_REQUEST or status in (204, 304):
        body_mode = NO_BODY
        extra = b""
        if response.content_length is not None and status != 204:
            extra = b"Content-Length: %s\r\n" % response.content_length
    elif response.content_length is not None:
        body_mode = AS_IS
        extra = b"Content-Length: %s\r\n" % response.content_length
        length = int(response.content_length)  # digits: llhttp checked them
    else:
        # Neither length nor chunked: the body ends when the instance closes (RFC 9112 §6.3).
        until_close = not response.chunked
        if not http10:
            body_mode = RECHUNK
            extra = b"Transfer-Encoding: chunked\r\n"
        else:
            body_mode = AS_IS
            extra = b""
            close = True  # an HTTP/1.0 client learns the end of the body by the close
    if close:
        extra += b"Connection: close\r\n"
    elif http10:
        extra += b"Connection: keep-alive\r\n"
    return ClientHead(response_head(response, extra), body_mode, until_close, close, length)
