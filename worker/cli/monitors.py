"""`xquik-disconnect monitors RESULTS [--delete]`: the monitors left behind by earlier runs.

A run without --delete-monitors leaves the monitors of the users it disconnected running and
billing. This lists (and with --delete removes) the account monitors that track users the result
log records as disconnected, matched by the records' x_user_id, else username: monitors of users
who were never connected accounts are never touched. Deletions go through the key's DELETE
budget (its state file, or --budget) and are appended to the same log as delete_monitor records."""

from __future__ import annotations

import argparse
import json
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from worker.api.call import FATAL, Call, describe
from worker.api.directory import tracks
from worker.api.session import open_session
from worker.api.urls import origin_of
from worker.cli.parser import log_level
from worker.cli.say import fail, say
from worker.errors import ConfigError, ExitCode
from worker.logs import configure
from worker.models import ID_PATTERN, Job, Op, Outcome, Result
from worker.results import records
from worker.results.sink import FileSink
from worker.run.operations import monitor_deleted
from worker.run.options import api_settings, need_key
from worker.run.runner import Runner
from worker.settings import ApiSettings

Users = dict[str, tuple[str | None, str | None]]  # account id -> (x_user_id, username)


def disconnected_users(path: Path, origin: str | None = None, sandbox: bool = False) -> Users:
    """Who every account the log records as disconnected was: (x_user_id, username); with
    `origin`, only by that API (a sandbox rehearsal's users are not the real API's)."""
    users: Users = {}
    for _, r in records.read(path):
        if r is None or r.get("outcome") != Outcome.DISCONNECTED or not records.is_done(r):
            continue
        if not r.get("account_id"):
            continue
        made = records.text(r, "origin")
        if origin is not None and made is not None and made != origin:
            continue
        if (r.get("sandbox") is True) != sandbox:
            continue
        x_user_id = records.text(r, "x_user_id")
        username = records.text(r, "x_username") or records.text(r, "username")
        if x_user_id or username:
            users[str(r["account_id"])] = (x_user_id, username)
    return users


def main(args: argparse.Namespace) -> int:
    configure(args.log_format, level=log_level(args))
    path = Path(args.results)
    try:
        api = api_settings(**_api_options(args))
        need_key(api)
        origin = None if api.sandbox else origin_of(api.base_url)
        users = disconnected_users(path, origin, api.sandbox)
    except OSError as exc:
        return fail("monitors", f"{path}: {exc.strerror}")
    except ConfigError as exc:
        return fail("monitors", exc)
    try:
        return anyio.run(_monitors, api, path, users, args.delete)
    except ConfigError as exc:
        return fail("monitors", exc)


def _api_options(args: argparse.Namespace) -> dict[str, Any]:
    """The API flags given, as `api_settings` keywords."""
    names = ["base_url", "api_key_file", "read_rate", "timeout", "max_attempts", "rate"]
    names += ["budget_file"]
    given: dict[str, Any] = {n: getattr(args, n) for n in names if getattr(args, n, None)}
    given.update(
        sandbox=args.sandbox, budget=args.budget, insecure_redis_tls=args.insecure_redis_tls
    )
    return {k: v for k, v in given.items() if v is not None}


async def _monitors(api: ApiSettings, path: Path, users: Users, delete: bool) -> int:
    async with AsyncExitStack() as stack:
        sink = FileSink.open(path) if delete else None  # locked: no run writes it now
        if sink is not None:
            stack.callback(sink.close)
        rejected: list[object] = []
        session = await open_session(api, stack, on_fatal=rejected.append)
        every = await session.directory.monitors()
        if isinstance(every, Call):
            assert every.error is not None
            fail("monitors", describe(every.error, every.attempts))
            return ExitCode.AUTH if rejected else ExitCode.FAILED
        left = [
            (account_id, monitor)
            for monitor in every
            for account_id, (x_user_id, username) in users.items()
            if tracks(monitor, x_user_id=x_user_id, username=username)
        ]
        for account_id, monitor in left:  # one JSON line each on stdout, for scripts
            line = {
                "monitor_id": monitor.get("id"),
                "username": monitor.get("username"),
                "x_user_id": monitor.get("xUserId"),
                "account_id": account_id,
            }
            print(json.dumps(line), flush=True)
        say(
            f"{len(left)} monitors track users this log records as disconnected "
            f"({len(users)} users, {len(every)} monitors listed)"
            + ("" if delete or not left else "; --delete removes them")
        )
        if sink is None or not left:
            return ExitCode.OK
        run_id = Runner.new_run_id()
        failed = 0
        for account_id, monitor in left:
            monitor_id = str(monitor["id"])
            if not ID_PATTERN.fullmatch(monitor_id):  # a server's text: never into a URL
                say(f"monitor id {monitor_id[:40]!r} from the listing is not an id: skipped")
                failed += 1
                continue
            call = await session.call(partial(session.client.delete_monitor, monitor_id))
            fields: dict[str, object] = {"attempts": call.attempts}
            if call.answer is not None:
                outcome, pending = monitor_deleted(call.answer)
                fields.update(http_status=call.answer.status, pending=pending)
            else:
                assert call.error is not None
                failed += 1
                outcome = Outcome.FAILED
                fields.update(error=describe(call.error, call.attempts))
                fields["http_status"] = getattr(call.error, "status", None)
            job = Job(source=f"monitors:{path.name}", account_id=account_id)
            sink.write(
                Result.for_job(
                    job,
                    run_id=run_id,
                    outcome=outcome,
                    op=Op.DELETE_MONITOR,
                    monitor_id=monitor_id,
                    monitor_kind="account",
                    key_id=session.key_id,
                    **fields,
                )
            )
            if call.answer is None and isinstance(call.error, FATAL):
                break
        sink.sync()
        say(f"deleted {len(left) - failed} of {len(left)}; records appended to {path}")
        if any(isinstance(exc, FATAL) for exc in rejected):
            return ExitCode.AUTH
        return ExitCode.FAILED if failed else ExitCode.OK


__all__ = ["disconnected_users", "main"]
