"""The framing corpus: malformed, ambiguous and smuggling HTTP/1.1 requests (RFC 9112, RFC 9110)
with what the gateway is allowed to do with each.

Every vector is the complete byte string a client sends on a fresh connection. `expect` says
which outcomes are acceptable (test_framing.py checks them):

- "reject": the gateway answers 400 (or 413/414/431 for limits, 501 for an unknown
  transfer-coding, plus the vector's `statuses`) and closes; the backend receives nothing,
  except the `forwarded` well-formed requests that precede the bad one in a pipeline.
- "normalize": the RFC allows more than one reading (reject, or repair and forward). Either the
  gateway rejects as above, or it forwards: the client then gets exactly `forwarded` backend
  responses (possibly followed by one rejection of trailing bytes, then close), and the first
  forwarded request carries `body` (or one of `alt_bodies` where the RFC allows two readings).
  `close=True` marks messages after which the RFC requires the connection to close
  (Content-Length with Transfer-Encoding, Transfer-Encoding in HTTP/1.0: RFC 9112 §6.1, §6.3),
  so bytes after them must never reach the backend.
- "pass": well-formed controls: exactly `forwarded` backend responses, no rejection.

Requests that should reach an instance use Host `app.test` and targets under `/framing`; a
request for `/smuggled` must never reach the backend in any vector, which the test checks.
The corpus avoids vectors that are incomplete under any reading the RFC allows (bare-LF
vectors end with a CRLF CRLF a CRLF-only reader can stop at), so a correct gateway never has to
wait for bytes that will not come: a wait is a finding, not noise.

Names are `<category>.<variant>`; the category groups the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Expect = Literal["reject", "normalize", "pass"]

HOST = b"Host: app.test"
POST = b"POST /framing HTTP/1.1"
GET = b"GET /framing HTTP/1.1"
HELLO = b"hello"
HELLO_CHUNKED = b"5\r\nhello\r\n0\r\n\r\n"  # 15 bytes
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"
SECOND = b"GET /framing/second HTTP/1.1\r\nHost: app.test\r\n\r\n"


@dataclass(frozen=True)
class Vector:
    name: str
    raw: bytes
    expect: Expect
    note: str = ""
    body: bytes | None = None
    # How many requests reach the backend when the gateway accepts the vector as the RFC reads
    # it; None means 0 for "reject" and 1 otherwise.
    forwarded: int | None = None
    close: bool = False
    statuses: frozenset[int] = frozenset()  # rejection statuses allowed beyond the usual ones
    alt_bodies: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if self.expect not in ("reject", "normalize", "pass"):
            raise ValueError(f"{self.name}: unknown expect {self.expect!r}")
        if not self.raw:
            raise ValueError(f"{self.name}: empty vector")
        if self.expect == "pass" and self.statuses:
            raise ValueError(f"{self.name}: a pass vector admits no rejection status")

    @property
    def category(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def expected_forwards(self) -> int:
        if self.forwarded is not None:
            return self.forwarded
        return 0 if self.expect == "reject" else 1


def msg(start: bytes, *fields: bytes, body: bytes = b"") -> bytes:
    """A request: start line, field lines, CRLF CRLF, body; all bytes exactly as given."""
    return start + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def cl(body: bytes) -> bytes:
    return b"Content-Length: %d" % len(body)


def post_cl(value: bytes, body: bytes = HELLO, *extra: bytes) -> bytes:
    return msg(POST, HOST, b"Content-Length: " + value, *extra, body=body)


def post_chunked(body: bytes, *extra: bytes) -> bytes:
    return msg(POST, HOST, b"Transfer-Encoding: chunked", *extra, body=body)


def te_cl(te_line: bytes, cl_value: int = 4, body: bytes = HELLO_CHUNKED) -> bytes:
    """A Transfer-Encoding variant next to a Content-Length that would frame the body
    differently (CL 4 cuts `5\\r\\nh`, leaving `ello...` as a bogus next request)."""
    return msg(POST, HOST, te_line, b"Content-Length: %d" % cl_value, body=body)


_5XX_VERSION = frozenset({505})
_METHOD = frozenset({405})
_EXPECTATION = frozenset({417})

# --- controls: well-formed, must be forwarded --------------------------------------------------

CONTROL: tuple[Vector, ...] = (
    Vector("control.get", msg(GET, HOST), "pass", "plain GET, no body", body=b""),
    Vector("control.post-cl", post_cl(b"5"), "pass", "Content-Length body", body=HELLO),
    Vector("control.post-cl-zero", post_cl(b"0", b""), "pass", "explicit empty body", body=b""),
    Vector("control.post-chunked", post_chunked(HELLO_CHUNKED), "pass", "chunked", body=HELLO),
    Vector(
        "control.chunked-multi",
        post_chunked(chunked(b"hel", b"lo", b" world")),
        "pass",
        "several chunks",
        body=b"hello world",
    ),
    Vector(
        "control.chunk-ext",
        post_chunked(b"5;name=value\r\nhello\r\n0;last\r\n\r\n"),
        "pass",
        "chunk extensions must be ignored (RFC 9112 §7.1.1)",
        body=HELLO,
    ),
    Vector(
        "control.chunk-ext-quoted",
        post_chunked(b'5;a="b;c d\\"e"\r\nhello\r\n0\r\n\r\n'),
        "pass",
        "quoted-string chunk-ext-val with ; SP and a quoted-pair (RFC 9112 §7.1.1)",
        body=HELLO,
    ),
    Vector(
        "control.trailers",
        post_chunked(b"5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"),
        "pass",
        "trailer section (RFC 9112 §7.1.2)",
        body=HELLO,
    ),
    Vector(
        "control.chunk-hex-case",
        post_chunked(b"A\r\nhellohello\r\nb\r\nhello world\r\n0\r\n\r\n"),
        "pass",
        "HEXDIG is case-insensitive",
        body=b"hellohellohello world",
    ),
    Vector(
        "control.chunk-leading-zeros",
        post_chunked(b"0005\r\nhello\r\n000\r\n\r\n"),
        "pass",
        'chunk-size = 1*HEXDIG, last-chunk = 1*"0"',
        body=HELLO,
    ),
    Vector(
        "control.pipeline-gets",
        msg(GET, HOST) + SECOND,
        "pass",
        "two pipelined GETs answered in order (RFC 9112 §9.3.2)",
        body=b"",
        forwarded=2,
    ),
    Vector(
        "control.pipeline-mixed",
        post_cl(b"5") + post_chunked(HELLO_CHUNKED) + SECOND,
        "pass",
        "CL, chunked and bodiless requests back to back",
        body=HELLO,
        forwarded=3,
    ),
    Vector(
        "control.http10",
        msg(b"GET /framing HTTP/1.0", HOST),
        "pass",
        "HTTP/1.0 request",
        body=b"",
    ),
    Vector(
        "control.http10-cl",
        msg(b"POST /framing HTTP/1.0", HOST, b"Content-Length: 5", body=HELLO),
        "pass",
        "HTTP/1.0 request with Content-Length",
        body=HELLO,
    ),
    Vector(
        "control.body-binary",
        post_cl(b"9", b"a\x00\r\n\r\n\xffbc"),
        "pass",
        "content is opaque: NUL, CRLF CRLF and 0xFF inside a CL body are data",
        body=b"a\x00\r\n\r\n\xffbc",
    ),
    Vector(
        "control.ows",
        msg(POST, HOST, b"Content-Length: \t 5 \t", body=HELLO),
        "pass",
        "OWS around a field value is not part of it (RFC 9112 §5.1)",
        body=HELLO,
    ),
    Vector(
        "control.empty-value",
        msg(GET, HOST, b"X-Empty:"),
        "pass",
        "empty field value is valid",
        body=b"",
    ),
    Vector(
        "control.name-case",
        msg(POST, b"hOsT: app.test", b"content-LENGTH: 5", body=HELLO),
        "pass",
        "field names are case-insensitive",
        body=HELLO,
    ),
    Vector(
        "control.te-case",
        msg(POST, HOST, b"transfer-encoding: Chunked", body=HELLO_CHUNKED),
        "pass",
        "transfer-coding names are case-insensitive (RFC 9112 §7)",
        body=HELLO,
    ),
    Vector(
        "control.te-ows",
        msg(POST, HOST, b"Transfer-Encoding:\tchunked ", body=HELLO_CHUNKED),
        "pass",
        "HTAB and SP are OWS around the value (RFC 9112 §5.1)",
        body=HELLO,
    ),
    Vector(
        "control.target-4k",
        msg(b"GET /framing/" + b"a" * 4000 + b" HTTP/1.1", HOST),
        "pass",
        "a 4 KiB request-target is under the 8 KiB limit",
        body=b"",
    ),
    Vector(
        "control.headers-60",
        msg(GET, HOST, *(b"X-H-%d: v" % i for i in range(59))),
        "pass",
        "60 field lines is under the 100 limit",
        body=b"",
    ),
    Vector(
        "control.header-8k",
        msg(GET, HOST, b"X-Big: " + b"v" * 8000),
        "pass",
        "an 8 KiB field is under the 64 KiB section limit",
        body=b"",
    ),
    Vector(
        "control.leading-crlf",
        b"\r\n" + msg(GET, HOST),
        "normalize",
        "a server SHOULD ignore at least one empty line before the request-line (§2.2)",
        body=b"",
    ),
)

# --- CL.TE: a front end that honours Content-Length would forward the chunked tail ------------

CLTE: tuple[Vector, ...] = (
    Vector(
        "clte.portswigger",
        te_cl(b"Transfer-Encoding: chunked", 13, b"0\r\n\r\nSMUGGLED"),
        "normalize",
        "CL and TE: TE overrides, CL must be removed, connection closed after (§6.1, §6.3 "
        "rule 3); the `SMUGGLED` tail must never be read as a request",
        body=b"",
        close=True,
    ),
    Vector(
        "clte.full-request",
        te_cl(b"Transfer-Encoding: chunked", 5 + len(SMUGGLED), b"0\r\n\r\n" + SMUGGLED),
        "normalize",
        "CL.TE with a complete smuggled request behind the last chunk (§6.3 rule 3, §6.1 close)",
        body=b"",
        close=True,
    ),
    Vector(
        "clte.te-first",
        msg(
            POST,
            HOST,
            b"Transfer-Encoding: chunked",
            b"Content-Length: %d" % (5 + len(SMUGGLED)),
            body=b"0\r\n\r\n" + SMUGGLED,
        ),
        "normalize",
        "same with the fields in the other order",
        body=b"",
        close=True,
    ),
    Vector(
        "clte.gpost",
        te_cl(b"Transfer-Encoding: chunked", 6, b"0\r\n\r\nG"),
        "normalize",
        "PortSwigger `G` prefix poisoning the next request (§6.3 rule 3)",
        body=b"",
        close=True,
    ),
    Vector(
        "clte.cl-zero",
        te_cl(b"Transfer-Encoding: chunked", 0),
        "normalize",
        "CL 0 with a chunked body: a CL reader forwards nothing and reads `5` as a request",
        body=HELLO,
        close=True,
    ),
    Vector(
        "clte.cl-longer",
        te_cl(b"Transfer-Encoding: chunked", 100),
        "normalize",
        "CL larger than the chunked body: a CL reader would hang waiting (§6.3 rule 3)",
        body=HELLO,
        close=True,
    ),
    Vector(
        "clte.expect",
        msg(
            POST,
            HOST,
            b"Expect: 100-continue",
            b"Content-Length: 13",
            b"Transfer-Encoding: chunked",
            body=b"0\r\n\r\nSMUGGLED",
        ),
        "normalize",
        "CL.TE combined with Expect: 100-continue",
        body=b"",
        close=True,
        statuses=_EXPECTATION,
    ),
    Vector(
        "clte.invalid-cl",
        te_cl(b"Transfer-Encoding: chunked", 0).replace(b"Content-Length: 0", b"Content-Length: x"),
        "normalize",
        "an invalid CL next to TE: TE governs (§6.3 rule 3 comes before rule 5)",
        body=HELLO,
        close=True,
    ),
)

# --- TE.CL: a front end that honours TE while the back end reads CL ---------------------------

_LAB_INNER = (
    b"GPOST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 15\r\n\r\nx=1"
)

TECL: tuple[Vector, ...] = (
    Vector(
        "tecl.basic",
        te_cl(b"Transfer-Encoding: chunked", 3, b"8\r\nSMUGGLED\r\n0\r\n\r\n"),
        "normalize",
        "TE.CL: the forwarded message must not keep CL 3 (§6.3 rule 3 `MUST first remove`)",
        body=b"SMUGGLED",
        close=True,
    ),
    Vector(
        "tecl.request-in-chunk",
        te_cl(b"Transfer-Encoding: chunked", 4, chunked(SMUGGLED)),
        "normalize",
        "TE.CL with a complete request as chunk data: it is body, never a request",
        body=SMUGGLED,
        close=True,
    ),
    Vector(
        "tecl.cl-after-te",
        msg(
            POST,
            HOST,
            b"Transfer-Encoding: chunked",
            b"Content-Length: 3",
            body=b"8\r\nSMUGGLED\r\n0\r\n\r\n",
        ),
        "normalize",
        "TE.CL with the fields in the other order",
        body=b"SMUGGLED",
        close=True,
    ),
    Vector(
        "tecl.portswigger-lab",
        msg(
            POST,
            HOST,
            b"Content-length: 4",
            b"Transfer-Encoding: chunked",
            body=chunked(_LAB_INNER),
        ),
        "normalize",
        "PortSwigger TE.CL lab payload (GPOST inside the chunk)",
        body=_LAB_INNER,
        close=True,
    ),
    Vector(
        "tecl.dup-cl",
        msg(
            POST,
            HOST,
            b"Content-Length: 3",
            b"Transfer-Encoding: chunked",
            b"Content-Length: 3",
            body=b"8\r\nSMUGGLED\r\n0\r\n\r\n",
        ),
        "normalize",
        "TE with two CL fields: every CL must go (§6.3 rule 3)",
        body=b"SMUGGLED",
        close=True,
    ),
)

# --- TE.TE: obfuscated Transfer-Encoding, each next to a conflicting CL ----------------------

TE_OBFS: tuple[Vector, ...] = (
    Vector(
        "te.xchunked",
        te_cl(b"Transfer-Encoding: xchunked"),
        "reject",
        "unknown transfer-coding: 501 (§6.1); TE present, so CL must not be used (§6.3 rule 4)",
    ),
    Vector(
        "te.chunked-identity",
        te_cl(b"Transfer-Encoding: chunked, identity"),
        "reject",
        "chunked is not the final coding in a request: 400 and close (§6.3 rule 4)",
    ),
    Vector(
        "te.identity-chunked",
        te_cl(b"Transfer-Encoding: identity, chunked"),
        "reject",
        "`identity` is not a transfer-coding any more (RFC 9112 dropped it): 501 (§6.1)",
    ),
    Vector(
        "te.identity",
        te_cl(b"Transfer-Encoding: identity"),
        "reject",
        "TE without chunked final in a request: 400 and close (§6.3 rule 4)",
    ),
    Vector(
        "te.x-then-chunked-lines",
        msg(
            POST,
            HOST,
            b"Transfer-Encoding: x",
            b"Transfer-Encoding: chunked",
            b"Content-Length: 4",
            body=HELLO_CHUNKED,
        ),
        "reject",
        "two TE lines combine to `x, chunked`: unknown coding x (§6.1, RFC 9110 §5.3)",
    ),
    Vector(
        "te.chunked-then-x-lines",
        msg(
            POST,
            HOST,
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: x",
            b"Content-Length: 4",
            body=HELLO_CHUNKED,
        ),
        "reject",
        "two TE lines combine to `chunked, x`: chunked not final (§6.3 rule 4)",
    ),
    Vector(
        "te.chunked-twice-lines",
        msg(
            POST,
            HOST,
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: chunked",
            body=HELLO_CHUNKED,
        ),
        "reject",
        "`chunked, chunked`: chunked MUST NOT be applied twice (§6.1); one decode leaves an "
        "undefined body",
    ),
    Vector(
        "te.chunked-twice-list",
        te_cl(b"Transfer-Encoding: chunked, chunked"),
        "reject",
        "`chunked, chunked` in one line (§6.1)",
    ),
    Vector(
        "te.space-before-colon",
        te_cl(b"Transfer-Encoding : chunked"),
        "reject",
        "whitespace between field name and colon MUST be rejected with 400 (§5.1)",
    ),
    Vector(
        "te.tab-before-colon",
        te_cl(b"Transfer-Encoding\t: chunked"),
        "reject",
        "HTAB between field name and colon (§5.1)",
    ),
    Vector(
        "te.name-then-colon-line",
        te_cl(b"Transfer-Encoding\r\n: chunked"),
        "reject",
        "PortSwigger: field name alone on a line, value on the next (no colon; empty name)",
    ),
    Vector(
        "te.quoted",
        te_cl(b'Transfer-Encoding: "chunked"'),
        "reject",
        "a quoted coding name is not `chunked` (RFC 9112 §7 token): unknown coding",
    ),
    Vector(
        "te.chunk",
        te_cl(b"Transfer-Encoding: chunk"),
        "reject",
        "near-miss coding name",
    ),
    Vector(
        "te.chunked-param",
        te_cl(b"Transfer-Encoding: chunked;q=1"),
        "reject",
        "chunked defines no parameters; the coding is not plainly `chunked`",
    ),
    Vector(
        "te.gzip-chunked",
        te_cl(b"Transfer-Encoding: gzip, chunked"),
        "reject",
        "a coding the gateway does not implement: 501 (§6.1 SHOULD); a raw pass-through "
        "would hand the instance a coding it cannot be assumed to decode",
    ),
    Vector(
        "te.tab-value",
        te_cl(b"Transfer-Encoding:\tchunked"),
        "normalize",
        "PortSwigger `Transfer-Encoding:[tab]chunked`: HTAB is OWS, so this IS chunked; TE "
        "wins over CL (§6.3 rule 3)",
        body=HELLO,
        close=True,
    ),
    Vector(
        "te.trailing-space",
        te_cl(b"Transfer-Encoding: chunked   "),
        "normalize",
        "trailing OWS; still chunked (§5.1, §6.3 rule 3)",
        body=HELLO,
        close=True,
    ),
    Vector(
        "te.uppercase",
        te_cl(b"Transfer-Encoding: CHUNKED"),
        "normalize",
        "coding names are case-insensitive: this is chunked (§7, §6.3 rule 3)",
        body=HELLO,
        close=True,
    ),
    Vector(
        "te.name-case",
        te_cl(b"tRANSFER-eNCODING: chunked"),
        "normalize",
        "field names are case-insensitive (RFC 9110 §5.1)",
        body=HELLO,
        close=True,
    ),
    Vector(
        "te.empty-list-element",
        te_cl(b"Transfer-Encoding: , chunked"),
        "normalize",
        "empty list elements are ignored (RFC 9110 §5.6.1): this is chunked",
        body=HELLO,
        close=True,
    ),
    Vector(
        "te.obs-fold-value",
        te_cl(b"Transfer-Encoding:\r\n chunked"),
        "normalize",
        "obs-fold: reject with 400 or unfold to SP (§5.2); unfolded it is chunked",
        body=HELLO,
        close=True,
    ),
    Vector(
        "te.obs-fold-hides-te",
        te_cl(b"X-Foo: bar\r\n Transfer-Encoding: chunked", 15),
        "normalize",
        "a continuation line is part of X-Foo, not a TE field (§5.2): unfolded, only CL 15 "
        "frames the body",
        body=HELLO_CHUNKED,
    ),
    Vector(
        "te.leading-space-first-line",
        msg(
            POST,
            b" Transfer-Encoding: chunked",
            HOST,
            b"Content-Length: 15",
            body=HELLO_CHUNKED,
        ),
        "normalize",
        "PortSwigger `[space]Transfer-Encoding`: whitespace-preceded line after the "
        "start-line is rejected or ignored (§2.2); ignored, CL 15 frames the body",
        body=HELLO_CHUNKED,
    ),
    Vector(
        "te.bare-lf-in-value",
        te_cl(b"X-Foo: bar\nTransfer-Encoding: chunked", 15),
        "normalize",
        "PortSwigger `X: X[\\n]Transfer-Encoding`: a bare LF MAY end the line (§2.2), making "
        "TE real; or, as an LF in a value, it becomes SP (RFC 9110 §5.5) and CL frames",
        body=HELLO,
        alt_bodies=(HELLO_CHUNKED,),
    ),
    Vector(
        "te.bare-cr-in-value",
        te_cl(b"X-Foo: bar\rTransfer-Encoding: chunked", 15),
        "normalize",
        "a bare CR never ends a line: reject, or replace by SP (§2.2) so CL 15 frames",
        body=HELLO_CHUNKED,
    ),
    Vector(
        "te.nul-after",
        te_cl(b"Transfer-Encoding: chunked\x00"),
        "normalize",
        "NUL in a value: reject, or SP (RFC 9110 §5.5), which leaves `chunked`",
        body=HELLO,
        close=True,
    ),
    Vector(
        "te.vtab-after",
        te_cl(b"Transfer-Encoding: chunked\x0b"),
        "normalize",
        "VT is not OWS: reject (or an unknown coding, 501); never frame by CL",
        body=HELLO,
        close=True,
    ),
    Vector(
        "te.ff-before",
        te_cl(b"Transfer-Encoding: \x0cchunked"),
        "normalize",
        "FF is not OWS: reject (or an unknown coding, 501); never frame by CL",
        body=HELLO,
        close=True,
    ),
    Vector(
        "te.http10",
        msg(
            b"POST /framing HTTP/1.0",
            HOST,
            b"Transfer-Encoding: chunked",
            b"Content-Length: 4",
            body=HELLO_CHUNKED,
        ),
        "normalize",
        "TE in HTTP/1.0: framing is faulty, close after processing (§6.1); forwarding may only "
        "decode the chunks",
        body=HELLO,
        close=True,
    ),
    Vector(
        "te.http10-no-cl",
        msg(b"POST /framing HTTP/1.0", HOST, b"Transfer-Encoding: chunked", body=HELLO_CHUNKED),
        "normalize",
        "TE in HTTP/1.0 without CL (§6.1: treat as faulty, close)",
        body=HELLO,
        close=True,
    ),
    Vector(
        "te.te-header-not-transfer",
        msg(POST, HOST, b"TE: chunked", b"Content-Length: 5", body=HELLO),
        "normalize",
        "`TE` (accepted codings) is not Transfer-Encoding: CL frames the body",
        body=HELLO,
    ),
    Vector(
        "te.underscore-name",
        te_cl(b"Transfer_Encoding: chunked", 15),
        "normalize",
        "`Transfer_Encoding` is another field (`_` is a tchar): CL 15 frames; an instance that "
        "maps `_` to `-` must never see it as TE",
        body=HELLO_CHUNKED,
    ),
)

# --- invalid or duplicate Content-Length (RFC 9112 §6.3 rule 5, RFC 9110 §8.6) ---------------

_CL_REJECT: tuple[tuple[str, bytes, str], ...] = (
    ("plus", b"+5", "sign"),
    ("minus", b"-1", "negative"),
    ("minus-zero", b"-0", "sign on zero"),
    ("hex", b"0x10", "hex prefix"),
    ("space-inside", b"5 5", "two numbers, not a list"),
    ("list-different", b"5,6", "list of different values"),
    ("list-different-ows", b"5, 6", "list of different values"),
    ("huge", b"9" * 30, "overflows any integer (400 or 413)"),
    ("overflow-2e64", b"18446744073709551621", "2**64 + 5: wraps to 5 in a 64-bit parser"),
    ("empty", b"", "empty value"),
    ("fullwidth-digit", "\uff15".encode(), "U+FF15, a digit to Unicode but not DIGIT"),
    ("arabic-indic-digit", "\u0665".encode(), "U+0665, a digit to Unicode but not DIGIT"),
    ("decimal", b"5.0", "decimal point"),
    ("exponent", b"5e0", "exponent"),
    ("trailing-letter", b"5a", "trailing letter"),
    ("quoted", b'"5"', "quoted"),
    ("comma-only", b",", "list with no value"),
    ("underscore", b"0_5", "`_` separator some integer parsers accept"),
)

CONTENT_LENGTH: tuple[Vector, ...] = (
    *(
        Vector(
            f"cl.{name}",
            post_cl(value),
            "reject",
            f"invalid Content-Length ({why}): unrecoverable, 400 and close (§6.3 rule 5)",
        )
        for name, value, why in _CL_REJECT
    ),
    Vector(
        "cl.dup-different",
        msg(POST, HOST, b"Content-Length: 5", b"Content-Length: 6", body=HELLO + b"!"),
        "reject",
        "two CL lines with different values (§6.3 rule 5, RFC 9110 §8.6)",
    ),
    Vector(
        "cl.dup-zero-and-five",
        msg(POST, HOST, b"Content-Length: 0", b"Content-Length: 5", body=HELLO),
        "reject",
        "CL 0 then CL 5: first-wins and last-wins readers disagree (§6.3 rule 5)",
    ),
    Vector(
        "cl.space-before-colon",
        msg(POST, HOST, b"Content-Length : 5", body=HELLO),
        "reject",
        "whitespace between field name and colon: 400 (§5.1)",
    ),
    Vector(
        "cl.dup-same",
        msg(POST, HOST, b"Content-Length: 5", b"Content-Length: 5", body=HELLO),
        "normalize",
        "identical duplicates MAY be collapsed to one (§6.3 rule 5, RFC 9110 §8.6)",
        body=HELLO,
    ),
    Vector(
        "cl.list-same",
        post_cl(b"5, 5"),
        "normalize",
        "a list of identical valid values is processed as that value (§6.3 rule 5)",
        body=HELLO,
    ),
    Vector(
        "cl.list-same-no-ows",
        post_cl(b"5,5"),
        "normalize",
        "same list without OWS",
        body=HELLO,
    ),
    Vector(
        "cl.leading-zeros",
        post_cl(b"010", b"0123456789"),
        "normalize",
        "1*DIGIT allows leading zeros and is decimal: 10 bytes, not octal 8",
        body=b"0123456789",
    ),
    Vector(
        "cl.obs-fold",
        msg(POST, HOST, b"Content-Length:\r\n 5", body=HELLO),
        "normalize",
        "obs-fold in CL: reject, or unfold to `5` (§5.2)",
        body=HELLO,
    ),
    Vector(
        "cl.nul-after",
        post_cl(b"5\x00"),
        "normalize",
        "NUL in a value: reject or replace by SP (RFC 9110 §5.5); never read a different length",
        body=HELLO,
    ),
    Vector(
        "cl.vtab-after",
        post_cl(b"5\x0b"),
        "normalize",
        "VT is not OWS: reject; a lenient reader may only get 5",
        body=HELLO,
    ),
    Vector(
        "cl.get-with-body",
        msg(GET, HOST, b"Content-Length: 5", body=HELLO),
        "normalize",
        "CL frames a GET body like any other (RFC 9110 §9.3.1); never drop it and read `hello` "
        "as the next request (0.CL)",
        body=HELLO,
    ),
)

# --- chunked body syntax (RFC 9112 §7.1) ----------------------------------------------------

CHUNK: tuple[Vector, ...] = (
    Vector("chunk.non-hex", post_chunked(b"z\r\nhello\r\n0\r\n\r\n"), "reject", "size not HEXDIG"),
    Vector("chunk.negative", post_chunked(b"-5\r\nhello\r\n0\r\n\r\n"), "reject", "negative size"),
    Vector("chunk.plus", post_chunked(b"+5\r\nhello\r\n0\r\n\r\n"), "reject", "`+` sign"),
    Vector("chunk.0x-prefix", post_chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), "reject", "0x prefix"),
    Vector(
        "chunk.underscore",
        post_chunked(b"0_5\r\nhello\r\n0\r\n\r\n"),
        "reject",
        "`_` separator some integer parsers accept",
    ),
    Vector(
        "chunk.overflow-2e68",
        post_chunked(b"100000000000000005\r\nhello\r\n0\r\n\r\n"),
        "reject",
        "2**68 + 5 wraps to 5 in a 64-bit parser: must be refused, not truncated",
    ),
    Vector(
        "chunk.overflow-ffff",
        post_chunked(b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        "reject",
        "size > 2**64",
    ),
    Vector(
        "chunk.missing-crlf-after-size",
        post_chunked(b"5hello\r\n0\r\n\r\n"),
        "reject",
        "no CRLF after chunk-size",
    ),
    Vector(
        "chunk.missing-crlf-after-data",
        post_chunked(b"5\r\nhello0\r\n\r\n"),
        "reject",
        "chunk-data not followed by CRLF",
    ),
    Vector(
        "chunk.size-too-small",
        post_chunked(b"3\r\nhello\r\n0\r\n\r\n"),
        "reject",
        "declared size shorter than the data: `lo` is not CRLF",
    ),
    Vector(
        "chunk.size-too-big",
        post_chunked(b"7\r\nhello\r\n0\r\n\r\n"),
        "reject",
        "declared size longer than the data: `0` follows where CRLF must",
    ),
    Vector(
        "chunk.size-swallows-cr",
        post_chunked(b"6\r\nhello\r\n0\r\n\r\n"),
        "normalize",
        "size 6 takes `hello<CR>`; the LF left is then a bare-LF chunk-data end, which a "
        "lenient reader accepts (as HAProxy does): reject, or forward exactly `hello<CR>`",
        body=b"hello\r",
    ),
    Vector(
        "chunk.ext-nul",
        post_chunked(b"5;a=\x00\r\nhello\r\n0\r\n\r\n"),
        "reject",
        "NUL inside a chunk-ext",
    ),
    Vector(
        "chunk.ext-bare-lf",
        post_chunked(b"5;a\nhello\r\n0\r\n\r\n"),
        "reject",
        "bare LF inside a chunk-ext: LF-terminating and CRLF-terminating readers split the "
        "body differently (funky chunks)",
    ),
    Vector(
        "chunk.ext-bare-cr",
        post_chunked(b"5;a\rb\r\nhello\r\n0\r\n\r\n"),
        "reject",
        "bare CR inside a chunk-ext (§2.2)",
    ),
    Vector(
        "chunk.ext-too-long",
        post_chunked(b"5;" + b"a" * 70_000 + b"\r\nhello\r\n0\r\n\r\n"),
        "reject",
        "70 KB of chunk-ext: limit and answer 4xx (§7.1.1)",
    ),
    Vector(
        "chunk.ext-too-many",
        post_chunked(b"5" + b";a=b" * 20_000 + b"\r\nhello\r\n0\r\n\r\n"),
        "reject",
        "20 000 chunk extensions on one chunk (§7.1.1)",
    ),
    Vector(
        "chunk.bare-cr-size-line",
        post_chunked(b"5\rhello\r\n0\r\n\r\n"),
        "reject",
        "bare CR ends no line (§2.2): `5<CR>hello` is no chunk-size line",
    ),
    Vector(
        "chunk.bare-cr-after-data",
        post_chunked(b"5\r\nhello\r0\r\n\r\n"),
        "reject",
        "bare CR where CRLF must follow chunk-data",
    ),
    Vector(
        "chunk.request-as-size",
        post_chunked(b"5\r\nhello\r\n" + SMUGGLED),
        "reject",
        "no last-chunk: the next request line is read as a chunk-size and is invalid",
    ),
    Vector(
        "chunk.trailer-no-colon",
        post_chunked(b"5\r\nhello\r\n0\r\nbadtrailer\r\n\r\n"),
        "reject",
        "a trailer line that is no field line",
    ),
    Vector(
        "chunk.trailer-request",
        post_chunked(b"5\r\nhello\r\n0\r\n" + SMUGGLED),
        "reject",
        "a request line inside the trailer section is no field line",
    ),
    Vector(
        "chunk.leading-space",
        post_chunked(b" 5\r\nhello\r\n0\r\n\r\n"),
        "normalize",
        "SP before chunk-size is not in the grammar; lenient readers may only see 5",
        body=HELLO,
    ),
    Vector(
        "chunk.trailing-space",
        post_chunked(b"5 \r\nhello\r\n0\r\n\r\n"),
        "normalize",
        "BWS with no chunk-ext after it; lenient readers may only see 5",
        body=HELLO,
    ),
    Vector(
        "chunk.bws-before-ext",
        post_chunked(b"5 ;a=b\r\nhello\r\n0\r\n\r\n"),
        "normalize",
        "BWS before `;` is in the grammar (§7.1.1)",
        body=HELLO,
    ),
    Vector(
        "chunk.many-leading-zeros",
        post_chunked(b"0" * 30 + b"5\r\nhello\r\n0\r\n\r\n"),
        "normalize",
        "31 hex digits that are 5: valid, but a digit-count limit may reject",
        body=HELLO,
    ),
    Vector(
        "chunk.bare-lf-size-line",
        post_chunked(b"5\nhello\r\n0\r\n\r\n"),
        "normalize",
        "bare LF after chunk-size: reject, or read as the line end",
        body=HELLO,
    ),
    Vector(
        "chunk.bare-lf-after-data",
        post_chunked(b"5\r\nhello\n0\r\n\r\n"),
        "normalize",
        "bare LF after chunk-data: reject, or read as the line end",
        body=HELLO,
    ),
    Vector(
        "chunk.bare-lf-last-chunk",
        post_chunked(b"5\r\nhello\r\n0\n\r\n"),
        "normalize",
        "bare LF ending the last-chunk line (then CRLF, so a CRLF-only reader rejects, never "
        "waits)",
        body=HELLO,
    ),
    Vector(
        "chunk.ext-empty-name",
        post_chunked(b"5;\r\nhello\r\n0\r\n\r\n"),
        "normalize",
        "`;` with no chunk-ext-name: invalid grammar, harmless if the ext is dropped",
        body=HELLO,
    ),
    Vector(
        "chunk.ext-space-in-name",
        post_chunked(b"5;a b\r\nhello\r\n0\r\n\r\n"),
        "normalize",
        "SP inside a chunk-ext-name",
        body=HELLO,
    ),
    Vector(
        "chunk.ext-unterminated-quote",
        post_chunked(b'5;a="b\r\nhello\r\n0\r\n\r\n'),
        "normalize",
        "unterminated quoted-string: the line still ends at CRLF (a quote never spans lines)",
        body=HELLO,
    ),
    Vector(
        "chunk.ext-ctl",
        post_chunked(b"5;a=\x01\r\nhello\r\n0\r\n\r\n"),
        "normalize",
        "a control character in a chunk-ext-val",
        body=HELLO,
    ),
    Vector(
        "chunk.trailer-content-length",
        post_chunked(b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n"),
        "normalize",
        "framing fields are not allowed in trailers and must not frame (RFC 9110 §6.5.1)",
        body=HELLO,
    ),
    Vector(
        "chunk.trailer-transfer-encoding",
        post_chunked(b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        "normalize",
        "TE in a trailer must not frame (RFC 9110 §6.5.1)",
        body=HELLO,
    ),
    Vector(
        "chunk.trailer-obs-fold",
        post_chunked(b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n"),
        "normalize",
        "obs-fold in the trailer section (§5.2)",
        body=HELLO,
    ),
)

# --- bare CR / bare LF as line terminators (RFC 9112 §2.2) -----------------------------------

EOL: tuple[Vector, ...] = (
    Vector(
        "eol.lf-request-line",
        GET + b"\n" + HOST + b"\r\n\r\n",
        "normalize",
        "a recipient MAY take a bare LF as the line terminator (§2.2)",
        body=b"",
    ),
    Vector(
        "eol.lf-everywhere",
        GET + b"\n" + HOST + b"\nContent-Length: 5\n\nhello\r\n\r\n",
        "normalize",
        "bare LF on every line; the CRLF CRLF after the body ends the head for a reader that "
        "only splits on CRLF (which must then reject), so no correct reading waits",
        body=HELLO,
    ),
    Vector(
        "eol.lf-before-cl",
        POST + b"\r\n" + HOST + b"\nContent-Length: 5\r\n\r\nhello",
        "normalize",
        "bare LF ends Host; else it is an LF inside the Host value, which is then invalid",
        body=HELLO,
    ),
    Vector(
        "eol.lf-end-of-head",
        POST + b"\r\n" + HOST + b"\r\nContent-Length: 5\r\n\nhello\r\n\r\n",
        "normalize",
        "head ended by CRLF LF (trailing CRLF CRLF as in eol.lf-everywhere)",
        body=HELLO,
    ),
    Vector(
        "eol.lf-between-requests",
        msg(GET, HOST) + b"\n" + SECOND,
        "normalize",
        "stray LF between pipelined requests (§2.2 empty line before a request-line)",
        body=b"",
        forwarded=2,
    ),
    Vector(
        "eol.cr-request-line",
        GET + b"\r" + HOST + b"\r\n\r\n",
        "reject",
        "bare CR is never a line end; as SP it makes a five-word request-line (§2.2, §3)",
        statuses=_5XX_VERSION,
    ),
    Vector(
        "eol.cr-before-cl",
        POST + b"\r\n" + HOST + b"\rContent-Length: 5\r\n\r\nhello",
        "reject",
        "bare CR between Host and CL: reject, or SP, which leaves an invalid Host (§2.2)",
    ),
    Vector(
        "eol.cr-in-value",
        msg(GET, HOST, b"X-Foo: a\rb"),
        "normalize",
        "bare CR inside a value: reject or replace with SP (§2.2)",
        body=b"",
    ),
    Vector(
        "eol.cr-cr-lf",
        msg(GET, HOST + b"\r"),
        "normalize",
        "CR CR LF: the first CR is bare (§2.2)",
        body=b"",
    ),
    Vector(
        "eol.cr-end-of-head",
        POST + b"\r\n" + HOST + b"\r\nContent-Length: 5\r\n\rhello\r\n\r\n",
        "reject",
        "CRLF CR: a bare CR cannot end the head; `<CR>hello` is a bad field line",
    ),
)

# --- request-line (RFC 9112 §3) ---------------------------------------------------------------


def _line(request_line: bytes, *fields: bytes) -> bytes:
    return msg(request_line, *(fields or (HOST,)))


REQLINE: tuple[Vector, ...] = (
    Vector(
        "reqline.missing-version",
        _line(b"GET /framing"),
        "reject",
        "HTTP/0.9-style line with no version",
        statuses=_5XX_VERSION,
    ),
    Vector(
        "reqline.http2",
        _line(b"GET /framing HTTP/2.0"),
        "reject",
        "major version 2 over HTTP/1 framing: 400 or 505 (RFC 9110 §15.6.6)",
        statuses=_5XX_VERSION,
    ),
    Vector(
        "reqline.http09",
        _line(b"GET /framing HTTP/0.9"),
        "reject",
        "HTTP/0.9 is not supported",
        statuses=_5XX_VERSION,
    ),
    Vector(
        "reqline.http12",
        _line(b"GET /framing HTTP/1.2"),
        "normalize",
        "higher minor version: process as HTTP/1.1 (RFC 9110 §2.5), forward as 1.1",
        body=b"",
        statuses=_5XX_VERSION,
    ),
    Vector(
        "reqline.version-no-minor",
        _line(b"GET /framing HTTP/1"),
        "reject",
        "HTTP-version = HTTP-name / DIGIT . DIGIT (§2.3)",
        statuses=_5XX_VERSION,
    ),
    Vector(
        "reqline.version-two-digits",
        _line(b"GET /framing HTTP/1.10"),
        "reject",
        "two minor digits",
        statuses=_5XX_VERSION,
    ),
    Vector(
        "reqline.lowercase-http",
        _line(b"GET /framing http/1.1"),
        "reject",
        "HTTP-name is case-sensitive (§2.3)",
        statuses=_5XX_VERSION,
    ),
    Vector(
        "reqline.double-space",
        _line(b"GET  /framing  HTTP/1.1"),
        "normalize",
        "recipients MAY split on whitespace runs (§3)",
        body=b"",
    ),
    Vector(
        "reqline.tabs",
        _line(b"GET\t/framing\tHTTP/1.1"),
        "normalize",
        "HTAB as separator MAY be accepted (§3)",
        body=b"",
    ),
    Vector(
        "reqline.vtab",
        _line(b"GET\x0b/framing\x0bHTTP/1.1"),
        "normalize",
        "VT as separator MAY be accepted (§3)",
        body=b"",
    ),
    Vector(
        "reqline.trailing-space",
        _line(b"GET /framing HTTP/1.1 "),
        "normalize",
        "trailing whitespace MAY be ignored (§3)",
        body=b"",
    ),
    Vector(
        "reqline.space-in-target",
        _line(b"GET /fra ming HTTP/1.1"),
        "reject",
        "four words: no valid request-line (§3.2)",
    ),
    Vector(
        "reqline.nul-in-target",
        _line(b"GET /fra\x00ming HTTP/1.1"),
        "reject",
        "NUL in the request-target",
    ),
    Vector(
        "reqline.nul-in-method",
        _line(b"G\x00ET /framing HTTP/1.1"),
        "reject",
        "NUL in the method",
    ),
    Vector(
        "reqline.bad-method-char",
        _line(b"G(T /framing HTTP/1.1"),
        "reject",
        "method = token; `(` is a delimiter",
    ),
    Vector(
        "reqline.lowercase-method",
        _line(b"get /framing HTTP/1.1"),
        "normalize",
        "a valid token naming an unknown method (methods are case-sensitive): forward or 501",
        body=b"",
        statuses=_METHOD,
    ),
    Vector(
        "reqline.extra-word",
        _line(b"GET /framing HTTP/1.1 extra"),
        "reject",
        "four words",
        statuses=_5XX_VERSION,
    ),
    Vector(
        "reqline.empty-target",
        _line(b"GET  HTTP/1.1"),
        "reject",
        "no request-target",
        statuses=_5XX_VERSION,
    ),
    Vector(
        "reqline.target-no-slash",
        _line(b"GET framing HTTP/1.1"),
        "reject",
        "neither origin-, absolute-, authority- nor asterisk-form (§3.2)",
    ),
    Vector(
        "reqline.target-fragment",
        _line(b"GET /framing#frag HTTP/1.1"),
        "normalize",
        "a fragment is not part of origin-form (§3.2.1)",
        body=b"",
    ),
    Vector(
        "reqline.target-non-ascii",
        _line(b"GET /framing/\xff HTTP/1.1"),
        "normalize",
        "a raw 0xFF in the target: reject, or percent-encode before forwarding",
        body=b"",
    ),
    Vector(
        "reqline.absolute-form",
        _line(b"GET http://app.test/framing HTTP/1.1"),
        "normalize",
        "a server MUST accept absolute-form (§3.2.2)",
        body=b"",
    ),
    Vector(
        "reqline.absolute-form-host-mismatch",
        _line(b"GET http://app.test/framing HTTP/1.1", b"Host: other.test"),
        "normalize",
        "absolute-form wins over Host (§3.2.2, §7.2): route to app.test, or reject",
        body=b"",
    ),
    Vector(
        "reqline.absolute-form-no-host",
        msg(b"GET http://app.test/framing HTTP/1.1"),
        "reject",
        "HTTP/1.1 without a Host field: 400 even with absolute-form (§3.2)",
    ),
    Vector(
        "reqline.absolute-form-userinfo",
        _line(b"GET http://user@app.test/framing HTTP/1.1"),
        "normalize",
        "userinfo in a target SHOULD be treated as an error (RFC 9110 §4.2.4)",
        body=b"",
    ),
    Vector(
        "reqline.asterisk-get",
        _line(b"GET * HTTP/1.1"),
        "reject",
        "asterisk-form is only for OPTIONS (§3.2.4)",
    ),
    Vector(
        "reqline.authority-form-get",
        _line(b"GET app.test:80 HTTP/1.1"),
        "reject",
        "authority-form is only for CONNECT (§3.2.3)",
    ),
    Vector(
        "reqline.connect",
        _line(b"CONNECT app.test:443 HTTP/1.1", b"Host: app.test:443"),
        "reject",
        "CONNECT at a reverse proxy: no tunnels to instances",
        statuses=_METHOD,
    ),
    Vector(
        "reqline.connect-pipelined",
        _line(b"CONNECT app.test:443 HTTP/1.1", b"Host: app.test:443") + SMUGGLED,
        "reject",
        "bytes after a refused CONNECT must not be forwarded as a request",
        statuses=_METHOD,
    ),
)

# --- Host (RFC 9112 §3.2, RFC 9110 §7.2) -----------------------------------------------------

HOST_VECTORS: tuple[Vector, ...] = (
    Vector("host.missing", msg(GET), "reject", "HTTP/1.1 without Host: 400 (§3.2)"),
    Vector(
        "host.duplicate-same",
        msg(GET, HOST, HOST),
        "reject",
        "more than one Host field line: 400 (§3.2), even with equal values",
    ),
    Vector(
        "host.duplicate-different",
        msg(GET, HOST, b"Host: other.test"),
        "reject",
        "two different Hosts: routing and instance could disagree (§3.2)",
    ),
    Vector(
        "host.duplicate-other-first",
        msg(GET, b"Host: other.test", HOST),
        "reject",
        "same, other order",
    ),
    Vector(
        "host.empty-then-valid",
        msg(GET, b"Host:", HOST),
        "reject",
        "an empty Host line and a real one (§3.2)",
    ),
    Vector(
        "host.list",
        msg(GET, b"Host: app.test, other.test"),
        "reject",
        "Host is a single value; a list is invalid (§3.2)",
    ),
    Vector("host.space-inside", msg(GET, b"Host: app test"), "reject", "SP in uri-host"),
    Vector("host.userinfo", msg(GET, b"Host: user@app.test"), "reject", "`@` not in reg-name"),
    Vector("host.path", msg(GET, b"Host: app.test/x"), "reject", "`/` not in reg-name"),
    Vector("host.bad-port", msg(GET, b"Host: app.test:abc"), "reject", "port = *DIGIT"),
    Vector("host.two-ports", msg(GET, b"Host: app.test:80:80"), "reject", "two ports"),
    Vector("host.ctl", msg(GET, b"Host: app.test\x01"), "reject", "control char in Host"),
    Vector(
        "host.space-before-colon",
        msg(GET, b"Host : app.test"),
        "reject",
        "whitespace before colon: 400 (§5.1); dropping the line leaves no Host",
    ),
    Vector(
        "host.leading-space-first-line",
        msg(GET, b" Host: app.test"),
        "reject",
        "whitespace-preceded first field line: reject, or ignore it and then Host is missing "
        "(§2.2, §3.2)",
    ),
    Vector(
        "host.http10-duplicate",
        msg(b"GET /framing HTTP/1.0", HOST, b"Host: other.test"),
        "reject",
        "more than one Host in any version: 400 (§3.2)",
    ),
    Vector(
        "host.nul",
        msg(GET, b"Host: app.test\x00"),
        "normalize",
        "NUL: reject or replace by SP (RFC 9110 §5.5); never forward it",
        body=b"",
    ),
    Vector(
        "host.uppercase",
        msg(GET, b"Host: APP.TEST"),
        "normalize",
        "host names are case-insensitive (RFC 9110 §4.2.3): same route",
        body=b"",
    ),
    Vector(
        "host.obs-fold",
        msg(GET, b"Host:\r\n app.test"),
        "normalize",
        "obs-fold: reject, or unfold to `app.test` (§5.2)",
        body=b"",
    ),
)

# --- field-line syntax (RFC 9112 §5, RFC 9110 §5.5) ------------------------------------------

FIELD: tuple[Vector, ...] = (
    Vector("field.space-in-name", msg(GET, HOST, b"X Foo: bar"), "reject", "SP in field-name"),
    Vector("field.empty-name", msg(GET, HOST, b": bar"), "reject", "empty field-name"),
    Vector("field.no-colon", msg(GET, HOST, b"XFoo"), "reject", "field line without colon"),
    Vector("field.paren-name", msg(GET, HOST, b"X(Foo): bar"), "reject", "`(` is no tchar"),
    Vector("field.at-name", msg(GET, HOST, b"X@Foo: bar"), "reject", "`@` is no tchar"),
    Vector(
        "field.non-ascii-name",
        msg(GET, HOST, "X-Fé: bar".encode()),
        "reject",
        "UTF-8 in field-name",
    ),
    Vector("field.del-name", msg(GET, HOST, b"X\x7fFoo: bar"), "reject", "DEL in field-name"),
    Vector("field.nul-name", msg(GET, HOST, b"X\x00Foo: bar"), "reject", "NUL in field-name"),
    Vector(
        "field.cr-name",
        msg(GET, HOST, b"X\rFoo: bar"),
        "reject",
        "bare CR in field-name (§2.2: invalid or SP, either is no token)",
    ),
    Vector(
        "field.space-before-colon",
        msg(GET, HOST, b"X-Foo : bar"),
        "reject",
        "whitespace between field name and colon: 400 (§5.1), for any field",
    ),
    Vector(
        "field.nul-value",
        msg(GET, HOST, b"X-Foo: a\x00b"),
        "normalize",
        "NUL in a value: reject or replace by SP (RFC 9110 §5.5)",
        body=b"",
    ),
    Vector(
        "field.ctl-value",
        msg(GET, HOST, b"X-Foo: a\x01b"),
        "normalize",
        "other CTLs are invalid, MAY be kept in safe contexts (RFC 9110 §5.5)",
        body=b"",
    ),
    Vector(
        "field.obs-text-value",
        msg(GET, HOST, b"X-Foo: caf\xe9"),
        "normalize",
        "obs-text is allowed in field-vchar (RFC 9110 §5.5)",
        body=b"",
    ),
    Vector(
        "field.obs-fold",
        msg(GET, HOST, b"X-Foo: a\r\n b"),
        "normalize",
        "obs-fold: reject with 400 or replace by SP before forwarding (§5.2)",
        body=b"",
    ),
    Vector(
        "field.obs-fold-tab",
        msg(GET, HOST, b"X-Foo: a\r\n\tb"),
        "normalize",
        "obs-fold with HTAB (§5.2)",
        body=b"",
    ),
    Vector(
        "field.leading-space-first-line",
        msg(GET, b" X-Foo: a", HOST),
        "normalize",
        "whitespace-preceded line after the start-line: reject or ignore it (§2.2)",
        body=b"",
    ),
)

# --- Expect (RFC 9110 §10.1.1) ---------------------------------------------------------------

EXPECT: tuple[Vector, ...] = (
    Vector(
        "expect.100-cl",
        msg(POST, HOST, b"Expect: 100-continue", b"Content-Length: 5", body=HELLO),
        "pass",
        "body sent without waiting for 100 (allowed); at most a 100 before the final answer",
        body=HELLO,
    ),
    Vector(
        "expect.100-chunked",
        msg(POST, HOST, b"Expect: 100-continue", b"Transfer-Encoding: chunked", body=HELLO_CHUNKED),
        "pass",
        "100-continue with a chunked body",
        body=HELLO,
    ),
    Vector(
        "expect.100-no-body",
        msg(GET, HOST, b"Expect: 100-continue"),
        "pass",
        "100-continue on a request with no content",
        body=b"",
    ),
    Vector(
        "expect.100-case",
        msg(POST, HOST, b"Expect: 100-Continue", b"Content-Length: 5", body=HELLO),
        "normalize",
        "the expectation is case-insensitive (RFC 9110 §10.1.1)",
        body=HELLO,
        statuses=_EXPECTATION,
    ),
    Vector(
        "expect.unknown",
        msg(POST, HOST, b"Expect: foo", b"Content-Length: 5", body=HELLO),
        "normalize",
        "unknown expectation: MAY answer 417 (RFC 9110 §10.1.1); the body is still framed by CL",
        body=HELLO,
        statuses=_EXPECTATION,
    ),
    Vector(
        "expect.list",
        msg(POST, HOST, b"Expect: 100-continue, foo", b"Content-Length: 5", body=HELLO),
        "normalize",
        "a list with an unknown member (RFC 9110 §10.1.1)",
        body=HELLO,
        statuses=_EXPECTATION,
    ),
    Vector(
        "expect.duplicate",
        msg(
            POST,
            HOST,
            b"Expect: 100-continue",
            b"Expect: 100-continue",
            b"Content-Length: 5",
            body=HELLO,
        ),
        "normalize",
        "two Expect lines",
        body=HELLO,
        statuses=_EXPECTATION,
    ),
    Vector(
        "expect.http10",
        msg(
            b"POST /framing HTTP/1.0",
            HOST,
            b"Expect: 100-continue",
            b"Content-Length: 5",
            body=HELLO,
        ),
        "normalize",
        "100-continue in HTTP/1.0 MUST be ignored (RFC 9110 §10.1.1)",
        body=HELLO,
    ),
    Vector(
        "expect.bad-cl",
        msg(POST, HOST, b"Expect: 100-continue", b"Content-Length: +5", body=HELLO),
        "reject",
        "invalid CL beats the expectation: 400, never a 100 (§6.3 rule 5)",
    ),
)

# --- pipelined smuggling payloads -------------------------------------------------------------

SMUGGLE: tuple[Vector, ...] = (
    Vector(
        "smuggle.request-in-cl-body",
        post_cl(b"%d" % len(SMUGGLED), SMUGGLED),
        "pass",
        "a request inside a CL body is data",
        body=SMUGGLED,
    ),
    Vector(
        "smuggle.request-in-chunked-body",
        post_chunked(chunked(SMUGGLED)),
        "pass",
        "a request inside a chunked body is data",
        body=SMUGGLED,
    ),
    Vector(
        "smuggle.get-cl-request-body",
        msg(GET, HOST, cl(SMUGGLED), body=SMUGGLED),
        "normalize",
        "0.CL: a GET whose CL body is a request; a gateway ignoring CL on GET forwards it",
        body=SMUGGLED,
    ),
    Vector(
        "smuggle.no-framing-then-garbage",
        msg(POST, HOST) + b"hello\r\n\r\n",
        "normalize",
        "a request without CL or TE has no body (§6.3 rule 7): `hello` is the next request "
        "line and is invalid",
        body=b"",
    ),
    Vector(
        "smuggle.post-then-request",
        post_cl(b"5") + SECOND,
        "pass",
        "CL body then a pipelined request",
        body=HELLO,
        forwarded=2,
    ),
    Vector(
        "smuggle.chunked-get-then-request",
        msg(GET, HOST, b"Transfer-Encoding: chunked", body=b"0\r\n\r\n") + SECOND,
        "normalize",
        "an empty chunked body on GET, then a pipelined request",
        body=b"",
        forwarded=2,
    ),
    Vector(
        "smuggle.valid-then-clte",
        msg(GET, HOST)
        + te_cl(b"Transfer-Encoding: chunked", 5 + len(SMUGGLED), b"0\r\n\r\n" + SMUGGLED),
        "normalize",
        "a clean request, then CL.TE: the second is framed by TE and the connection closed",
        body=b"",
        forwarded=2,
        close=True,
    ),
    Vector(
        "smuggle.valid-then-bad-cl",
        msg(GET, HOST) + post_cl(b"5, 6"),
        "reject",
        "a clean request, then an invalid CL: one forward, then 400 and close",
        forwarded=1,
    ),
    Vector(
        "smuggle.h2c-upgrade",
        msg(
            GET,
            HOST,
            b"Upgrade: h2c",
            b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
            b"Connection: Upgrade, HTTP2-Settings",
        )
        + SECOND,
        "normalize",
        "h2c upgrade the instance refuses (200, not 101): HTTP/1.1 parsing must continue",
        body=b"",
        forwarded=2,
    ),
    Vector(
        "smuggle.websocket-upgrade",
        msg(
            GET,
            HOST,
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            b"Sec-WebSocket-Version: 13",
        )
        + SECOND,
        "normalize",
        "websocket upgrade the instance refuses (200, not 101): no tunnel may open",
        body=b"",
        forwarded=2,
    ),
)

# --- hop-by-hop tricks (RFC 9110 §7.6.1) ------------------------------------------------------

HOP: tuple[Vector, ...] = (
    Vector(
        "hop.connection-content-length",
        post_cl(b"5", HELLO, b"Connection: Content-Length"),
        "normalize",
        "CL listed in Connection: stripping it must not unframe the body (re-frame instead)",
        body=HELLO,
    ),
    Vector(
        "hop.connection-transfer-encoding",
        post_chunked(HELLO_CHUNKED, b"Connection: Transfer-Encoding"),
        "normalize",
        "TE listed in Connection: the chunked body must still be framed",
        body=HELLO,
    ),
    Vector(
        "hop.connection-te-with-cl",
        te_cl(b"Transfer-Encoding: chunked", 4).replace(
            HOST, HOST + b"\r\nConnection: Transfer-Encoding"
        ),
        "normalize",
        "TE listed in Connection next to CL: framing is decided before stripping (§6.3 rule 3)",
        body=HELLO,
        close=True,
    ),
    Vector(
        "hop.connection-cl-with-te",
        te_cl(b"Transfer-Encoding: chunked", 4).replace(
            HOST, HOST + b"\r\nConnection: Content-Length"
        ),
        "normalize",
        "CL listed in Connection next to TE",
        body=HELLO,
        close=True,
    ),
    Vector(
        "hop.connection-host",
        msg(GET, HOST, b"Connection: Host"),
        "normalize",
        "Host listed in Connection: the forwarded request still needs exactly one Host",
        body=b"",
    ),
    Vector(
        "hop.connection-close-cl",
        post_cl(b"5", HELLO, b"Connection: close, Content-Length"),
        "normalize",
        "close plus CL in Connection",
        body=HELLO,
    ),
    Vector(
        "hop.connection-keepalive-te-pipelined",
        post_chunked(HELLO_CHUNKED, b"Connection: keep-alive, Transfer-Encoding") + SECOND,
        "normalize",
        "TE in Connection on a keep-alive pipeline: the second request stays a request",
        body=HELLO,
        forwarded=2,
    ),
    Vector(
        "hop.keep-alive",
        msg(GET, HOST, b"Connection: keep-alive", b"Keep-Alive: timeout=5"),
        "pass",
        "Keep-Alive is hop-by-hop",
        body=b"",
    ),
    Vector(
        "hop.te-trailers",
        msg(GET, HOST, b"TE: trailers", b"Connection: TE"),
        "pass",
        "TE: trailers is valid and hop-by-hop",
        body=b"",
    ),
    Vector(
        "hop.upgrade-without-connection",
        msg(GET, HOST, b"Upgrade: websocket"),
        "normalize",
        "Upgrade not listed in Connection is no upgrade request (RFC 9110 §7.8)",
        body=b"",
    ),
)

# --- size limits (the gateway's: request-line 8 KiB, head 64 KiB, 100 fields) -----------------

LIMITS: tuple[Vector, ...] = (
    Vector(
        "limits.request-line-9k",
        _line(b"GET /framing/" + b"a" * 9 * 1024 + b" HTTP/1.1"),
        "reject",
        "request-line over 8 KiB: 414 or 400 (§3)",
    ),
    Vector(
        "limits.request-line-70k",
        _line(b"GET /framing/" + b"a" * 70 * 1024 + b" HTTP/1.1"),
        "reject",
        "request-line of 70 KiB",
    ),
    Vector(
        "limits.one-header-70k",
        msg(GET, HOST, b"X-Big: " + b"v" * 70 * 1024),
        "reject",
        "one 70 KiB field: head over 64 KiB, 431 or 400",
    ),
    Vector(
        "limits.header-section-70k",
        msg(GET, HOST, *(b"X-H-%02d: " % i + b"v" * 1000 for i in range(70))),
        "reject",
        "70 fields of 1 KB: head over 64 KiB",
    ),
    Vector(
        "limits.long-name-70k",
        msg(GET, HOST, b"X-" + b"n" * 70 * 1024 + b": v"),
        "reject",
        "a 70 KiB field name",
    ),
    Vector(
        "limits.fields-101",
        msg(GET, HOST, *(b"X-H-%d: v" % i for i in range(100))),
        "reject",
        "101 field lines: over 100, 431",
    ),
    Vector(
        "limits.fields-500",
        msg(GET, HOST, *(b"X-H-%d: v" % i for i in range(499))),
        "reject",
        "500 field lines",
    ),
)

VECTORS: tuple[Vector, ...] = (
    CONTROL
    + CLTE
    + TECL
    + TE_OBFS
    + CONTENT_LENGTH
    + CHUNK
    + EOL
    + REQLINE
    + HOST_VECTORS
    + FIELD
    + EXPECT
    + SMUGGLE
    + HOP
    + LIMITS
)
