"""The JobSource protocol: where jobs come from. The runner knows only this."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Protocol, Self

from worker.models import Invalid, Job, Result

Item = Job | Invalid


class JobSource(Protocol):
    """Jobs in order, a bounded batch at a time, and a way to say each one is recorded."""

    name: str

    @property
    def skipped_done(self) -> int:
        """Items read so far that the source dropped, before a job was built, as done by an
        earlier run (the runner counts them read and skipped)."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def batches(self) -> AsyncIterator[Sequence[Item]]:
        """Items in order, a batch at a time (a batch is bounded: it is all that is read
        ahead of the workers)."""
        ...

    async def settle(self, done: Sequence[tuple[Item, Result | None]]) -> None:
        """Called once these items' records are durably written, each with its first record
        (None: skipped as already done); a queue acknowledges them."""

    def total(self) -> int | None:
        """An upper bound of the items to come, for the progress view (None: unknown)."""
        ...

    async def keep_alive(self) -> None:
        """Whatever the source must do beside reading while the run lasts (returns at once
        when there is nothing; cancelled at the end of the run)."""
