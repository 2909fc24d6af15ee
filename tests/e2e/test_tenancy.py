"""Tenancy: one user can neither see nor change another's service groups, instances or images,
by any route.

User A (admin) creates groups, an image, and instances (one running, one stopped); user B then
aims every route and method of the served OpenAPI document at A's uuids, names and FQDNs, A's
instance uuids and names, and A's image names, in the path, the query and the JSON body. Each
probe is sent twice by B: once with A's identifiers, once with identifiers that exist nowhere
(the control). The two answers must be the same once the identifiers B sent are replaced by
placeholders (so "not yours" is indistinguishable from "not there"), B's answer must not contain
any of A's identifiers (nor A's addresses, env values, log output or image digest) that B did not
send itself, and afterwards A's groups, instances, logs and images must read back
byte-identical (A's running instance still running).

The probe table is checked against the OpenAPI document, so a new route that takes an
identifier fails this module until it has probes.
"""

from __future__ import annotations

import base64
import json
import random
import re
import sys
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from portway.client.tarball import pack
from tests.daemon import Daemon

pytestmark = pytest.mark.e2e

TIMEOUT = httpx.Timeout(10.0)
NOBODY = object()
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# Routes that answer something other than JSON (still checked for leaks like every other).
NON_JSON_ROUTES = {("GET", "/metrics"): "text/plain"}
# The sweep adds the methods no route declares, which a framework may still answer.
SWEEP_METHODS = (*HTTP_METHODS, "HEAD", "OPTIONS", "TRACE")
NOT_FOUND_MESSAGE = re.compile(
    r"^No service group with (uuid|name) '(<(?:uuid|UUID|name|fqdn)\d+>)'$"
)
# The not-found item of each resource, by the `data` key its answers use.
NOT_FOUND_MESSAGES = {
    "service_groups": NOT_FOUND_MESSAGE,
    "instances": re.compile(r"^No instance with (uuid|name) '(<(?:iuuid|IUUID|iname)\d+>)'$"),
    "images": re.compile(r"^No image with (name) '(<image\d+>:v1)'$"),
}
IMAGE_TAG = "v1"


def hexid() -> str:
    return uuidlib.uuid4().hex[:10]


# --- identifiers and requests ---------------------------------------------------------------


@dataclass(frozen=True)
class Ids:
    """The identifiers a probe aims at: A's real ones, or a control set that exists nowhere."""

    uuids: tuple[str, ...]
    names: tuple[str, ...]
    fqdns: tuple[str, ...]
    inst_uuids: tuple[str, ...] = ()
    inst_names: tuple[str, ...] = ()
    images: tuple[str, ...] = ()  # image names; the tag is always IMAGE_TAG

    def tokens(self) -> list[tuple[str, str]]:
        """(identifier, placeholder), longest first so a name inside an FQDN is not split."""
        pairs = [(u, f"<uuid{i}>") for i, u in enumerate(self.uuids)]
        pairs += [(u.upper(), f"<UUID{i}>") for i, u in enumerate(self.uuids)]
        pairs += [(n, f"<name{i}>") for i, n in enumerate(self.names)]
        pairs += [(f, f"<fqdn{i}>") for i, f in enumerate(self.fqdns)]
        pairs += [(u, f"<iuuid{i}>") for i, u in enumerate(self.inst_uuids)]
        pairs += [(u.upper(), f"<IUUID{i}>") for i, u in enumerate(self.inst_uuids)]
        pairs += [(n, f"<iname{i}>") for i, n in enumerate(self.inst_names)]
        pairs += [(n, f"<image{i}>") for i, n in enumerate(self.images)]
        return sorted(pairs, key=lambda p: -len(p[0]))

    @staticmethod
    def control(like: Ids) -> Ids:
        return Ids(
            uuids=tuple(str(uuidlib.uuid4()) for _ in like.uuids),
            names=tuple(f"nobody-{hexid()}" for _ in like.names),
            fqdns=tuple(f"nowhere-{hexid()}.example.invalid" for _ in like.fqdns),
            inst_uuids=tuple(str(uuidlib.uuid4()) for _ in like.inst_uuids),
            inst_names=tuple(f"nobodyvm-{hexid()}" for _ in like.inst_names),
            images=tuple(f"nobodyimg-{hexid()}" for _ in like.images),
        )


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # starts with /v1
    params: tuple[tuple[str, str], ...] = ()
    body: Any = NOBODY
    content: bytes | None = None  # a raw (non-JSON) body: an image upload

    def text(self) -> str:
        """Everything the request carries, to tell which identifiers it sent."""
        body = "" if self.body is NOBODY else json.dumps(self.body)
        return f"{self.path} {self.params} {body}"


