"""Resume: what earlier runs in a result log already did. Only lines that can be done are
looked at, through a fast path that reads the fields a record writes in a fixed shape and falls
back to the one record reader (`records`) for any other line: a million-line log takes seconds
and memory grows with the done accounts, not with the log."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from worker.models import job_key
from worker.results import records


@dataclass(slots=True)
class PriorResults:
    """What earlier runs recorded: the accounts already done, and any unreadable lines."""

    done: set[str] = field(default_factory=set)  # account ids (`tenant/…` for a tenant's)
    done_names: set[str] = field(default_factory=set)  # their handles, as "@name"
    lines: int = 0
    bad_lines: list[int] = field(default_factory=list)


# The fast path: substring tests, then a regex per field. A `"key": "value"` pair cannot be
# forged from inside a JSON string (its quotes would be escaped), and ids are [A-Za-z0-9_-], so
# they hold no escapes. Lines in any other shape go to `records.parse`.
_ACCOUNT = re.compile(rb'"account_id": "([A-Za-z0-9_-]{1,128})"')
_OUTCOME = re.compile(rb'"outcome": "(disconnected|already_gone)"')
_OP = re.compile(rb'"op": "([a-z_]+)"')
_USERNAME = re.compile(rb'"username": "([A-Za-z0-9_]{1,50})"')
_TENANT = re.compile(rb'"tenant": "([A-Za-z0-9][A-Za-z0-9._-]{0,63})"')


def read_prior(path: Path) -> PriorResults:
    """Scan an existing result log for done disconnects: their account ids, and their
    usernames (as `@name`, lower case), so a handle-based list comes back clean on a rerun
    even though the handle no longer resolves. A missing file is an empty log."""
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
                    # A tenant's accounts are keyed apart (`tenant/…`), as its jobs are.
                    t = _TENANT.search(line) if b'"tenant": "' in line else None
                    tenant = t.group(1).decode() if t else None
                    prior.done.add(job_key(account.group(1).decode(), None, tenant))
                    if name := _USERNAME.search(line):
                        prior.done_names.add(job_key(None, name.group(1).decode(), tenant))
                continue
            record = records.parse(line)
            if record is None:
                prior.bad_lines.append(number)
            elif records.is_done(record) and record.get("account_id"):
                _add(prior, record)
    return prior


def _add(prior: PriorResults, record: records.Record) -> None:
    tenant = records.tenant(record) or None
    prior.done.add(job_key(str(record["account_id"]), None, tenant))
    if (username := records.text(record, "username")) is not None:
        prior.done_names.add(job_key(None, username, tenant))


__all__ = ["PriorResults", "read_prior"]
