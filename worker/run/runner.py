"""The run: a fixed pool of workers pulls jobs from a source and records one result per job.

Structure: `concurrency` workers in one task group take turns reading the source under a lock
(back-pressure: nothing is read ahead of a free worker, so memory stays flat), plus a ticker
that fsyncs the result log every second (`sync_every`) and, in queue mode, the group
committer (one fsync and one settle call for every job finished since the last commit).
A failing job becomes a record, never an exception that cancels its siblings.
"""

from __future__ import annotations

import errno
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import anyio
from structlog.contextvars import bind_contextvars, reset_contextvars

from worker.api.client import PARKABLE, Parkable
from worker.errors import AuthError, BudgetClosed, NoSlot, TlsError
from worker.failpoint import failpoint
from worker.logs import get_logger
from worker.models import Invalid, Job, Op, Outcome, Result
from worker.results.sink import ResultSink
from worker.run.claims import Claims
from worker.run.ring import Ring
from worker.run.summary import Stop, Summary
from worker.sources.base import Item, JobSource

log = get_logger()
COMMIT_CAP = 1000  # finished items waiting for the group commit before workers wait too
COMMIT_GRACE = 2.0  # seconds the last commit gets after the grace deadline


class Handler(Protocol):
    """What the runner needs of the per-job work (`worker.run.operations.Operations`)."""

    run_id: str
    claims: Claims

    async def handle(self, job: Job) -> list[Result]:
        """The job's records; none when it turns out done by an earlier run."""
        ...

    def invalid(self, item: Invalid) -> Result: ...
    def duplicate(self, job: Job) -> Result: ...
    def internal_error(self, job: Job, name: str) -> Result: ...

    def close(self) -> None:
        """Start no more requests."""


