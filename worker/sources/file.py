"""Jobs files (JSONL, CSV, text) and stdin, read as bytes and parsed a chunk at a time.

No input can raise out of here: each line is decoded on its own (strict UTF-8), and a line
that cannot be a job (not UTF-8, a stray control character, too long, a CSV quote that never
closes) becomes one Invalid naming `file:line`. Only `check()` refuses a whole file before
the run (exit 2): one that cannot be read, is not UTF-8 text (UTF-16, binary), or is a CSV
whose header names no usable column.

Regular files are read in a worker thread; pipes, FIFOs and terminals through the event loop
(asyncio's read pipe), so a silent producer never holds up a signal, and a line from a slow one
reaches a worker as soon as it arrives, not when a batch fills.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import os
import stat
import sys
from collections.abc import AsyncIterator, Callable, Container, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import anyio

from worker.errors import ConfigError
from worker.models import ID_PATTERN, Invalid, Result
from worker.sources.base import Item
from worker.sources.fair import FairReader
from worker.sources.parse import (
    MAX_LINE,
    csv_columns,
    is_skippable_text,
    parse_csv_row,
    parse_json_line,
    parse_text_line,
)

Format = Literal["jsonl", "csv", "text"]
CHUNK = 1 << 16
_BOM = codecs.BOM_UTF8
_FOREIGN_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# Control characters other than tab; DEL and the C1 range too.
_CONTROL = frozenset(chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]) - {"\t"}


def format_for(path: Path) -> Format | None:
    """The format a file name says; None when it says nothing (sniff the first line)."""
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if suffix in {".txt", ".text", ".ids"}:
        return "text"
    return None


def _csv_row(text: str) -> list[str]:
    """One line as a CSV row; csv.Error for a quote that never closes or another malformed
    quote (strict: nothing is silently repaired)."""
    return next(csv.reader([text], strict=True), [])


def sniff(first_line: str) -> Format:
    text = first_line.strip()
    if text.startswith(("{", '"')):
        return "jsonl"
    try:
        if any(c is not None for c in csv_columns(_csv_row(text))[:2]):
            return "csv"
    except csv.Error:
        pass
    return "text"


def control_character(text: str) -> str | None:
    """Where the first stray control character stands, e.g. 'U+000D at column 4'."""
    if _CONTROL.isdisjoint(text):
        return None
    column, char = next((i, c) for i, c in enumerate(text, 1) if c in _CONTROL)
    return f"U+{ord(char):04X} at column {column}"


class LineParser:
    """Bytes in, items out: feed chunks as they come, then `finish()`. Only \\n ends a line
    (so line numbers match `sed -n Np` and `wc -l`); a trailing \\r is dropped."""

    def __init__(
        self,
        name: str,
        fmt: Format | None,
        *,
        limit: int = MAX_LINE,
        done: Container[str] | None = None,
    ) -> None:
        self.name = name
        self._fmt = fmt
        self._limit = limit
        # A rerun's accounts done by earlier runs: a text line naming one is counted here and
        # dropped before a Job is built (most of a rerun's time over a long list).
        self._done = done
        self.skipped = 0
        # With `spans` (a list), each item's line as (offset, length, number) in the input,
        # in step with the items: where the fair source finds a job's line again.
        self.spans: list[tuple[int, int, int]] | None = None
        self._fed = 0  # bytes fed so far
        self._line_start = 0  # where the line being read began
        self._number = 0
        self._partial = bytearray()
        self._too_long = False
        self._parse: Callable[[str, str], Item] | None = None
        self.header_error: str | None = None

    def feed(self, chunk: bytes) -> list[Item]:
        items: list[Item] = []
        start = 0
        base = self._fed
        self._fed += len(chunk)
        while (end := chunk.find(b"\n", start)) >= 0:
            piece = chunk[start:end]
            start = end + 1
            begun, before = self._line_start, len(items)
            self._line_start = base + start
            if self._too_long or len(self._partial) + len(piece) > self._limit * 4:
                self._line_too_long(items)
            else:
                self._partial += piece
                self._line(bytes(self._partial), items)
                self._partial.clear()
            if self.spans is not None and len(items) > before:
                self.spans.append((begun, base + end - begun, self._number))
        rest = chunk[start:]
        if rest and not self._too_long:
            self._partial += rest
            # A line past the limit is never held whole: drop it now, say so at its end.
            if len(self._partial) > self._limit * 4:
                self._too_long = True
                self._partial.clear()
        return items

    def finish(self) -> list[Item]:
        """The last line, if the input did not end with a newline."""
        items: list[Item] = []
        if self._too_long:
            self._line_too_long(items)
        elif self._partial:
            self._line(bytes(self._partial), items)
            self._partial.clear()
        if self.spans is not None and items:
            self.spans.append((self._line_start, self._fed - self._line_start, self._number))
        return items

    def line_at(self, raw: bytes, number: int) -> Item | None:
        """Line `number` (from 1) of the input, read again: its item as it was the first time
        (None: blank or a comment). The format, and a CSV's header, are this parser's."""
        items: list[Item] = []
        self._number = number - 1
        self._line(raw, items)
        return items[0] if items else None

    @property
    def format(self) -> Callable[[str, str], Item] | None:
        """The line parser chosen (None until the first line that is not blank)."""
        return self._parse

    def _line_too_long(self, items: list[Item]) -> None:
        self._number += 1
        self._too_long = False
        self._partial.clear()
        items.append(Invalid(self._where(), f"line longer than {self._limit} characters"))

    def _where(self) -> str:
        return f"{self.name}:{self._number}"

    def _line(self, raw: bytes, items: list[Item]) -> None:
        self._number += 1
        if self._number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            items.append(
                Invalid(self._where(), f"not UTF-8 text (byte {exc.start + 1} of the line)")
            )
            return
        if len(text) > self._limit:
            items.append(Invalid(self._where(), f"line longer than {self._limit} characters"))
            return
        if is_skippable_text(text):
            return
        if (where := control_character(text)) is not None:
            items.append(Invalid(self._where(), f"a stray control character ({where})"))
            return
        if self.header_error is not None:
            items.append(Invalid(self._where(), self.header_error))
            return
        if self._parse is None:
            chosen = self._fmt or sniff(text)
            if chosen == "csv":
                self._csv_header(text, items)
                return
            self._parse = parse_json_line if chosen == "jsonl" else parse_text_line
        if self._done is not None and self._parse is parse_text_line:
            key = text.strip()  # an id's own job key (`models.job_key`)
            if key in self._done and ID_PATTERN.fullmatch(key):
                self.skipped += 1
                return
        items.append(self._parse(self._where(), text))

    def _csv_header(self, text: str, items: list[Item]) -> None:
        try:
            columns = csv_columns(_csv_row(text))
        except csv.Error:
            columns = (None, None, None, None, None)
        if columns[0] is None and columns[1] is None:
            self.header_error = (
                f"{self._where()}: the CSV header must name an account_id or username column"
            )
            items.append(Invalid(self._where(), self.header_error))
            return

        def parse(where: str, line: str) -> Item:
            try:
                row = _csv_row(line)
            except csv.Error as exc:
                return Invalid(
                    where, f"malformed CSV ({exc}): a quoted field must close on its line"
                )
            return parse_csv_row(where, row, columns)

        self._parse = parse


def parse_bytes(data: bytes, name: str, fmt: Format | None, *, limit: int = MAX_LINE) -> list[Item]:
    """Every item of a whole input (for tests and small inputs)."""
    parser = LineParser(name, fmt, limit=limit)
    return parser.feed(data) + parser.finish()


class FileSource:
    """A jobs file, or stdin for None. The format comes from the file name, else from the
    first line. Memory stays flat: at most one chunk's items are read ahead."""

    def __init__(
        self,
        path: Path | None,
        *,
        fmt: Format | None = None,
        done: Container[str] | None = None,
        fair: bool = False,
    ) -> None:
        self.path = path
        self._fair = fair  # several keys: a regular file's tenants read in turns (`fair`)
        self.name = str(path) if path is not None else "stdin"
        self._fmt = fmt if fmt is not None or path is None else format_for(path)
        self._parser = LineParser(self.name, self._fmt, done=done)

    @property
    def skipped_done(self) -> int:
        """Lines read so far that named an account done by an earlier run (dropped here)."""
        return self._parser.skipped

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def keep_alive(self) -> None:
        return None

    def check(self) -> None:
        """Refuse (ConfigError, before any request) a file that cannot be read, is not UTF-8
        text, or is a CSV without a usable header. Reads only the start of the file."""
        if self.path is None:
            return
        try:
            mode = self.path.stat().st_mode
            if stat.S_ISDIR(mode):
                raise ConfigError(f"jobs file {self.name} is a directory")
            if not stat.S_ISREG(mode):
                return  # a FIFO or a device: read as it comes, like stdin
            with self.path.open("rb") as f:
                head = f.read(CHUNK)
                parser = LineParser(self.name, self._fmt)
                items = parser.feed(head)
                while not items and parser.header_error is None and (more := f.read(CHUNK)):
                    items = parser.feed(more)
        except OSError as exc:
            raise ConfigError(f"cannot read jobs file {self.name}: {exc.strerror}") from exc
        if head.startswith(_FOREIGN_BOMS):
            raise ConfigError(
                f"jobs file {self.name} is not UTF-8 text (it starts with a UTF-16/32 byte "
                "order mark): convert it, e.g. iconv -f UTF-16 -t UTF-8"
            )
        if b"\0" in head:
            raise ConfigError(
                f"jobs file {self.name} is not UTF-8 text (it holds NUL bytes: UTF-16 or binary)"
            )
        if parser.header_error is not None:
            raise ConfigError(parser.header_error)

    def total(self) -> int | None:
        """Number of lines of a regular file, a cheap upper bound of jobs for the progress
        bar (None: stdin or a pipe)."""
        if self.path is None or not self.path.is_file():
            return None
        count = 0
        with self.path.open("rb") as raw:
            while chunk := raw.read(1 << 20):
                count += chunk.count(b"\n")
        return count

    async def batches(self) -> AsyncIterator[Sequence[Item]]:
        fd, own = await self._open()
        try:
            if self._fair and stat.S_ISREG(os.fstat(fd).st_mode):
                async for items in FairReader(fd, self._parser, chunk=CHUNK).batches():
                    yield items
                return
            parser = self._parser
            async for chunk in self._chunks(fd):
                # Parsing a chunk is CPU work: off the event loop, as the reading of files is.
                if items := await anyio.to_thread.run_sync(parser.feed, chunk):
                    yield items
            if items := parser.finish():
                yield items
        finally:
            if own:
                os.close(fd)

    async def _open(self) -> tuple[int, bool]:
        """The descriptor to read, and whether it is ours to close (stdin is not)."""
        if self.path is None:
            return sys.stdin.fileno(), False
        # Opening a FIFO waits for its writer: in a thread, abandoned if the run stops.
        fd = await anyio.to_thread.run_sync(os.open, self.path, os.O_RDONLY, abandon_on_cancel=True)
        return fd, True

    async def _chunks(self, fd: int) -> AsyncIterator[bytes]:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            while chunk := await anyio.to_thread.run_sync(os.read, fd, CHUNK):
                yield chunk
        else:
            async for chunk in _pipe_chunks(fd):
                yield chunk

    async def settle(self, done: Sequence[tuple[Item, Result | None]]) -> None:
        return None


async def _pipe_chunks(fd: int) -> AsyncIterator[bytes]:
    """A pipe, FIFO or terminal read through the event loop: cancellable at any moment."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CHUNK * 4)
    pipe = os.fdopen(os.dup(fd), "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        while chunk := await reader.read(CHUNK):
            yield chunk
    finally:
        transport.close()
        os.set_blocking(fd, True)  # the descriptor is shared with whoever else holds stdin
