"""Tenancy: one user can neither see nor change another's service groups, by any route.

User A (admin) creates groups; user B then aims every route and method of the served OpenAPI
document at A's uuids, names and FQDNs, in the path, the query and the JSON body. Each probe is
sent twice by B: once with A's identifiers, once with identifiers that exist nowhere (the
control). The two answers must be the same once the identifiers B sent are replaced by
placeholders (so "not yours" is indistinguishable from "not there"), B's answer must not contain
any of A's identifiers that B did not send itself, and afterwards A's groups must read back
byte-identical.

The probe table is checked against the OpenAPI document, so a new route that takes an
identifier fails this module until it has probes.
"""

from __future__ import annotations

import json
import re
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.daemon import Daemon

pytestmark = pytest.mark.e2e

TIMEOUT = httpx.Timeout(10.0)
NOBODY = object()
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# The sweep adds the methods no route declares, which a framework may still answer.
SWEEP_METHODS = (*HTTP_METHODS, "HEAD", "OPTIONS", "TRACE")
NOT_FOUND_MESSAGE = re.compile(
    r"^No service group with (uuid|name) '(<(?:uuid|UUID|name|fqdn)\d+>)'$"
)


def hexid() -> str:
    return uuidlib.uuid4().hex[:10]


# --- identifiers and requests ---------------------------------------------------------------


@dataclass(frozen=True)
class Ids:
    """The identifiers a probe aims at: A's real ones, or a control set that exists nowhere."""

    uuids: tuple[str, ...]
    names: tuple[str, ...]
    fqdns: tuple[str, ...]

    def tokens(self) -> list[tuple[str, str]]:
        """(identifier, placeholder), longest first so a name inside an FQDN is not split."""
        pairs = [(u, f"<uuid{i}>") for i, u in enumerate(self.uuids)]
        pairs += [(u.upper(), f"<UUID{i}>") for i, u in enumerate(self.uuids)]
        pairs += [(n, f"<name{i}>") for i, n in enumerate(self.names)]
        pairs += [(f, f"<fqdn{i}>") for i, f in enumerate(self.fqdns)]
        return sorted(pairs, key=lambda p: -len(p[0]))

    @staticmethod
    def control(like: Ids) -> Ids:
        return Ids(
            uuids=tuple(str(uuidlib.uuid4()) for _ in like.uuids),
            names=tuple(f"nobody-{hexid()}" for _ in like.names),
            fqdns=tuple(f"nowhere-{hexid()}.example.invalid" for _ in like.fqdns),
        )


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # starts with /v1
    params: tuple[tuple[str, str], ...] = ()
    body: Any = NOBODY

    def text(self) -> str:
        """Everything the request carries, to tell which identifiers it sent."""
        body = "" if self.body is NOBODY else json.dumps(self.body)
        return f"{self.path} {self.params} {body}"


@dataclass(frozen=True)
class Probe:
    """One request shape, aimed at A's identifiers and at the control's.

    `expect_not_found`: every item must be the not-found item (the probe only names A's groups).
    `differential`: False for a request whose answer is legitimately not the same for the
    control (a create: it makes a new group either way)."""

    method: str
    template: str  # the OpenAPI path
    label: str
    build: Callable[[Ids], Call]
    expect_not_found: bool = False
    differential: bool = True


@dataclass
class World:
    """What exists: A's groups (the secrets) and B's own group."""

    a_ids: Ids
    b_uuid: str
    b_name: str
    fresh_fqdn: str
    secrets: list[str] = field(default_factory=list)


# --- the probe table ------------------------------------------------------------------------

PATH_ONE = "/v1/services/{uuid}"
BULK = "/v1/services"