@dataclass(frozen=True)
class Probe:
    """One request shape, aimed at A's identifiers and at the control's.

    `expect_not_found`: every item must be the not-found item (the probe only names A's
    resources).
    `differential`: False for a request whose answer is legitimately not the same for the
    control (a create: it makes a new group, instance or image of B's either way).
    `listed`: a listing, which must show exactly these of B's own (uuids; `name:tag` for
    images)."""

    method: str
    template: str  # the OpenAPI path
    label: str
    build: Callable[[Ids], Call]
    expect_not_found: bool = False
    differential: bool = True
    listed: tuple[str, ...] | None = None


@dataclass
class World:
    """What exists: A's groups, instances and image (the secrets) and B's own group, instance
    and image."""

    a_ids: Ids
    b_uuid: str
    b_name: str
    fresh_fqdn: str
    secrets: list[str] = field(default_factory=list)
    b_inst: str = ""  # B's own instance (stopped), its uuid
    b_image: str = ""  # B's own image, name:tag
    a_tag: str = ""  # a tag A's running instance carries
    a_digest: str = ""  # A's image's digest
    b_tar: bytes = b""  # what B uploads as an image


def data_key(template: str) -> str:
    """The `data` key of the answers of the operation at `template`."""
    if template.startswith("/v1/instances"):
        return "instances"
    if template.startswith("/v1/images"):
        return "images"
    return "service_groups"


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
        listed: tuple[str, ...] | None = None,
    ) -> None:
        out.append(Probe(method, template, label, build, not_found, differential, listed))

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
        add(
            "GET",
            BULK,
            f"list {params}",
            lambda ids: Call("GET", BULK, params),
            listed=(world.b_uuid,),
        )

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
    add(
        "GET",
        "/v1/services/list",
        "legacy list",
        lambda ids: Call("GET", "/v1/services/list"),
        listed=(world.b_uuid,),
    )
    add("GET", "/v1/healthz", "health", lambda ids: Call("GET", "/v1/healthz"))
    instance_probes(world, add)
    image_probes(world, add)

    def sweep_instance(template: str, method: str, i: int) -> None:
        """The sweep again on the instance paths, with A's instance uuids and names."""
        add(
            method,
            "*",
            f"sweep {method} {template} iuuid{i}",
            lambda ids: Call(
                method,
                re.sub(r"\{[^}]+\}", ids.inst_uuids[i], template),
                (("uuid", ids.inst_uuids[i]), ("name", ids.inst_names[i])),
                body=[{"uuid": ids.inst_uuids[i]}, {"name": ids.inst_names[i]}],
            ),
        )

    for template in paths:
        for method in SWEEP_METHODS:
            for i in range(n_uuids):
                sweep(template, method, i)
            if template.startswith(INST):
                for i in range(len(a.inst_uuids)):
                    sweep_instance(template, method, i)
    # Creates last: they make (and the runner removes) groups, instances and images of B's own.
    out.sort(key=lambda p: p.method == "POST" and not p.differential)
    return out


# --- probes of the instance and image routes ------------------------------------------------

INST = "/v1/instances"
INST_ONE = "/v1/instances/{uuid}"
IMAGES = "/v1/images"
AddProbe = Callable[..., None]


def _inst_triples(ids: Ids, world: World) -> list[dict[str, Any]]:
    """Every property and op PATCH on instances knows, with values aimed at A where a value can
    name A (A's image, A's tag, A's env key)."""
    return [
        {"prop": "env", "op": "set", "value": {"B": "1"}},
        {"prop": "env", "op": "add", "value": {"B": "2"}},
        {"prop": "env", "op": "del", "value": ["SECRET"]},
        {"prop": "args", "op": "set", "value": ["sleep", "5"]},
        {"prop": "args", "op": "add", "value": ["x"]},
        {"prop": "args", "op": "del", "value": ["1000"]},
        {"prop": "memory_mb", "op": "set", "value": 64},
        {"prop": "vcpus", "op": "set", "value": 2},
        {"prop": "image", "op": "set", "value": f"{ids.images[0]}:{IMAGE_TAG}"},
        {"prop": "image", "op": "set", "value": "host"},
        {"prop": "tags", "op": "set", "value": ["b"]},
        {"prop": "tags", "op": "add", "value": ["b"]},
        {"prop": "tags", "op": "del", "value": [world.a_tag]},
        {"prop": "delete_lock", "op": "set", "value": True},
        {"prop": "autokill", "op": "set", "value": {"time_ms": 1000}},
        {"prop": "hostname", "op": "set", "value": "bobs"},
        {"prop": "scale_to_zero", "op": "set", "value": {"policy": "off"}},
        {"prop": "memory_mb", "op": "set", "value": 64, "id": "client-id-1"},
    ]


