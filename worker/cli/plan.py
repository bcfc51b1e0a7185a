"""`xquik-disconnect plan`: list connected accounts, select some, write them as jobs.

Filters combine (all must match). Without any filter it refuses: disconnecting every account
must be asked for with --all. Handles in --usernames that match no account are reported on
stderr and make the exit code 1. Listing goes through the key's read budget."""

from __future__ import annotations

import argparse
import io
import json
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import anyio

from worker.api.call import Call, describe
from worker.api.directory import names, tracking
from worker.api.keys import read_keys
from worker.api.session import open_session
from worker.api.urls import origin_of
from worker.cli.parser import log_level, reading_api
from worker.cli.say import fail
from worker.errors import AuthError, ConfigError, ExitCode, OptionError, TlsError
from worker.files import write_atomically
from worker.logs import configure, get_logger
from worker.models import TENANT_PATTERN
from worker.redact import printable
from worker.results import records
from worker.run.options import api_settings, need_key
from worker.settings import ApiSettings

log = get_logger()


@dataclass(frozen=True, slots=True)
class Filters:
    usernames: frozenset[str] | None = None  # lower case, without @
    health: frozenset[str] | None = None
    status: frozenset[str] | None = None
    created_before: datetime | None = None
    everything: bool = False
    offboarded: Offboarded | None = None

    def empty(self) -> bool:
        given = (self.usernames, self.health, self.status, self.created_before, self.offboarded)
        return given == (None,) * 5

    def match(self, account: dict[str, Any]) -> bool:
        if self.offboarded is not None and not self.offboarded.match(account):
            return False
        if self.usernames is not None and _name(account) not in self.usernames:
            return False
        if self.health is not None and account.get("health") not in self.health:
            return False
        if self.status is not None and account.get("status") not in self.status:
            return False
        if self.created_before is not None:
            created = parse_when(str(account.get("createdAt", "")))
            if created is None or created >= self.created_before:
                return False
        return True


@dataclass(frozen=True, slots=True)
class Offboarded:
    """`--offboarded RESULTS`: the X users a log disconnected (by x_user_id, else handle; the
    rule of `directory.same_user`), to select wherever they are connected again."""

    x_user_ids: frozenset[str]
    names: frozenset[str]  # lower case: every handle
    names_without_id: frozenset[str]  # lower case: users the log knows by handle only

    @classmethod
    def of(cls, removed: list[records.Removed]) -> Offboarded:
        return cls(
            frozenset(r.x_user_id for r in removed if r.x_user_id),
            frozenset(r.username.lower().removeprefix("@") for r in removed if r.username),
            frozenset(
                r.username.lower().removeprefix("@")
                for r in removed
                if r.username and not r.x_user_id
            ),
        )

    def match(self, account: dict[str, Any]) -> bool:
        listed = str(account.get("xUserId") or "")
        if listed:
            return listed in self.x_user_ids or _name(account) in self.names_without_id
        return _name(account) in self.names


def _name(account: dict[str, Any]) -> str:
    return str(account.get("xUsername", "")).lower()


