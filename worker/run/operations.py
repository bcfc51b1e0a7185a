"""What the worker does for one job: resolve a username, disconnect (or check), and remove the
monitors that track the account. Every outcome is a Result; nothing here schedules or records."""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from typing import Any

import anyio

from worker.api.call import FATAL, Call, describe
from worker.api.client import Answer
from worker.api.session import Session
from worker.logs import get_logger
from worker.models import (
    ACCOUNT_MISMATCH,
    DONE,
    ID_PATTERN,
    NOT_CONNECTED,
    Invalid,
    Job,
    Op,
    Outcome,
    Result,
    audit,
    job_key,
)
from worker.run.claims import Claims

log = get_logger()
# An id a listing gave that is not an id: never put into a URL (a job's ids are checked on
# the way in; a server's are checked here).
INVALID_SERVER_ID = "invalid_server_id"


def monitor_deleted(answer: Answer) -> tuple[Outcome, bool]:
    """A monitor DELETE's answer: deleted (by us) or already_gone (404), and whether the API
    still runs the deletion in the background (deletionStatus: deleting)."""
    if answer.status == 404:
        return Outcome.ALREADY_GONE, False
    body = answer.body if isinstance(answer.body, dict) else {}
    return Outcome.DELETED, body.get("deletionStatus") == "deleting"


def invalid_record(item: Invalid, *, run_id: str, stamp: Mapping[str, Any] | None = None) -> Result:
    """An input line that is not a job (or names no known key): its `invalid` record."""
    log.warning("invalid_job", source=item.source, error=item.error)
    return Result.for_job(
        item, run_id=run_id, outcome=item.outcome, error=item.error, **(stamp or {})
    )