def _triples(ids: Ids, fresh_fqdn: str) -> list[dict[str, Any]]:
    """Every property and op PATCH knows, with values aimed at A where a value can name A."""
    return [
        {"prop": "soft_limit", "op": "set", "value": 3},
        {"prop": "hard_limit", "op": "set", "value": 1},
        {"prop": "soft_limit", "op": "set"},
        {"prop": "hard_limit", "op": "set", "value": 65535, "id": "client-id-1"},
        {"prop": "services", "op": "set", "value": [{"port": 8443, "handlers": ["tls"]}]},
        {"prop": "services", "op": "add", "value": [{"port": 9443, "handlers": ["tls"]}]},
        {"prop": "services", "op": "del", "value": [{"port": 443}]},
        {"prop": "services", "op": "set"},
        {"prop": "domains", "op": "set", "value": [{"name": f"{fresh_fqdn}."}]},
        {"prop": "domains", "op": "add", "value": [{"name": f"{fresh_fqdn}."}]},
        {"prop": "domains", "op": "del", "value": [{"name": f"{ids.fqdns[0]}."}]},
        {"prop": "domains", "op": "del", "value": [ids.fqdns[1]]},
        {"prop": "autokill", "op": "set", "value": {"time_ms": 1000}},
        {"prop": "autokill", "op": "del"},
    ]


def _refs(ids: Ids) -> list[tuple[str, dict[str, str]]]:
    refs = [(f"uuid{i}", {"uuid": u}) for i, u in enumerate(ids.uuids)]
    refs += [(f"UUID{i}", {"uuid": u.upper()}) for i, u in enumerate(ids.uuids)]
    refs += [(f"name{i}", {"name": n}) for i, n in enumerate(ids.names)]
    return refs


