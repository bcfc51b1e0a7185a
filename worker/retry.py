"""The retry policy, declared once: what is transient, how long to back off, when to give up."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from worker.errors import RateLimited, TransientApiError, TransportError

Sleep = Callable[[float], Awaitable[None]]

# Only what may succeed on a second try. BudgetClosed, AuthError, PermanentApiError and
# CancelledError are never retried.
TRANSIENT = (TransportError, TransientApiError)


class _Backoff:
    """Full-jitter exponential backoff, except after a 429: the budget's cooldown already holds
    every request on the key until Retry-After has passed, so waiting here too would only add."""

    def __init__(self, base: float, cap: float) -> None:
        self._jitter = wait_random_exponential(multiplier=base, max=cap)

    def __call__(self, state: RetryCallState) -> float:
        outcome = state.outcome
        if outcome is not None and isinstance(outcome.exception(), RateLimited):
            return 0.0
        return float(self._jitter(state))


def retrying(
    *,
    max_attempts: int,
    backoff_base: float = 0.5,
    backoff_cap: float = 30.0,
    sleep: Sleep = anyio.sleep,
) -> AsyncRetrying:
    return AsyncRetrying(
        stop=stop_after_attempt(max_attempts),
        wait=_Backoff(backoff_base, backoff_cap),
        retry=retry_if_exception_type(TRANSIENT),
        sleep=sleep,
        reraise=True,
    )