def _inst_refs(ids: Ids) -> list[tuple[str, dict[str, str]]]:
    refs = [(f"iuuid{i}", {"uuid": u}) for i, u in enumerate(ids.inst_uuids)]
    refs += [(f"IUUID{i}", {"uuid": u.upper()}) for i, u in enumerate(ids.inst_uuids)]
    refs += [(f"iname{i}", {"name": n}) for i, n in enumerate(ids.inst_names)]
    return refs


# What each bulk instance operation takes beside the reference, aimed at A (all sent by B).
BULK_EXTRAS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("PUT", f"{INST}/start"): [{}, {"timeout_s": 1}],
    ("PUT", f"{INST}/stop"): [
        {},
        {"force": True},
        {"drain_timeout_ms": 1000},
        {"quick": True},
        {"ifstate": "running"},
    ],
    ("GET", f"{INST}/wait"): [{}, {"state": "stopped", "timeout_s": 1}, {"timeout_s": 0}],
    ("PUT", f"{INST}/wait"): [{"state": "running", "timeout_s": 1}],
    ("GET", f"{INST}/log"): [{}, {"offset": 0, "limit": 100}, {"offset": -10}],
    ("GET", f"{INST}/logs"): [{}, {"offset": 0}],
    ("DELETE", INST): [{}, {"timeout_s": 1}],
}
# The per-uuid forms and what their body takes.
PATH_OPS: list[tuple[str, str, Any]] = [
    ("GET", INST_ONE, NOBODY),
    ("DELETE", INST_ONE, NOBODY),
    ("DELETE", INST_ONE, {"timeout_s": 1}),
    ("PUT", f"{INST_ONE}/start", NOBODY),
    ("PUT", f"{INST_ONE}/stop", NOBODY),
    ("PUT", f"{INST_ONE}/stop", {"force": True}),
    ("PUT", f"{INST_ONE}/stop", {"drain_timeout_ms": 1000}),
    ("GET", f"{INST_ONE}/wait", NOBODY),
    ("GET", f"{INST_ONE}/wait", {"state": "stopped", "timeout_s": 1}),
    ("PUT", f"{INST_ONE}/wait", {"state": "running", "timeout_s": 1}),
    ("GET", f"{INST_ONE}/log", NOBODY),
    ("GET", f"{INST_ONE}/log", {"offset": 0, "limit": 10}),
    ("GET", f"{INST_ONE}/logs", NOBODY),
    ("GET", f"{INST_ONE}/metrics", NOBODY),
]


