"""The result log's hash chain: each record carries `chain`, the SHA-256 (hex) of the previous
record's chain and this record's canonical JSON without the field; a log's first record starts
from SEED. Whoever edits, removes or inserts a record breaks the chain at that record; whoever
rewrites the whole file (recomputing every link, since the chain has no secret) is caught by
the head a run reported when it ended (`run_summary`, the printed summary, `--notify`):
`report --check --head HEX`.

Canonical JSON: keys sorted, no spaces, non-ASCII escaped (`json.dumps(sort_keys=True,
separators=(",", ":"), ensure_ascii=True)`), so that any reader recomputes the same bytes.
A line that is not a record (torn by a crash, then finished by the next run's newline) is
listed, not counted as tampering: the next record links to the last whole one. Records
without a chain (written by versions before it) are accepted as the unchained start of a log.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from worker.results.records import parse

SEED = "0" * 64
HEX = re.compile(r"[0-9a-f]{64}")
_TAIL = 1 << 16


def canonical(record: dict[str, Any]) -> bytes:
    """The record without `chain`, as the bytes its link hashes. A record of text, whole
    numbers, booleans and nulls whose text needs no escape (every record the worker writes
    for a job that went well) is encoded by msgspec, sorted, ~3x faster; the two encoders
    write such a record byte for byte alike, and anything else goes to the standard one."""
    if "chain" in record:
        record = {k: v for k, v in record.items() if k != "chain"}
    if all(type(v) in _PLAIN for v in record.values()):
        try:
            fast = _FAST.encode(record)
        except (msgspec.EncodeError, OverflowError, TypeError, UnicodeEncodeError):
            pass
        else:
            if fast.isascii() and b"\\" not in fast and b"\x7f" not in fast:
                return fast
    return _CANONICAL.encode(record).encode()


# json.dumps with options builds an encoder per call: one, made once, is cheaper per record.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
_FAST = msgspec.json.Encoder(order="sorted")
_PLAIN = frozenset({str, int, bool, type(None)})


def link(previous: str, record: dict[str, Any]) -> str:
    """This record's chain, following `previous` (a chain, or SEED)."""
    return hashlib.sha256(previous.encode("ascii") + canonical(record)).hexdigest()


def last_head(fd: int) -> str:
    """The chain the next record follows: the last whole record's (read backwards from the end
    of the file, a block at a time); SEED when no whole record has one (a new log, or one of
    an earlier version's unchained records). A last line lacking only its newline (a write cut
    short just before it) is a whole record once the next run finishes the line: it counts
    when it links."""
    return after_torn(fd, _whole_head(fd))


def after_torn(fd: int, head: str) -> str:
    """`head`, or the chain of the file's unfinished last line when that line is a record
    that links to `head` (all of it was written but the newline)."""
    end = os.fstat(fd).st_size
    if end == 0 or os.pread(fd, 1, end - 1) == b"\n":
        return head
    tail = os.pread(fd, min(end, 1 << 20), max(0, end - (1 << 20))).rsplit(b"\n", 1)[-1]
    record = _record(tail)
    chain = record.get("chain") if record else None
    return chain if record is not None and chain == link(head, record) else head


def _whole_head(fd: int) -> str:
    end = os.fstat(fd).st_size
    carry = b""
    whole = end > 0 and os.pread(fd, 1, end - 1) == b"\n"
    first = True
    while end > 0:
        start = max(0, end - _TAIL)
        block = os.pread(fd, end - start, start) + carry
        lines = block.split(b"\n")
        carry = lines[0] if start > 0 else b""
        candidates = lines[1:] if start > 0 else lines
        if first and not whole:
            candidates = candidates[:-1]  # a torn last line: not a whole record
        first = False
        for line in reversed(candidates):
            verdict = _head_of(line)
            if verdict is not None:
                return verdict
        end = start
    return SEED


def _head_of(line: bytes) -> str | None:
    """A whole record's chain; SEED for a record without one; None for a line that is not a
    record (blank, torn)."""
    record = _record(line)
    if record is None:
        return None
    chain = record.get("chain")
    return chain if isinstance(chain, str) and HEX.fullmatch(chain) else SEED


def _record(line: bytes | str) -> dict[str, Any] | None:
    return parse(line) if line.strip() else None


@dataclass(frozen=True, slots=True)
class Break:
    """Where the chain breaks: the line, what happened there (as far as the chain can say),
    and the record's account and job, for a person to find it."""

    line: int
    what: str
    account_id: str | None = None
    job_id: str | None = None

    def __str__(self) -> str:
        about = ", ".join(
            f"{name} {value}"
            for name, value in (("account", self.account_id), ("job", self.job_id))
            if value
        )
        return f"line {self.line}{f' ({about})' if about else ''}: {self.what}"


