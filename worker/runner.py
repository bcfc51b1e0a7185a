"""The run: a fixed pool of workers pulls jobs from a source and records one result per job.

Structure: `concurrency` workers in one task group take turns reading the source under a lock
(back-pressure: nothing is read ahead of a free worker, so memory stays flat), plus a ticker
that fsyncs the result log every second. A failing job becomes a record, never an exception
that cancels its siblings.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
from structlog.contextvars import bind_contextvars, reset_contextvars

from worker.errors import AuthError
from worker.limiter import BudgetClosed
from worker.logs import get_logger
from worker.models import Invalid, Job, Op, Outcome, Result
from worker.operations import Operations
from worker.results import ResultSink
from worker.seen import SeenSet
from worker.sources import Item, JobSource
from worker.summary import Summary

log = get_logger()


class Runner:
    def __init__(
        self,
        ops: Operations,
        *,
        source: JobSource,
        sink: ResultSink,
        concurrency: int = 4,
        done_before: set[str] | frozenset[str] = frozenset(),
        dry_run: bool = False,
        delete_monitors: bool = False,
        limit: int | None = None,
        sync_before_settle: bool = False,
    ) -> None:
        self.ops = ops
        self.source = source
        self.sink = sink
        self.concurrency = concurrency
        self.dry_run = dry_run
        self.delete_monitors = delete_monitors
        self.limit = limit
        # Queue mode: a message is acknowledged only once its record is on disk.
        self._sync_before_settle = sync_before_settle
        self.summary = Summary(ops.run_id)
        self._done_before = done_before
        self._seen = SeenSet()
        self._batches: AsyncIterator[Sequence[Item]] | None = None
        self._ready: deque[Item] = deque()
        self._pull_lock = anyio.Lock(fast_acquire=True)
        self._pull_scope: anyio.CancelScope | None = None
        self._reading = True
        self._handed = 0
        self._work_scope: anyio.CancelScope | None = None

    @staticmethod
    def new_run_id() -> str:
        return uuid.uuid4().hex[:12]

    # Stopping -----------------------------------------------------------------------------
    def auth_failed(self, exc: AuthError) -> None:
        """401: the key is bad; send nothing more, let in-flight requests finish."""
        if self.summary.stopped is None:
            log.error("api_key_rejected", http_status=exc.status, error=exc.code)
            self.summary.stopped = "auth"
        self._stop_sending()

    def stop(self, grace: float) -> None:
        """A signal: stop reading, give in-flight requests `grace` seconds, then cancel."""
        if self.summary.stopped is None:
            self.summary.stopped = "signal"
        self._stop_sending()
        if self._work_scope is not None:
            deadline = anyio.current_time() + grace
            self._work_scope.deadline = min(self._work_scope.deadline, deadline)

    def _stop_sending(self) -> None:
        self._reading = False
        if self._pull_scope is not None:
            self._pull_scope.cancel()  # e.g. a worker waiting on a silent stdin
        self.ops.client.close_budgets()

    # Running ------------------------------------------------------------------------------
    async def run(self) -> Summary:
        started = time.monotonic()
        self._batches = self.source.batches()
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._sync_every_second)
                async with anyio.create_task_group() as work:
                    self._work_scope = work.cancel_scope
                    for _ in range(self.concurrency):
                        work.start_soon(self._work)
                outer.cancel_scope.cancel()
        finally:
            aclose = getattr(self._batches, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()  # closes the jobs file now, not at garbage collection
            self.sink.sync()
            self.summary.elapsed_s = time.monotonic() - started
            self.summary.sent = Counter(self.ops.client.sent)
            self.summary.retries = self.ops.call.retries
        return self.summary

    async def _sync_every_second(self) -> None:
        while True:
            await anyio.sleep(1.0)
            self.sink.sync()

    async def _next_job(self) -> Job | None:
        """The next job to send, or None when there is none. Workers take items in turn from
        the current batch (no await between taking and handling, so no lock is needed) and
        only one at a time reads the next batch. Invalid lines, duplicates and accounts done in
        earlier runs are settled on the way."""
        while self._reading:
            if not self._ready and not await self._read_batch():
                break
            if self._ready:
                item = self._ready.popleft()
                if isinstance(item, Invalid):
                    await self._settle(item, self._invalid(item))
                elif self.limit is not None and self._handed >= self.limit:
                    break
                elif item.key in self._done_before:
                    self.summary.skipped_done += 1
                    await self.source.settle(item, None)
                elif not self._seen.add(item.key):
                    await self._settle(item, self._duplicate(item))
                else:
                    self._handed += 1
                    return item
        self._reading = False
        return None

    async def _read_batch(self) -> bool:
        """Read the next batch into the queue; False when the source is exhausted or the run
        is stopping. Whoever waits on the lock finds the batch another worker read."""
        assert self._batches is not None
        async with self._pull_lock:
            if self._ready or not self._reading:
                return self._reading
            with anyio.CancelScope() as scope:
                self._pull_scope = scope
                batch = await anext(self._batches, None)
            self._pull_scope = None
            if scope.cancelled_caught or batch is None:
                return False
            self._ready.extend(batch)
            return True

    async def _work(self) -> None:
        while (job := await self._next_job()) is not None:
            finished = False
            tokens = bind_contextvars(
                source=job.source, account_id=job.account_id, username=job.username
            )
            try:
                results = await self._handle(job)
                for result in results:
                    self._record(result)
                if results and self._sync_before_settle:
                    self.sink.sync()
                await self.source.settle(job, results[0] if results else None)
                finished = True
            except BudgetClosed:
                pass  # the run is stopping; this job was not sent (again)
            finally:
                reset_contextvars(**tokens)
                # Stopped or cancelled before its record: no record, a rerun picks it up.
                self.summary.not_finished += not finished

    async def _handle(self, job: Job) -> list[Result]:
        """The job's records: its disconnect first, then any monitor deletions. None at all
        when its username resolves to an account an earlier run already did."""
        started = time.monotonic()
        account: dict[str, Any] | None = None
        account_id = job.account_id
        monitors = (job.delete_monitors or self.delete_monitors) and not self.dry_run
        if account_id is None:
            resolved = await self.ops.resolve(job, started)
            if isinstance(resolved, Result):
                return [resolved]
            account, account_id = resolved, str(resolved["id"])
            if account_id in self._done_before:
                self.summary.skipped_done += 1
                return []
            if not self._seen.add(account_id):
                return [self._duplicate(job, account_id=account_id)]
        elif monitors:
            # Learn the account's X user id before it is gone, to match its monitors.
            found = await self.ops.directory.find(account_id=account_id)
            account = found if isinstance(found, dict) else None
        if self.dry_run:
            return [await self.ops.check(job, account_id, started)]
        result = await self.ops.disconnect(job, account_id, started)
        if not monitors:
            return [result]
        return [result, *await self.ops.delete_monitors(job, account, result)]

    async def _settle(self, item: Job | Invalid, result: Result) -> None:
        self._record(result)
        if self._sync_before_settle:
            self.sink.sync()
        await self.source.settle(item, result)

    def _record(self, result: Result) -> None:
        self.sink.write(result)
        counts = self.summary.monitors if result.op is Op.DELETE_MONITOR else self.summary.outcomes
        counts[str(result.outcome)] += 1
        self.summary.attempts += result.attempts
        if result.outcome is Outcome.FAILED:
            log.warning("job_failed", error=result.error, http_status=result.http_status)

    def _invalid(self, item: Invalid) -> Result:
        log.warning("invalid_job", source=item.source, error=item.error)
        return Result(
            run_id=self.ops.run_id,
            source=item.source,
            job_id=item.job_id,
            account_id=item.account_id,
            outcome=item.outcome,
            error=item.error,
        )

    def _duplicate(self, job: Job, account_id: str | None = None) -> Result:
        return Result(
            run_id=self.ops.run_id,
            source=job.source,
            job_id=job.job_id,
            account_id=account_id or job.account_id,
            username=job.username,
            op=Op.DISCONNECT,
            outcome=Outcome.DUPLICATE,
            error="the same account appears earlier in this run",
        )


__all__ = ["Runner"]
