"""Jobs files (JSONL, CSV, text) and stdin, streamed in batches off the event loop."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Literal, Self, TextIO

import anyio

from worker.errors import ConfigError
from worker.models import Invalid, Result
from worker.sources.base import Item
from worker.sources.parse import (
    MAX_LINE,
    csv_columns,
    is_skippable_text,
    parse_csv_row,
    parse_json_line,
    parse_text_line,
)

Format = Literal["jsonl", "csv", "text"]
BATCH = 512


def format_for(path: Path) -> Format:
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    return "text"


def sniff(first_line: str) -> Format:
    text = first_line.strip().lstrip("\ufeff")
    if text.startswith(("{", '"')):
        return "jsonl"
    if any(c is not None for c in csv_columns(next(csv.reader([text])))[:2]):
        return "csv"
    return "text"


def iter_lines(stream: TextIO, limit: int = MAX_LINE) -> Iterator[tuple[int, str | None]]:
    """(line number, text) per line; text is None for a line over `limit` characters, whose
    rest is skipped without ever being held in memory."""
    number = 0
    while line := stream.readline(limit + 1):
        number += 1
        if len(line) > limit and not line.endswith("\n"):
            while (rest := stream.readline(limit + 1)) and not rest.endswith("\n"):
                pass
            yield number, None
            continue
        yield number, line.rstrip("\r\n")


def parse_stream(
    stream: TextIO, name: str, fmt: Format | None, *, limit: int = MAX_LINE
) -> Iterator[Item]:
    """Every job line of `stream` as a Job or an Invalid, in order, lazily."""
    lines = iter_lines(stream, limit)
    parse: Callable[[str, str], Item] | None = None
    for number, text in lines:
        where = f"{name}:{number}"
        if text is None:
            yield Invalid(where, f"line longer than {limit} characters")
            continue
        if is_skippable_text(text):
            continue
        if parse is None:
            chosen = fmt or sniff(text)
            if chosen == "csv":
                columns = csv_columns(next(csv.reader([text]), []))
                if columns[0] is None and columns[1] is None:
                    raise ConfigError(
                        f"{where}: the CSV header must name an account_id or username column"
                    )
                parse = _csv_parser(columns)
                continue
            parse = parse_json_line if chosen == "jsonl" else parse_text_line
        yield parse(where, text)


def _csv_parser(
    columns: tuple[int | None, int | None, int | None, int | None],
) -> Callable[[str, str], Item]:
    def parse(where: str, text: str) -> Item:
        row = next(csv.reader([text]), [])
        return parse_csv_row(where, row, columns)

    return parse


class FileSource:
    """A jobs file, or stdin for `-`. Reading happens in a worker thread, a batch at a time,
    so a slow pipe never blocks the event loop and memory stays flat."""

    def __init__(self, path: Path | None, *, fmt: Format | None = None) -> None:
        self.path = path
        self.name = str(path) if path is not None else "stdin"
        self._fmt = fmt if fmt is not None or path is None else format_for(path)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def keep_alive(self) -> None:
        return None

    def check(self) -> None:
        """Fail early (ConfigError) on a file that cannot be read or has no usable CSV header."""
        if self.path is None:
            return
        try:
            with self._open() as stream:
                next(parse_stream(stream, self.name, self._fmt), None)
        except OSError as exc:
            raise ConfigError(f"cannot read jobs file {self.name}: {exc.strerror}") from exc

    def total(self) -> int | None:
        """Number of lines, as a cheap upper bound of jobs for the progress bar (None: stdin)."""
        if self.path is None:
            return None
        count = 0
        with self.path.open("rb") as raw:
            while chunk := raw.read(1 << 20):
                count += chunk.count(b"\n")
        return count

    def _open(self) -> TextIO:
        if self.path is None:
            return io.TextIOWrapper(
                sys.stdin.buffer, encoding="utf-8-sig", errors="replace", newline="\n"
            )
        # Only \n ends a line, so line numbers match `sed -n Np` and `wc -l`.
        return self.path.open(encoding="utf-8-sig", errors="replace", newline="\n")

    async def batches(self) -> AsyncIterator[Sequence[Item]]:
        stream = self._open()
        try:
            items = parse_stream(stream, self.name, self._fmt)
            # A thread blocked on a silent pipe must not hold up a stop: abandon it on cancel.
            while batch := await anyio.to_thread.run_sync(
                lambda: list(islice(items, BATCH)), abandon_on_cancel=self.path is None
            ):
                yield batch
        finally:
            if self.path is not None:
                stream.close()
            elif isinstance(stream, io.TextIOWrapper):
                stream.detach()  # leave sys.stdin itself open

    async def settle(self, item: Item, result: Result | None) -> None:
        return None
