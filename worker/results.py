"""The result log: one JSON line per handled job, appended whole, fsynced at least every second.

Reading it back (resume) looks only at lines that can be `done`, so a million-line log takes
seconds and memory grows with the number of done accounts, not with the log.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from worker.models import DONE, Op, Result
from worker.redact import redact


class ResultSink(Protocol):
    def write(self, result: Result) -> None: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...


class FileSink:
    """Appends records with one write(2) each (O_APPEND), so a crash can tear at most the last
    line; fsyncs when asked (the runner's ticker) and on close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._dirty = False
        if _ends_torn(path):
            # Finish the torn line of a crashed run so our first record starts on a line of its own.
            self._write_all(b"\n")

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._dirty = True

    def write(self, result: Result) -> None:
        self._write_all((redact(result.to_json()) + "\n").encode())

    def sync(self) -> None:
        if self._dirty:
            os.fsync(self._fd)
            self._dirty = False

    def close(self) -> None:
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1


def _ends_torn(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


@dataclass(slots=True)
class PriorResults:
    """What earlier runs recorded: the accounts already done, and any unreadable lines."""

    done: set[str] = field(default_factory=set)
    lines: int = 0
    bad_lines: list[int] = field(default_factory=list)


# The fast path: substring tests, then a regex per field. A `"key": "value"` pair cannot be
# forged from inside a JSON string (its quotes would be escaped), and ids are [A-Za-z0-9_-], so
# they hold no escapes. Lines in any other shape fall back to json.loads.
_ACCOUNT = re.compile(rb'"account_id": "([A-Za-z0-9_-]{1,128})"')
_OUTCOME = re.compile(rb'"outcome": "(disconnected|already_gone)"')
_OP = re.compile(rb'"op": "([a-z_]+)"')


def read_prior(path: Path) -> PriorResults:
    """Scan an existing result log for done disconnects. A missing file is an empty log."""
    prior = PriorResults()
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return prior
    with f:
        for number, line in enumerate(f, 1):
            prior.lines = number
            if not line.rstrip(b"\r\n").endswith(b"}"):
                prior.bad_lines.append(number)  # torn by a crash mid-write
                continue
            if b'"disconnected"' not in line and b'"already_gone"' not in line:
                continue
            account, outcome, op = _ACCOUNT.search(line), _OUTCOME.search(line), _OP.search(line)
            if account and outcome and op:
                if op.group(1) == b"disconnect":
                    prior.done.add(account.group(1).decode())
                continue
            try:
                record = json.loads(line)
                if record.get("op", Op.DISCONNECT) == Op.DISCONNECT and record["outcome"] in DONE:
                    prior.done.add(str(record["account_id"]))
            except (ValueError, KeyError, TypeError, AttributeError):
                prior.bad_lines.append(number)
    return prior
