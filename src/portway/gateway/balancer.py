"""Which instance gets the next request or connection: seed 002 and semantics.md's limits.

Pure policy (architecture.md rule 2): the in-flight counts and the random source are passed in,
so tests hold counts where they want them and seed the randomness.

The rules, in the order `decide` applies them:
1. least in-flight among the eligible instances, ties broken uniformly at random (no
   round-robin, no power-of-two choices);
2. when even the least loaded is at or above `soft_limit` and the group has an instance asleep,
   wake one (the gateway holds the work for it);
3. otherwise the least loaded below `hard_limit` takes it (the soft limit is exceeded);
4. an instance never exceeds `hard_limit`: when all are at it, the work is refused at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from random import Random

from ..model.snapshot import Endpoint


class Verdict(Enum):
    DISPATCH = "dispatch"
    WAKE = "wake"  # every running instance is at its soft limit and one could be woken
    AT_HARD_LIMIT = "hard_limit"  # every instance is at its hard limit
    NO_INSTANCE = "no_instance"  # nothing is running (and nothing can be woken)


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    endpoint: Endpoint | None = None  # for DISPATCH; for WAKE, who would take it meanwhile


def least_loaded(
    endpoints: tuple[Endpoint, ...], inflight: dict[str, int], rng: Random
) -> tuple[Endpoint, int]:
    """The instance with the fewest in flight (uniform among ties), and that count.
    `endpoints` must not be empty. One random draw when there is a tie, none otherwise; the
    winner of a tie is the draw's pick among the tied, in `endpoints` order. No list is made:
    this runs for every request. (Concrete types, not Sequence and Mapping: the compiled build
    then indexes the tuple and reads the dict directly instead of calling their methods.)"""
    best = endpoints[0]
    low = inflight.get(best.instance, 0)
    ties = 1
    for i in range(1, len(endpoints)):
        endpoint = endpoints[i]
        count = inflight.get(endpoint.instance, 0)
        if count < low:
            low, best, ties = count, endpoint, 1
        elif count == low:
            ties += 1
    if ties == 1:
        return best, low
    pick = int(rng.random() * ties)
    for endpoint in endpoints:
        if inflight.get(endpoint.instance, 0) == low:
            if pick == 0:
                return endpoint, low
            pick -= 1
    raise AssertionError("unreachable: the tied instances were counted above")


def decide(
    endpoints: tuple[Endpoint, ...],
    inflight: dict[str, int],
    soft_limit: int,
    hard_limit: int,
    can_wake: bool,
    rng: Random,
) -> Decision:
    if not endpoints:
        return Decision(Verdict.WAKE if can_wake else Verdict.NO_INSTANCE)
    endpoint, count = least_loaded(endpoints, inflight, rng)
    if count >= soft_limit and can_wake:
        return Decision(Verdict.WAKE, endpoint if count < hard_limit else None)
    if count >= hard_limit:
        return Decision(Verdict.AT_HARD_LIMIT)
    return Decision(Verdict.DISPATCH, endpoint)
