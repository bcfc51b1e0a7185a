"""A jobs file read fair across tenants (--keys): indexed once, then read back in turns.

Read in order, a file grouped by tenant (an export sorted by client, the usual shape) hands
the runner one tenant's block after another: with --read-ahead 10,000 and tenants of 20 jobs,
the 501st tenant waits until the first 500 are nearly done, however idle its own budget.
For a regular file in a format that names tenants (JSONL, CSV), the first pass parses every
line, hands over at once what spends nothing (invalid lines), and keeps where each job's line
is, per tenant; the second reads the jobs back in turns: one job of each tenant per turn,
tenants in the order the file first names them, each tenant's jobs in file order. Every line
keeps its `file:line`, and every line is one item, as read in order.

Memory: 16 bytes a job line for the index (a million jobs: 16 MB), and up to `_RUN` lines
buffered per tenant while its jobs are read back. Stdin, pipes and text files (no tenants)
are read in order.
"""

from __future__ import annotations

import os
from array import array
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from worker.models import Invalid, Job
from worker.sources.base import Item
from worker.sources.parse import parse_text_line


class LineParser(Protocol):
    """What the reader needs of `file.LineParser` (it parses; this only places lines)."""

    name: str
    spans: list[tuple[int, int, int]] | None

    @property
    def format(self) -> Callable[[str, str], Item] | None: ...

    def feed(self, chunk: bytes) -> list[Item]: ...

    def finish(self) -> list[Item]: ...

    def line_at(self, raw: bytes, number: int) -> Item | None: ...


_RUN = 64  # lines of one tenant read back with one pread, at most
_RUN_BYTES = 1 << 16
_BATCH = 512  # items handed to the runner at a time (whole turns: more with more tenants)


@dataclass(slots=True)
class _Lines:
    """Where one tenant's job lines are, and how far its turns have read."""

    offsets: array[int] = field(default_factory=lambda: array("Q"))
    lengths: array[int] = field(default_factory=lambda: array("I"))
    numbers: array[int] = field(default_factory=lambda: array("I"))
    taken: int = 0  # lines read back so far
    ready: deque[tuple[bytes, int]] = field(default_factory=deque)  # read, not yet handed

    def add(self, offset: int, length: int, number: int) -> None:
        self.offsets.append(offset)
        self.lengths.append(length)
        self.numbers.append(number)

    def left(self) -> bool:
        return bool(self.ready) or self.taken < len(self.offsets)

    def refill(self, fd: int) -> None:
        """The next run of lines that lie one after another in the file: one pread."""
        start = self.taken
        end, size = start, 0
        while end < len(self.offsets) and end - start < _RUN:
            if (
                end > start
                and self.offsets[end] != self.offsets[end - 1] + self.lengths[end - 1] + 1
            ):
                break
            if end > start and size + self.lengths[end] + 1 > _RUN_BYTES:
                break
            size += self.lengths[end] + 1
            end += 1
        data = os.pread(fd, self.offsets[end - 1] + self.lengths[end - 1] - self.offsets[start],
                        self.offsets[start])  # fmt: skip
        at = 0
        for i in range(start, end):
            self.ready.append((data[at : at + self.lengths[i]], self.numbers[i]))
            at += self.lengths[i] + 1
        self.taken = end


class FairReader:
    """The two passes over one open regular file (`fd`), parsed by `parser`."""

    def __init__(self, fd: int, parser: LineParser, *, chunk: int) -> None:
        self._fd = fd
        self._chunk = chunk
        self._parser = parser
        parser.spans = []
        self._tenants: dict[str, _Lines] = {}
        self._turn: list[_Lines] = []

    async def batches(self) -> AsyncIterator[Sequence[Item]]:
        fd, parser = self._fd, self._parser
        while chunk := await anyio.to_thread.run_sync(os.read, fd, self._chunk):
            # Parsing is CPU work: off the event loop, as the reading is.
            if items := await anyio.to_thread.run_sync(self._feed, chunk):
                yield items
            if parser.format is parse_text_line:
                # No tenants in a text file: the rest is read in order.
                parser.spans = None
                while chunk := await anyio.to_thread.run_sync(os.read, fd, self._chunk):
                    if items := await anyio.to_thread.run_sync(parser.feed, chunk):
                        yield items
                break
        if items := self._index(parser.finish()):
            yield items
        self._turn = list(self._tenants.values())
        while self._turn:
            yield await anyio.to_thread.run_sync(self._turns)

    def _feed(self, chunk: bytes) -> list[Item]:
        return self._index(self._parser.feed(chunk))

    def _index(self, items: list[Item]) -> list[Item]:
        """Pass 1: jobs are placed in their tenant's index; what is left is handed over."""
        spans = self._parser.spans
        if spans is None or self._parser.format is parse_text_line:
            return items
        now: list[Item] = []
        for item, (offset, length, number) in zip(items, spans, strict=True):
            if isinstance(item, Job):
                lines = self._tenants.get(item.tenant or "")
                if lines is None:
                    lines = self._tenants[item.tenant or ""] = _Lines()
                lines.add(offset, length, number)
            else:
                now.append(item)
        spans.clear()
        return now

    def _turns(self) -> list[Item]:
        """Pass 2: whole turns, one job of each tenant with jobs left, until a batch is full."""
        out: list[Item] = []
        while self._turn and len(out) < _BATCH:
            for lines in self._turn:
                if not lines.ready:
                    lines.refill(self._fd)
                raw, number = lines.ready.popleft()
                item = self._parser.line_at(raw, number)
                if item is None:  # blank now: the file changed since it was indexed
                    where = f"{self._parser.name}:{number}"
                    item = Invalid(where, "the line changed while the run was reading the file")
                out.append(item)
            self._turn = [lines for lines in self._turn if lines.left()]
        return out


__all__ = ["FairReader"]
