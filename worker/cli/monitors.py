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

import anyio

from worker.api import Call, Session, describe
from worker.api.call import FATAL
from worker.api.directory import tracks
from worker.budget import default_state_dir
from worker.cli.config import api_access
from worker.cli.options import fail, log_level, say
from worker.errors import ConfigError, ExitCode
from worker.logs import configure, get_logger
from worker.models import Op, Outcome, Result
from worker.operations import monitor_deleted
from worker.results import FileSink
from worker.runner import Runner

log = get_logger()


def disconnected_users(path: Path) -> dict[str, tuple[str | None, str | None]]:
    """account id -> (x_user_id, username) of every account the log records as disconnected."""
    users: dict[str, tuple[str | None, str | None]] = {}
    with path.open("rb") as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if not isinstance(r, dict) or r.get("op", "disconnect") != "disconnect":
                continue
            if r.get("outcome") != Outcome.DISCONNECTED or not r.get("account_id"):
                continue
            x_user_id = r.get("x_user_id") or None
            username = r.get("x_username") or r.get("username") or None
            if x_user_id or username:
                users[str(r["account_id"])] = (x_user_id, username)
    return users


def main(args: argparse.Namespace) -> int:
    configure(args.log_format, level=log_level(args))
    path = Path(args.results)
    try:
        users = disconnected_users(path)
        base_url, key = api_access(args)
    except OSError as exc:
        return fail("monitors", f"{path}: {exc.strerror}")
    except ConfigError as exc:
        return fail("monitors", exc)
    try:
        return anyio.run(_monitors, args, path, users, base_url, key)
    except ConfigError as exc:
        return fail("monitors", exc)


async def _monitors(
    args: argparse.Namespace,
    path: Path,
    users: dict[str, tuple[str | None, str | None]],
    base_url: str,
    key: str,
) -> int:
    async with AsyncExitStack() as stack:
        if args.sandbox:
            from worker.sandbox import Sandbox

            sandbox = await stack.enter_async_context(Sandbox())
            base_url, key = sandbox.base_url, sandbox.api_key
        sink = FileSink.open(path) if args.delete else None  # locked: no run writes it now
        if sink is not None:
            stack.callback(sink.close)
        rejected: list[object] = []
        session = await stack.enter_async_context(
            Session(
                base_url=base_url,
                api_key=key,
                rate=args.rate,
                read_rate=args.read_rate,
                on_fatal=rejected.append,
                timeout=args.timeout,
                max_attempts=args.max_attempts,
                state_dir=None if args.sandbox else default_state_dir(),
            )
        )
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
            + ("" if args.delete or not left else "; --delete removes them")
        )
        if sink is None or not left:
            return ExitCode.OK
        run_id = Runner.new_run_id()
        failed = 0
        for account_id, monitor in left:
            monitor_id = str(monitor["id"])
            call = await session.call(partial(session.client.delete_monitor, monitor_id))
            fields: dict[str, object] = {"attempts": call.attempts}
            if call.answer is not None:
                outcome, pending = monitor_deleted(call.answer)
                fields.update(outcome=outcome, http_status=call.answer.status, pending=pending)
            else:
                assert call.error is not None
                failed += 1
                fields.update(outcome=Outcome.FAILED, error=describe(call.error, call.attempts))
                fields["http_status"] = getattr(call.error, "status", None)
            sink.write(
                Result(
                    run_id=run_id,
                    source=f"monitors:{path.name}",
                    op=Op.DELETE_MONITOR,
                    account_id=account_id,
                    monitor_id=monitor_id,
                    monitor_kind="account",
                    key_id=session.key_id,
                    **fields,  # type: ignore[arg-type]
                )
            )
            if call.answer is None and isinstance(call.error, FATAL):
                break
        sink.sync()
        say(f"deleted {len(left) - failed} of {len(left)}; records appended to {path}")
        if any(isinstance(exc, FATAL) for exc in rejected):
            return ExitCode.AUTH
        return ExitCode.FAILED if failed else ExitCode.OK


def options(p: argparse.ArgumentParser) -> None:
    from worker.cli.options import AUTO_CEILING, delete_rate

    p.add_argument("results", metavar="RESULTS", help="a result log (.jsonl)")
    p.add_argument(
        "--delete",
        action="store_true",
        help="delete them (DELETE budget), appending delete_monitor records to RESULTS",
    )
    p.add_argument(
        "--rate",
        type=delete_rate,
        default=AUTO_CEILING,
        metavar="RATE",
        help="DELETE budget for the key, as for run (default auto)",
    )


__all__ = ["disconnected_users", "main", "options"]
