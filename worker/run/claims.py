"""Which accounts this run has already taken, in about 8 bytes each.

A Python set of a million id strings costs 60-80 MB; a run over a million jobs must stay flat.
We keep 64-bit hashes instead: recent ones in a small set, older ones in a few sorted arrays
merged like a binary counter (log-structured), searched with bisect. Two different keys share
a hash with probability about n^2 / 2^65 (3e-8 for a million); the cost of that is a job
recorded `duplicate` by mistake, visibly, never a lost record.
"""

from __future__ import annotations

import heapq
import sys
from array import array
from bisect import bisect_left
from typing import Literal

Claim = Literal["new", "done", "duplicate"]


class SeenSet:
    __slots__ = ("_flush_at", "_recent", "_runs")

    def __init__(self, *, flush_at: int = 4096) -> None:
        self._flush_at = flush_at
        self._recent: set[int] = set()
        self._runs: list[array[int]] = []  # sorted, sizes decreasing

    def __contains__(self, key: object) -> bool:
        h = hash(key)
        if h in self._recent:
            return True
        for run in self._runs:
            i = bisect_left(run, h)
            if i < len(run) and run[i] == h:
                return True
        return False

    def __len__(self) -> int:
        return len(self._recent) + sum(len(run) for run in self._runs)

    def nbytes(self) -> int:
        """Memory held, roughly."""
        return sys.getsizeof(self._recent) + sum(sys.getsizeof(run) for run in self._runs)

    def add(self, key: str) -> bool:
        """Add `key`; False if it was already there."""
        if key in self:
            return False
        self._recent.add(hash(key))
        if len(self._recent) >= self._flush_at:
            run = array("q", sorted(self._recent))
            self._recent.clear()
            while self._runs and len(self._runs[-1]) <= len(run):
                run = array("q", heapq.merge(self._runs.pop(), run))
            self._runs.append(run)
        return True


class Claims:
    """Which accounts a job may still take: not done by an earlier run (from the result log),
    not taken earlier in this run. One place for the rule, for ids read from the source and for
    ids a username resolves to."""

    __slots__ = ("_active", "_done_before", "_seen")

    def __init__(
        self, done_before: set[str] | frozenset[str] = frozenset(), *, in_flight_only: bool = False
    ) -> None:
        self._done_before = done_before
        self._seen = SeenSet()
        # Queue mode: a consumer lives for months, and an account may rightly come back (a
        # dead letter requeued, a reconnected account to disconnect again): only the same
        # account twice at once is a duplicate, and a claim ends with its job.
        self._active: set[str] | None = set() if in_flight_only else None

    def claim(self, key: str) -> Claim:
        """ "new" (the caller takes it), "done" (an earlier run did it) or "duplicate"."""
        if key in self._done_before:
            return "done"
        if self._active is not None:
            if key in self._active:
                return "duplicate"
            self._active.add(key)
            return "new"
        return "new" if self._seen.add(key) else "duplicate"

    def release(self, key: str) -> None:
        """The job that claimed `key` is over (in-flight-only claims; else nothing)."""
        if self._active is not None:
            self._active.discard(key)
