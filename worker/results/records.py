"""The result log, read back: the one reader of its records, and the rules every reader shares
(resume, `report`, the HTML page, `monitors`): which account a record is about, whether it is
done, whether it spent a DELETE, and how DELETEs fall into the server's windows.

Lenient by design: a line that is not a record (torn by a crash, edited by hand, written by
another tool) is reported as unreadable with its line number, never fatal."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from worker.models import DONE, Op, Outcome, job_key

Record = dict[str, Any]
LATEST = 221845392000.0  # 9000-01-01T00:00:00Z


def parse(line: bytes | str) -> Record | None:
    """One line as a record, or None when it is not one: a JSON object whose `outcome` and
    `run_id` are text and whose `ts` is a time."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    if not isinstance(record.get("outcome"), str) or not isinstance(record.get("run_id"), str):
        return None
    if when(record) is None:
        return None
    return record


def when(record: Record) -> float | None:
    """The record's `ts` as Unix seconds; a time without a zone is UTC. None when it is not a
    time this reader can place (not text, not ISO 8601, or outside 1970 to 9000: year 9999
    in a record is no time of a run, and would overflow a chart's axis)."""
    ts = record.get("ts")
    if not isinstance(ts, str):
        return None
    try:
        moment = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    except (ValueError, OverflowError, OSError):
        return None
    return seconds if 0 <= seconds < LATEST else None


def read(source: Path | BinaryIO) -> Iterator[tuple[int, Record | None]]:
    """Every line of a log, numbered from 1: its record, or None for a line that is not one."""
    if isinstance(source, Path):
        with source.open("rb") as f:
            yield from read(f)
        return
    for number, line in enumerate(source, 1):
        yield number, parse(line)


def text(record: Record, name: str) -> str | None:
    """A field that should be text; None when it is missing or something else."""
    value = record.get(name)
    return value if isinstance(value, str) else None


def op(record: Record) -> str:
    return text(record, "op") or Op.DISCONNECT


def tenant(record: Record) -> str:
    """The --keys tenant whose key made the record; "" for the default key."""
    return text(record, "tenant") or ""


def account_key(record: Record) -> str:
    """The account a record is about, keyed as its job was (`models.job_key`): the id, else the
    handle in lower case; a tenant's accounts apart. `@Acme` and `@acme` are one account."""
    account_id = record.get("account_id")
    username = record.get("username")
    return job_key(
        str(account_id) if account_id else None,
        str(username) if account_id is None and username is not None else None,
        tenant(record) or None,
    )


def is_done(record: Record) -> bool:
    """A disconnect that left the account gone (disconnected, or already gone)."""
    return op(record) == Op.DISCONNECT and record.get("outcome") in DONE


def spent_delete(record: Record) -> bool:
    """The record stands for a DELETE the server answered (a dry run's check, an invalid line,
    a duplicate and an already_gone confirmed by a GET spent none)."""
    if op(record) == Op.CHECK or record.get("checked"):
        return False
    outcome = record.get("outcome")
    answered = outcome in DONE or outcome == Outcome.FAILED
    return answered and bool(record.get("http_status"))


@dataclass(frozen=True, slots=True)
class Removed:
    """An account a log records as done, and who it was: the X user (by id, else handle)
    that `verify` looks for and `plan --offboarded` keeps off."""

    account_id: str
    tenant: str  # "" for the default key
    x_user_id: str | None
    username: str | None  # the X handle as listed, else the job's
    job_id: str | None
    source: str


def removed(path: Path, *, origin: str | None, sandbox: bool) -> tuple[dict[str, Removed], int]:
    """Every account the log records as done (by account key), made against this API (its
    origin; a sandbox rehearsal's only for a sandbox), and how many done records were made
    against another. Records of earlier versions (no origin) count as this API's."""
    found: dict[str, Removed] = {}
    elsewhere = 0
    for _, r in read(path):
        if r is None or not is_done(r) or not r.get("account_id"):
            continue
        made = text(r, "origin")
        if (origin is not None and made is not None and made != origin) or (
            r.get("sandbox") is True
        ) != sandbox:
            elsewhere += 1
            continue
        key = account_key(r)
        before = found.get(key)
        found[key] = Removed(
            account_id=str(r["account_id"]),
            tenant=tenant(r),
            x_user_id=text(r, "x_user_id") or (before.x_user_id if before else None),
            username=text(r, "x_username")
            or text(r, "username")
            or (before.username if before else None),
            job_id=text(r, "job_id"),
            source=text(r, "source") or "?",
        )
    return found, elsewhere


def tenant_table(counts: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Outcomes per tenant, by name ("(default)" for the default key's): the one table the
    run's summary, `report` and the HTML page show."""
    return {name or "(default)": dict(sorted(per.items())) for name, per in sorted(counts.items())}


def windows(times: Iterable[float], window: float) -> list[tuple[float, int]]:
    """ "DELETEs per window", the one definition: the server's fixed windows over the answer
    times, each opened by the first DELETE after the last one ended, as (start, count)."""
    out: list[tuple[float, int]] = []
    end = -math.inf
    for t in sorted(times):
        if t >= end:
            out.append((t, 0))
            end = t + window
        start, n = out[-1]
        out[-1] = (start, n + 1)
    return out


def peak(times: Iterable[float], window: float) -> int:
    """The most DELETEs in one of those windows."""
    return max((n for _, n in windows(times, window)), default=0)


__all__ = [
    "Record",
    "Removed",
    "account_key",
    "is_done",
    "op",
    "parse",
    "peak",
    "read",
    "removed",
    "spent_delete",
    "tenant",
    "tenant_table",
    "text",
    "when",
    "windows",
]