class Operations:
    """Per-job work, shared by all the runner's workers."""

    def __init__(
        self,
        session: Session,
        *,
        run_id: str,
        claims: Claims | None = None,
        dry_run: bool = False,
        delete_monitors: bool = False,
        keyword_monitors: bool = False,
        wait_monitors: float | None = None,
        precheck: bool = True,
        strict_missing: bool = False,
    ) -> None:
        self.session = session
        self.run_id = run_id
        self.stamp = session.stamp()  # key_id, origin, sandbox, key_group: on every record
        self.strict_missing = strict_missing
        self.claims = claims or Claims()
        self.dry_run = dry_run
        self.delete_monitors = delete_monitors
        self.keyword_monitors = keyword_monitors
        self.wait_monitors = wait_monitors  # seconds to wait for a background deletion
        self.precheck = precheck and not dry_run
        self._client = session.client
        self._call = session.call
        self._directory = session.directory

    def close(self) -> None:
        """Start nothing more (a signal, a rejected key)."""
        self.session.close()

    def rotate(self, api_key: str) -> None:
        """A tenant's key file changed: its later records name the new key."""
        self.session.rotate(api_key)
        self.stamp = self.session.stamp()

    def _limit(self) -> str | None:
        """The DELETE limit in force now, as `report` reads it back ("15/60s")."""
        described = self.session.delete_budget.describe()
        limit, window = described.get("limit"), described.get("window_s")
        if limit is None or not isinstance(window, int | float):
            return None
        return f"{limit}/{window:g}s"

    @property
    def key_id(self) -> str | None:
        return str(self.stamp["key_id"])

    async def handle(self, job: Job) -> list[Result]:
        """The job's records: its disconnect (or check) first, then any monitor deletions.
        None at all when its username resolves to an account an earlier run already did."""
        claimed: list[str] = []
        try:
            return await self._handle(job, claimed)
        finally:
            for key in claimed:  # queue mode: the claim of a resolved username ends here
                self.claims.release(key)

    async def _handle(self, job: Job, claimed: list[str]) -> list[Result]:
        started = time.monotonic()
        account: dict[str, Any] | None = None
        account_id = job.account_id
        monitors = (job.delete_monitors or self.delete_monitors) and not self.dry_run
        if account_id is None:
            resolved = await self._resolve(job, started)
            if isinstance(resolved, Result):
                return [resolved]
            account, account_id = resolved, str(resolved["id"])
            if not ID_PATTERN.fullmatch(account_id):  # the server's text, not a job's: checked
                error = f"{INVALID_SERVER_ID}: the listing gave {account_id[:40]!r}"
                return [self._result(job, started, outcome=Outcome.FAILED, error=error)]
            key = job_key(account_id, None, job.tenant)
            claim = self.claims.claim(key)
            if claim == "new":
                claimed.append(key)
            if claim == "done":
                return []
            if claim == "duplicate":
                return [self.duplicate(job, account_id)]
        elif self.precheck:
            # Not in the listing: confirm with a GET (read tier) before spending a DELETE slot.
            # Ids are never reused, so a 404 now is a 404 for ever.
            checked = await self._precheck(job, account_id, started)
            if isinstance(checked, Result):
                return [checked]
            account = checked
        elif monitors or job.username:
            # Learn the account's X user before it is gone: to match its monitors, and to
            # check that the id is the user the job names.
            found = await self._directory.find(account_id=account_id)
            account = found if isinstance(found, dict) else None
        else:
            account = self._directory.known(account_id)  # who it was, if a listing is held
        if (mismatch := self._mismatch(job, account, started)) is not None:
            return [mismatch]
        if self.dry_run:
            return [await self._check(job, account_id, started, account)]
        result = await self._disconnect(job, account_id, started, account)
        if not monitors:
            return [result]
        return [result, *await self._delete_monitors(job, account, result)]

    def _mismatch(self, job: Job, account: dict[str, Any] | None, started: float) -> Result | None:
        """A job naming an id and a username whose id, as the API lists it, belongs to
        another X user (a misaligned CSV): failed, no DELETE. Case does not matter."""
        if job.account_id is None or not job.username or not account:
            return None
        listed = str(account.get("xUsername") or "")
        if not listed or listed.lower() == job.username.lower():
            return None
        error = (
            f"{ACCOUNT_MISMATCH}: account {job.account_id} is @{listed}, the job names "
            f"@{job.username}; nothing sent"
        )
        log.warning("account_mismatch", listed=listed, named=job.username)
        op = Op.CHECK if self.dry_run else Op.DISCONNECT
        return self._result(
            job, started, outcome=Outcome.FAILED, error=error, attempts=0, op=op, **audit(account)
        )

    # Records without a request ---------------------------------------------------------------
    def invalid(self, item: Invalid) -> Result:
        return invalid_record(item, run_id=self.run_id, stamp=self.stamp)

    def duplicate(self, job: Job, account_id: str | None = None) -> Result:
        return Result.for_job(
            job,
            run_id=self.run_id,
            outcome=Outcome.DUPLICATE,
            account_id=account_id or job.account_id,
            error="the same account appears earlier in this run",
            **self.stamp,
        )

    def internal_error(self, job: Job, name: str) -> Result:
        return self.failed(job, f"internal_error: {name}")

    def failed(self, job: Job, error: str, http_status: int | None = None) -> Result:
        """A failed record for a job that sent nothing (more)."""
        return Result.for_job(
            job,
            run_id=self.run_id,
            outcome=Outcome.FAILED,
            error=error,
            http_status=http_status,
            **self.stamp,
        )

    # The requests ----------------------------------------------------------------------------
    def _result(self, job: Job, started: float, call: Call | None = None, **fields: Any) -> Result:
        if call is not None:
            fields.setdefault("attempts", call.attempts)
            if call.answer is not None:
                fields.setdefault("http_status", call.answer.status)
            elif call.error is not None:
                fields["outcome"] = Outcome.FAILED
                fields["error"] = describe(call.error, call.attempts)
                fields["http_status"] = getattr(call.error, "status", None)
        fields = {**self.stamp, "delete_limit": self._limit(), **fields}
        return Result.for_job(
            job,
            run_id=self.run_id,
            elapsed_ms=round((time.monotonic() - started) * 1000),
            **fields,
        )

    async def _disconnect(
        self, job: Job, account_id: str, started: float, account: dict[str, Any] | None
    ) -> Result:
        call = await self._call(partial(self._client.delete_account, account_id))
        if call.answer is not None:
            self._directory.forget(account_id)
        if call.answer is None or call.answer.status != 404:
            outcome = None if call.answer is None else Outcome.DISCONNECTED
            return self._result(
                job, started, call, account_id=account_id, outcome=outcome, **audit(account)
            )
        # 404 is success for us: the connection is gone, whoever removed it (maybe our own
        # earlier attempt whose answer was lost).
        seen = account is not None if self._directory.has_listing else None
        return self._gone(job, started, call, account_id, account, seen=seen, checked=False)

    def _gone(
        self,
        job: Job,
        started: float,
        call: Call,
        account_id: str,
        account: dict[str, Any] | None,
        *,
        seen: bool | None,
        checked: bool,
    ) -> Result:
        """already_gone; with --strict-missing, an id not connected when the run began (a
        mistyped id looks just like that) fails instead."""
        fields: dict[str, Any] = {"outcome": Outcome.ALREADY_GONE}
        if seen is False and self.strict_missing:
            fields = {"outcome": Outcome.FAILED, "error": NOT_CONNECTED}
        return self._result(
            job, started, call, account_id=account_id, checked=checked, seen_connected=seen,
            **fields, **audit(account),
        )  # fmt: skip

    async def _check(
        self, job: Job, account_id: str, started: float, account: dict[str, Any] | None
    ) -> Result:
        call = await self._call(partial(self._client.get_account, account_id))
        outcome = None
        if call.answer is not None:
            outcome = Outcome.MISSING if call.answer.status == 404 else Outcome.EXISTS
            if account is None and call.answer.status != 404 and isinstance(call.answer.body, dict):
                account = call.answer.body
        return self._result(
            job, started, call, account_id=account_id, outcome=outcome, op=Op.CHECK,
            **audit(account),
        )  # fmt: skip

    async def _precheck(
        self, job: Job, account_id: str, started: float
    ) -> dict[str, Any] | Result | None:
        """The listed account (None when the listing cannot tell), or the record that ends
        the job without a DELETE: already_gone, confirmed by GET /x/accounts/{id}."""
        listed = await self._directory.listed(account_id)
        if isinstance(listed, Call):
            if isinstance(listed.error, FATAL):  # the key is stopping: say why, send nothing
                return self._result(job, started, listed, account_id=account_id)
            return None  # the listing is unavailable: the DELETE itself will tell
        if listed is not None:
            return listed
        call = await self._call(partial(self._client.get_account, account_id))
        if call.answer is not None and call.answer.status == 404:
            return self._gone(job, started, call, account_id, None, seen=False, checked=True)
        if call.answer is None and isinstance(call.error, FATAL):
            return self._result(job, started, call, account_id=account_id)
        # Listed nowhere but there (a listing cut short), or the GET failed: the DELETE decides.
        return (
            call.answer.body
            if call.answer is not None and isinstance(call.answer.body, dict)
            else None
        )

    async def _resolve(self, job: Job, started: float) -> dict[str, Any] | Result:
        """The account of a username-only job, or the failed Result explaining why not."""
        found = await self._directory.find(username=job.username)
        if isinstance(found, Call):
            return self._result(job, started, found)
        if found is None:
            return self._result(
                job, started, outcome=Outcome.FAILED, error="unknown_username", attempts=0
            )
        return found

    async def _delete_monitors(
        self, job: Job, account: dict[str, Any] | None, disconnected: Result
    ) -> list[Result]:
        """After a done disconnect: delete each account monitor tracking that user (and, with
        --delete-monitors=all, each keyword monitor whose query names the user), one record
        each. The DELETEs share the key's DELETE budget with the disconnects."""
        if disconnected.outcome not in DONE:
            return []
        started = time.monotonic()
        account = account or {}
        x_user_id = account.get("xUserId")
        username = account.get("xUsername") or job.username
        if not x_user_id and not username:
            log.warning("monitors_unmatched", reason="account unknown and no username given")
            return []
        base: dict[str, Any] = {"op": Op.DELETE_MONITOR, "account_id": disconnected.account_id}
        results: list[Result] = []
        kinds: list[tuple[str, Any, Any]] = [
            (
                "account",
                partial(
                    self._directory.take_monitors,
                    x_user_id=str(x_user_id) if x_user_id else None,
                    username=username,
                ),
                self._client.delete_monitor,
            )
        ]
        if self.keyword_monitors and username:
            kinds.append(
                (
                    "keyword",
                    partial(self._directory.take_keyword_monitors, username=username),
                    self._client.delete_keyword_monitor,
                )
            )
        for kind, take, delete in kinds:
            monitors = await take()
            if isinstance(monitors, Call):
                results.append(self._result(job, started, monitors, monitor_kind=kind, **base))
                continue
            for monitor in monitors:
                monitor_id = str(monitor["id"])
                if not ID_PATTERN.fullmatch(monitor_id):  # never put into a URL as it came
                    error = f"{INVALID_SERVER_ID}: the listing gave {monitor_id[:40]!r}"
                    results.append(
                        self._result(
                            job,
                            started,
                            outcome=Outcome.FAILED,
                            error=error,
                            monitor_kind=kind,
                            **base,
                        )
                    )
                    continue
                call = await self._call(partial(delete, monitor_id))
                outcome, pending = None, False
                if call.answer is not None:
                    outcome, pending = monitor_deleted(call.answer)
                    if pending and self.wait_monitors:
                        pending = not await self._deletion_over(
                            monitor_id, keyword=kind == "keyword"
                        )
                results.append(
                    self._result(
                        job,
                        started,
                        call,
                        monitor_id=monitor_id,
                        monitor_kind=kind,
                        outcome=outcome,
                        pending=pending,
                        **base,
                    )
                )
        return results

    async def _deletion_over(self, monitor_id: str, *, keyword: bool) -> bool:
        """--wait-monitors: poll the monitor (read budget) until it answers 404, at most
        `wait_monitors` seconds. The answer's statusUrl names the same resource; it is not
        followed as given, so the key never goes to a host other than the API's."""
        assert self.wait_monitors is not None
        deadline = time.monotonic() + self.wait_monitors
        pause = 0.25
        while time.monotonic() < deadline:
            await anyio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            call = await self._call(partial(self._client.get_monitor, monitor_id, keyword=keyword))
            if call.answer is not None and call.answer.status == 404:
                return True
            if call.answer is None and isinstance(call.error, FATAL):
                return False
            pause = min(pause * 2, 5.0)
        log.warning("monitor_still_deleting", monitor_id=monitor_id, waited_s=self.wait_monitors)
        return False
