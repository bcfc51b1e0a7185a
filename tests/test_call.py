"""One call under the retry policy, with a recording sleep: no test waits for real."""

from __future__ import annotations

import pytest

from tests.fakes import RecordingSleep
from worker.api.call import Caller, Fatal, Request, describe
from worker.api.client import Answer
from worker.errors import (
    ApiError,
    AuthError,
    NetworkError,
    PermanentApiError,
    RateLimited,
    RequestTimeout,
    TransientApiError,
)


def scripted(*steps: Exception | Answer) -> tuple[Request, list[int]]:
    """A request that fails or answers as scripted, one step per attempt."""
    calls: list[int] = []

    async def request() -> Answer:
        calls.append(len(calls) + 1)
        step = steps[min(len(calls), len(steps)) - 1]
        if isinstance(step, Exception):
            raise step
        return step

    return request, calls


def caller(sleep: RecordingSleep, rejected: list[Fatal], attempts: int = 5) -> Caller:
    return Caller(
        max_attempts=attempts,
        on_fatal=rejected.append,
        sleep=sleep,
        backoff_base=0.5,
        backoff_cap=30.0,
    )


async def test_first_attempt_success_is_one_attempt_with_no_sleep() -> None:
    """The bare first attempt: a success costs no retry machinery and no wait."""
    sleep, rejected = RecordingSleep(), list[Fatal]()
    request, calls = scripted(Answer(200, {"success": True}))
    call = await caller(sleep, rejected)(request)
    assert call.answer == Answer(200, {"success": True})
    assert (call.error, call.attempts, calls, sleep.calls) == (None, 1, [1], [])


async def test_a_transient_first_failure_is_replayed_as_attempt_one() -> None:
    """503, reset, then 200: three attempts in all (the first counted once), two backoffs."""
    sleep, rejected = RecordingSleep(), list[Fatal]()
    request, calls = scripted(
        TransientApiError(503, "internal_error"), NetworkError("reset"), Answer(200, None)
    )
    c = caller(sleep, rejected)
    call = await c(request)
    assert call.answer is not None
    assert call.attempts == 3
    assert calls == [1, 2, 3]
    assert len(sleep.calls) == 2
    assert all(0 <= s <= 30.0 for s in sleep.calls)
    assert c.retries == 2


@pytest.mark.parametrize(
    ("status", "code"), [(400, "invalid_id"), (403, "forbidden"), (409, "conflict"), (422, "x")]
)
async def test_a_permanent_error_is_one_attempt(status: int, code: str) -> None:
    """Never retried: the first answer is the last."""
    sleep, rejected = RecordingSleep(), list[Fatal]()
    request, calls = scripted(PermanentApiError(status, code))
    call = await caller(sleep, rejected)(request)
    assert isinstance(call.error, PermanentApiError)
    assert (call.attempts, calls, sleep.calls, rejected) == (1, [1], [], [])
    assert describe(call.error, call.attempts) == code


async def test_retries_exhausted_names_the_attempts_and_the_last_error() -> None:
    """A server that keeps timing out: max_attempts tries, then a failure that says so."""
    sleep, rejected = RecordingSleep(), list[Fatal]()
    request, calls = scripted(RequestTimeout("no answer within 5 s"))
    call = await caller(sleep, rejected, attempts=4)(request)
    assert call.attempts == 4
    assert len(calls) == 4
    assert len(sleep.calls) == 3
    assert call.error is not None
    assert (
        describe(call.error, 4)
        == "retries_exhausted after 4 attempts: timeout: no answer within 5 s"
    )


async def test_a_429_is_retried_without_a_backoff_of_its_own() -> None:
    """The budget's cooldown already holds the key: the retry policy adds no wait after a 429."""
    sleep, rejected = RecordingSleep(), list[Fatal]()
    request, _ = scripted(RateLimited(429, "rate_limit_exceeded", retry_after=60), Answer(200, {}))
    call = await caller(sleep, rejected)(request)
    assert call.attempts == 2
    assert sleep.calls == [0.0]


@pytest.mark.parametrize("first_fails", [False, True])
async def test_a_401_is_reported_once_and_ends_the_call(first_fails: bool) -> None:
    """401 on the first attempt or on a retry: the callback fires once, nothing more is sent."""
    sleep, rejected = RecordingSleep(), list[Fatal]()
    steps: list[Exception | Answer] = [AuthError(401, "unauthenticated")]
    if first_fails:
        steps.insert(0, TransientApiError(502, "internal_error"))
    request, calls = scripted(*steps)
    call = await caller(sleep, rejected)(request)
    assert isinstance(call.error, AuthError)
    assert len(rejected) == 1
    assert len(calls) == len(steps)
    assert call.attempts == len(steps)


async def test_max_attempts_one_never_retries() -> None:
    """--max-attempts 1: a transient failure is final at once."""
    sleep, rejected = RecordingSleep(), list[Fatal]()
    request, calls = scripted(TransientApiError(500, "internal_error"))
    call = await caller(sleep, rejected, attempts=1)(request)
    assert isinstance(call.error, ApiError)
    assert (call.attempts, calls, sleep.calls) == (1, [1], [])
