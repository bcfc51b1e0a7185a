"""What the worker does for one job: resolve a username, disconnect (or check), and remove the
account's monitors. Every HTTP call goes through the retry policy; every outcome is a Result."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from tenacity import RetryCallState

from worker.client import Answer, XquikClient
from worker.errors import ApiError, AuthError, TransientApiError, TransportError
from worker.logs import get_logger
from worker.models import Job, Op, Outcome, Result
from worker.retry import Sleep, retrying

log = get_logger()


@dataclass(frozen=True, slots=True)
class Call:
    """The end of one retried call: an answer, or the error that ended it."""

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


class Operations:
    """Per-job work, shared by all the runner's workers."""

    def __init__(
        self,
        client: XquikClient,
        *,
        run_id: str,
        max_attempts: int,
        on_auth_error: Callable[[AuthError], None],
        sleep: Sleep = anyio.sleep,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self._max_attempts = max_attempts
        self._on_auth_error = on_auth_error
        self._sleep = sleep
        self._backoff = (backoff_base, backoff_cap)
        self._accounts: dict[str, dict[str, Any]] | None = None
        self._accounts_at = 0.0
        self._accounts_lock = anyio.Lock()
        self.retries = 0

    async def call(self, op: Callable[[], Awaitable[Answer]]) -> Call:
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

    def result(self, job: Job, started: float, call: Call | None = None, **fields: Any) -> Result:
        if call is not None:
            fields.setdefault("attempts", call.attempts)
            if call.answer is not None:
                fields.setdefault("http_status", call.answer.status)
            elif call.error is not None:
                fields["outcome"] = Outcome.FAILED
                fields["error"] = describe(call.error, call.attempts)
                fields["http_status"] = getattr(call.error, "status", None)
        fields.setdefault("account_id", job.account_id)
        return Result(
            run_id=self.run_id,
            source=job.source,
            job_id=job.job_id,
            username=fields.pop("username", job.username),
            elapsed_ms=round((time.monotonic() - started) * 1000),
            **fields,
        )

    async def disconnect(self, job: Job, account_id: str, started: float) -> Result:
        call = await self.call(lambda: self.client.delete_account(account_id))
        outcome = None
        if call.answer is not None:
            # 404 is success for us: the connection is gone, whoever removed it (maybe our own
            # earlier attempt whose answer was lost).
            gone = call.answer.status == 404
            outcome = Outcome.ALREADY_GONE if gone else Outcome.DISCONNECTED
        return self.result(job, started, call, account_id=account_id, outcome=outcome)

    async def check(self, job: Job, account_id: str, started: float) -> Result:
        call = await self.call(lambda: self.client.get_account(account_id))
        outcome = None
        if call.answer is not None:
            outcome = Outcome.MISSING if call.answer.status == 404 else Outcome.EXISTS
        return self.result(job, started, call, account_id=account_id, outcome=outcome)

    async def accounts(self, *, refresh: bool = False) -> dict[str, dict[str, Any]] | Call:
        """Connected accounts by lower-case username: one GET per run, refreshed on a miss at
        most every 30 s. Returns the failed Call when the list cannot be had."""
        async with self._accounts_lock:
            stale = time.monotonic() - self._accounts_at > 30.0
            if self._accounts is None or (refresh and stale):
                call = await self.call(self._list_accounts)
                if call.answer is None:
                    return call
                listed = call.answer.body
                self._accounts = {
                    str(a.get("xUsername", "")).lower(): a for a in listed if a.get("id")
                }
                self._accounts_at = time.monotonic()
            return self._accounts

    async def _list_accounts(self) -> Answer:
        return Answer(200, await self.client.list_accounts())

    async def resolve(self, job: Job, started: float) -> str | Result:
        """The account id for a username-only job, or the failed Result explaining why not."""
        name = (job.username or "").lower()
        found = await self.accounts()
        if isinstance(found, dict) and name not in found:
            found = await self.accounts(refresh=True)
        if isinstance(found, Call):
            return self.result(job, started, found)
        account = found.get(name)
        if account is None:
            return self.result(
                job, started, outcome=Outcome.FAILED, error="unknown_username", attempts=0
            )
        return str(account["id"])


__all__ = ["Call", "Op", "Operations", "describe"]
