"""Resume: what earlier runs in a result log already did.

A record counts as done for this run only if it says it was made against the same API (the
base URL's origin, and the built-in sandbox or not) by the same Xquik account (the same key,
by `key_id`, or with --keys a key of the same key group `NAME@ACCOUNT`). So a sandbox
rehearsal, another key's run or another API's never makes a real run skip an account still
connected. A done record that lacks what the rule needs (a line written by hand, by another
tool, or by a version before these fields) is listed and not counted: the rerun sends its job
again, and the precheck confirms with a GET, no DELETE, an account already gone.

Only lines that can be done are looked at, through a typed decoder that reads only the fields
the rule needs and falls back to the one record reader (`records`) for any other line: a
million-line log takes seconds and memory grows with the done accounts, not the log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import msgspec

from worker.models import DONE, Op, job_key
from worker.results import records


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose records a run may take for done: its API, and each tenant's key (by id) or key
    group. The default key's tenant is ""."""

    origin: str
    sandbox: bool
    key_ids: Mapping[str, str]  # tenant -> key_id
    groups: Mapping[str, str | None] = field(default_factory=dict)  # tenant -> key group

    def accepts(
        self,
        *,
        tenant: str,
        origin: str | None,
        sandbox: bool,
        key_id: str | None,
        key_group: str | None,
    ) -> bool:
        if origin != self.origin or sandbox != self.sandbox:
            return False
        group = self.groups.get(tenant)
        if group is not None and key_group == group:
            return True
        return key_id is not None and self.key_ids.get(tenant) == key_id


@dataclass(slots=True)
class PriorResults:
    """What earlier runs recorded: the accounts already done for this run, and the lines it
    could not read or may not count."""

    done: set[str] = field(default_factory=set)  # account ids (`tenant/…` for a tenant's)
    done_names: set[str] = field(default_factory=set)  # their handles, as "@name"
    lines: int = 0
    bad_lines: list[int] = field(default_factory=list)  # torn or not a record
    incomplete: list[int] = field(default_factory=list)  # done, but no origin or key: not counted
    foreign: int = 0  # done by another API, key or a sandbox: not counted


# The fast path: a typed decoder (msgspec) that reads only the fields the rule needs and
# skips the rest unparsed into objects: about 2 µs a line where `json.loads` takes 10. It
# takes a line only where the one reader (`records.parse`) would read the same: an object
# whose `ts` is a time in the shape this worker writes, `run_id` and `outcome` text, and every
# field it reads of the type the slow path accepts. Any other line (a torn one, another type,
# another time format, not UTF-8) goes to `records.parse`, so both paths count alike.
class _Line(msgspec.Struct):
    ts: str
    run_id: str
    outcome: str
    account_id: str | None = None
    op: str | None = None
    username: str | None = None
    tenant: str | None = None
    key_id: str | None = None
    origin: str | None = None
    sandbox: bool = False
    key_group: str | None = None


_DECODER = msgspec.json.Decoder(_Line)
_WHOLE = (b"}\n", b"}", b"}\r\n")  # a line whose record was written to its end
# What `models.utc_now_iso` writes; any other `ts` is placed by `records.when`.
_TS = re.compile(
    r"(19[7-9]\d|[2-8]\d{3})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
    r"T([01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{3}Z"
)
_DAYS: dict[str, bool] = {}  # a log's few dates, each checked once (no February 30)


def _our_time(ts: str) -> bool:
    """`ts` is a time in the worker's own shape that `records.when` places."""
    if not _TS.fullmatch(ts):
        return False
    day = ts[:10]
    known = _DAYS.get(day)
    if known is None:
        try:
            date.fromisoformat(day)
            known = True
        except ValueError:
            known = False
        if len(_DAYS) < 1 << 12:
            _DAYS[day] = known
    return known


def read_prior(path: Path, scope: Scope | None = None) -> PriorResults:
    """Scan an existing result log for done disconnects of this run's scope (None: of any):
    their account ids, and their usernames (as `@name`, lower case), so a handle-based list
    comes back clean on a rerun even though the handle no longer resolves. A missing file is
    an empty log."""
    prior = PriorResults()
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return prior
    decode = _DECODER.decode
    with f:
        for number, line in enumerate(f, 1):
            prior.lines = number
            if not line.endswith(_WHOLE) and not line.rstrip(b"\r\n").endswith(b"}"):
                prior.bad_lines.append(number)  # torn by a crash mid-write
                continue
            if b'"disconnected"' not in line and b'"already_gone"' not in line:
                continue
            try:
                fast: _Line | None = decode(line)
            except msgspec.MsgspecError:
                fast = None
            if fast is not None and _our_time(fast.ts):
                _take(prior, fast, number, scope)
                continue
            record = records.parse(line)
            if record is None:
                prior.bad_lines.append(number)
            elif records.is_done(record) and record.get("account_id"):
                _add_record(prior, record, number, scope)
    return prior


def _take(prior: PriorResults, line: _Line, number: int, scope: Scope | None) -> None:
    """A record the typed decoder read: counted if it is a done disconnect."""
    if line.outcome in DONE and (line.op or Op.DISCONNECT) == Op.DISCONNECT and line.account_id:
        _add(prior, number, scope, line)


def _add_record(prior: PriorResults, r: records.Record, number: int, scope: Scope | None) -> None:
    line = _Line(
        ts="",
        run_id="",
        outcome="",
        account_id=str(r["account_id"]),
        username=records.text(r, "username"),
        tenant=records.tenant(r) or None,
        key_id=records.text(r, "key_id"),
        origin=records.text(r, "origin"),
        sandbox=r.get("sandbox") is True,
        key_group=records.text(r, "key_group"),
    )
    _add(prior, number, scope, line)


def _add(prior: PriorResults, number: int, scope: Scope | None, r: _Line) -> None:
    tenant = r.tenant or None
    if scope is not None:
        if r.origin is None or (r.key_id is None and r.key_group is None):
            prior.incomplete.append(number)
            return
        if not scope.accepts(
            tenant=tenant or "",
            origin=r.origin,
            sandbox=r.sandbox,
            key_id=r.key_id,
            key_group=r.key_group,
        ):
            prior.foreign += 1
            return
    # A tenant's accounts are keyed apart (`tenant/…`), as its jobs are.
    assert r.account_id is not None
    prior.done.add(job_key(r.account_id, None, tenant))
    if r.username is not None:
        prior.done_names.add(job_key(None, r.username, tenant))


__all__ = ["PriorResults", "Scope", "read_prior"]