def parse_when(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def read_usernames(path: Path) -> frozenset[str]:
    """Handles, one a line, `@` optional; `-` reads them from stdin."""
    try:
        if str(path) == "-":
            lines = sys.stdin.buffer.read().decode("utf-8-sig").splitlines()
        else:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise ConfigError(f"--usernames {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--usernames {path}: not UTF-8 text ({exc.reason})") from exc
    names = set()
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#"):
            names.add(text.removeprefix("@").lower())
    return frozenset(names)


def select(
    accounts: list[dict[str, Any]], filters: Filters
) -> tuple[list[dict[str, Any]], list[str]]:
    """The accounts to disconnect, and the requested handles that matched no account."""
    chosen = [a for a in accounts if a.get("id") and filters.match(a)]
    missing: list[str] = []
    if filters.usernames is not None:
        known = {_name(a) for a in accounts}
        missing = sorted(filters.usernames - known)
    return chosen, missing


def write_jobs(
    chosen: list[dict[str, Any]],
    out: TextIO,
    *,
    fmt: str,
    monitors: dict[str, list[dict[str, Any]]] | None,
    keywords: dict[str, list[dict[str, Any]]] | None = None,
    tenant: str | None = None,
) -> None:
    """Jobs as JSONL (naming `tenant` if given), or a table for a person. With monitors: the
    account monitors that would go with each account (--delete-monitors) and, listed apart,
    the keyword monitors whose query names the user (only --delete-monitors=all deletes
    those)."""
    if fmt == "table":
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(title=f"{len(chosen)} accounts to disconnect", title_justify="left")
        for column in ("account_id", "username", "health", "status", "created"):
            table.add_column(column)
        if keywords is not None:
            table.add_column("keyword monitors naming the user (=all)")
        if monitors is not None:
            table.add_column("monitors that would go")
        for a in chosen:
            row = [
                str(a["id"]),
                "@" + str(a.get("xUsername", "")),
                str(a.get("health", "")),
                str(a.get("status", "")),
                str(a.get("createdAt", ""))[:10],
            ]
            if keywords is not None:
                kws = keywords[str(a["id"])]
                row.append(", ".join(f"{m['id']} ({m.get('query')})" for m in kws) or "-")
            if monitors is not None:
                row.append(", ".join(str(m["id"]) for m in monitors[str(a["id"])]) or "-")
            # The server's text, shown to a person: printable, and never rich markup.
            table.add_row(*(Text(printable(cell)) for cell in row))
        Console(file=out, width=120).print(table)
        return
    for a in chosen:
        job: dict[str, Any] = {"account_id": str(a["id"]), "username": a.get("xUsername")}
        if tenant:
            job["tenant"] = tenant
        if monitors is not None:
            job["delete_monitors"] = True
            job["monitors"] = [str(m["id"]) for m in monitors[str(a["id"])]]
        if keywords is not None:
            job["keyword_monitors"] = [str(m["id"]) for m in keywords[str(a["id"])]]
        out.write(json.dumps(job) + "\n")


def report_missing(missing: list[str]) -> None:
    for name in missing:
        print(
            f"xquik-disconnect plan: @{name}: no connected account has this username",
            file=sys.stderr,
        )


def filters_from_args(args: argparse.Namespace) -> Filters:
    def csv_set(text: str | None) -> frozenset[str] | None:
        return frozenset(p.strip() for p in text.split(",") if p.strip()) if text else None

    before = None
    if args.created_before:
        before = parse_when(args.created_before)
        if before is None:
            raise ConfigError(f"--created-before {args.created_before!r}: use an ISO date")
    filters = Filters(
        usernames=read_usernames(Path(args.usernames)) if args.usernames else None,
        health=csv_set(args.health),
        status=csv_set(args.status),
        created_before=before,
        everything=args.all,
    )
    if filters.empty() and not filters.everything and not args.offboarded:
        raise ConfigError(
            "no filter given: pass --usernames, --health, --status, --created-before or "
            "--offboarded, or --all to plan the disconnection of every account"
        )
    return filters


def offboarded(args: argparse.Namespace, api: ApiSettings) -> Offboarded:
    """--offboarded RESULTS: who the log disconnected with this key (its tenant's, or the
    default key's), against this API."""
    path = Path(args.offboarded)
    origin = None if api.sandbox else origin_of(api.base_url)
    try:
        found, _ = records.removed(path, origin=origin, sandbox=api.sandbox)
    except OSError as exc:
        raise ConfigError(f"--offboarded {path}: {exc.strerror}") from None
    tenant = args.tenant or ""
    return Offboarded.of([r for r in found.values() if r.tenant == tenant])


def main(args: argparse.Namespace) -> int:
    configure(args.log_format, level=log_level(args))
    try:
        filters = filters_from_args(args)
        options = reading_api(args)
        account = None
        if args.tenant:
            options["api_key"], account = tenant_key(args)
        api = api_settings(**options)
        need_key(api)
        if args.offboarded:
            filters = replace(filters, offboarded=offboarded(args, api))
    except ConfigError as exc:
        return fail("plan", exc)
    try:
        return anyio.run(_plan, args, filters, api, account)
    except ConfigError as exc:  # --budget: Redis unreachable
        return fail("plan", exc)


def tenant_key(args: argparse.Namespace) -> tuple[str, str | None]:
    """--tenant NAME: that tenant's key (and Xquik account) from --keys DIR."""
    if not TENANT_PATTERN.fullmatch(args.tenant):
        raise OptionError("tenant", f"--tenant {args.tenant!r} is not a tenant name")
    if not args.keys:
        raise OptionError("tenant", "--tenant needs --keys DIR (the directory of `run --keys`)")
    keys = read_keys(Path(args.keys))
    if args.tenant not in keys:
        raise OptionError("tenant", f"--tenant {args.tenant}: no key file for it in {args.keys}")
    return keys[args.tenant].key, keys[args.tenant].account


async def _plan(
    args: argparse.Namespace, filters: Filters, api: ApiSettings, account: str | None
) -> int:
    async with AsyncExitStack() as stack:
        rejected: list[AuthError | TlsError] = []
        session = await open_session(api, stack, on_fatal=rejected.append, account=account)
        listed = await session.directory.accounts()
        if isinstance(listed, Call):
            return _failed(listed, rejected)
        accounts = listed
        chosen, missing = select(accounts, filters)
        monitors = keywords = None
        if args.with_monitors:
            every = await session.directory.monitors()
            if isinstance(every, Call):
                return _failed(every, rejected)
            keyword = await session.directory.keyword_monitors()
            if isinstance(keyword, Call):
                return _failed(keyword, rejected)
            monitors = {str(a["id"]): tracking(every, a) for a in chosen}
            keywords = {
                str(a["id"]): [
                    m for m in keyword if names(str(m.get("query") or ""), a.get("xUsername"))
                ]
                for a in chosen
            }
    tenant = args.tenant or None
    if args.out:  # written whole, 0600, under a new name renamed over the target
        out = io.StringIO()
        write_jobs(
            chosen, out, fmt=args.format, monitors=monitors, keywords=keywords, tenant=tenant
        )
        write_atomically(Path(args.out), out.getvalue().encode())
    else:
        write_jobs(
            chosen, sys.stdout, fmt=args.format, monitors=monitors, keywords=keywords, tenant=tenant
        )
    report_missing(missing)
    log.info("plan_written", accounts=len(accounts), selected=len(chosen), missing=len(missing))
    return ExitCode.FAILED if missing else ExitCode.OK


def _failed(call: Call, rejected: list[AuthError | TlsError]) -> int:
    assert call.error is not None
    code = ExitCode.USAGE if rejected else ExitCode.FAILED
    if any(isinstance(exc, AuthError) for exc in rejected):
        code = ExitCode.AUTH
    return fail("plan", describe(call.error, call.attempts), code)
