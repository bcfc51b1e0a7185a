"""Running `plan`: list (and match monitors) through the read budget, then write the jobs."""

from __future__ import annotations

import argparse
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio

from worker.calls import Call, Caller, describe
from worker.client import XquikClient
from worker.config import api_access
from worker.directory import listing
from worker.errors import AuthError, ConfigError
from worker.limiter import SlidingWindowBudget, Unlimited
from worker.logs import configure, get_logger
from worker.plan import (
    Filters,
    monitors_by_account,
    parse_when,
    read_usernames,
    report_missing,
    write_jobs,
)
from worker.plan import select as select_accounts

log = get_logger()


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
    configure(args.log_format)
    try:
        filters = filters_from_args(args)
        base_url, key = api_access(args)
    except ConfigError as exc:
        print(f"xquik-disconnect plan: error: {exc}", file=sys.stderr)
        return 2
    return anyio.run(_plan, args, filters, base_url, key)


async def _plan(args: argparse.Namespace, filters: Filters, base_url: str, key: str) -> int:
    async with AsyncExitStack() as stack:
        if args.sandbox:
            from worker.sandbox import Sandbox

            sandbox = await stack.enter_async_context(Sandbox())
            base_url, key = sandbox.base_url, sandbox.api_key
        rate = args.read_rate
        budget = Unlimited() if rate.limit is None else SlidingWindowBudget(rate.limit, rate.period)
        client = await stack.enter_async_context(
            XquikClient(base_url=base_url, api_key=key, timeout=args.timeout, read_budget=budget)
        )
        rejected: list[AuthError] = []
        caller = Caller(max_attempts=args.max_attempts, on_auth_error=rejected.append)
        listed = await caller(listing(client.list_accounts))
        if listed.answer is None:
            return _failed(listed, rejected)
        accounts: list[dict[str, Any]] = listed.answer.body
        chosen, missing = select_accounts(accounts, filters)
        monitors = None
        if args.with_monitors:
            call = await caller(listing(client.list_monitors))
            if call.answer is None:
                return _failed(call, rejected)
            monitors = monitors_by_account(chosen, call.answer.body)
    if args.out:
        with Path(args.out).open("w", encoding="utf-8") as out:  # noqa: ASYNC230 (tiny, once)
            write_jobs(chosen, out, fmt=args.format, monitors=monitors)
    else:
        write_jobs(chosen, sys.stdout, fmt=args.format, monitors=monitors)
    report_missing(missing)
    log.info("plan_written", accounts=len(accounts), selected=len(chosen), missing=len(missing))
    return 1 if missing else 0


def _failed(call: Call, rejected: list[AuthError]) -> int:
    assert call.error is not None
    print(f"xquik-disconnect plan: error: {describe(call.error, call.attempts)}", file=sys.stderr)
    return 3 if rejected else 1