def instance_probes(world: World, add: AddProbe) -> None:
    """B aims every instance operation at A's instances (and at A's groups and image where an
    instance operation can name one)."""
    a = world.a_ids
    n_triples = len(_inst_triples(a, world))

    def by_ref(r: int) -> None:
        label, first = _inst_refs(a)[r]
        key = next(iter(first))

        def ref(ids: Ids) -> dict[str, str]:
            return _inst_refs(ids)[r][1]

        add(
            "GET",
            INST,
            f"query {label}",
            lambda ids: Call("GET", INST, ((key, ref(ids)[key]),)),
            True,
        )
        add("GET", INST, f"body {label}", lambda ids: Call("GET", INST, body=[ref(ids)]), True)
        add("GET", INST, f"body object {label}", lambda ids: Call("GET", INST, body=ref(ids)), True)
        add(
            "GET",
            INST,
            f"query {label} details=false",
            lambda ids: Call("GET", INST, ((key, ref(ids)[key]), ("details", "false"))),
            True,
        )
        add(
            "DELETE",
            INST,
            f"query {label}",
            lambda ids: Call("DELETE", INST, ((key, ref(ids)[key]),)),
            True,
        )
        for (method, path), extras in BULK_EXTRAS.items():
            for extra in extras:
                bulk(method, path, r, label, extra)
        for t in range(n_triples):
            patch_bulk(r, label, t)
        add(
            "PATCH",
            INST,
            f"{label} every triple in one request",
            lambda ids: Call(
                "PATCH", INST, body=[{**ref(ids), **t} for t in _inst_triples(ids, world)]
            ),
            True,
        )
        add(
            "GET",
            f"{INST}/metrics",
            f"query {label}",
            lambda ids: Call("GET", f"{INST}/metrics", ((key, ref(ids)[key]),)),
            True,
        )
        add(
            "GET",
            f"{INST}/metrics",
            f"body {label}",
            lambda ids: Call("GET", f"{INST}/metrics", body=[ref(ids)]),
            True,
        )
        for path in (f"{INST}/log", f"{INST}/logs"):
            add(
                "GET",
                path,
                f"query {label}",
                lambda ids, path=path: Call("GET", path, ((key, ref(ids)[key]), ("offset", "0"))),
                True,
            )

    def bulk(method: str, path: str, r: int, label: str, extra: dict[str, Any]) -> None:
        add(
            method,
            path,
            f"body {label} {extra}",
            lambda ids: Call(method, path, body=[{**_inst_refs(ids)[r][1], **extra}]),
            True,
        )

    def patch_bulk(r: int, label: str, t: int) -> None:
        add(
            "PATCH",
            INST,
            f"{label} triple {t}",
            lambda ids: Call(
                "PATCH", INST, body=[{**_inst_refs(ids)[r][1], **_inst_triples(ids, world)[t]}]
            ),
            True,
        )

    def by_uuid(i: int) -> None:
        for upper in (False, True):
            for method, template, body in PATH_OPS:
                path_op(i, upper, method, template, body)
            for t in range(n_triples):
                patch_path(i, upper, t)
        add(
            "GET",
            INST_ONE,
            f"path iuuid{i} details=false",
            lambda ids: Call("GET", f"{INST}/{ids.inst_uuids[i]}", (("details", "false"),)),
            True,
        )
        for extra in ((), (("order", "desc"),), (("count", "1"),), (("count", "100"),)):
            cursor_at(i, extra)
        add(
            "GET",
            INST,
            f"iuuid{i} mixed with B's own",
            lambda ids: Call("GET", INST, (("uuid", world.b_inst), ("uuid", ids.inst_uuids[i]))),
        )
        add(
            "GET",
            f"{INST}/log",
            f"iuuid{i} mixed with B's own",
            lambda ids: Call(
                "GET", f"{INST}/log", body=[{"uuid": world.b_inst}, {"uuid": ids.inst_uuids[i]}]
            ),
        )
        add(
            "PUT",
            f"{INST}/stop",
            f"iuuid{i} beside B's own (stopped already)",
            lambda ids: Call(
                "PUT", f"{INST}/stop", body=[{"uuid": world.b_inst}, {"uuid": ids.inst_uuids[i]}]
            ),
        )
        add(
            "PATCH",
            INST,
            f"iuuid{i} beside B's own",
            lambda ids: Call(
                "PATCH",
                INST,
                body=[
                    {"uuid": world.b_inst, "prop": "tags", "op": "set", "value": ["b-own"]},
                    {"uuid": ids.inst_uuids[i], "prop": "tags", "op": "set", "value": ["b"]},
                ],
            ),
        )

    def path_op(i: int, upper: bool, method: str, template: str, body: Any) -> None:
        def path(ids: Ids) -> str:
            u = ids.inst_uuids[i]
            return template.replace("{uuid}", u.upper() if upper else u)

        add(
            method,
            template,
            f"path {'IUUID' if upper else 'iuuid'}{i} {body if body is not NOBODY else ''}",
            lambda ids: Call(method, path(ids), body=body),
            True,
        )

    def patch_path(i: int, upper: bool, t: int) -> None:
        def path(ids: Ids) -> str:
            u = ids.inst_uuids[i]
            return f"{INST}/{u.upper() if upper else u}"

        add(
            "PATCH",
            INST_ONE,
            f"path {'IUUID' if upper else 'iuuid'}{i} triple {t}",
            lambda ids: Call("PATCH", path(ids), body=_inst_triples(ids, world)[t]),
            True,
        )

    def cursor_at(i: int, extra: tuple[tuple[str, str], ...]) -> None:
        add(
            "GET",
            INST,
            f"cursor from=iuuid{i} {extra}",
            lambda ids: Call("GET", INST, (("from", ids.inst_uuids[i]), *extra)),
        )

    def by_name(i: int) -> None:
        def n(ids: Ids) -> str:
            return ids.inst_names[i]

        # A name where a uuid belongs: refused the same whoever holds the name.
        add(
            "GET",
            INST,
            f"iname{i} as a uuid filter",
            lambda ids: Call("GET", INST, (("uuid", n(ids)),)),
        )
        for method, template, body in PATH_OPS[:4]:
            add(
                method,
                template,
                f"path iname{i}",
                lambda ids, method=method, template=template, body=body: Call(
                    method, template.replace("{uuid}", n(ids)), body=body
                ),
            )
        add(
            "PATCH",
            INST_ONE,
            f"path iname{i}",
            lambda ids: Call(
                "PATCH", f"{INST}/{n(ids)}", body={"prop": "tags", "op": "set", "value": ["b"]}
            ),
        )
        # POST /v1/instances: B may take A's name (names are per user), never A's instance.
        add(
            "POST",
            INST,
            f"create with iname{i}",
            lambda ids: Call(
                "POST", INST, body={"name": n(ids), "image": "host", "args": ["sleep", "1"]}
            ),
            differential=False,
        )

    # Creating an instance that names A's group or A's image: B's own namespace only, so the
    # answer is the group's or the image's not-found, exactly as for the control's.
    def create_naming(label: str, build: Callable[[Ids], dict[str, Any]]) -> None:
        add(
            "POST",
            INST,
            f"create naming {label}",
            lambda ids: Call(
                "POST", INST, body={"image": "host", "args": ["sleep", "1"], **build(ids)}
            ),
        )

    for r in range(len(_inst_refs(a))):
        by_ref(r)
    for i in range(len(a.inst_uuids)):
        by_uuid(i)
    for i in range(len(a.inst_names)):
        by_name(i)

    def group_by(key: str, i: int) -> Callable[[Ids], dict[str, Any]]:
        def build(ids: Ids) -> dict[str, Any]:
            return {"service_group": {key: (ids.uuids if key == "uuid" else ids.names)[i]}}

        return build

    for i in range(len(a.uuids)):
        create_naming(f"group uuid{i}", group_by("uuid", i))
    for i in range(len(a.names)):
        create_naming(f"group name{i}", group_by("name", i))
    create_naming("image0", lambda ids: {"image": f"{ids.images[0]}:{IMAGE_TAG}"})
    create_naming(
        "image0, autostart",
        lambda ids: {"image": f"{ids.images[0]}:{IMAGE_TAG}", "autostart": True},
    )
    add(
        "PATCH",
        INST,
        "B's own instance: set image to A's",
        lambda ids: Call(
            "PATCH",
            INST,
            body=[
                {
                    "uuid": world.b_inst,
                    "prop": "image",
                    "op": "set",
                    "value": f"{ids.images[0]}:{IMAGE_TAG}",
                }
            ],
        ),
    )
    # Lists: B's own instance only, whatever the paging; A's tag selects nothing.
    for params in ((), (("count", "1"),), (("order", "desc"),), (("details", "false"),)):
        add(
            "GET",
            INST,
            f"list instances {params}",
            lambda ids, params=params: Call("GET", INST, params),
            listed=(world.b_inst,),
        )
    add(
        "GET",
        f"{INST}/list",
        "legacy list of instances",
        lambda ids: Call("GET", f"{INST}/list"),
        listed=(world.b_inst,),
    )
    add(
        "GET",
        INST,
        "list by A's tag",
        lambda ids: Call("GET", INST, (("tags", world.a_tag),)),
        listed=(),
    )


