"""What every rate budget offers the client: the Budget protocol, and the pieces budgets share."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio

from worker.errors import BudgetClosed, NoSlot

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class Budget(Protocol):
    """What the client asks before every real send."""

    # True when release or refund may wait on the network (a budget in Redis): the client
    # then bounds and shields it. A local budget's never suspends, so it always completes.
    remote: bool

    async def acquire(self, block: bool = True) -> object:
        """Wait for a slot and take it, just before the request is sent; BudgetClosed once the
        run is stopping. Returns the slot, for `release` or `refund`. With `block=False`, a
        slot that is not free now raises NoSlot (how long until one may be) instead."""
        ...

    async def release(self, slot: object, status: int | None = None) -> None:
        """The answer arrived with `status` (None: the attempt failed): the slot stays held one
        more window. A budget that learns the limit learns it from a 429 here."""

    async def refund(self, slot: object) -> None:
        """Give back a slot whose request provably never left (the connection failed)."""

    async def hold(self, seconds: float | None) -> float:
        """A 429: close the budget for `seconds` (None: the budget's own window); returns the
        seconds applied."""
        ...

    def close(self) -> None: ...
    def cooldown_remaining(self) -> float: ...

    def describe(self) -> dict[str, object]:
        """The limit in force: limit (None: unlimited), window_s, mode (fixed, auto or
        unlimited), learned, ceiling."""
        ...

    def eta(self, jobs: int) -> float | None:
        """Seconds needed to start `jobs` more requests at best; None when the budget cannot
        tell (no limit: the pace so far says more)."""
        ...


def cooldown_seconds(
    asked: float | None, *, window: float, cap: float, jitter: float = 0.0, rng: Any = random
) -> float:
    """How long a 429 closes a budget, the one rule for every budget: what the server asked
    (None: the budget's own window), capped at --max-cooldown, plus a jitter that only adds."""
    seconds = window if asked is None else asked
    return min(max(seconds, 0.0), cap) + (rng.uniform(0, jitter) if jitter else 0.0)


class FifoLock:
    """A lock whose waiters are served first come, first served, and that says how many
    wait: asyncio's, with a count. anyio's Lock asked for the current task on every acquire
    and release, ~4 % of a job's CPU on the default path; this one never suspends when free
    (a non-blocking acquire of another job must find it locked only while a request really
    waits)."""

    __slots__ = ("_lock", "waiting")

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.waiting = 0  # tasks queued for it

    def locked(self) -> bool:
        return self._lock.locked()

    async def __aenter__(self) -> None:
        self.waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self.waiting -= 1

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()


class Naps:
    """Sleeps that `wake_all` cuts short: closing a budget must not wait out a 60 s window."""

    __slots__ = ("_scopes", "_sleep")

    def __init__(self, sleep: Sleep) -> None:
        self._sleep = sleep
        self._scopes: set[anyio.CancelScope] = set()

    async def __call__(self, seconds: float) -> None:
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                await self._sleep(seconds)
            finally:
                self._scopes.discard(scope)

    def wake_all(self) -> None:
        for scope in list(self._scopes):
            scope.cancel()


class Unlimited:
    """`--rate unlimited`: lifts our own limit, never the server's. No slots to count, but a
    429 still holds every request until Retry-After has passed. A send costs a clock read."""

    __slots__ = ("_clock", "_closed", "_cooldown_until", "_max_cooldown", "_naps", "window")
    remote = False

    def __init__(
        self,
        *,
        window: float = 1.0,
        max_cooldown: float = 900.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self.window = window
        self._max_cooldown = max_cooldown
        self._clock = clock
        self._naps = Naps(sleep)
        self._cooldown_until = float("-inf")
        self._closed = False

    async def acquire(self, block: bool = True) -> object:
        while True:
            if self._closed:
                raise BudgetClosed
            wait = self._cooldown_until - self._clock()
            if wait <= 0:
                return None
            if not block:
                raise NoSlot(wait)
            await self._naps(wait)

    async def release(self, slot: object, status: int | None = None) -> None:
        return None

    async def refund(self, slot: object) -> None:
        return None

    async def hold(self, seconds: float | None) -> float:
        seconds = cooldown_seconds(seconds, window=self.window, cap=self._max_cooldown)
        self._cooldown_until = max(self._cooldown_until, self._clock() + seconds)
        return seconds

    def close(self) -> None:
        self._closed = True
        self._naps.wake_all()

    def cooldown_remaining(self) -> float:
        return max(0.0, self._cooldown_until - self._clock())

    def describe(self) -> dict[str, object]:
        return {
            "limit": None,
            "window_s": self.window,
            "mode": "unlimited",
            "learned": False,
            "ceiling": None,
        }

    def eta(self, jobs: int) -> float | None:
        return None
