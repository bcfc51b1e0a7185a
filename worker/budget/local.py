"""The rate budget: held slots with a key-wide cooldown, exact under any latency, and the
server's live limit learned under a ceiling.

The server counts a request in a fixed window that starts at its first request, at the moment
the request arrives: somewhere between our send and our receipt of its answer. So a request
holds its slot from just before it is sent until W after its answer has arrived (or after it
failed, timed out or its connection closed), and a request starts only while fewer than N slots
are held: start_k >= end_(k-N) + W. Then no server window, wherever it starts, can count N+1 of
ours, whatever the latencies. The cost is one round trip per window: W / (W + RTT), 99.5 % at
60 s and 300 ms. A token bucket with burst N can put 2N-1 in one server window; a sliding log
of send times with a guessed margin breaks as soon as a request is delayed longer than the
margin on its way in (a busy event loop, a slow network, a proxy queue).

With `--rate auto` N is learned (`Learner`): it starts at the last limit learned for the key,
else at the ceiling; a 429 sets it to the requests the server accepted in the window.

A slot in flight is held until it is released; in the state file (shared with other runs on
this machine) it stands as held until its start + the attempt's bound + W, so a run that
crashes with requests in flight blocks nobody for longer than that.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import random
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.lowlevel

from worker.budget.base import Clock, FifoLock, Naps, Sleep, cooldown_seconds
from worker.errors import BudgetClosed, NoSlot
from worker.logs import get_logger
from worker.values import MAX_SECONDS

log = get_logger()

INFLIGHT = float("inf")  # the end of a slot whose answer has not arrived yet
MAX_LIMIT = 1_000_000_000  # a learned limit beyond this is not one
RATE_LIMITED = 429


@dataclass(frozen=True, slots=True)
class Learned:
    """A limit learned from a 429: `limit` requests per window, at wall-clock `at`, when the
    limit in force was above `cap` + 1 (a later count in the same cooldown may raise it to
    `cap`, never above)."""

    limit: int
    at: float
    cap: int


class Learner:
    """`--rate auto`: the limit in force, learned under a ceiling. Fixed rates learn nothing."""

    __slots__ = ("_wall", "ceiling", "learned", "relearn")

    def __init__(self, ceiling: int, relearn: float, wall: Clock = time.time) -> None:
        self.ceiling = ceiling
        self.relearn = relearn
        self.learned: Learned | None = None
        self._wall = wall

    def limit(self) -> int:
        """The learned limit while it is fresh, else the ceiling (tried again after
        --relearn without a 429: a plan upgrade is picked up)."""
        learned = self.learned
        if learned is None or self._wall() - learned.at >= self.relearn:
            return self.ceiling
        return min(learned.limit, self.ceiling)

    def is_learned(self) -> bool:
        """The limit in force was learned (not the ceiling, nor the ceiling tried again)."""
        learned = self.learned
        return learned is not None and self._wall() - learned.at < self.relearn

    def rejected(self, accepted: int, limit_at_send: int, *, first: bool = True) -> bool:
        """A 429 for a request sent under `limit_at_send`, while `accepted` of our requests
        were accepted in the server's window: the new limit (a later 429 of the same window,
        `first` False, can only raise it). True if it changed."""
        cap = max(1, limit_at_send - 1)
        limit = max(1, min(accepted, cap))
        old = self.learned
        if not first and old is not None:
            limit, cap = max(limit, old.limit), max(cap, old.cap)
        self.learned = Learned(limit, self._wall(), cap)
        return old is None or limit != old.limit

    def counted(self, accepted: int) -> bool:
        """During the cooldown after a 429 nothing new is sent: an accepted answer now is a
        request that was in flight at the 429 and counted in that window. True if it raised
        the limit."""
        learned = self.learned
        if learned is None or accepted <= learned.limit or learned.limit >= learned.cap:
            return False
        self.learned = Learned(min(accepted, learned.cap), learned.at, learned.cap)
        return True

    def adopt(self, other: Learned | None) -> None:
        """Another run's newer finding wins."""
        if other is not None and (self.learned is None or other.at > self.learned.at):
            self.learned = other


class Exchange(Protocol):
    """Where a budget's state is shared with other runs (the state file)."""

    path: Any

    def exchange(self, budget: LocalBudget) -> AbstractContextManager[None]: ...

    def rewrite(self, budget: LocalBudget) -> None:
        """The whole state as the budget holds it now, under the lock."""