def image_probes(world: World, add: AddProbe) -> None:
    """B aims the image routes at A's image: remove it, overwrite its name, list it."""
    a = world.a_ids
    for i in range(len(a.images)):

        def ref(ids: Ids, i: int = i) -> str:
            return f"{ids.images[i]}:{IMAGE_TAG}"

        add(
            "DELETE",
            IMAGES,
            f"name image{i}",
            lambda ids: Call("DELETE", IMAGES, body=[{"name": ref(ids)}]),
            True,
        )
        add(
            "DELETE",
            IMAGES,
            f"legacy tag image{i}",
            lambda ids: Call("DELETE", IMAGES, body=[{"tag": ref(ids)}]),
            True,
        )
        add(
            "DELETE",
            IMAGES,
            f"image{i} twice",
            lambda ids: Call("DELETE", IMAGES, body=[{"name": ref(ids)}, {"name": ref(ids)}]),
            True,
        )
        # B uploads an image of its own under A's name: B's, never a change to A's.
        add(
            "POST",
            IMAGES,
            f"upload as image{i}",
            lambda ids, i=i: Call(
                "POST",
                IMAGES,
                (("name", ids.images[i]), ("tag", IMAGE_TAG)),
                content=world.b_tar,
            ),
            differential=False,
        )
    add(
        "DELETE",
        IMAGES,
        "A's digest without a name",
        lambda ids: Call("DELETE", IMAGES, body=[{"digest": world.a_digest}]),
    )
    for path in (IMAGES, f"{IMAGES}/list"):
        add(
            "GET",
            path,
            f"list images {path}",
            lambda ids, path=path: Call("GET", path),
            listed=(world.b_image,),
        )


