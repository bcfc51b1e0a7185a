"""Resume: what earlier runs in a result log already did.

A record counts as done for this run only if it says it was made against the same API (the
base URL's origin, and the built-in sandbox or not) by the same Xquik account (the same key,
by `key_id`, or with --keys a key of the same key group `NAME@ACCOUNT`). So a sandbox
rehearsal, another key's run or another API's never makes a real run skip an account still
connected. A done record that lacks what the rule needs (a line written by hand, by another
tool, or by a version before these fields) is listed and not counted: the rerun sends its job
again, and the precheck confirms with a GET, no DELETE, an account already gone.

Only lines that can be done are looked at, through a fast path that reads the fields a record
writes in a fixed shape and falls back to the one record reader (`records`) for any other
line: a million-line log takes seconds and memory grows with the done accounts, not the log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from worker.models import job_key
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


# The fast path: substring tests, then a regex per field. A `"key": "value"` pair cannot be
# forged from inside a JSON string (its quotes would be escaped), and ids are [A-Za-z0-9_-], so
# they hold no escapes. Lines in any other shape go to `records.parse`.
_ACCOUNT = re.compile(rb'"account_id": "([A-Za-z0-9_-]{1,128})"')
_OUTCOME = re.compile(rb'"outcome": "(disconnected|already_gone)"')
_OP = re.compile(rb'"op": "([a-z_]+)"')
_USERNAME = re.compile(rb'"username": "([A-Za-z0-9_]{1,50})"')
_TENANT = re.compile(rb'"tenant": "([A-Za-z0-9][A-Za-z0-9._-]{0,63})"')
_KEY_ID = re.compile(rb'"key_id": "([0-9a-f]{12})"')
_ORIGIN = re.compile(rb'"origin": "([a-z][a-z0-9+.-]*://[^"\\]{1,300})"')
_GROUP = re.compile(rb'"key_group": "([A-Za-z0-9][A-Za-z0-9._-]{0,63})"')
_SANDBOX = b'"sandbox": true'
_STAMPED = (b'"ts": "', b'"run_id": "')


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
    with f:
        for number, line in enumerate(f, 1):
            prior.lines = number
            if not line.rstrip(b"\r\n").endswith(b"}"):
                prior.bad_lines.append(number)  # torn by a crash mid-write
                continue
            if b'"disconnected"' not in line and b'"already_gone"' not in line:
                continue
            if all(s in line for s in _STAMPED) and _fast(line, number, prior, scope):
                continue
            record = records.parse(line)
            if record is None:
                prior.bad_lines.append(number)
            elif records.is_done(record) and record.get("account_id"):
                _add_record(prior, record, number, scope)
    return prior


def _fast(line: bytes, number: int, prior: PriorResults, scope: Scope | None) -> bool:
    """The line in the shape this worker writes: taken (True), or left to the slow path."""
    account, outcome, op = _ACCOUNT.search(line), _OUTCOME.search(line), _OP.search(line)
    if not (account and outcome and op):
        return False
    if op.group(1) != b"disconnect":
        return True
    t = _TENANT.search(line) if b'"tenant": "' in line else None
    tenant = t.group(1).decode() if t else None
    key_id, origin = _KEY_ID.search(line), _ORIGIN.search(line)
    group = _GROUP.search(line) if b'"key_group": "' in line else None
    username = _USERNAME.search(line)
    _add(
        prior,
        number,
        scope,
        account=account.group(1).decode(),
        username=username.group(1).decode() if username else None,
        tenant=tenant,
        key_id=key_id.group(1).decode() if key_id else None,
        origin=origin.group(1).decode() if origin else None,
        sandbox=_SANDBOX in line,
        key_group=group.group(1).decode() if group else None,
    )
    return True


def _add_record(prior: PriorResults, r: records.Record, number: int, scope: Scope | None) -> None:
    _add(
        prior,
        number,
        scope,
        account=str(r["account_id"]),
        username=records.text(r, "username"),
        tenant=records.tenant(r) or None,
        key_id=records.text(r, "key_id"),
        origin=records.text(r, "origin"),
        sandbox=r.get("sandbox") is True,
        key_group=records.text(r, "key_group"),
    )


def _add(
    prior: PriorResults,
    number: int,
    scope: Scope | None,
    *,
    account: str,
    username: str | None,
    tenant: str | None,
    key_id: str | None,
    origin: str | None,
    sandbox: bool,
    key_group: str | None,
) -> None:
    if scope is not None:
        if origin is None or (key_id is None and key_group is None):
            prior.incomplete.append(number)
            return
        if not scope.accepts(
            tenant=tenant or "",
            origin=origin,
            sandbox=sandbox,
            key_id=key_id,
            key_group=key_group,
        ):
            prior.foreign += 1
            return
    # A tenant's accounts are keyed apart (`tenant/…`), as its jobs are.
    prior.done.add(job_key(account, None, tenant))
    if username is not None:
        prior.done_names.add(job_key(None, username, tenant))


__all__ = ["PriorResults", "Scope", "read_prior"]