class LocalBudget:
    """At most `limit` slots held at once, a slot held from its send until `window + margin`
    after its answer; nothing at all during a cooldown. O(log n) per decision: the ends of the
    released slots are kept sorted."""

    __slots__ = (
        "_accepted",
        "_clock",
        "_closed",
        "_cooldown_until",
        "_dirty",
        "_ends",
        "_episode",
        "_episode_end",
        "_gathering",
        "_ids",
        "_inflight",
        "_jitter",
        "_lock",
        "_max_cooldown",
        "_naps",
        "_opener",
        "_pending",
        "_prefix",
        "_reserved",
        "_rng",
        "_sent_at",
        "_sent_under",
        "_slots",
        "_state",
        "_wall",
        "_win_end",
        "_win_start",
        "attempt_bound",
        "fixed_limit",
        "learner",
        "span",
        "window",
    )
    remote = False

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
        learner: Learner | None = None,
    ) -> None:
        if limit < 1 or window <= 0 or margin < 0:
            raise ValueError("limit must be >= 1, window > 0, margin >= 0")
        self.fixed_limit = limit
        self.learner = learner  # None: a fixed limit
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
        # Every held slot: id -> the moment it stops being held (INFLIGHT while in flight).
        self._slots: dict[str, float] = {}
        self._inflight: set[str] = set()
        self._ends: list[tuple[float, str]] = []  # (end, id) of the released slots, sorted
        self._accepted: set[str] = set()  # held slots whose request the server accepted
        self._sent_under: dict[str, int] = {}  # auto: our slot -> the limit when it was taken
        self._sent_at: dict[str, float] = {}  # auto: our held slot -> when it was taken
        self._cooldown_until = float("-inf")
        # auto: where the server's current window began, as far as our sends tell (each window
        # opens at the first request after the last one ended), and the start of the window
        # that gave the last 429.
        self._win_start = float("-inf")
        self._opener: str | None = None  # the request that opened it (in our estimate)
        self._win_end = float("-inf")  # the latest it can end: the opener's answer + W
        self._episode = float("-inf")
        self._episode_end = float("-inf")  # the last 429 of that window
        self._pending: set[str] = set()  # ours, in flight at that 429
        self._lock = FifoLock()
        self._closed = False
        self._dirty: set[str] = set()  # our slots changed since the state file last saw them
        # Slots taken in one decision for the requests queued behind it (one state file
        # exchange for a tick's worth of sends): in flight for everyone already, claimed by
        # the next acquires unless the budget changed meanwhile.
        self._reserved: list[str] = []
        self._gathering = False  # a decision waits out this tick for the acquires behind it
        self._prefix = f"{os.getpid()}.{random.getrandbits(32):08x}."
        self._ids = (f"{self._prefix}{n}" for n in itertools.count())

    @property
    def limit(self) -> int:
        """The limit in force."""
        return self.learner.limit() if self.learner is not None else self.fixed_limit

    # The held slots.
    def _set(
        self, slot: str, until: float, accepted: bool | None = None, mine: bool = True
    ) -> None:
        if mine and self._state is not None:
            self._dirty.add(slot)
        old = self._slots.get(slot)
        if old is not None and old != INFLIGHT:
            i = bisect.bisect_left(self._ends, (old, slot))
            if i < len(self._ends) and self._ends[i] == (old, slot):
                del self._ends[i]
        self._slots[slot] = until
        if until == INFLIGHT:
            self._inflight.add(slot)
        else:
            self._inflight.discard(slot)
            bisect.insort(self._ends, (until, slot))
        if accepted:
            self._accepted.add(slot)
        elif accepted is not None:
            self._accepted.discard(slot)

    def _drop(self, slot: str, mine: bool = True) -> None:
        if mine and self._state is not None:
            self._dirty.add(slot)
        until = self._slots.pop(slot, None)
        if until is None:
            return
        self._inflight.discard(slot)
        self._accepted.discard(slot)
        self._sent_at.pop(slot, None)
        if until != INFLIGHT:
            i = bisect.bisect_left(self._ends, (until, slot))
            if i < len(self._ends) and self._ends[i] == (until, slot):
                del self._ends[i]

    def _expire(self, now: float) -> None:
        ends = self._ends
        if ends and ends[0][0] <= now:
            n = bisect.bisect_right(ends, (now, "\U0010ffff"))
            for _, slot in ends[:n]:
                del self._slots[slot]
                self._accepted.discard(slot)
                self._sent_at.pop(slot, None)
            del ends[:n]

    def delay(self) -> float:
        """Seconds until the next start is allowed (<= 0: now; inf: when a slot is released)."""
        now = self._clock()
        self._expire(now)
        wait = self._cooldown_until - now
        over = len(self._slots) - self.limit  # held beyond the limit: wait for the ends
        if over >= 0:
            wait = max(wait, self._ends[over][0] - now if over < len(self._ends) else INFLIGHT)
        return wait

    def _no_slot(self, wait: float) -> NoSlot:
        # A cooldown is waited out whole; a full window at most a span at a time (all held
        # slots in flight: none frees before an answer plus a span).
        return NoSlot(max(self.cooldown_remaining(), min(wait, self.span), 0.001))

    async def acquire(self, block: bool = True) -> object:
        """Wait for a slot and take it. Waiters are served first come, first served. With
        `block=False`, raise NoSlot instead of waiting (and when another request waits)."""
        if not block:
            if self._lock.locked() and not self._gathering:
                raise self._no_slot(self.delay())
            return self._try_now()  # nobody waits for a slot: one decision, now
        async with self._lock:
            if self._state is not None and not self._reserved:
                # Let the other acquires of this tick queue behind us: one exchange of the
                # state file then decides for all of them.
                self._gathering = True
                try:
                    await anyio.lowlevel.checkpoint()
                finally:
                    self._gathering = False
            while True:
                if self._closed:
                    raise BudgetClosed
                if (slot := self._reserved_slot()) is not None:
                    return slot
                # Decided under the state file's lock, with every run's slots on this key in
                # view, so concurrent runs together stay within the limit too. The requests
                # already queued behind this one get theirs in the same decision (one read
                # and one append of the state file for all of them).
                with self._exchange():
                    wait = self.delay()
                    if wait <= 0:
                        slot = self._take()
                        if self._state is not None:
                            queued = self._lock.waiting
                            while queued > len(self._reserved) and self.delay() <= 0:
                                self._reserved.append(self._take())
                        return self._start(slot)
                # A release wakes this nap early: the slot it frees may be the one we wait for.
                await self._naps(min(wait, self.span + self.attempt_bound))

    def _try_now(self) -> str:
        """One non-blocking decision, under the state file's lock: a slot or NoSlot."""
        if self._closed:
            raise BudgetClosed
        if (slot := self._reserved_slot()) is not None:
            return slot
        with self._exchange():
            wait = self.delay()
            if wait > 0:
                raise self._no_slot(wait)
            return self._start(self._take())

    def _take(self) -> str:
        """A new slot of ours, in flight from now."""
        slot = next(self._ids)
        self._set(slot, INFLIGHT)
        return slot

    def _reserved_slot(self) -> str | None:
        """A slot taken for this request in an earlier decision, if it still may be used."""
        if not self._reserved:
            return None
        if self._cooldown_until <= self._clock() and len(self._slots) <= self.limit:
            return self._start(self._reserved.pop())
        self._unreserve()  # a cooldown or a lower limit came meanwhile
        return None

    def _start(self, slot: str) -> str:
        """A slot taken, its request about to be sent."""
        if self.learner is not None:
            now = self._clock()
            self._sent_under[slot] = self.limit
            self._sent_at[slot] = now
            # It arrived after its send, before its answer: a window it opened ends W after
            # its answer at the latest; only a send after that surely opens the next one.
            if self._opener is None or now >= self._win_end:
                self._opener, self._win_start = slot, now
                self._win_end = INFLIGHT
        return slot

    def _unreserve(self) -> None:
        """Reserved slots nobody sent with are free again (for other runs, with the next
        exchange)."""
        for slot in self._reserved:
            self._drop(slot)
        self._reserved.clear()
        self._naps.wake_all()

    async def release(self, slot: object, status: int | None = None) -> None:
        """The answer arrived with `status` (None: the attempt failed, timed out or was
        cancelled): held for one more span from now. With a learner, a 429 teaches the
        limit."""
        if not isinstance(slot, str):
            return
        # Only a 429, or an answer to a request in flight at one, teaches anything. Every
        # other release (nearly all of them) shortens a hold other runs already see as longer
        # (in flight: until the attempt's bound + a span), so it reaches the state file with
        # this budget's next decision, or when it closes: later is only slower for them.
        learns = self.learner is not None and (status == RATE_LIMITED or slot in self._pending)
        with self._exchange() if learns or self._closed else nullcontext():
            if slot in self._slots:
                accepted = status is not None and status != RATE_LIMITED
                self._set(slot, self._clock() + self.span, accepted)
            under = self._sent_under.pop(slot, None)
            if slot == self._opener:
                self._win_end = self._clock() + self.window
            if learns:
                self._learn(slot, status, under)
            self._pending.discard(slot)
        self._naps.wake_all()

    def _learn(self, slot: str, status: int | None, under: int | None) -> None:
        assert self.learner is not None
        before = self.learner.limit()
        now = self._clock()
        self._expire(now)
        if status == RATE_LIMITED:
            first = self.cooldown_remaining() <= 0  # the first 429 of this window
            if first:
                self._episode = self._window_start(now)
                self._pending.clear()
            self._episode_end = now
            self._pending.update(s for s in self._inflight if s in self._sent_under)
            self._pending.discard(slot)
            accepted = self._accepted_since(self._episode)
            changed = self.learner.rejected(accepted, under or before, first=first)
        elif status is not None and self.cooldown_remaining() > 0:
            # In flight at the 429, accepted before the cooldown (the rest of the server's
            # window) is over: it was counted in the window that rejected us. Answered later,
            # it may have opened the next one: it teaches nothing.
            self._pending.discard(slot)
            changed = self.learner.counted(self._accepted_since(self._episode))
        else:
            return
        if changed:
            log.info(
                "rate_learned",
                limit=self.learner.limit(),
                window_s=self.window,
                ceiling=self.learner.ceiling,
                was=before,
            )

    def _window_start(self, now: float) -> float:
        """Where the server's window that just said 429 began, as far as every send this
        budget knows tells: our own estimate (the first of our sends after the last window
        ended), or earlier, the first send of any run on this key in the last window (the
        state file's: earlier runs and runs beside this one count in the server's window
        too; learning only this run's sends learned 7 where the server had accepted 15)."""
        earliest = self._win_start
        for slot, until in self._slots.items():
            if slot in self._sent_at or until == INFLIGHT:
                # Ours: our own trace of the server's windows already placed it (a send of
                # ours before `_win_start` was counted in the window before).
                continue
            sent = until - self.span  # another run's: answered then, sent a little before
            if now - self.window < sent < earliest:
                earliest = sent
        return earliest

    def _accepted_since(self, start: float) -> int:
        """Accepted requests in the server's window that began at `start` and rejected us:
        ours sent between then and the 429; another run's answered in between (its send time
        is not known)."""
        n = 0
        for slot in self._accepted:
            sent = self._sent_at.get(slot)
            if sent is None:
                sent = self._slots[slot] - self.span
            n += start <= sent <= self._episode_end
        return n

    async def refund(self, slot: object) -> None:
        """The request never left (its connection could not be made): the slot is free."""
        if isinstance(slot, str):
            with self._exchange():
                self._drop(slot)
                self._sent_under.pop(slot, None)
                if slot == self._opener:
                    self._opener = None
            self._naps.wake_all()

    async def hold(self, seconds: float | None) -> float:
        """Close the budget for `seconds` (None: one window; capped, plus jitter); returns the
        seconds applied."""
        seconds = cooldown_seconds(
            seconds, window=self.window, cap=self._max_cooldown, jitter=self._jitter, rng=self._rng
        )
        with self._exchange():
            self._cooldown_until = max(self._cooldown_until, self._clock() + seconds)
            self._opener = None  # the server's window ends before the cooldown does
        return seconds

    def _exchange(self) -> AbstractContextManager[None]:
        """Other runs' slots and cooldown in, ours out (nothing without a state file)."""
        return self._state.exchange(self) if self._state is not None else nullcontext()

    def close(self) -> None:
        """Refuse every waiting and future acquire; wakes sleeping waiters at once. Changes
        not yet in the state file go there now (later releases go at once)."""
        if self._reserved:
            self._unreserve()
        if not self._closed and self._dirty:
            with self._exchange():
                pass
        self._closed = True
        self._naps.wake_all()

    def cooldown_remaining(self) -> float:
        return max(0.0, self._cooldown_until - self._clock())

    @property
    def state(self) -> Exchange | None:
        """Where this budget's state is shared (the state file), if anywhere."""
        return self._state

    def forget_learned(self) -> None:
        """`budget forget`: the learned limit goes, here and in the state file; the next run
        starts at the ceiling. Held slots and a cooldown stay."""
        if self.learner is not None:
            self.learner.learned = None
        if self._state is not None:
            self._state.rewrite(self)

    def sends_in_span(self) -> int:
        """Slots held now (in flight, or answered less than a span ago)."""
        self._expire(self._clock())
        return len(self._slots)

    def describe(self) -> dict[str, object]:
        """The limit in force, for the progress view, the summary and the metrics."""
        learner = self.learner
        return {
            "limit": self.limit,
            "window_s": self.window,
            "mode": "fixed" if learner is None else "auto",
            "learned": learner is not None and learner.is_learned(),
            "ceiling": None if learner is None else learner.ceiling,
        }

    def eta(self, jobs: int) -> float:
        """Seconds needed to start `jobs` more requests from now, at best (answers that come
        at once): the free slots now, then `limit` more each span."""
        if jobs <= 0:
            return 0.0
        first = max(self.delay(), 0.0)
        if first == INFLIGHT:
            first = self.span
        limit = self.limit
        free_now = max(limit - len(self._slots), 0)
        if jobs <= free_now:
            return first
        windows = -(-(jobs - free_now) // limit)
        return first + windows * self.span

    # Persistence: wall-clock times, so they survive a restart and cross processes.
    def offset(self) -> float:
        """Wall clock minus this budget's clock."""
        return self._wall() - self._clock()

    def entry(self, slot: str) -> tuple[str, float, bool] | None:
        """One held slot as another process sees it: (id, held until wall time, accepted); in
        flight, held at most until our attempt's bound + a span."""
        until = self._slots.get(slot)
        if until is None:
            return None
        now = self._clock()
        if until == INFLIGHT:
            until = now + self.attempt_bound + self.span
        return slot, until + self.offset(), slot in self._accepted

    def entries(self) -> list[tuple[str, float, bool]]:
        """Every held slot, ours and others'."""
        self._expire(self._clock())
        return [e for slot in list(self._slots) if (e := self.entry(slot)) is not None]

    def changes(self) -> tuple[list[tuple[str, float, bool]], list[str]]:
        """Our slots taken, released or given back since the last call: (held, dropped)."""
        held, dropped = [], []
        for slot in self._dirty:
            entry = self.entry(slot)
            if entry is None:
                dropped.append(slot)
            else:
                held.append(entry)
        self._dirty.clear()
        return held, dropped

    def cooldown_wall(self) -> float | None:
        return self._cooldown_until + self.offset() if self.cooldown_remaining() > 0 else None

    def merge(
        self,
        slots: Iterable[tuple[str, float, bool]],
        dropped: Iterable[str],
        cooldown_until: float | None,
        learned: Learned | None,
    ) -> None:
        """Other runs' slots, refunds, cooldown and finding (wall-clock times) into ours. Our
        own in-flight slots stay in flight; a time far ahead is bogus and ignored. A cooldown
        another run left is this run's too, but never longer than this run's --max-cooldown
        from now (a clock that ran ahead, a lying Retry-After); one that is not a time, or a
        learned limit that is not a count, is ignored with a warning."""
        offset = self.offset()
        now = self._clock()
        horizon = now + self.attempt_bound + self.span + 5
        for slot, until, accepted in slots:
            if slot.startswith(self._prefix):
                continue  # ours: this budget knows better
            local = until - offset
            if now < local <= horizon:
                self._set(slot, local, accepted, mine=False)
            else:
                self._drop(slot, mine=False)
        for slot in dropped:
            if not slot.startswith(self._prefix):
                self._drop(slot, mine=False)
        if cooldown_until is not None:
            if not math.isfinite(cooldown_until) or cooldown_until - offset - now > MAX_SECONDS:
                log.warning(
                    "state_value_ignored", field="cooldown_until", value=str(cooldown_until)
                )
            else:
                until = min(cooldown_until - offset, now + self._max_cooldown)
                self._cooldown_until = max(self._cooldown_until, until)
        if self.learner is not None and learned is not None:
            if 1 <= learned.limit <= MAX_LIMIT and math.isfinite(learned.at):
                self.learner.adopt(learned)
            else:
                log.warning("state_value_ignored", field="learned", value=str(learned.limit))
