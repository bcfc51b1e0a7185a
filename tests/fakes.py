"""Stand-ins for the seams the runner and the budget see: a list source, a list sink, a job
handler with no network, a recording sleep and a fake clock. Unit tests use these; tests of
the whole run use the sandbox on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Self

import anyio

from worker.errors import BudgetClosed
from worker.models import Invalid, Job, Outcome, Result
from worker.run.claims import Claims
from worker.sources.base import Item


class FakeClock:
    """A clock that only moves when someone sleeps on it: budget tests run in microseconds."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(seconds, 0.0)
        await anyio.lowlevel.checkpoint()


class RecordingSleep:
    """A sleep that returns at once and remembers how long it was asked to wait."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await anyio.lowlevel.checkpoint()


class ListSource:
    """A JobSource over a list, `batch` items at a time; remembers what was settled."""

    name = "list"

    def __init__(self, items: Sequence[Item], *, batch: int = 3) -> None:
        self.items = list(items)
        self.batch = batch
        self.settled: list[tuple[Item, Result | None]] = []
        self.read = 0  # items handed to the runner so far
        self.skipped_done = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def batches(self) -> AsyncIterator[Sequence[Item]]:
        for start in range(0, len(self.items), self.batch):
            chunk = self.items[start : start + self.batch]
            self.read += len(chunk)
            yield chunk
            await anyio.lowlevel.checkpoint()

    async def settle(self, done: Sequence[tuple[Item, Result | None]]) -> None:
        self.settled.extend(done)

    def total(self) -> int | None:
        return len(self.items)

    async def keep_alive(self) -> None:
        return None


class ListSink:
    """A ResultSink that keeps the records in a list."""

    def __init__(self) -> None:
        self.results: list[Result] = []
        self.syncs = 0
        self.closed = False

    def write(self, result: Result) -> None:
        self.results.append(result)

    def sync(self) -> None:
        self.syncs += 1

    def close(self) -> None:
        self.closed = True


class FakeOps:
    """A job handler with no network: each job takes `hold` until `release` (if set), and is
    recorded `disconnected`; ids in `gone` resolve as done by an earlier run."""

    def __init__(
        self,
        *,
        done_before: frozenset[str] = frozenset(),
        hold: bool = False,
        broken: frozenset[str] = frozenset(),
    ) -> None:
        self.broken = broken  # ids whose handling raises, as a bug would
        self.run_id = "test-run"
        self.claims = Claims(done_before)
        self.handled: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.closed = False
        self.release = anyio.Event() if hold else None

    async def handle(self, job: Job) -> list[Result]:
        if self.closed:
            raise BudgetClosed
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.release is not None:
                await self.release.wait()
            else:
                await anyio.lowlevel.checkpoint()
            if self.closed:
                raise BudgetClosed
            if job.key in self.broken:
                raise KeyError(job.key)
            self.handled.append(job.key)
            return [
                Result(
                    run_id=self.run_id,
                    source=job.source,
                    account_id=job.account_id,
                    outcome=Outcome.DISCONNECTED,
                    attempts=1,
                )
            ]
        finally:
            self.in_flight -= 1

    def invalid(self, item: Invalid) -> Result:
        return Result(run_id=self.run_id, source=item.source, outcome=Outcome.INVALID)

    def duplicate(self, job: Job) -> Result:
        return Result(
            run_id=self.run_id,
            source=job.source,
            account_id=job.account_id,
            outcome=Outcome.DUPLICATE,
        )

    def internal_error(self, job: Job, name: str) -> Result:
        return Result(
            run_id=self.run_id,
            source=job.source,
            account_id=job.account_id,
            outcome=Outcome.FAILED,
            error=f"internal_error: {name}",
        )

    def close(self) -> None:
        self.closed = True
