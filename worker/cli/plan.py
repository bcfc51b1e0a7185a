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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import anyio

from worker.api.call import Call, describe
from worker.api.directory import names, tracking
from worker.api.keys import read_keys
from worker.api.session import open_session
from worker.budget.rate import UNLIMITED
from worker.cli.parser import log_level
from worker.cli.say import fail
from worker.errors import AuthError, ConfigError, ExitCode, OptionError, TlsError
from worker.files import write_atomically
from worker.logs import configure, get_logger
from worker.models import TENANT_PATTERN
from worker.redact import printable
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

    def empty(self) -> bool:
        return (self.usernames, self.health, self.status, self.created_before) == (None,) * 4

    def match(self, account: dict[str, Any]) -> bool:
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
    if filters.empty() and not filters.everything:
        raise ConfigError(
            "no filter given: pass --usernames, --health, --status or --created-before, "
            "or --all to plan the disconnection of every account"
        )
    return filters


def main(args: argparse.Namespace) -> int:
    configure(args.log_format, level=log_level(args))
    try:
        filters = filters_from_args(args)
        options = _api_options(args)
        account = None
        if args.tenant:
            options["api_key"], account = tenant_key(args)
        api = api_settings(**options)
        need_key(api)
    except ConfigError as exc:
        return fail("plan", exc)
    try:
        return anyio.run(_plan, args, filters, api, account)
    except ConfigError as exc:  # --budget: Redis unreachable
        return fail("plan", exc)


def _api_options(args: argparse.Namespace) -> dict[str, Any]:
    """The API flags given, as `api_settings` keywords. Plans only read: the DELETE tier is
    never used, so it needs no budget of its own."""
    names = ["base_url", "api_key_file", "read_rate", "timeout", "max_attempts", "budget"]
    names += ["budget_file"]
    given: dict[str, Any] = {n: getattr(args, n) for n in names if getattr(args, n, None)}
    given.update(sandbox=args.sandbox, rate=UNLIMITED, state_dir="none")
    given["insecure_redis_tls"] = args.insecure_redis_tls
    return given


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
