"""One API call under the retry policy, ending in a Call: the answer, or the error that ended
it, and how many attempts it took. The policy is declared once here (what is transient, how
long to back off, when to give up); errors become data here, never exceptions for the runner."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from worker.api.client import Answer
from worker.budget.base import Sleep
from worker.errors import (
    ApiError,
    AuthError,
    RateLimited,
    TlsError,
    TransientApiError,
    TransportError,
)
from worker.logs import get_logger

log = get_logger()
Request = Callable[[], Awaitable[Answer]]

# Only what may succeed on a second try. BudgetClosed, AuthError, TlsError, PermanentApiError
# and CancelledError are never retried.
TRANSIENT = (TransportError, TransientApiError)
# A rejected key or an unverifiable certificate: every further request with this key would
# fail the same way, so the key stops (the caller is told once per call).
FATAL = (AuthError, TlsError)
Fatal = AuthError | TlsError


def transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT) and not isinstance(exc, FATAL)


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
        retry=retry_if_exception(transient),
        sleep=sleep,
        reraise=True,
    )


@dataclass(frozen=True, slots=True)
class Call:
    answer: Answer | None
    error: ApiError | TransportError | None
    attempts: int


def describe(error: ApiError | TransportError, attempts: int) -> str:
    """The `error` field of a failed record: the code first, so reports can group by it."""
    if isinstance(error, ApiError):
        text = error.code + (f": {error.message}" if error.message else "")
    else:
        text = f"{error.code}: {error}"
    if isinstance(error, TransientApiError | TransportError) and not isinstance(error, TlsError):
        return f"retries_exhausted after {attempts} attempts: {text}"
    return text


class Caller:
    """Runs requests under the retry policy; a 401 or a TLS failure is reported to `on_fatal`."""

    def __init__(
        self,
        *,
        max_attempts: int,
        on_fatal: Callable[[Fatal], None],
        sleep: Sleep = anyio.sleep,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        self._max_attempts = max_attempts
        self._on_fatal = on_fatal
        self._sleep = sleep
        self._backoff = (backoff_base, backoff_cap)
        self.retries = 0

    async def __call__(self, request: Request) -> Call:
        # The first attempt runs bare: most calls succeed at once, and building the retry
        # state machine for each of them costs more CPU than the request itself. Only a
        # transient failure enters tenacity, which replays it as attempt 1 and takes over.
        try:
            return Call(await request(), None, 1)
        except FATAL as exc:
            self._on_fatal(exc)
            return Call(None, exc, 1)
        except TRANSIENT as exc:
            if self._max_attempts == 1:
                return Call(None, exc, 1)
            first: BaseException | None = exc
        except (ApiError, TransportError) as exc:
            return Call(None, exc, 1)
        attempts = 0
        policy = retrying(
            max_attempts=self._max_attempts,
            backoff_base=self._backoff[0],
            backoff_cap=self._backoff[1],
            sleep=self._sleep,
        )
        policy.before_sleep = self._log_retry
        try:
            async for attempt in policy:
                with attempt:
                    attempts += 1
                    if first is not None:
                        replay, first = first, None
                        raise replay
                    answer = await request()
        except FATAL as exc:
            self._on_fatal(exc)
            return Call(None, exc, attempts)
        except (ApiError, TransportError) as exc:
            return Call(None, exc, attempts)
        return Call(answer, None, attempts)

    def _log_retry(self, state: RetryCallState) -> None:
        self.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "job_retry", attempt=state.attempt_number, error=str(exc), wait_s=round(wait, 3)
        )
