"""Random names and the rules names must follow. Randomness is passed in, never drawn here."""

from __future__ import annotations

import random
import re

from .errors import Invalid

# Short, friendly words in the style of the platform's generated names (young-monkey-uq6dxq0u).
ADJECTIVES = (
    "young",
    "nameless",
    "wandering",
    "floral",
    "quiet",
    "bold",
    "autumn",
    "hidden",
    "bitter",
    "misty",
    "silent",
    "snowy",
    "lively",
    "proud",
    "dark",
    "icy",
    "dry",
    "aged",
    "billowing",
    "broken",
    "cold",
    "damp",
    "falling",
    "frosty",
    "green",
    "long",
    "late",
    "lingering",
    "little",
    "morning",
    "muddy",
    "old",
    "red",
    "rough",
    "still",
    "small",
    "sparkling",
    "shy",
    "holy",
    "solitary",
    "fragrant",
    "white",
    "patient",
    "twilight",
    "dawn",
    "crimson",
    "wispy",
    "weathered",
    "blue",
    "polished",
    "restless",
    "divine",
    "ancient",
    "purple",
    "lucky",
    "steep",
    "calm",
)
NOUNS = (
    "monkey",
    "fog",
    "shape",
    "sun",
    "waterfall",
    "river",
    "breeze",
    "moon",
    "rain",
    "wind",
    "sea",
    "morning",
    "snow",
    "lake",
    "sunset",
    "pine",
    "shadow",
    "leaf",
    "dawn",
    "glitter",
    "forest",
    "hill",
    "cloud",
    "meadow",
    "glade",
    "bird",
    "brook",
    "butterfly",
    "bush",
    "dew",
    "dust",
    "field",
    "fire",
    "flower",
    "firefly",
    "feather",
    "grass",
    "haze",
    "mountain",
    "night",
    "pond",
    "darkness",
    "snowflake",
    "silence",
    "sound",
    "sky",
    "surf",
    "thunder",
    "violet",
    "water",
    "wildflower",
    "wave",
    "resonance",
    "smoke",
    "star",
    "tree",
    "frog",
    "paper",
    "frost",
    "voice",
)
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"

# A name appears inside hostnames (FQDNs, <name>.internal), so it follows the DNS label rules.
NAME_MAX = 63
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_UUID_SHAPE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_WILDCARD_LABEL = "*"


def suffix(rng: random.Random, length: int = 8) -> str:
    """Random lower-case alphanumerics, as the platform appends to names (`-pc4xjplc`)."""
    return "".join(rng.choice(_ALNUM) for _ in range(length))


def random_group_name(rng: random.Random) -> str:
    """`<adjective>-<noun>-<8 alnum>`, e.g. `young-monkey-uq6dxq0u`."""
    return f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}-{suffix(rng)}"


def check_name(field: str, name: str) -> str:
    """A resource name: one DNS label of at most 63 lower-case letters, digits and dashes."""
    if not name:
        raise Invalid(field, "must not be empty")
    if len(name) > NAME_MAX:
        raise Invalid(field, f"'{name[:20]}...' is longer than {NAME_MAX} characters")
    if not _NAME.match(name):
        raise Invalid(
            field,
            f"'{name}' is not a valid name: use lower-case letters, digits and '-', "
            "starting and ending with a letter or digit",
        )
    if _UUID_SHAPE.match(name):
        # A reference that looks like a uuid is looked up as one (kraft and the SDK do so),
        # so a group with such a name could never be reached by its name.
        raise Invalid(field, f"'{name}' looks like a uuid; choose a name that does not")
    return name


def check_fqdn(field: str, fqdn: str) -> str:
    """A fully qualified domain name (without its trailing dot), lower-cased.

    A leading `*` label is allowed: the platform serves wildcard domains like `*.example.com`.
    """
    name = fqdn.lower()
    if not name or len(name) > 253:
        raise Invalid(field, f"'{fqdn}' is not a valid domain name (1 to 253 characters)")
    labels = name.split(".")
    if len(labels) < 2:
        raise Invalid(field, f"'{fqdn}' is not a fully qualified domain name")
    for index, label in enumerate(labels):
        if index == 0 and label == _WILDCARD_LABEL:
            continue
        if len(label) > 63 or not _LABEL.match(label):
            raise Invalid(field, f"'{fqdn}' is not a valid domain name (label '{label}')")
    return name


def check_label(field: str, label: str) -> str:
    """One DNS label (a subdomain of the platform domain)."""
    value = label.lower()
    if not value or len(value) > 63 or not _LABEL.match(value):
        raise Invalid(
            field,
            f"'{label}' is not a valid subdomain: use letters, digits and '-' (at most 63), "
            "or end the name with '.' to give a full domain name",
        )
    return value
