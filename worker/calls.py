"""One API call under the retry policy, ending in a Call: the answer, or the error that ended
it, and how many attempts it took. Errors become data here, never exceptions for the runner."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from tenacity import RetryCallState

from worker.client import Answer
from worker.errors import ApiError, AuthError, TransientApiError, TransportError
from worker.logs import get_logger
from worker.retry import TRANSIENT, Sleep, retrying

log = get_logger()
Op = Callable[[], Awaitable[Answer]]


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
    if isinstance(error, TransientApiError | TransportError):
        return f"retries_exhausted after {attempts} attempts: {text}"
    return text


class Caller:
    """Runs operations under the retry policy; a 401 is reported once to `on_auth_error`."""

    def __init__(
        self,
        *,
        max_attempts: int,
        on_auth_error: Callable[[AuthError], None],
        sleep: Sleep = anyio.sleep,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        self._max_attempts = max_attempts
        self._on_auth_error = on_auth_error
        self._sleep = sleep
        self._backoff = (backoff_base, backoff_cap)
        self.retries = 0

    async def __call__(self, op: Op) -> Call:
        # The first attempt runs bare: most calls succeed at once, and building the retry
        # state machine for each of them costs more CPU than the request itself. Only a
        # transient failure enters tenacity, which replays it as attempt 1 and takes over.
        try:
            return Call(await op(), None, 1)
        except AuthError as exc:
            self._on_auth_error(exc)
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
                    answer = await op()
        except AuthError as exc:
            self._on_auth_error(exc)
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
