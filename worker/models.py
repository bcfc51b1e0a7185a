"""Jobs in, results out: the data the runner moves between sources and sinks."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from worker.redact import redact

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")
# X handles are 1-15 characters; older or future accounts may differ, so allow some slack.
USERNAME_PATTERN = re.compile(r"[A-Za-z0-9_]{1,50}")
# A tenant is the name of a key file in --keys (a Kubernetes Secret's key): ids' characters and
# dots, up to 64, starting with a letter or digit.
TENANT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class Outcome(StrEnum):
    DISCONNECTED = "disconnected"
    ALREADY_GONE = "already_gone"
    FAILED = "failed"
    INVALID = "invalid"
    DUPLICATE = "duplicate"
    EXISTS = "exists"
    MISSING = "missing"
    DELETED = "deleted"  # a monitor we deleted (a monitor gone before is already_gone)
    # `verify`: the account a log recorded as done is gone; is still listed (its GET answers
    # 200); or is gone but its X user is connected again under another id (new_account_id).
    GONE = "gone"
    STILL_CONNECTED = "still_connected"
    RECONNECTED = "reconnected"


class Op(StrEnum):
    DISCONNECT = "disconnect"
    DELETE_MONITOR = "delete_monitor"
    CHECK = "check"  # a dry run's GET: never counts as a disconnect
    VERIFY = "verify"  # `verify`: what became of an account a log recorded as done


# A job naming both an id and a username whose id belongs to another X user: no DELETE.
ACCOUNT_MISMATCH = "account_mismatch"


def dead_letter_code(result: Result) -> str:
    """A dead letter's code, from a fixed set: `invalid` (not a job), `max_deliveries`
    (delivered too often), `rejected_key` (its key was rejected, 401), `failed:<error>` (a
    permanent error, or retries exhausted: the error's own code, e.g. failed:forbidden)."""
    error = result.error or ""
    if result.outcome is Outcome.INVALID:
        return "invalid"
    if error.startswith(MAX_DELIVERIES_ERROR):
        return "max_deliveries"
    if result.http_status == 401:
        return "rejected_key"
    head = error.split(":", 1)[0].split(" ", 1)[0]
    return f"failed:{head}" if _CODE.fullmatch(head) else "failed:error"


_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_DELIVERIES_ERROR = "delivered"  # "delivered N times (more than --max-deliveries M)"

# --strict-missing: an id that was not connected when the run began fails with this error.
NOT_CONNECTED = (
    "not_connected: not connected when the run began (removed earlier, or a mistyped id)"
)

# 404 counts as done: the connection is gone, which is what the job asked for.
DONE = frozenset({Outcome.DISCONNECTED, Outcome.ALREADY_GONE, Outcome.DELETED})


def job_key(account_id: str | None, username: str | None, tenant: str | None = None) -> str:
    """One account's key: its id, else `@` and its handle in lower case (`@` optional); a
    tenant's accounts are apart from another's (`tenant/…`: no id or name holds a `/`)."""
    key = account_id if account_id is not None else "@" + (username or "").lower().removeprefix("@")
    return f"{tenant}/{key}" if tenant else key


@dataclass(frozen=True, slots=True)
class Job:
    """One disconnect request, as read from a source."""

    source: str
    account_id: str | None = None
    username: str | None = None
    job_id: str | None = None
    delete_monitors: bool = False
    # Opaque handle a queue source uses to acknowledge the job (e.g. a stream entry id).
    receipt: Any = field(default=None, compare=False, repr=False)
    tenant: str | None = None  # the key (from --keys) to use; None: the default key

    @property
    def key(self) -> str:
        """The account this job targets, for de-duplication."""
        return job_key(self.account_id, self.username, self.tenant)


@dataclass(frozen=True, slots=True)
class Invalid:
    """An input line that is not a job; it becomes an `invalid` record."""

    source: str
    error: str
    job_id: str | None = None
    receipt: Any = field(default=None, compare=False, repr=False)
    # A queue message delivered too often is refused the same way, but it was a job: failed.
    outcome: Outcome = Outcome.INVALID
    account_id: str | None = None
    tenant: str | None = None  # the tenant the line named (it may be unknown)


def utc_now_iso() -> str:
    """Now, as a record's `ts`: `2026-12-02T10:00:00.123Z` (UTC, milliseconds, truncated).
    The text up to the second is formatted once a second (a record is made every job)."""
    global _second  # one formatted second, swapped whole (safe from threads)
    now = time.time()
    whole = int(now)
    second = _second
    if second[0] != whole:
        second = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{second[1]}.{int((now - whole) * 1000):03d}Z"


_second: tuple[int, str] = (-1, "")


def audit(account: dict[str, Any] | None) -> dict[str, Any]:
    """The fields that say who an account was, from a listing's (or GET's) account object."""
    if not account:
        return {}

    def text(key: str) -> str | None:
        value = account.get(key)
        return None if value is None else str(value)

    return {
        "x_username": text("xUsername"),
        "x_user_id": text("xUserId"),
        "health": text("health"),
        "status": text("status"),
    }


@dataclass(frozen=True, slots=True)
class Result:
    """One line of the result log."""

    run_id: str
    source: str
    outcome: Outcome
    job_id: str | None = None
    account_id: str | None = None
    username: str | None = None
    op: Op = Op.DISCONNECT
    http_status: int | None = None
    error: str | None = None
    attempts: int = 0
    elapsed_ms: int = 0
    monitor_id: str | None = None
    monitor_kind: str | None = None  # delete_monitor: "account" or "keyword"
    checked: bool = False  # already_gone confirmed by a GET: no DELETE was spent on it
    # Who was removed: the account as listed just before (None when it was not listed).
    x_username: str | None = None
    x_user_id: str | None = None
    health: str | None = None
    status: str | None = None
    key_id: str | None = None  # which key did it: 12 hex digits of its SHA-256, never the key
    # Which API it was made against: the base URL's origin, and whether that was the built-in
    # sandbox (a rehearsal). A rerun counts as done only records of its own API and account.
    origin: str | None = None
    sandbox: bool = False
    key_group: str | None = None  # --keys NAME@ACCOUNT: the Xquik account the key belongs to
    delete_limit: str | None = None  # the DELETE limit in force then, e.g. "15/60s"
    tenant: str | None = None  # the --keys tenant whose key did it; None: the default key
    # already_gone: was the account connected when the run began (in its listing)? False for
    # an id that was not: removed earlier, or a mistyped id. None when no listing was read.
    seen_connected: bool | None = None
    # delete_monitor: the API took the deletion and runs it in the background (the monitor may
    # stay listed a moment longer; its GET answers 404 once it is gone).
    pending: bool = False
    new_account_id: str | None = None  # verify, reconnected: the id the X user is back under
    ts: str = field(default_factory=utc_now_iso)

    def __post_init__(self) -> None:
        # Redacted once, where the record is built, so no sink (the log, a stream, the dead
        # letters, a notification) can carry a key that a server echoed into an error.
        if self.error is not None:
            object.__setattr__(self, "error", redact(self.error))

    @classmethod
    def for_job(cls, job: Job | Invalid, *, run_id: str, outcome: Outcome, **fields: Any) -> Result:
        """A record of `job`: its source, job id, account, username and tenant, and `fields`
        (which win over the job's: a resolved account id, a monitor's)."""
        base: dict[str, Any] = {
            "job_id": job.job_id,
            "account_id": job.account_id,
            "tenant": job.tenant,
        }
        if isinstance(job, Job):
            base["username"] = job.username
        return cls(run_id=run_id, source=job.source, outcome=outcome, **{**base, **fields})

    @property
    def done(self) -> bool:
        return self.outcome in DONE

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "ts": self.ts,
            "run_id": self.run_id,
            "source": self.source,
            "job_id": self.job_id,
            "account_id": self.account_id,
            "username": self.username,
            "op": str(self.op),
            "outcome": str(self.outcome),
            "http_status": self.http_status,
            "error": self.error,
            "attempts": self.attempts,
            "elapsed_ms": self.elapsed_ms,
            "checked": self.checked,
            "tenant": self.tenant,
            "key_id": self.key_id,
            "origin": self.origin,
        }
        if self.key_group is not None:
            record["key_group"] = self.key_group
        if self.delete_limit is not None:
            record["delete_limit"] = self.delete_limit
        if self.sandbox:
            record["sandbox"] = True
        if self.op is Op.DELETE_MONITOR:
            record["monitor_id"] = self.monitor_id
            record["monitor_kind"] = self.monitor_kind or "account"
            record["pending"] = self.pending
        else:
            record["x_username"] = self.x_username
            record["x_user_id"] = self.x_user_id
            record["health"] = self.health
            record["status"] = self.status
        if self.op is Op.VERIFY:
            record["new_account_id"] = self.new_account_id
        if self.outcome is Outcome.ALREADY_GONE or self.error == NOT_CONNECTED:
            record["seen_connected"] = self.seen_connected
        return record

    def to_json(self) -> str:
        return _ENCODER.encode(self.to_dict())


def encode(record: dict[str, Any]) -> str:
    """A record's line in the result log (without the newline)."""
    return _ENCODER.encode(record)


# json.dumps with any option builds a new encoder per call; one shared encoder is cheaper.
_ENCODER = json.JSONEncoder(ensure_ascii=False)
