"""PATCH on instances (ukc-api.md §3.4): set replaces (no value clears), add merges into lists
and maps, del removes members. Pure; values arrive as decoded JSON and are checked here."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from . import names
from .errors import Invalid
from .instance import (
    Autokill,
    Instance,
    InstanceConfig,
    ScaleToZero,
    check_args,
    check_autokill,
    check_env,
    check_memory,
    check_scale_to_zero,
    check_vcpus,
)
from .refs import Ref

#: Properties that describe the instance rather than its runs: they apply at once.
META_PROPS = ("tags", "delete_lock", "autokill", "scale_to_zero")


@dataclass(frozen=True)
class InstancePatch:
    ref: Ref
    prop: str
    op: str
    value: Any = None
    id: str | None = None


def _strings(field: str, value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in items):
        raise Invalid(field, "must be a string or a list of strings")
    return list(items)


def _int(field: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(field, "must be a whole number")
    return value


def _env_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise Invalid("value", "env takes an object of strings")
    return check_env("value", value)


def apply_config_patch(config: InstanceConfig, prop: str, op: str, value: Any) -> InstanceConfig:
    if prop == "env":
        if op == "del":
            gone = set(_strings("value", value)) if value is not None else set()
            return replace(config, env={k: v for k, v in config.env.items() if k not in gone})
        new = {} if value is None else _env_map(value)
        return replace(config, env={**config.env, **new} if op == "add" else new)
    if prop == "args":
        if op == "del":
            gone = set(_strings("value", value)) if value is not None else set()
            return replace(config, args=tuple(a for a in config.args if a not in gone))
        args = () if value is None else check_args("value", _strings("value", value))
        return replace(config, args=config.args + args if op == "add" else args)
    if op != "set":
        raise Invalid("op", f"{prop} takes only 'set'")
    if prop == "memory_mb":
        return replace(
            config, memory_mb=check_memory(128 if value is None else _int("value", value))
        )
    if prop == "vcpus":
        return replace(config, vcpus=check_vcpus(1 if value is None else _int("value", value)))
    if prop == "hostname":
        if value is not None and not isinstance(value, str):
            raise Invalid("value", "hostname takes a string")
        return replace(config, hostname="" if value is None else names.check_name("value", value))
    raise Invalid("prop", f"'{prop}' cannot be changed")


def apply_meta_patch(
    instance: Instance, prop: str, op: str, value: Any, has_group: bool
) -> Instance:
    if prop == "tags":
        given = [] if value is None else _strings("value", value)
        if op == "del":
            return replace(instance, tags=tuple(t for t in instance.tags if t not in given))
        tags = list(instance.tags) + given if op == "add" else given
        return replace(instance, tags=tuple(dict.fromkeys(tags)))
    if op != "set":
        raise Invalid("op", f"{prop} takes only 'set'")
    if prop == "delete_lock":
        if value is not None and not isinstance(value, bool):
            raise Invalid("value", "delete_lock takes true or false")
        return replace(instance, delete_lock=bool(value))
    if prop == "autokill":
        doc = {} if value is None else value
        if not isinstance(doc, dict):
            raise Invalid("value", "autokill takes {time_ms, num_requests}")
        autokill = Autokill(
            time_ms=_int("value.time_ms", doc.get("time_ms", 0)),
            num_requests=_int("value.num_requests", doc.get("num_requests", 0)),
        )
        return _with_config(instance, autokill=check_autokill(autokill))
    if prop == "scale_to_zero":
        doc = {} if value is None else value
        if not isinstance(doc, dict):
            raise Invalid("value", "scale_to_zero takes {policy, cooldown_time_ms, stateful}")
        current = instance.config.scale_to_zero
        stz = check_scale_to_zero(
            ScaleToZero(
                policy=str(doc.get("policy", current.policy)),
                cooldown_time_ms=_int(
                    "value.cooldown_time_ms", doc.get("cooldown_time_ms", current.cooldown_time_ms)
                ),
                stateful=bool(doc.get("stateful", current.stateful)),
                notify_time_ms=_int(
                    "value.notify_time_ms", doc.get("notify_time_ms", current.notify_time_ms)
                ),
            )
        )
        if stz.enabled and not has_group:
            raise Invalid("value", "scale to zero needs a service group to wake it")
        return _with_config(instance, scale_to_zero=stz)
    raise Invalid("prop", f"'{prop}' cannot be changed")


def _with_config(instance: Instance, **changes: Any) -> Instance:
    pending = None if instance.pending is None else replace(instance.pending, **changes)
    return replace(instance, config=replace(instance.config, **changes), pending=pending)


def pending_updates(instance: Instance) -> list[dict[str, Any]]:
    """What `updates` shows: each run property whose new value waits for the next start."""
    if instance.pending is None:
        return []
    out = []
    for prop in ("image", "args", "env", "memory_mb", "vcpus", "hostname"):
        new = getattr(instance.pending, prop)
        if new != getattr(instance.config, prop):
            value = list(new) if isinstance(new, tuple) else dict(new) if prop == "env" else new
            out.append({"prop": prop, "op": "set", "value": value, "status": "pending"})
    return out