class Runner:
    def __init__(
        self,
        ops: Handler,
        *,
        source: JobSource,
        sink: ResultSink,
        concurrency: int = 4,
        limit: int | None = None,
        sync_before_settle: bool = False,
        grace: float = 30.0,
        ring: Ring | None = None,
        read_ahead: int = 10_000,
        shared_source: bool = False,
        sync_every: float = 1.0,
    ) -> None:
        self.ops = ops
        self.source = source
        self.sink = sink
        self.concurrency = concurrency
        self.limit = limit
        self.grace = grace
        self._sync_every = sync_every  # seconds between two fsyncs of the result log
        # Queue mode: a message is acknowledged only once its record is on disk.
        self._sync_before_settle = sync_before_settle
        # Group commit (queue mode): finished items waiting for their fsync and settle.
        self._commits: list[tuple[Item, Result | None]] = []
        self._commit_wake = anyio.Event()
        self._commit_room = anyio.Event()
        self._closing = False
        self._commit_scope: anyio.CancelScope | None = None
        self.summary = Summary(ops.run_id)
        self._batches: AsyncIterator[Sequence[Item]] | None = None
        self._ready: deque[Item] = deque()
        self._pull_lock = anyio.Lock(fast_acquire=True)
        self._pull_scope: anyio.CancelScope | None = None
        self._reading = True
        self._handed = 0
        self._work_scope: anyio.CancelScope | None = None
        # Several keys: jobs wait in per-tenant queues (at most `read_ahead` of them), and
        # workers take them round robin from the tenants that can send now.
        self._ring = ring
        self._read_ahead = read_ahead
        # A queue is shared with other consumers: what one reads ahead, no other can take.
        # So a consumer reads more only when its work runs short: few jobs left, or a third
        # of its tenants waiting for their budgets (its view grows too narrow to keep its
        # workers busy), not whenever there is room.
        self._shared_source = shared_source
        self._source_done = False
        self._exhausted = False  # the source said it has no more (not: the run stopped)
        self._skipped_by_source = 0
        self._reads = 0  # batches read into the tenants' queues
        self._news = anyio.Event()  # a job was read or parked back, or the run is stopping

    @staticmethod
    def new_run_id() -> str:
        return uuid.uuid4().hex[:12]

    # Stopping -----------------------------------------------------------------------------
    def key_failed(self, exc: AuthError | TlsError) -> None:
        """401 or an unverifiable certificate: every request with the key would fail the same
        way; send nothing more, let in-flight requests finish."""
        if self.summary.stopped is None:
            if isinstance(exc, AuthError):
                log.error("api_key_rejected", http_status=exc.status, error=exc.code)
                self.summary.stopped = Stop.AUTH
            else:
                log.error("tls_verification_failed", error=str(exc))
                self.summary.stopped = Stop.TLS
        self._stop_sending()

    def write_failed(self, exc: OSError) -> None:
        """The result log cannot be written: stop sending at once (every answer now risks
        going unrecorded), let in-flight requests finish within the grace, write what we can."""
        if self.summary.stopped in (None, Stop.SIGNAL):
            log.error(
                "results_write_failed",
                errno=errno.errorcode.get(exc.errno or 0, str(exc.errno)),
                error=exc.strerror or str(exc),
                advice="the result log could not be written; free space and rerun: accounts "
                "deleted but not recorded will come back as already_gone",
            )
            self.summary.stopped = Stop.WRITE
        self._stop_sending()
        self._cut_after(self.grace)

    def stop(self, grace: float) -> None:
        """A signal: stop reading, give in-flight requests `grace` seconds, then cancel."""
        if self.summary.stopped is None:
            self.summary.stopped = Stop.SIGNAL
        self._stop_sending()
        self._cut_after(grace)

    def _cut_after(self, grace: float) -> None:
        deadline = anyio.current_time() + grace
        if self._work_scope is not None:
            self._work_scope.deadline = min(self._work_scope.deadline, deadline)
        if self._commit_scope is not None:  # what finished at the deadline still gets acked
            self._commit_scope.deadline = min(self._commit_scope.deadline, deadline + COMMIT_GRACE)

    def _stop_sending(self) -> None:
        self._reading = False
        self._news.set()
        if self._pull_scope is not None:
            self._pull_scope.cancel()  # e.g. a worker waiting on a silent stdin
        self.ops.close()

    # Running ------------------------------------------------------------------------------
    async def run(self) -> Summary:
        started = time.monotonic()
        self._batches = self.source.batches()
        try:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._sync_every_second)
                async with anyio.create_task_group() as commit:
                    self._commit_scope = commit.cancel_scope
                    if self._sync_before_settle:
                        commit.start_soon(self._commit_loop)
                    async with anyio.create_task_group() as work:
                        self._work_scope = work.cancel_scope
                        for _ in range(self.concurrency):
                            work.start_soon(self._work)
                    self._closing = True  # the committer settles what is left, then ends
                    self._commit_wake.set()
                outer.cancel_scope.cancel()
        finally:
            aclose = getattr(self._batches, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()  # closes the jobs file now, not at garbage collection
            self._sync()
            if self._ring is not None:  # read ahead, never handed out: a rerun sends them
                self.summary.not_finished += self._ring.queued
            self.summary.elapsed_s = time.monotonic() - started
            # Stopped before the end of a file: jobs nobody has read yet remain (a rerun
            # sends them); a stream has no end to reach.
            self.summary.unread_remain = not self._exhausted and not self._shared_source
            self._check_accounts()
        return self.summary

    def _check_accounts(self) -> None:
        """Every job read ends recorded, skipped as done, or counted not finished: a run never
        reports success with fewer records than jobs it read (a bug would, silently)."""
        s = self.summary
        accounted = sum(s.outcomes.values()) + s.skipped_done + s.not_finished
        if s.read > accounted and s.stopped is None:
            log.error("jobs_unaccounted", read=s.read, accounted=accounted)
            s.stopped = Stop.INTERNAL

    async def _sync_every_second(self) -> None:
        while True:
            await anyio.sleep(self._sync_every)
            self._sync()

    def _sync(self) -> bool:
        try:
            self.sink.sync()
        except OSError as exc:
            self.write_failed(exc)
            return False
        return True

    async def _commit_loop(self) -> None:
        """Group commit (queue mode): records of finished jobs gather while the previous
        commit runs; one fsync in a worker thread (never on the event loop) makes them all
        durable, then one call settles them all at the source (one Redis pipeline). A message
        is thus acked only after its record is on disk, and workers never wait for either:
        they go on to the next job unless `COMMIT_CAP` settles are already waiting."""
        while self._commits or not self._closing:
            if not self._commits:
                self._commit_wake = anyio.Event()
                await self._commit_wake.wait()
                continue
            batch, self._commits = self._commits, []
            self._commit_room.set()
            self._commit_room = anyio.Event()
            if any(result is not None for _, result in batch):
                failpoint("commit_before_fsync")
                try:
                    await anyio.to_thread.run_sync(self.sink.sync)
                except OSError as exc:
                    self.summary.not_finished += len(batch)  # written, not durable: not acked
                    self.write_failed(exc)
                    self._closing = True  # nothing more is acked; no worker waits for room
                    self._commit_room.set()
                    return
            failpoint("commit_before_ack")
            try:
                await self.source.settle(batch)
            except BaseException:
                self.summary.not_finished += len(batch)  # recorded, not acked: redelivered
                raise

    async def _next_tenant_job(self) -> Job | None:
        """Several keys: the next job of the next tenant (round robin) whose budget can send
        now. Reading ahead fills the tenants' queues up to --read-ahead jobs, so a stream
        whose head is all one cooling key still feeds the others; when no tenant can send,
        the worker sleeps until the first parked one may, or until news."""
        ring = self._ring
        assert ring is not None
        while self._reading:
            if self.limit is not None and self._handed >= self.limit:
                break
            room = self._read_ahead - ring.queued
            wanted = (
                ring.queued < 2 * self.concurrency or ring.ready() <= 2 * ring.parked()
                if self._shared_source
                else room >= self._read_ahead // 4
            )
            if not self._source_done and room > 0 and wanted and not self._pull_lock.locked():
                # A file: room for more is read now, not only when no tenant can send, so
                # tenants beyond the read-ahead join the rotation as soon as there is room.
                await self._read_into_ring()
            job = ring.take(anyio.current_time())
            if job is not None:
                self._handed += 1
                return job
            if not self._source_done and ring.queued < self._read_ahead:
                await self._read_into_ring(self._reads)
                continue
            if self._source_done and ring.queued == 0:
                return None  # whatever is parked back later has a worker already
            news, ready = self._news, ring.next_ready()
            delay = max(ready - anyio.current_time(), 0.0) if ready is not None else 1.0
            with anyio.move_on_after(delay):
                await news.wait()
            if self._news is news and news.is_set():
                self._news = anyio.Event()
        self._reading = False
        return None

    async def _read_into_ring(self, seen: int | None = None) -> None:
        """Read the next batch and route each item: invalid lines, done and duplicate
        accounts and unknown tenants are settled at once; jobs join their tenant's queue.
        `seen`: the reads counted when this worker found nothing to take; if another worker
        read meanwhile, that read was for it too."""
        ring = self._ring
        assert ring is not None
        async with self._pull_lock:
            if self._source_done or not self._reading or ring.queued >= self._read_ahead:
                return
            if seen is not None and seen != self._reads:
                return
            batch = await self._pull()
            self._reads += 1
            if batch is None:
                self._source_done = True  # exhausted (or the run is stopping: no matter)
                self._news.set()
                return
            settle: list[tuple[Item, list[Result]]] = []
            now = anyio.current_time()
            self.summary.read += len(batch)
            for item in batch:
                if isinstance(item, Invalid):
                    settle.append((item, [self.ops.invalid(item)]))
                    continue
                tenant = ring.tenants.tenant(item)
                if tenant is None:
                    settle.append((item, [ring.tenants.unknown(item)]))
                elif (records := self._unclaimed(item)) is not None:
                    settle.append((item, records))
                else:
                    ring.put(tenant, item, now)
            self._announce()
        for item, results in settle:
            await self._settle(item, results)

    def _park(self, job: Job, seconds: float) -> None:
        """The job found no slot for its key: back to its tenant's queue, the tenant parked."""
        assert self._ring is not None
        tenant = self._ring.tenants.tenant(job)
        if tenant is None:  # its key file went away meanwhile: recorded as unknown next time
            tenant = self._ring.tenants.tenants[job.tenant or ""]
        self._handed -= 1
        self._ring.park(tenant, job, anyio.current_time() + seconds)
        self._announce()

    def _announce(self) -> None:
        """Wake the workers sleeping for news (a job read or parked back)."""
        self._news.set()
        self._news = anyio.Event()

    def _unclaimed(self, job: Job) -> list[Result] | None:
        """None when the job is this run's to send; else what settles it without a request:
        nothing (done by an earlier run) or its duplicate record."""
        claim = self.ops.claims.claim(job.key)
        if claim == "done":
            return []
        if claim == "duplicate":
            return [self.ops.duplicate(job)]
        return None

    async def _pull(self) -> Sequence[Item] | None:
        """The source's next batch, under the pull lock (None: exhausted, or a stop cancelled
        the read)."""
        assert self._batches is not None
        batch = None
        with anyio.CancelScope() as scope:
            self._pull_scope = scope
            batch = await anext(self._batches, None)
        self._pull_scope = None
        # Lines the source dropped as done by an earlier run: read, and skipped.
        if (skipped := self.source.skipped_done - self._skipped_by_source) > 0:
            self._skipped_by_source += skipped
            self.summary.read += skipped
            self.summary.skipped_done += skipped
        if batch is None and not scope.cancelled_caught:
            self._exhausted = True
        return None if scope.cancelled_caught else batch

    async def _next_job(self) -> Job | None:
        """The next job to send, or None when there is none. Workers take items in turn from
        the current batch (no await between taking and handling, so no lock is needed) and
        only one at a time reads the next batch. Invalid lines, duplicates and accounts done in
        earlier runs are settled on the way."""
        while self._reading:
            if not self._ready and not await self._read_batch():
                break
            if self._ready:
                item = self._ready[0]
                limited = self.limit is not None and self._handed >= self.limit
                if limited and isinstance(item, Job) and item.tenant is None:
                    break  # left unread: a rerun takes it
                self._ready.popleft()
                self.summary.read += 1
                if isinstance(item, Invalid):
                    await self._settle(item, [self.ops.invalid(item)])
                    continue
                if item.tenant is not None:  # a tenant's job, and this run has one key
                    error = f"unknown tenant {item.tenant} (this run has no --keys)"
                    invalid = Invalid(
                        item.source, error, item.job_id, account_id=item.account_id,
                        tenant=item.tenant,
                    )  # fmt: skip
                    await self._settle(item, [self.ops.invalid(invalid)])
                    continue
                if (records := self._unclaimed(item)) is not None:
                    await self._settle(item, records)
                else:
                    self._handed += 1
                    return item
        self._reading = False
        return None

    async def _read_batch(self) -> bool:
        """Read the next batch into the queue; False when the source is exhausted or the run
        is stopping. Whoever waits on the lock finds the batch another worker read."""
        async with self._pull_lock:
            if self._ready or not self._reading:
                return self._reading
            batch = await self._pull()
            if batch is None:
                return False
            self._ready.extend(batch)
            return True

    async def _work(self) -> None:
        tenants = self._ring is not None
        next_job = self._next_tenant_job if tenants else self._next_job
        while (job := await next_job()) is not None:
            finished = False
            tokens = bind_contextvars(
                source=job.source, account_id=job.account_id, username=job.username
            )
            parkable = PARKABLE.set(Parkable()) if tenants else None
            try:
                finished = await self._settle(job, await self._handle(job))
            except NoSlot as exc:
                finished = True  # not finished either: back in its tenant's queue
                self._park(job, exc.seconds)
            except BudgetClosed:
                pass  # the run is stopping; this job was not sent (again)
            finally:
                if parkable is not None:
                    PARKABLE.reset(parkable)
                self.ops.claims.release(job.key)  # queue mode: the account may come again
                reset_contextvars(**tokens)
                # Stopped or cancelled before its record: no record, a rerun picks it up.
                self.summary.not_finished += not finished

    async def _handle(self, job: Job) -> list[Result]:
        """The job's records. A bug met in one job (anything but a stop) becomes that job's
        failed record, never an exception that cancels its siblings."""
        try:
            return await self.ops.handle(job)
        except (BudgetClosed, NoSlot):
            raise
        except Exception as exc:
            name = type(exc).__name__
            log.error("job_internal_error", error=f"{name}: {exc}")
            log.debug("job_internal_error_traceback", exc_info=True)
            return [self.ops.internal_error(job, name)]

    async def _settle(self, item: Item, results: list[Result]) -> bool:
        """Record the item's results (none: done by an earlier run), then tell the source
        (queue mode: through the group commit, after an fsync). False when a record could
        not be written: the item is not settled (a queue message stays pending), and a rerun
        picks it up."""
        if not results:
            self.summary.skipped_done += 1
        for result in results:
            if not self._record(result):
                return False
        done = (item, results[0] if results else None)
        if not self._sync_before_settle:
            await self.source.settle([done])
            return True
        self._commits.append(done)
        self._commit_wake.set()
        while len(self._commits) >= COMMIT_CAP and not self._closing:
            await self._commit_room.wait()  # back-pressure: the committer is behind
        return self.summary.stopped is not Stop.WRITE

    def _record(self, result: Result) -> bool:
        try:
            self.sink.write(result)
        except OSError as exc:
            self.write_failed(exc)
            return False
        counts = self.summary.monitors if result.op is Op.DELETE_MONITOR else self.summary.outcomes
        counts[str(result.outcome)] += 1
        if self._ring is not None and result.op is not Op.DELETE_MONITOR:
            self.summary.by_tenant.setdefault(result.tenant or "", Counter())[
                str(result.outcome)
            ] += 1
        self.summary.attempts += result.attempts
        if result.seen_connected is False:
            self.summary.not_connected += 1
        if result.outcome is Outcome.FAILED:
            log.warning("job_failed", error=result.error, http_status=result.http_status)
        return True


__all__ = ["Runner"]
