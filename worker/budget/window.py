"""The rate budget: a sliding-window log with a key-wide cooldown.

Why a log and not a token bucket: the server counts requests in a fixed window that starts at
the first request. A bucket with burst N can put N at the end of one server window and N more at
the start of the next, or refill inside a window (15 at t=0, then one every 4 s): up to 2N-1 per
window. Allowing at most N starts in any W + margin seconds is safe wherever the server's window
begins, and the margin absorbs the latency between our start and the server's count.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

import anyio

from worker.budget.base import Clock, Naps, Sleep
from worker.errors import BudgetClosed


class Exchange(Protocol):
    """Where a budget's state is shared with other runs (the state file)."""

    def exchange(self, budget: SlidingWindowBudget) -> AbstractContextManager[None]: ...


class SlidingWindowBudget:
    """At most `limit` starts in any `window + margin` seconds; nothing at all during a cooldown."""

    __slots__ = (
        "_clock",
        "_closed",
        "_cooldown_until",
        "_jitter",
        "_lock",
        "_max_cooldown",
        "_naps",
        "_rng",
        "_sends",
        "_state",
        "_wall",
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
        self._max_cooldown = max_cooldown
        self._jitter = jitter
        self._clock = clock
        self._naps = Naps(sleep)
        self._rng = rng or random.Random()
        self._state = state
        self._wall = wall  # the state file holds wall-clock times, shared between processes
        self._sends: deque[float] = deque()
        self._cooldown_until = float("-inf")
        self._lock = anyio.Lock()
        self._closed = False

    def delay(self) -> float:
        """Seconds until the next start is allowed (<= 0: now)."""
        now = self._clock()
        sends = self._sends
        while sends and sends[0] <= now - self.span:
            sends.popleft()
        wait = self._cooldown_until - now
        if len(sends) >= self.limit:
            wait = max(wait, sends[-self.limit] + self.span - now)
        return wait

    async def acquire(self) -> object:
        """Wait for a slot and take it. Waiters are served first come, first served."""
        async with self._lock:
            while True:
                if self._closed:
                    raise BudgetClosed
                # Decided under the state file's lock, with every run's sends on this key in
                # view, so concurrent runs together stay within the limit too.
                with self._exchange():
                    wait = self.delay()
                    if wait <= 0:
                        slot = self._clock()
                        self._sends.append(slot)
                        return slot
                await self._naps(wait)

    def refund(self, slot: object) -> None:
        """The request never left: its send no longer counts."""
        if not isinstance(slot, float):
            return
        with self._exchange():
            # The slot as read back from the state file may differ by its rounding.
            nearest = min(self._sends, key=lambda t: abs(t - slot), default=None)
            if nearest is not None and abs(nearest - slot) < 0.01:
                self._sends.remove(nearest)

    async def hold(self, seconds: float | None) -> float:
        """Close the budget for `seconds` (None: one window; capped, plus jitter); returns the
        seconds applied."""
        seconds = self.window if seconds is None else seconds
        seconds = min(max(seconds, 0.0), self._max_cooldown)
        seconds += self._rng.uniform(0, self._jitter)
        with self._exchange():
            self._cooldown_until = max(self._cooldown_until, self._clock() + seconds)
        return seconds

    def _exchange(self) -> AbstractContextManager[None]:
        """Other runs' sends and cooldown in, ours out (nothing without a state file)."""
        return self._state.exchange(self) if self._state is not None else nullcontext()

    def close(self) -> None:
        """Refuse every waiting and future acquire; wakes sleeping waiters at once."""
        self._closed = True
        self._naps.wake_all()

    def cooldown_remaining(self) -> float:
        return max(0.0, self._cooldown_until - self._clock())

    def sends_in_span(self) -> int:
        self.delay()
        return len(self._sends)

    def eta(self, jobs: int) -> float:
        """Seconds needed to start `jobs` more requests from now, at best."""
        if jobs <= 0:
            return 0.0
        now = self._clock()
        first = max(self.delay(), 0.0)
        free_now = max(self.limit - len(self._sends), 0)
        if jobs <= free_now:
            return first
        windows = -(-(jobs - free_now) // self.limit)
        start = self._sends[0] if self._sends else now
        return max(first, start + windows * self.span - now)

    # Persistence: send times as wall-clock seconds, so they survive a restart.
    def snapshot(self) -> tuple[list[float], float | None]:
        offset = self._wall() - self._clock()
        self.delay()
        until = self._cooldown_until + offset if self.cooldown_remaining() > 0 else None
        return [t + offset for t in self._sends], until

    def restore(self, sends: Iterable[float], cooldown_until: float | None) -> None:
        offset = self._wall() - self._clock()
        now = self._clock()
        # A few seconds of slack for the future: another process's clock reading (and the
        # file's rounding) may stand a little ahead of ours; a file from far ahead is bogus.
        recent = sorted(t - offset for t in sends if now - self.span < t - offset <= now + 5)
        self._sends = deque(recent[-self.limit :])
        if cooldown_until is not None:
            self._cooldown_until = max(self._cooldown_until, cooldown_until - offset)
