"""Every Redis key the worker uses, named here and only here.

A queue `S` (``--stream``, default ``xquik:disconnect``) uses:

==================  ==============================  ========================================
on one Redis        on a Redis Cluster              what
==================  ==============================  ========================================
``S``               ``S``                           the job stream (its consumer group)
``S:results``       ``{S}:results``                 one record per job
``S:dead``          ``{S}:dead``                    the jobs that failed for good
``S:recorded``      ``{S}:recorded``                the message ids settled (at most once)
``S:enqueued``      ``{S}:enqueued``                `enqueue`'s idempotency keys
==================  ==============================  ========================================

and each API key's DELETE (or read) budget, ``P`` = ``xquik:budget:<fingerprint>:<tier>``:
``P:slots``, ``P:cooldown``, ``P:learned``, ``P:accepted`` (``{P}:slots``… on a cluster), and
its account listing shared by the runs of that key, ``xquik:listing:<fingerprint>`` (one hash:
the same name on a cluster).

A Lua script may only touch keys of one hash slot on a cluster. A key with no ``{…}`` hashes
by its whole name, so ``S`` and ``{S}:results`` share the slot of ``S``: the stream keeps its
name, and what a script touches with it is in its slot. A stream already named with a hash tag
(``jobs{eu}``) keeps its suffixes as they are (``jobs{eu}:results``): the tag is what counts.
One Redis keeps the names it always had; moving a queue from one Redis to a cluster is a new
queue (drain the old one first, or `enqueue` the file again: it adds each job once)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# --min-replicas: a write of ours, so that a WAIT on any connection covers every earlier one.
REPLICATION_MARK = "xquik:replicated"

STREAM_SUFFIXES = ("results", "dead", "recorded", "enqueued")
BUDGET_SUFFIXES = ("slots", "cooldown", "learned", "accepted")


def is_cluster(redis: Any) -> bool:
    """The client talks to a Redis Cluster (set by `worker.redis_conn.open_client`)."""
    return bool(getattr(redis, "xquik_cluster", False))


def has_tag(name: str) -> bool:
    """`name` holds a hash tag: a `{` followed later by a `}` with something between."""
    start = name.find("{")
    if start < 0:
        return False
    end = name.find("}", start + 1)
    return end > start + 1


def base(name: str, cluster: bool) -> str:
    """The part the derived keys of `name` start with: `name` itself on one Redis (or when it
    holds its own tag), `{name}` on a cluster, so that they hash to `name`'s slot."""
    return name if not cluster or has_tag(name) else "{" + name + "}"


@dataclass(frozen=True, slots=True)
class StreamKeys:
    stream: str
    results: str
    dead: str
    recorded: str
    enqueued: str

    @classmethod
    def of(cls, stream: str, *, cluster: bool = False) -> StreamKeys:
        b = base(stream, cluster)
        return cls(stream, *(f"{b}:{suffix}" for suffix in STREAM_SUFFIXES))


def stream_keys(redis: Any, stream: str) -> StreamKeys:
    """The keys of the queue `stream` in the Redis `redis` talks to."""
    return StreamKeys.of(stream, cluster=is_cluster(redis))


@dataclass(frozen=True, slots=True)
class BudgetKeys:
    prefix: str  # xquik:budget:<fingerprint>:<tier>, the same on one Redis and a cluster
    slots: str
    cooldown: str
    learned: str
    accepted: str

    @classmethod
    def of(cls, fingerprint: str, tier: str, *, cluster: bool = False) -> BudgetKeys:
        return cls.at(f"xquik:budget:{fingerprint}:{tier}", cluster=cluster)

    @classmethod
    def at(cls, prefix: str, *, cluster: bool = False) -> BudgetKeys:
        b = base(prefix, cluster)
        return cls(prefix, *(f"{b}:{suffix}" for suffix in BUDGET_SUFFIXES))


def budget_keys(redis: Any, fingerprint: str, tier: str) -> BudgetKeys:
    return BudgetKeys.of(fingerprint, tier, cluster=is_cluster(redis))


def listing_key(fingerprint: str) -> str:
    """The hash holding the account listing the runs of one key (or key group) share."""
    return f"xquik:listing:{fingerprint}"


def budget_slots_pattern(redis: Any, tier: str = "delete") -> str:
    """A SCAN pattern for every key's `slots` of `tier` (one per API key)."""
    return budget_keys(redis, "*", tier).slots


def fingerprint_of_slots(key: str) -> str:
    """The key fingerprint in a `slots` key found by `budget_slots_pattern`."""
    return key.lstrip("{").split(":")[2]


__all__ = [
    "REPLICATION_MARK",
    "BudgetKeys",
    "StreamKeys",
    "budget_keys",
    "budget_slots_pattern",
    "fingerprint_of_slots",
    "has_tag",
    "is_cluster",
    "listing_key",
    "stream_keys",
]