def probes(world: World, paths: list[str]) -> list[Probe]:
    """Every request B makes, grouped by the OpenAPI operation it exercises; `paths` are the
    documented paths, swept with every method."""
    a = world.a_ids
    out: list[Probe] = []
    n_uuids, n_names = len(a.uuids), len(a.names)

    def add(
        method: str,
        template: str,
        label: str,
        build: Callable[[Ids], Call],
        not_found: bool = False,
        differential: bool = True,
    ) -> None:
        out.append(Probe(method, template, label, build, not_found, differential))

    def triples(ids: Ids) -> list[dict[str, Any]]:
        return _triples(ids, world.fresh_fqdn)

    def all_refs(method: str) -> Callable[[Ids], Call]:
        return lambda ids: Call(
            method,
            BULK,
            tuple(("uuid", u) for u in ids.uuids) + tuple(("name", n) for n in ids.names),
            body=[{"uuid": u} for u in ids.uuids] + [{"name": n} for n in ids.names],
        )

    def by_uuid(i: int) -> None:
        def u(ids: Ids) -> str:
            return ids.uuids[i]

        def path(ids: Ids) -> str:
            return f"{BULK}/{u(ids)}"

        # GET /v1/services: query, body, as a cursor, mixed with B's own, in the wrong filter.
        add("GET", BULK, f"query uuid{i}", lambda ids: Call("GET", BULK, (("uuid", u(ids)),)), True)
        add(
            "GET",
            BULK,
            f"query UUID{i}",
            lambda ids: Call("GET", BULK, (("uuid", u(ids).upper()),)),
            True,
        )
        add(
            "GET",
            BULK,
            f"query uuid{i} details=false",
            lambda ids: Call("GET", BULK, (("uuid", u(ids)), ("details", "false"))),
            True,
        )
        add(
            "GET",
            BULK,
            f"body uuid{i}",
            lambda ids: Call("GET", BULK, body=[{"uuid": u(ids)}]),
            True,
        )
        add(
            "GET",
            BULK,
            f"body object uuid{i}",
            lambda ids: Call("GET", BULK, body={"uuid": u(ids)}),
            True,
        )
        for extra in ((), (("order", "desc"),), (("count", "1"),), (("count", "100"),)):
            cursor_at(i, extra)
        add(
            "GET",
            BULK,
            f"uuid{i} mixed with B's own",
            lambda ids: Call("GET", BULK, (("uuid", world.b_uuid), ("uuid", u(ids)))),
        )
        add(
            "GET",
            BULK,
            f"name{i % n_names} sent as a uuid filter",
            lambda ids: Call("GET", BULK, (("uuid", ids.names[i % n_names]),)),
        )
        # /v1/services/{uuid}: GET, DELETE, and PATCH with every triple.
        add("GET", PATH_ONE, f"path uuid{i}", lambda ids: Call("GET", path(ids)), True)
        add(
            "GET",
            PATH_ONE,
            f"path UUID{i}",
            lambda ids: Call("GET", f"{BULK}/{u(ids).upper()}"),
            True,
        )
        add(
            "GET",
            PATH_ONE,
            f"path uuid{i} details=false",
            lambda ids: Call("GET", path(ids), (("details", "false"),)),
            True,
        )
        add("DELETE", PATH_ONE, f"path uuid{i}", lambda ids: Call("DELETE", path(ids)), True)
        add(
            "DELETE",
            PATH_ONE,
            f"path UUID{i}",
            lambda ids: Call("DELETE", f"{BULK}/{u(ids).upper()}"),
            True,
        )
        for t in range(len(triples(a))):
            patch_path(i, t)

    def cursor_at(i: int, extra: tuple[tuple[str, str], ...]) -> None:
        add(
            "GET",
            BULK,
            f"cursor from=uuid{i} {extra}",
            lambda ids: Call("GET", BULK, (("from", ids.uuids[i]), *extra)),
        )

    def patch_path(i: int, t: int) -> None:
        add(
            "PATCH",
            PATH_ONE,
            f"path uuid{i} triple {t}",
            lambda ids: Call("PATCH", f"{BULK}/{ids.uuids[i]}", body=triples(ids)[t]),
            True,
        )

    def by_name(i: int) -> None:
        def n(ids: Ids) -> str:
            return ids.names[i]

        add("GET", BULK, f"query name{i}", lambda ids: Call("GET", BULK, (("name", n(ids)),)), True)
        add(
            "GET",
            BULK,
            f"body name{i}",
            lambda ids: Call("GET", BULK, body=[{"name": n(ids)}]),
            True,
        )
        add(
            "GET",
            BULK,
            f"name{i} mixed with B's own",
            lambda ids: Call("GET", BULK, (("name", n(ids)), ("name", world.b_name))),
        )
        # A name where the path wants a uuid.
        add("GET", PATH_ONE, f"path name{i}", lambda ids: Call("GET", f"{BULK}/{n(ids)}"))
        add(
            "PATCH",
            PATH_ONE,
            f"path name{i}",
            lambda ids: Call(
                "PATCH", f"{BULK}/{n(ids)}", body={"prop": "soft_limit", "op": "set", "value": 2}
            ),
        )
        # POST /v1/services: B may take A's name (names are per user), never A's group.
        add(
            "POST",
            BULK,
            f"create with name{i}",
            lambda ids: Call(
                "POST",
                BULK,
                body={
                    "name": n(ids),
                    "services": [{"port": 443, "destination_port": 8080}],
                },
            ),
            differential=False,
        )

    def by_fqdn(i: int) -> None:
        add(
            "GET",
            BULK,
            f"fqdn{i} as a name",
            lambda ids: Call("GET", BULK, (("name", ids.fqdns[i]),)),
            True,
        )

    def by_ref(r: int, label: str, key: str) -> None:
        """PATCH and DELETE /v1/services naming one of A's groups by uuid, UUID or name."""

        def ref(ids: Ids) -> dict[str, str]:
            return _refs(ids)[r][1]

        for t in range(len(triples(a))):
            patch_bulk(r, label, t)
        add(
            "PATCH",
            BULK,
            f"{label} every triple in one request",
            lambda ids: Call("PATCH", BULK, body=[{**ref(ids), **t} for t in triples(ids)]),
            True,
        )
        add(
            "DELETE", BULK, f"body {label}", lambda ids: Call("DELETE", BULK, body=[ref(ids)]), True
        )
        add(
            "DELETE",
            BULK,
            f"query {label}",
            lambda ids: Call("DELETE", BULK, ((key, ref(ids)[key]),)),
            True,
        )

    def patch_bulk(r: int, label: str, t: int) -> None:
        add(
            "PATCH",
            BULK,
            f"{label} triple {t}",
            lambda ids: Call("PATCH", BULK, body=[{**_refs(ids)[r][1], **triples(ids)[t]}]),
            True,
        )

    def sweep(template: str, method: str, i: int) -> None:
        """Every method on every documented path (declared or not), A's identifiers everywhere
        a request can carry one: path parameters, query and body."""
        add(
            method,
            "*",
            f"sweep {method} {template} uuid{i}",
            lambda ids: Call(
                method,
                re.sub(r"\{[^}]+\}", ids.uuids[i], template),
                (("uuid", ids.uuids[i]), ("name", ids.names[i % n_names])),
                body=[{"uuid": ids.uuids[i]}, {"name": ids.names[i % n_names]}],
            ),
        )

    def listing(params: tuple[tuple[str, str], ...]) -> None:
        add("GET", BULK, f"list {params}", lambda ids: Call("GET", BULK, params))

    for i in range(n_uuids):
        by_uuid(i)
    for i in range(n_names):
        by_name(i)
    for i in range(len(a.fqdns)):
        by_fqdn(i)
    for r, (label, ref) in enumerate(_refs(a)):
        by_ref(r, label, next(iter(ref)))
    add("GET", BULK, "all of A's at once, query and body", all_refs("GET"), True)
    add("DELETE", BULK, "all of A's at once, query and body", all_refs("DELETE"), True)
    add(
        "PATCH",
        BULK,
        "B's own group beside A's, one request",
        lambda ids: Call(
            "PATCH",
            BULK,
            body=[
                {"uuid": world.b_uuid, "prop": "soft_limit", "op": "set", "value": 1},
                {"uuid": ids.uuids[0], "prop": "soft_limit", "op": "set", "value": 2},
                {"name": ids.names[0], "prop": "hard_limit", "op": "set", "value": 5},
            ],
        ),
    )
    add(
        "PATCH",
        BULK,
        "B's own group: del A's domain",
        lambda ids: Call(
            "PATCH",
            BULK,
            body=[
                {"uuid": world.b_uuid, "prop": "domains", "op": "del", "value": [ids.fqdns[0]]},
            ],
        ),
    )
    # Routes without identifiers: the list must show B's own group only.
    for params in ((), (("count", "1"),), (("order", "desc"),), (("details", "false"),)):
        listing(params)
    add("GET", "/v1/services/list", "legacy list", lambda ids: Call("GET", "/v1/services/list"))
    add("GET", "/v1/healthz", "health", lambda ids: Call("GET", "/v1/healthz"))
    for template in paths:
        for method in SWEEP_METHODS:
            for i in range(n_uuids):
                sweep(template, method, i)
    # Creates last: they make (and the runner removes) groups of B's own.
    out.sort(key=lambda p: p.method == "POST" and p.template == BULK)
    return out


