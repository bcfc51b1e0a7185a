"""Pure parsers: one input line (or CSV row) to a Job or an Invalid. No I/O."""

from __future__ import annotations

import json
from typing import Any

from worker.models import ID_PATTERN, TENANT_PATTERN, USERNAME_PATTERN, Invalid, Job

MAX_LINE = 4096  # characters; a job line is a few dozen


def _show(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return repr(text[:60] + ("…" if len(text) > 60 else ""))


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no", ""})


def flag(value: object) -> bool | None:
    """The one truthiness rule for `delete_monitors`, whatever the format: JSON true/false,
    or the text true/false, 1/0, yes/no, empty (any case); None for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        return True if text in _TRUE else False if text in _FALSE else None
    return None


def _listed_name(value: object) -> bool:
    """A username as a server may list it, though not a valid handle: text, printable, short."""
    return isinstance(value, str) and len(value) <= 100 and value.isprintable()


def build_job(
    source: str,
    *,
    account_id: Any = None,
    username: Any = None,
    job_id: Any = None,
    delete_monitors: Any = False,
    tenant: Any = None,
) -> Job | Invalid:
    """Validate the fields of one job, from any format."""
    jid = None if job_id is None or job_id == "" else str(job_id)
    if isinstance(account_id, str):
        account_id = account_id.strip() or None
    if account_id is not None and (
        not isinstance(account_id, str) or not ID_PATTERN.fullmatch(account_id)
    ):
        return Invalid(
            source,
            f"invalid account_id {_show(account_id)}: must be a string of "
            "1-128 characters from [A-Za-z0-9_-]",
            jid,
        )
    if isinstance(username, str):
        username = username.strip().removeprefix("@") or None
    # With an id, the username is what a listing said of it (`plan` writes both), kept to
    # check the id still belongs to that user and never used to find the account: a name the
    # server lists that is not a valid handle does not make the job invalid.
    handle = isinstance(username, str) and USERNAME_PATTERN.fullmatch(username)
    if username is not None and not handle and (account_id is None or not _listed_name(username)):
        return Invalid(source, f"invalid username {_show(username)}", jid)
    if account_id is None and username is None:
        return Invalid(source, "no account_id or username", jid)
    monitors = flag(delete_monitors)
    if monitors is None:
        return Invalid(
            source, f"delete_monitors must be true or false, not {_show(delete_monitors)}", jid
        )
    if isinstance(tenant, str):
        tenant = tenant.strip() or None
    if tenant is not None and (not isinstance(tenant, str) or not TENANT_PATTERN.fullmatch(tenant)):
        return Invalid(
            source,
            f"invalid tenant {_show(tenant)}: a key file's name, 1-64 characters from "
            "[A-Za-z0-9._-]",
            jid,
        )
    return Job(source, account_id, username, jid, monitors, tenant=tenant)


def parse_json_line(source: str, line: str) -> Job | Invalid:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        return Invalid(source, f"not JSON: {exc.msg} at column {exc.colno}")
    except (ValueError, RecursionError) as exc:  # huge numbers, deep nesting
        return Invalid(source, f"not JSON: {exc}")
    if isinstance(data, str | int) and not isinstance(data, bool):
        # A bare id is friendlier to accept than to reject; numbers become their decimal text.
        return build_job(source, account_id=str(data))
    if not isinstance(data, dict):
        return Invalid(source, 'a job must be a JSON object like {"account_id": "42"}')
    return build_job(
        source,
        account_id=data.get("account_id"),
        username=data.get("username"),
        job_id=data.get("job_id"),
        delete_monitors=data.get("delete_monitors", False),
        tenant=data.get("tenant"),
    )


def parse_text_line(source: str, line: str) -> Job | Invalid:
    text = line.strip()
    if text.startswith("@"):
        return build_job(source, username=text)
    return build_job(source, account_id=text)


def is_skippable_text(line: str) -> bool:
    """Blank lines and `#` comments carry no job."""
    text = line.strip()
    return not text or text.startswith("#")


Columns = tuple[int | None, int | None, int | None, int | None, int | None]


def csv_columns(header: list[str]) -> Columns:
    """Column positions of account_id, username, job_id, delete_monitors, tenant in a header
    row."""
    names = [h.strip().lower().lstrip("\ufeff") for h in header]

    def pos(name: str) -> int | None:
        return names.index(name) if name in names else None

    return pos("account_id"), pos("username"), pos("job_id"), pos("delete_monitors"), pos("tenant")


def parse_csv_row(source: str, row: list[str], columns: Columns) -> Job | Invalid:
    def cell(i: int | None) -> str | None:
        return row[i].strip() if i is not None and i < len(row) and row[i].strip() else None

    acc, user, jid, mon, tenant = (cell(i) for i in columns)
    return build_job(
        source, account_id=acc, username=user, job_id=jid, delete_monitors=mon or "", tenant=tenant
    )