# --- running probes ---------------------------------------------------------------------------


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def send(client: httpx.Client, token: str, call: Call) -> httpx.Response:
    kwargs: dict[str, Any] = {"params": list(call.params), "headers": _auth(token)}
    if call.body is not NOBODY:
        kwargs["json"] = call.body
    if call.content is not None:
        kwargs["content"] = call.content
        kwargs["headers"]["Content-Type"] = "application/x-tar"
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
    """A's view of A's groups, instances (their state, config, counters and logs) and images,
    raw bytes minus the timing fields (op_time_us, and the uptime of a running instance)."""
    reads = {
        "list": Call("GET", BULK),
        "list desc": Call("GET", BULK, (("order", "desc"),)),
        "legacy list": Call("GET", "/v1/services/list"),
        "by uuid": Call("GET", BULK, tuple(("uuid", u) for u in a.uuids)),
        "by name": Call("GET", BULK, tuple(("name", n) for n in a.names)),
    }
    reads |= {f"path {u}": Call("GET", f"{BULK}/{u}") for u in a.uuids}
    if a.inst_uuids:
        reads |= {
            "instances": Call("GET", INST),
            "instances by uuid": Call("GET", INST, tuple(("uuid", u) for u in a.inst_uuids)),
            "instances by name": Call("GET", INST, tuple(("name", n) for n in a.inst_names)),
            "logs": Call("GET", f"{INST}/log", body=[{"uuid": u} for u in a.inst_uuids]),
            "images": Call("GET", IMAGES),
        }
        reads |= {f"instance {u}": Call("GET", f"{INST}/{u}") for u in a.inst_uuids}
    out = {}
    for label, call in reads.items():
        r = send(client, token, call)
        assert r.status_code == 200, (label, r.text)
        out[label] = re.sub(rb',"(op_time_us|uptime_ms)":\d+', b"", r.content)
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


# A's grouped instance: listens on its private address (readiness), prints a secret to its log.
LISTENER = (
    "import os, socket, sys, time\n"
    "print(sys.argv[1], flush=True)\n"
    "s = socket.socket()\n"
    "s.bind((os.environ['HOST'], int(os.environ['PORT'])))\n"
    "s.listen()\n"
    "time.sleep(1000)\n"
)


def upload(client: httpx.Client, token: str, name: str, tar: bytes) -> dict[str, Any]:
    r = client.post(
        IMAGES,
        params={"name": name, "tag": IMAGE_TAG},
        content=tar,
        headers={**_auth(token), "Content-Type": "application/x-tar"},
    )
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    return dict(r.json()["data"]["images"][0])


def image_tar(tmp: Path, marker: str) -> bytes:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "marker.txt").write_text(marker)
    return pack(tmp, extra_manifest={"command": ["sleep", "1000"]})