# --- running probes ---------------------------------------------------------------------------


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def send(client: httpx.Client, token: str, call: Call) -> httpx.Response:
    kwargs: dict[str, Any] = {"params": list(call.params), "headers": _auth(token)}
    if call.body is not NOBODY:
        kwargs["json"] = call.body
    return client.request(call.method, call.path, **kwargs)


def normalized(response: httpx.Response, sent: list[tuple[str, str]]) -> tuple[int, Any]:
    """Status and body with the identifiers the request carried replaced by placeholders."""
    text = response.text
    for value, token in sent:
        text = text.replace(value, token)
    try:
        doc: Any = json.loads(text)
    except json.JSONDecodeError:
        return response.status_code, text
    if isinstance(doc, dict):
        doc.pop("op_time_us", None)
    return response.status_code, doc


def sent_tokens(ids: Ids, call: Call) -> list[tuple[str, str]]:
    carried = call.text().lower()
    return [(v, t) for v, t in ids.tokens() if v.lower() in carried]


def leaks(world: World, call: Call, response: httpx.Response) -> list[str]:
    """A's identifiers in B's answer that B did not send itself."""
    carried = call.text().lower()
    body = response.text.lower()
    return [s for s in world.secrets if s.lower() not in carried and s.lower() in body]


def snapshot(client: httpx.Client, token: str, a: Ids) -> dict[str, bytes]:
    """A's view of A's groups, raw bytes minus the timing field."""
    reads = {
        "list": Call("GET", BULK),
        "list desc": Call("GET", BULK, (("order", "desc"),)),
        "legacy list": Call("GET", "/v1/services/list"),
        "by uuid": Call("GET", BULK, tuple(("uuid", u) for u in a.uuids)),
        "by name": Call("GET", BULK, tuple(("name", n) for n in a.names)),
    }
    reads |= {f"path {u}": Call("GET", f"{BULK}/{u}") for u in a.uuids}
    out = {}
    for label, call in reads.items():
        r = send(client, token, call)
        assert r.status_code == 200, (label, r.text)
        out[label] = re.sub(rb',"op_time_us":\d+', b"", r.content)
    return out


