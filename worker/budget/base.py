"""What every rate budget offers the client: the Budget protocol, and the pieces budgets share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio

from worker.errors import BudgetClosed

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class Budget(Protocol):
    """What the client asks before every real send."""

    async def acquire(self) -> None:
        """Wait for a slot and take it; BudgetClosed once the run is stopping."""
        ...

    async def hold(self, seconds: float | None) -> float:
        """A 429: close the budget for `seconds` (None: the budget's own window); returns the
        seconds applied."""
        ...

    def close(self) -> None: ...
    def cooldown_remaining(self) -> float: ...

    def eta(self, jobs: int) -> float | None:
        """Seconds needed to start `jobs` more requests at best; None when the budget cannot
        tell (no limit: the pace so far says more)."""
        ...


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
    """`--rate unlimited`: costs one attribute check per send."""

    __slots__ = ("_closed",)

    def __init__(self) -> None:
        self._closed = False

    async def acquire(self) -> None:
        if self._closed:
            raise BudgetClosed

    async def hold(self, seconds: float | None) -> float:
        return 0.0

    def close(self) -> None:
        self._closed = True

    def cooldown_remaining(self) -> float:
        return 0.0

    def eta(self, jobs: int) -> float | None:
        return None