def create_instance(client: httpx.Client, token: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(INST, json=body, headers=_auth(token))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "success", doc
    return dict(doc["data"]["instances"][0])


@pytest.fixture
def world(daemon: Daemon, tmp_path: Path) -> Iterator[tuple[Daemon, World, str]]:
    """A has three groups (named with a custom FQDN and a subdomain, named with a generated
    FQDN, and anonymous), an image, and two instances: one running with an inline group, one
    stopped in A's first group, made from A's image. B has a group, an instance and an image of
    its own. Yields (daemon, world, B's token)."""
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
        a_image = upload(
            client, daemon.token, f"aliceimg-{tag}", image_tar(tmp_path / "a", f"alice {tag}")
        )
        b_tar = image_tar(tmp_path / "b", f"bob {tag}")
        b_image = upload(client, bob, f"bobimg-{tag}", b_tar)
        log_secret = f"alice-log-{tag}"
        port = random.SystemRandom().randint(12_000, 30_000)
        i0 = create_instance(
            client,
            daemon.token,
            {
                "name": f"alicevm0-{tag}",
                "image": "host",
                "args": [sys.executable, "-c", LISTENER, log_secret],
                "env": {"SECRET": f"alice-env-{tag}"},
                "tags": [f"alice-tag-{tag}"],
                "service_group": {"services": [{"port": 443, "destination_port": port}]},
                "autostart": True,
                "timeout_s": 15,
            },
        )
        assert i0["state"] == "running", i0
        i1 = create_instance(
            client,
            daemon.token,
            {
                "name": f"alicevm1-{tag}",
                "image": f"aliceimg-{tag}:{IMAGE_TAG}",
                "service_group": {"name": g1["name"]},
            },
        )
        b_inst = create_instance(
            client,
            bob,
            {"name": f"bobvm-{tag}", "image": "host", "args": ["sleep", "1"], "tags": ["b-own"]},
        )
        r = client.request(
            "GET", f"{INST}/log", json=[{"uuid": i0["uuid"]}], headers=_auth(daemon.token)
        )
        assert _b64(r.json()) == f"{log_secret}\n".encode(), r.text
    fqdns = [d["fqdn"] for g in (g1, g2, g3) for d in g["domains"]]
    a_ids = Ids(
        uuids=(g1["uuid"], g2["uuid"], g3["uuid"]),
        names=(g1["name"], g2["name"], g3["name"]),
        fqdns=tuple(fqdns),
        inst_uuids=(i0["uuid"], i1["uuid"]),
        inst_names=(i0["name"], i1["name"]),
        images=(a_image["name"],),
    )
    w = World(
        a_ids=a_ids,
        b_uuid=b["uuid"],
        b_name=b["name"],
        fresh_fqdn=f"fresh-{tag}.example.org",
        b_inst=b_inst["uuid"],
        b_image=f"{b_image['name']}:{IMAGE_TAG}",
        a_tag=f"alice-tag-{tag}",
        a_digest=a_image["digest"],
        b_tar=b_tar,
    )
    inline = i0["service_group"]
    w.secrets = [
        *a_ids.uuids,
        *a_ids.names,
        *a_ids.fqdns,
        *a_ids.inst_uuids,
        *a_ids.inst_names,
        *a_ids.images,
        inline["uuid"],
        inline["name"],
        *(d["fqdn"] for d in inline["domains"]),
        i0["private_ip"],
        i1["private_ip"],
        f"alice-env-{tag}",
        f"alice-tag-{tag}",
        a_image["digest"].split(":", 1)[-1],
        log_secret,
        # ... and the same, as a log read would carry them (base64 of the whole line).
        _b64_text(f"{log_secret}\n"),
    ]
    assert i0["private_ip"] != b_inst["private_ip"]
    # The leak scan reads raw text: no secret may hide inside B's own identifiers.
    for s in w.secrets:
        for own in (w.b_uuid, w.b_name, w.b_inst, b_inst["name"], w.b_image, b_inst["private_ip"]):
            assert s not in own, (s, own)
    yield daemon, w, bob


def _b64(doc: dict[str, Any]) -> bytes:
    return base64.b64decode(doc["data"]["instances"][0]["output"])


def _b64_text(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


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
        b_before = b_view(client, bob, w)

        for probe in table:
            call_a, call_c = probe.build(a), probe.build(control)
            where = f"{probe.method} {probe.template} [{probe.label}]"
            try:
                ra = send(client, bob, call_a)
            except httpx.HTTPError as err:
                failures.append(f"{where}: no answer with A's ids: {type(err).__name__}: {err}")
                continue
            try:
                rc = send(client, bob, call_c)
            except httpx.HTTPError as err:
                failures.append(
                    f"{where}: no answer for the control ({type(err).__name__}: {err}); "
                    f"A's ids got HTTP {ra.status_code}: {ra.text}"
                )
                continue
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
            content_type = ra.headers.get("content-type", "")
            expected = NON_JSON_ROUTES.get((call_a.method, call_a.path), "application/json")
            if not content_type.startswith(expected):
                failures.append(f"{where}: content-type {ra.headers.get('content-type')}")

            key = data_key(probe.template)
            if probe.differential:
                na = normalized(ra, sent_tokens(a, call_a))
                nc = normalized(rc, sent_tokens(control, call_c))
                if na != nc:
                    failures.append(
                        f"{where}: differs from a missing resource's answer:\n"
                        f"  A's ids: {na}\n  control: {nc}"
                    )
            else:
                failures += _created_by_b(client, bob, w, where, key, ra, rc)

            if probe.expect_not_found:
                failures += _not_found_shape(where, ra, sent_tokens(a, call_a), key)

            if probe.listed is not None:
                items = ra.json()["data"][key] if ra.status_code == 200 else None
                listed = None if items is None else [_identity(key, i) for i in items]
                if listed != list(probe.listed):
                    failures.append(
                        f"{where}: B's list is {listed}, not just B's own {list(probe.listed)}"
                    )

        after = snapshot(client, daemon.token, a)
        b_after = b_view(client, bob, w)
        a_running = send(client, daemon.token, Call("GET", INST, (("uuid", a.inst_uuids[0]),)))

    assert not failures, f"{len(failures)} problem(s):\n" + "\n".join(failures[:40])
    changed = [label for label in before if before[label] != after[label]]
    assert not changed, f"A's resources changed: {changed}\n{before}\n{after}"
    assert a_running.json()["data"]["instances"][0]["state"] == "running"
    assert b_after == b_before, (
        "B's own resources end as they began (probes on them are idempotent)"
    )

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


def _identity(key: str, item: dict[str, Any]) -> str:
    if key == "images":
        return f"{item.get('name')}:{item.get('tag')}"
    return str(item.get("uuid"))


def b_view(client: httpx.Client, bob: str, w: World) -> dict[str, Any]:
    """B's own group, instance and images as B reads them, minus the timing field."""
    out = {}
    for label, call in (
        ("group", Call("GET", BULK, (("uuid", w.b_uuid),))),
        ("instance", Call("GET", INST, (("uuid", w.b_inst),))),
        ("images", Call("GET", IMAGES)),
    ):
        doc = send(client, bob, call).json()
        doc.pop("op_time_us", None)
        out[label] = doc
    return out


def _created_by_b(
    client: httpx.Client,
    bob: str,
    w: World,
    where: str,
    key: str,
    ra: httpx.Response,
    rc: httpx.Response,
) -> list[str]:
    """A create as B (aimed at A's name, and at the control's): B gets a new resource of its
    own, never one of A's. Both are removed again at once."""
    problems = []
    item = ra.json()["data"][key][0] if ra.status_code == 200 else {}
    if ra.status_code != 200 or item.get("status") != "success":
        problems.append(f"{where}: B could not create: {ra.text}")
    elif key == "images" and item.get("digest") == w.a_digest:
        problems.append(f"{where}: B got A's image: {ra.text}")
    elif key != "images" and item.get("uuid") in (*w.a_ids.uuids, *w.a_ids.inst_uuids):
        problems.append(f"{where}: B got A's resource: {ra.text}")
    for r in (ra, rc):
        if r.status_code != 200:
            continue
        made = r.json()["data"][key][0]
        if made.get("status") != "success":
            continue
        if key == "images":
            send(
                client,
                bob,
                Call("DELETE", IMAGES, body=[{"name": f"{made['name']}:{made['tag']}"}]),
            )
        elif key == "instances":
            send(client, bob, Call("DELETE", f"{INST}/{made['uuid']}"))
        elif made.get("uuid") not in w.a_ids.uuids:
            send(client, bob, Call("DELETE", f"{BULK}/{made['uuid']}"))
    return problems


def _not_found_shape(
    where: str, r: httpx.Response, sent: list[tuple[str, str]], key: str = "service_groups"
) -> list[str]:
    """HTTP 200, every item `{"status":"error","error":8,"message":"No <noun> with uuid '…'"}`
    naming what was sent, as for a resource that never existed."""
    problems = []
    status, doc = normalized(r, sent)
    if status != 200 or not isinstance(doc, dict):
        return [f"{where}: not-found must be HTTP 200 JSON, got {status}: {r.text}"]
    items = doc.get("data", {}).get(key, [])
    if doc.get("status") != "error" or not items:
        problems.append(f"{where}: envelope should say error with items: {r.text}")
    for item in items:
        match = NOT_FOUND_MESSAGES[key].match(str(item.get("message")))
        if item.get("status") != "error" or item.get("error") != 8 or match is None:
            problems.append(f"{where}: not the not-found item: {item}")
            continue
        field_, value = match.group(1), match.group(2)
        if item.get(field_) != value:
            problems.append(f"{where}: item should name {field_}={value}: {item}")
        extra = set(item) - {"status", "error", "message", field_, "id"}
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