def create(client: httpx.Client, token: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(BULK, json=body, headers=_auth(token))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "success", doc
    item: dict[str, Any] = doc["data"]["service_groups"][0]
    return item


def _openapi_ops(client: httpx.Client, token: str) -> dict[tuple[str, str], dict[str, Any]]:
    r = client.get("/openapi.json", headers=_auth(token))
    assert r.status_code == 200
    doc = r.json()
    ops = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            if method.upper() in HTTP_METHODS:
                ops[(method.upper(), path)] = op
    assert ops, "the OpenAPI document lists no operations"
    return ops


def takes_id(path: str, op: dict[str, Any]) -> bool:
    """An operation that can be aimed at a resource: a path parameter, a uuid/name/from
    query parameter, or a JSON body (which may name groups, or take a name)."""
    params = {(p["in"], p["name"]) for p in op.get("parameters", [])}
    return (
        "{" in path
        or bool(params & {("query", "uuid"), ("query", "name"), ("query", "from")})
        or "requestBody" in op
    )


@pytest.fixture
def world(daemon: Daemon) -> Iterator[tuple[Daemon, World, str]]:
    """A has three groups (named with a custom FQDN and a subdomain, named with a generated
    FQDN, and anonymous); B has one of its own. Yields (daemon, world, B's token)."""
    bob = daemon.add_user("bob")
    tag = hexid()
    with httpx.Client(base_url=daemon.base, timeout=TIMEOUT) as client:
        g1 = create(
            client,
            daemon.token,
            {
                "name": f"alice-web-{tag}",
                "services": [
                    {"port": 443, "destination_port": 8080},
                    {"port": 80, "destination_port": 443},
                ],
                "domains": [
                    {"name": f"alice-shop-{tag}.example.com."},
                    {"name": f"alicesub-{tag}"},
                ],
                "soft_limit": 2,
                "hard_limit": 9,
                "autokill": {"time_ms": 600_000},
            },
        )
        g2 = create(
            client,
            daemon.token,
            {
                "name": f"alice-api-{tag}",
                "services": [{"port": 8443, "handlers": ["tls"]}],
            },
        )
        g3 = create(client, daemon.token, {"services": [{"port": 443}]})
        b = create(
            client,
            bob,
            {
                "name": f"bob-own-{tag}",
                "services": [{"port": 443, "destination_port": 8080}],
            },
        )
    fqdns = [d["fqdn"] for g in (g1, g2, g3) for d in g["domains"]]
    a_ids = Ids(
        uuids=(g1["uuid"], g2["uuid"], g3["uuid"]),
        names=(g1["name"], g2["name"], g3["name"]),
        fqdns=tuple(fqdns),
    )
    w = World(
        a_ids=a_ids, b_uuid=b["uuid"], b_name=b["name"], fresh_fqdn=f"fresh-{tag}.example.org"
    )
    w.secrets = [*a_ids.uuids, *a_ids.names, *a_ids.fqdns]
    # The leak scan reads raw text: no secret may hide inside B's own identifiers.
    for s in w.secrets:
        assert s not in (w.b_uuid, w.b_name), s
    yield daemon, w, bob


def test_every_route_and_method_leaks_nothing_and_changes_nothing(
    world: tuple[Daemon, World, str],
) -> None:
    daemon, w, bob = world
    a = w.a_ids
    control = Ids.control(a)
    failures: list[str] = []
    exercised: set[tuple[str, str]] = set()
    exercised_with_a_ids: set[tuple[str, str]] = set()

    with httpx.Client(base_url=daemon.base, timeout=TIMEOUT) as client:
        ops = _openapi_ops(client, bob)
        table = probes(w, sorted({path for _, path in ops}))
        documented = {(p.method, p.template) for p in table if p.template != "*"}
        stale = documented - set(ops)
        assert not stale, f"probes for operations the document no longer has: {stale}"
        before = snapshot(client, daemon.token, a)
        b_before = send(client, bob, Call("GET", BULK, (("uuid", w.b_uuid),))).json()

        for probe in table:
            call_a, call_c = probe.build(a), probe.build(control)
            ra = send(client, bob, call_a)
            rc = send(client, bob, call_c)
            where = f"{probe.method} {probe.template} [{probe.label}]"
            op = (probe.method, probe.template)
            if probe.template == "*":
                # Record the documented operation the request hit, if any (literal paths
                # are routed before parameterized ones).
                hits = [
                    (m, path)
                    for (m, path) in ops
                    if m == call_a.method
                    and re.match("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$", call_a.path)
                ]
                hits.sort(key=lambda hit: "{" in hit[1])
                op = hits[0] if hits else op
            exercised.add(op)
            if sent_tokens(a, call_a) and probe.template != "*":
                # Only a dedicated probe counts: the sweep cannot know a new route's semantics.
                exercised_with_a_ids.add(op)

            if ra.status_code >= 500 or rc.status_code >= 500:
                failures.append(f"{where}: HTTP {ra.status_code}/{rc.status_code}: {ra.text}")
            found = leaks(w, call_a, ra)
            if found:
                failures.append(f"{where}: leaks {found}: {ra.text}")
            if ra.headers.get("content-type") != "application/json":
                failures.append(f"{where}: content-type {ra.headers.get('content-type')}")

            if probe.differential:
                na = normalized(ra, sent_tokens(a, call_a))
                nc = normalized(rc, sent_tokens(control, call_c))
                if na != nc:
                    failures.append(
                        f"{where}: differs from a missing group's answer:\n"
                        f"  A's ids: {na}\n  control: {nc}"
                    )
            else:
                # A create as B: B gets a new group of its own, never one of A's.
                doc = ra.json()
                item = doc["data"]["service_groups"][0]
                if ra.status_code != 200 or item.get("status") != "success":
                    failures.append(f"{where}: B could not create: {ra.text}")
                elif item["uuid"] in a.uuids:
                    failures.append(f"{where}: B got A's group: {ra.text}")
                for r in (ra, rc):
                    made = r.json()["data"]["service_groups"][0].get("uuid")
                    if made and made not in a.uuids:
                        send(client, bob, Call("DELETE", f"{BULK}/{made}"))

            if probe.expect_not_found:
                failures += _not_found_shape(where, ra, sent_tokens(a, call_a))

            if probe.label.startswith("list") or probe.label == "legacy list":
                listed = [g.get("uuid") for g in ra.json()["data"]["service_groups"]]
                if listed != [w.b_uuid]:
                    failures.append(f"{where}: B's list is {listed}, not just B's own group")

        after = snapshot(client, daemon.token, a)
        b_after = send(client, bob, Call("GET", BULK, (("uuid", w.b_uuid),))).json()

    assert not failures, f"{len(failures)} problem(s):\n" + "\n".join(failures[:40])
    changed = [label for label in before if before[label] != after[label]]
    assert not changed, f"A's groups changed: {changed}\n{before}\n{after}"
    b_before.pop("op_time_us")
    b_after.pop("op_time_us")
    assert b_after == b_before, "B's own group ends as it began (probes on it are idempotent)"

    # Coverage: every documented operation was exercised, and every one that can be aimed at
    # a resource was aimed at A's.
    missing = set(ops) - exercised
    assert not missing, f"operations in /openapi.json no probe exercised: {sorted(missing)}"
    undeclared = {p.template for p in table if p.template != "*"} - {path for _, path in ops}
    assert not undeclared, undeclared
    need_ids = {key for key, op in ops.items() if takes_id(key[1], op)}
    assert need_ids, "no operation in the document takes an identifier?"
    missing_ids = need_ids - exercised_with_a_ids
    assert not missing_ids, (
        f"operations that take an identifier but were never aimed at A's: {sorted(missing_ids)}"
    )
    assert len(table) > 200


def _not_found_shape(where: str, r: httpx.Response, sent: list[tuple[str, str]]) -> list[str]:
    """HTTP 200, every item `{"status":"error","error":8,"message":"No service group with
    uuid '…'"}` naming what was sent, as for a group that never existed."""
    problems = []
    status, doc = normalized(r, sent)
    if status != 200 or not isinstance(doc, dict):
        return [f"{where}: not-found must be HTTP 200 JSON, got {status}: {r.text}"]
    items = doc.get("data", {}).get("service_groups", [])
    if doc.get("status") != "error" or not items:
        problems.append(f"{where}: envelope should say error with items: {r.text}")
    for item in items:
        match = NOT_FOUND_MESSAGE.match(str(item.get("message")))
        if item.get("status") != "error" or item.get("error") != 8 or match is None:
            problems.append(f"{where}: not the not-found item: {item}")
            continue
        key, value = match.group(1), match.group(2)
        if item.get(key) != value:
            problems.append(f"{where}: item should name {key}={value}: {item}")
        extra = set(item) - {"status", "error", "message", key, "id"}
        if extra:
            problems.append(f"{where}: not-found item carries {sorted(extra)}: {item}")
    return problems


# --- per-user views and names -------------------------------------------------------------


def test_lists_are_per_user(daemon: Daemon) -> None:
    bob = daemon.add_user("bob")
    with httpx.Client(base_url=daemon.base, timeout=TIMEOUT) as client:
        mine = [
            create(client, daemon.token, {"services": [{"port": 443}]})["uuid"] for _ in range(5)
        ]
        theirs = [create(client, bob, {"services": [{"port": 443}]})["uuid"] for _ in range(3)]
        for token, expected in ((daemon.token, mine), (bob, theirs)):
            for path, params in (
                (BULK, ()),
                (BULK, (("count", "100"),)),
                ("/v1/services/list", ()),
            ):
                r = send(client, token, Call("GET", path, params))
                assert r.status_code == 200
                assert [g["uuid"] for g in r.json()["data"]["service_groups"]] == expected
            r = send(client, token, Call("GET", BULK, (("order", "desc"),)))
            assert [g["uuid"] for g in r.json()["data"]["service_groups"]] == expected[::-1]
            # Paging by the user's own cursor stays within the user's groups.
            r = send(client, token, Call("GET", BULK, (("from", expected[1]), ("count", "2"))))
            assert [g["uuid"] for g in r.json()["data"]["service_groups"]] == expected[1:3]


def test_names_are_per_user(daemon: Daemon) -> None:
    bob = daemon.add_user("bob")
    name = f"shared-{hexid()}"
    with httpx.Client(base_url=daemon.base, timeout=TIMEOUT) as client:
        alice = create(
            client, daemon.token, {"name": name, "services": [{"port": 443}], "soft_limit": 3}
        )
        bobs = create(client, bob, {"name": name, "services": [{"port": 8443}]})
        assert bobs["uuid"] != alice["uuid"] and bobs["name"] == alice["name"] == name
        assert bobs["domains"][0]["fqdn"] != alice["domains"][0]["fqdn"]

        def by_name(token: str) -> dict[str, Any]:
            r = send(client, token, Call("GET", BULK, (("name", name),)))
            [item] = r.json()["data"]["service_groups"]
            return dict(item)

        assert by_name(daemon.token)["uuid"] == alice["uuid"]
        assert by_name(bob)["uuid"] == bobs["uuid"]
        # A second one of that name, for the same user, is taken.
        r = client.post(BULK, json={"name": name, "services": [{"port": 443}]}, headers=_auth(bob))
        assert r.status_code == 200
        [item] = r.json()["data"]["service_groups"]
        assert (r.json()["status"], item["status"], item["error"]) == ("error", "error", 23)
        # PATCH and DELETE by name act on the caller's own group only.
        r = send(
            client,
            bob,
            Call(
                "PATCH", BULK, body=[{"name": name, "prop": "soft_limit", "op": "set", "value": 7}]
            ),
        )
        assert r.json()["data"]["service_groups"][0]["uuid"] == bobs["uuid"]
        assert by_name(bob)["soft_limit"] == 7 and by_name(daemon.token)["soft_limit"] == 3
        r = send(client, daemon.token, Call("DELETE", BULK, body=[{"name": name}]))
        assert r.json()["data"]["service_groups"][0]["uuid"] == alice["uuid"]
        assert by_name(bob)["uuid"] == bobs["uuid"]
        r = send(client, daemon.token, Call("GET", BULK, (("name", name),)))
        assert r.json()["data"]["service_groups"][0]["error"] == 8


def test_a_domain_held_by_one_user_cannot_be_taken_by_another(daemon: Daemon) -> None:
    bob = daemon.add_user("bob")
    tag = hexid()
    fqdn, label = f"held-{tag}.example.com", f"heldsub-{tag}"
    with httpx.Client(base_url=daemon.base, timeout=TIMEOUT) as client:
        alice = create(
            client,
            daemon.token,
            {
                "name": f"holder-{tag}",
                "services": [{"port": 443}],
                "domains": [{"name": f"{fqdn}."}, {"name": label}],
            },
        )
        alice_fqdns = [d["fqdn"] for d in alice["domains"]]
        sub_fqdn = alice_fqdns[1]
        # A group that asked for no domain holds the one generated for it, just as firmly.
        anon = create(client, daemon.token, {"services": [{"port": 443}]})
        [generated] = [d["fqdn"] for d in anon["domains"]]
        generated_label = generated.split(".", 1)[0]
        secrets = [alice["uuid"], alice["name"], anon["uuid"], anon["name"]]
        a_ids = Ids((alice["uuid"], anon["uuid"]), (alice["name"], anon["name"]), ())
        before = snapshot(client, daemon.token, a_ids)
        bobs = create(client, bob, {"name": f"taker-{tag}", "services": [{"port": 443}]})
        bob_before = send(client, bob, Call("GET", f"{BULK}/{bobs['uuid']}")).json()

        def taken(call: Call, r: httpx.Response, domain: str) -> None:
            assert r.status_code == 200, r.text
            doc = r.json()
            [item] = doc["data"]["service_groups"]
            assert (doc["status"], item["status"], item["error"]) == ("error", "error", 23), doc
            assert domain in item["message"]
            for s in secrets:
                if s not in call.text():  # an anonymous group's name is in its FQDN
                    assert s not in r.text, f"B learns {s!r} from: {r.text}"

        attempts = [
            (
                Call(
                    "POST",
                    BULK,
                    body={"services": [{"port": 443}], "domains": [{"name": f"{fqdn}."}]},
                ),
                fqdn,
            ),
            (
                Call(
                    "POST",
                    BULK,
                    body={"services": [{"port": 443}], "domains": [{"name": f"{fqdn.upper()}."}]},
                ),
                fqdn,
            ),
            (
                Call(
                    "POST",
                    BULK,
                    body={
                        "name": f"other-{tag}",
                        "services": [{"port": 443}],
                        "domains": [{"name": label}],
                    },
                ),
                sub_fqdn,
            ),
            (
                Call(
                    "POST",
                    BULK,
                    body={"services": [{"port": 443}], "domains": [{"name": generated_label}]},
                ),
                generated,
            ),
            (
                Call(
                    "POST",
                    BULK,
                    body={"services": [{"port": 443}], "domains": [{"name": f"{generated}."}]},
                ),
                generated,
            ),
        ]
        for op in ("set", "add"):
            for value, shown in (([{"name": f"{fqdn}."}], fqdn), ([{"name": label}], sub_fqdn)):
                attempts.append(
                    (
                        Call(
                            "PATCH",
                            BULK,
                            body=[
                                {"uuid": bobs["uuid"], "prop": "domains", "op": op, "value": value}
                            ],
                        ),
                        shown,
                    )
                )
                attempts.append(
                    (
                        Call(
                            "PATCH",
                            f"{BULK}/{bobs['uuid']}",
                            body={"prop": "domains", "op": op, "value": value},
                        ),
                        shown,
                    )
                )
        for call, shown in attempts:
            taken(call, send(client, bob, call), shown)

        # Nothing moved: A keeps the domains, B's group is as it was, and B made nothing.
        assert snapshot(client, daemon.token, a_ids) == before
        bob_after = send(client, bob, Call("GET", f"{BULK}/{bobs['uuid']}")).json()
        bob_before.pop("op_time_us")
        bob_after.pop("op_time_us")
        assert bob_after == bob_before
        listed = send(client, bob, Call("GET", BULK)).json()["data"]["service_groups"]
        assert [g["uuid"] for g in listed] == [bobs["uuid"]]

        # Once A lets go, B can have it.
        r = send(client, daemon.token, Call("DELETE", f"{BULK}/{alice['uuid']}"))
        assert r.json()["status"] == "success"
        r = send(
            client,
            bob,
            Call(
                "PATCH",
                BULK,
                body=[
                    {
                        "uuid": bobs["uuid"],
                        "prop": "domains",
                        "op": "set",
                        "value": [{"name": f"{fqdn}."}, {"name": label}],
                    }
                ],
            ),
        )
        assert r.json()["status"] == "success", r.text
        got = send(client, bob, Call("GET", f"{BULK}/{bobs['uuid']}")).json()
        assert [d["fqdn"] for d in got["data"]["service_groups"][0]["domains"]] == alice_fqdns