@dataclass(slots=True)
class Verdict:
    """What `check` found. `intact`: every chained record links to the one before it (and the
    head asked for, if any, is one of them)."""

    records: int = 0  # chained records that link
    unchained: int = 0  # records of an earlier version, at the start
    torn: list[int] = field(default_factory=list)  # lines that are not records
    broken: Break | None = None
    head: str = SEED  # the last linked record's chain
    head_line: int | None = None  # the line of the head asked for, when found
    head_asked: str | None = None

    @property
    def intact(self) -> bool:
        if self.broken is not None:
            return False
        return self.head_asked is None or self.head_line is not None

    def lines(self) -> list[str]:
        """What a person reads: the status, then each finding."""
        if self.broken is not None:
            out = [f"chain: BROKEN at {self.broken}"]
        elif self.head_asked is not None and self.head_line is None:
            out = [
                f"chain: the log does not hold head {self.head_asked[:16]}…: rewritten, "
                "or cut short before it"
            ]
        else:
            out = [f"chain: intact, {self.records} records, head {self.head}"]
            if self.head_line is not None:
                out.append(f"chain: head {self.head_asked} is line {self.head_line}")
        if self.unchained:
            out.append(f"chain: {self.unchained} records before it carry none (an earlier version)")
        if self.torn:
            shown = ", ".join(map(str, self.torn[:10])) + (" …" if len(self.torn) > 10 else "")
            out.append(f"chain: {len(self.torn)} lines are not records (torn by a crash): {shown}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "intact": self.intact,
            "records": self.records,
            "unchained": self.unchained,
            "torn_lines": self.torn,
            "broken": None
            if self.broken is None
            else {"line": self.broken.line, "what": self.broken.what},
            "head": self.head,
            "head_asked": self.head_asked,
            "head_line": self.head_line,
        }


def check(path: Path, *, head: str | None = None) -> Verdict:
    """Recompute the chain of the log at `path`. `head`: a chain the log must hold, reached
    by linked records from the start (the head a run reported)."""
    checker = Checker(head=head)
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            checker.feed(number, _record(line), blank=not line.strip())
    return checker.done()


class Checker:
    """The chain checked one line at a time, in the same pass as any other reader (`report`
    builds its page and checks the chain while reading the log once)."""

    def __init__(self, *, head: str | None = None) -> None:
        self.verdict = Verdict(head_asked=head)
        self._previous, self._previous_line = SEED, 0
        self._previous_record: dict[str, Any] | None = None
        self._before: str | None = None  # the chain before the previous one
        self._pending: tuple[int, dict[str, Any]] | None = None  # a break, told by the next

    def feed(self, number: int, record: dict[str, Any] | None, *, blank: bool = False) -> None:
        """Line `number`: its record, or None for a line that is not one."""
        verdict = self.verdict
        if record is None:
            if not blank:
                verdict.torn.append(number)
            return
        if verdict.broken is not None:
            return
        if self._pending is not None:
            verdict.broken = self._classify((number, record))
            return
        chain = record.get("chain")
        if chain is None:
            if verdict.records:
                verdict.broken = _break(number, record, "a record without a chain: inserted")
            else:
                verdict.unchained += 1
            return
        if isinstance(chain, str) and chain == link(self._previous, record):
            self._before, self._previous, self._previous_line = self._previous, chain, number
            self._previous_record = record
            verdict.records += 1
            verdict.head = chain
            if chain == verdict.head_asked:
                verdict.head_line = number
            return
        self._pending = (number, record)

    def done(self) -> Verdict:
        if self.verdict.broken is None and self._pending is not None:
            self.verdict.broken = self._classify(None)
        return self.verdict

    def _classify(self, following: tuple[int, dict[str, Any]] | None) -> Break:
        """Say what the chain can tell: a record inserted just before (this one follows the
        chain before that one), an inserted record (the next follows the one before it), or
        an edit here or a removal just before (the next still follows this one's chain)."""
        assert self._pending is not None
        number, record = self._pending
        chain = record.get("chain")
        if self._before is not None and chain == link(self._before, record):
            return _break(
                self._previous_line,
                self._previous_record,
                "inserted (the record after it follows the one before it)",
            )
        if following is not None:
            _, nxt = following
            if nxt.get("chain") == link(self._previous, nxt):
                return _break(
                    number, record, "inserted (the next record follows the one before it)"
                )
            if isinstance(chain, str) and nxt.get("chain") == link(chain, nxt):
                return _break(number, record, "edited, or a record just before it removed")
        return _break(number, record, "edited, removed or inserted here")


def _break(number: int, record: dict[str, Any] | None, what: str) -> Break:
    def text(name: str) -> str | None:
        value = record.get(name) if record else None
        return value if isinstance(value, str) else None

    return Break(number, what, text("account_id"), text("job_id"))


__all__ = [
    "SEED",
    "Break",
    "Checker",
    "Verdict",
    "after_torn",
    "canonical",
    "check",
    "last_head",
    "link",
]
