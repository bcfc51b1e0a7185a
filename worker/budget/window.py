"""The rate budget: held slots with a key-wide cooldown, exact under any latency.

The server counts a request in a fixed window that starts at its first request, at the moment
the request arrives: somewhere between our send and our receipt of its answer. So a request
holds its slot from just before it is sent until W after its answer has arrived (or after it
failed, timed out or its connection closed), and a request starts only while fewer than N slots
are held: start_k >= end_(k-N) + W. Then no server window, wherever it starts, can count N+1 of
ours, whatever the latencies. The cost is one round trip per window: W / (W + RTT), 99.5 % at
60 s and 300 ms. A token bucket with burst N can put 2N-1 in one server window; a sliding log
of send times with a guessed margin breaks as soon as a request is delayed longer than the
margin on its way in (a busy event loop, a slow network, a proxy queue).

A slot in flight is held until it is released; in the state file (shared with other runs on
this machine) it stands as held until its start + the attempt's bound + W, so a run that
crashes with requests in flight blocks nobody for longer than that.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

import anyio

from worker.budget.base import Clock, Naps, Sleep, cooldown_seconds
from worker.errors import BudgetClosed

INFLIGHT = float("inf")  # the end of a slot whose answer has not arrived yet


class Exchange(Protocol):
    """Where a budget's state is shared with other runs (the state file)."""

    def exchange(self, budget: SlidingWindowBudget) -> AbstractContextManager[None]: ...


class SlidingWindowBudget:
    """At most `limit` slots held at once, a slot held from its send until `window + margin`
    after its answer; nothing at all during a cooldown."""

    __slots__ = (
        "_clock",
        "_closed",
        "_cooldown_until",
        "_ids",
        "_jitter",
        "_lock",
        "_max_cooldown",
        "_naps",
        "_rng",
        "_slots",
        "_state",
        "_wall",
        "attempt_bound",
        "limit",
        "span",
        "window",
    )

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        margin: float = 0.0,
        max_cooldown: float = 900.0,
        jitter: float = 0.0,
        attempt_bound: float = 60.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
        rng: random.Random | None = None,
        state: Exchange | None = None,
        wall: Clock = time.time,
    ) -> None:
        if limit < 1 or window <= 0 or margin < 0:
            raise ValueError("limit must be >= 1, window > 0, margin >= 0")
        self.limit = limit
        self.window = window
        self.span = window + margin
        self.attempt_bound = attempt_bound  # no attempt lasts longer (--timeout)
        self._max_cooldown = max_cooldown
        self._jitter = jitter
        self._clock = clock
        self._naps = Naps(sleep)
        self._rng = rng or random.Random()
        self._state = state
        self._wall = wall  # the state file holds wall-clock times, shared between processes
        # slot id -> the moment it stops being held (INFLIGHT while in flight).
        self._slots: dict[str, float] = {}
        self._cooldown_until = float("-inf")
        self._lock = anyio.Lock()
        self._closed = False
        prefix = f"{os.getpid()}.{random.getrandbits(32):08x}"
        self._ids = (f"{prefix}.{n}" for n in itertools.count())

    def delay(self) -> float:
        """Seconds until the next start is allowed (<= 0: now; inf: when a slot is released)."""
        now = self._clock()
        for slot, until in list(self._slots.items()):
            if until <= now:
                del self._slots[slot]
        wait = self._cooldown_until - now
        if len(self._slots) >= self.limit:
            ends = sorted(self._slots.values())
            wait = max(wait, ends[len(ends) - self.limit] - now)
        return wait

    async def acquire(self) -> object:
        """Wait for a slot and take it. Waiters are served first come, first served."""
        async with self._lock:
            while True:
                if self._closed:
                    raise BudgetClosed
                # Decided under the state file's lock, with every run's slots on this key in
                # view, so concurrent runs together stay within the limit too.
                with self._exchange():
                    wait = self.delay()
                    if wait <= 0:
                        slot = next(self._ids)
                        self._slots[slot] = INFLIGHT
                        return slot
                # A release wakes this nap early: the slot it frees may be the one we wait for.
                await self._naps(min(wait, self.span + self.attempt_bound))

    async def release(self, slot: object) -> None:
        """The answer arrived (or the attempt failed): held for one more span from now."""
        if isinstance(slot, str):
            with self._exchange():
                if slot in self._slots:
                    self._slots[slot] = self._clock() + self.span
            self._naps.wake_all()

    async def refund(self, slot: object) -> None:
        """The request never left (its connection could not be made): the slot is free."""
        if isinstance(slot, str):
            with self._exchange():
                self._slots.pop(slot, None)
            self._naps.wake_all()

    async def hold(self, seconds: float | None) -> float:
        """Close the budget for `seconds` (None: one window; capped, plus jitter); returns the
        seconds applied."""
        seconds = cooldown_seconds(
            seconds, window=self.window, cap=self._max_cooldown, jitter=self._jitter, rng=self._rng
        )
        with self._exchange():
            self._cooldown_until = max(self._cooldown_until, self._clock() + seconds)
        return seconds

    def _exchange(self) -> AbstractContextManager[None]:
        """Other runs' slots and cooldown in, ours out (nothing without a state file)."""
        return self._state.exchange(self) if self._state is not None else nullcontext()

    def close(self) -> None:
        """Refuse every waiting and future acquire; wakes sleeping waiters at once."""
        self._closed = True
        self._naps.wake_all()

    def cooldown_remaining(self) -> float:
        return max(0.0, self._cooldown_until - self._clock())

    def sends_in_span(self) -> int:
        """Slots held now (in flight, or answered less than a span ago)."""
        self.delay()
        return len(self._slots)

    def eta(self, jobs: int) -> float:
        """Seconds needed to start `jobs` more requests from now, at best (answers that come
        at once): the free slots now, then `limit` more each span."""
        if jobs <= 0:
            return 0.0
        first = max(self.delay(), 0.0)
        if first == INFLIGHT:
            first = self.span
        free_now = max(self.limit - len(self._slots), 0)
        if jobs <= free_now:
            return first
        windows = -(-(jobs - free_now) // self.limit)
        return first + windows * self.span

    # Persistence: wall-clock times, so they survive a restart and cross processes.
    def snapshot(self) -> tuple[list[tuple[str, float]], float | None]:
        offset = self._wall() - self._clock()
        self.delay()
        now = self._clock()
        slots = [
            # In flight, for another process: held at most until our attempt's bound + a span.
            (slot, (now + self.attempt_bound + self.span if until == INFLIGHT else until) + offset)
            for slot, until in self._slots.items()
        ]
        until = self._cooldown_until + offset if self.cooldown_remaining() > 0 else None
        return slots, until

    def restore(self, slots: Iterable[tuple[str, float]], cooldown_until: float | None) -> None:
        offset = self._wall() - self._clock()
        now = self._clock()
        ours = {s: u for s, u in self._slots.items() if u == INFLIGHT}
        horizon = now + self.attempt_bound + self.span + 5  # a file from far ahead is bogus
        self._slots = {s: u - offset for s, u in slots if now < u - offset <= horizon}
        self._slots.update(ours)  # our own in-flight slots stay in flight
        if cooldown_until is not None:
            self._cooldown_until = max(self._cooldown_until, cooldown_until - offset)
