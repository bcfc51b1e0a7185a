"""What the worker does for one job: resolve a username, disconnect (or check), and remove the
monitors that track the account. Every outcome is a Result."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from worker.calls import Call, Caller, describe
from worker.client import XquikClient
from worker.directory import Directory
from worker.logs import get_logger
from worker.models import DONE, Job, Op, Outcome, Result

log = get_logger()


class Operations:
    """Per-job work, shared by all the runner's workers."""

    def __init__(self, client: XquikClient, *, run_id: str, caller: Caller) -> None:
        self.client = client
        self.run_id = run_id
        self.call = caller
        self.directory = Directory(client, caller)

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

    async def resolve(self, job: Job, started: float) -> dict[str, Any] | Result:
        """The account of a username-only job, or the failed Result explaining why not."""
        found = await self.directory.find(username=job.username)
        if isinstance(found, Call):
            return self.result(job, started, found)
        if found is None:
            return self.result(
                job, started, outcome=Outcome.FAILED, error="unknown_username", attempts=0
            )
        return found

    async def delete_monitors(
        self, job: Job, account: dict[str, Any] | None, disconnected: Result
    ) -> list[Result]:
        """After a done disconnect: delete each account monitor tracking that user, one
        record each. The DELETEs share the key's DELETE budget with the disconnects."""
        if disconnected.outcome not in DONE:
            return []
        started = time.monotonic()
        account = account or {}
        x_user_id = account.get("xUserId")
        username = account.get("xUsername") or job.username
        if not x_user_id and not username:
            log.warning("monitors_unmatched", reason="account unknown and no username given")
            return []
        monitors = await self.directory.take_monitors(
            x_user_id=str(x_user_id) if x_user_id else None, username=username
        )
        base = {"op": Op.DELETE_MONITOR, "account_id": disconnected.account_id}
        if isinstance(monitors, Call):
            return [self.result(job, started, monitors, **base)]
        results = []
        for monitor in monitors:
            monitor_id = str(monitor["id"])
            call = await self.call(partial(self.client.delete_monitor, monitor_id))
            outcome = None
            if call.answer is not None:
                gone = call.answer.status == 404
                outcome = Outcome.ALREADY_GONE if gone else Outcome.DISCONNECTED
            results.append(
                self.result(job, started, call, monitor_id=monitor_id, outcome=outcome, **base)
            )
        return results
