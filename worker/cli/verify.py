"""`xquik-disconnect verify RESULTS`: prove removal. For every account the log records as done
(disconnected, or already gone) against this API, it reads the key's listing (every page, once
per key) and answers `gone`; `still_connected` (the id is listed and its GET answers 200); or
`reconnected` (the id is gone, but the same X user, by x_user_id, else handle, is connected
under another id, which it names). One `"op": "verify"` record per account is appended to the
log; a rerun of `run` never counts them. Only GETs, through the read budget: never a DELETE.

Exit 0 when every account is gone; 1 when any is not, or could not be checked (another key's
account with no key for it, an error); 2 for a mistake in the options or the log; 3 when the
key is rejected."""

from __future__ import annotations

import argparse
import json
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from worker.api.call import Call, describe
from worker.api.directory import same_user
from worker.api.keys import read_keys
from worker.api.session import Session, open_session
from worker.api.urls import origin_of
from worker.cli.parser import log_level, reading_api
from worker.cli.say import fail
from worker.errors import ConfigError, ExitCode
from worker.logs import configure, get_logger
from worker.models import Job, Op, Outcome, Result
from worker.redact import printable
from worker.results import records
from worker.results.records import Removed
from worker.results.sink import FileSink
from worker.run.options import api_settings
from worker.run.runner import Runner
from worker.settings import ApiSettings, Secret

log = get_logger()

FINDINGS = (Outcome.GONE, Outcome.STILL_CONNECTED, Outcome.RECONNECTED)


@dataclass(slots=True)
class Findings:
    outcomes: dict[str, int] = field(default_factory=lambda: {str(o): 0 for o in FINDINGS})
    exceptions: list[dict[str, Any]] = field(default_factory=list)  # not gone
    unchecked: list[dict[str, Any]] = field(default_factory=list)  # could not be checked
    elsewhere: int = 0  # done records of another API (or a sandbox rehearsal): not ours
    rejected: bool = False
    chain_head: str | None = None

    @property
    def accounts(self) -> int:
        return sum(self.outcomes.values())

    @property
    def exit_code(self) -> ExitCode:
        if self.rejected:
            return ExitCode.AUTH
        if self.exceptions or self.unchecked:
            return ExitCode.FAILED
        return ExitCode.OK

    def as_dict(self, results: str) -> dict[str, Any]:
        return {
            "results": results,
            "accounts": self.accounts,
            "outcomes": self.outcomes,
            "exceptions": self.exceptions,
            "not_checked": self.unchecked,
            "other_api_records": self.elsewhere,
            "chain_head": self.chain_head,
            "exit_code": int(self.exit_code),
        }


def main(args: argparse.Namespace) -> int:
    configure(args.log_format, level=log_level(args))
    path = Path(args.results)
    try:
        api = api_settings(**reading_api(args))
        keys = read_keys(Path(args.keys)) if args.keys else {}
        if not (api.api_key or api.sandbox or keys):
            raise ConfigError(
                "no API key: set XQUIK_API_KEY or pass --api-key-file PATH or --keys DIR "
                "(or --sandbox)"
            )
        origin = None if api.sandbox else origin_of(api.base_url)
        found, elsewhere = records.removed(path, origin=origin, sandbox=api.sandbox)
    except FileNotFoundError:
        return fail("verify", f"{path}: no such result log")
    except OSError as exc:
        return fail("verify", f"{path}: {exc.strerror}")
    except ConfigError as exc:
        return fail("verify", exc)
    if not found:  # the wrong file, or another API's or key's log: never "all gone" for it
        other = f" ({elsewhere} by another API or a sandbox rehearsal)" if elsewhere else ""
        return fail("verify", f"{path} records no account done against this API{other}")
    findings = Findings(elsewhere=elsewhere)
    try:
        anyio.run(_verify, api, keys, path, found, findings)
    except ConfigError as exc:
        return fail("verify", exc)
    _show(findings, str(path), as_json=args.json)
    return findings.exit_code


async def _verify(
    api: ApiSettings,
    keys: dict[str, Any],
    path: Path,
    found: dict[str, Removed],
    findings: Findings,
) -> None:
    by_tenant: dict[str, list[Removed]] = {}
    for gone in found.values():
        by_tenant.setdefault(gone.tenant, []).append(gone)
    run_id = Runner.new_run_id()
    async with AsyncExitStack() as stack:
        # The log first: locked (no run writes it meanwhile), checked before any request.
        sink = FileSink.open(path)
        stack.callback(sink.close)
        for tenant, accounts in sorted(by_tenant.items()):
            key = keys.get(tenant) if tenant else None
            if tenant and key is None:
                why = f"no key for tenant {tenant} (pass --keys DIR holding it)"
                findings.unchecked += [_unchecked(g, why) for g in accounts]
                continue
            if not tenant and not (api.api_key or api.sandbox):
                why = "made with the default key: set XQUIK_API_KEY or --api-key-file"
                findings.unchecked += [_unchecked(g, why) for g in accounts]
                continue
            tenant_api = api if key is None else replace(api, api_key=Secret(key.key))
            rejected: list[object] = []
            session = await open_session(
                tenant_api,
                stack,
                on_fatal=rejected.append,
                account=getattr(key, "account", None),
            )
            await _check(session, accounts, sink, run_id, findings)
            findings.rejected = findings.rejected or bool(rejected)
        sink.sync()
        findings.chain_head = sink.head


async def _check(
    session: Session, accounts: list[Removed], sink: FileSink, run_id: str, findings: Findings
) -> None:
    listed = await session.directory.accounts()
    if isinstance(listed, Call):
        assert listed.error is not None
        why = f"the accounts could not be listed: {describe(listed.error, listed.attempts)}"
        findings.unchecked += [_unchecked(g, why) for g in accounts]
        return
    by_id = {str(a.get("id")): a for a in listed}
    for gone in accounts:
        fields: dict[str, Any] = {}
        if gone.account_id in by_id:
            # Listed: the listing may be a moment old; the account's own GET decides.
            call = await session.call(partial(session.client.get_account, gone.account_id))
            if call.answer is None:
                assert call.error is not None
                findings.unchecked.append(_unchecked(gone, describe(call.error, call.attempts)))
                continue
            fields.update(http_status=call.answer.status, attempts=call.attempts)
            outcome = Outcome.GONE if call.answer.status == 404 else Outcome.STILL_CONNECTED
        else:
            back = next(
                (
                    a
                    for a in listed
                    if str(a.get("id")) != gone.account_id
                    and same_user(a, x_user_id=gone.x_user_id, username=gone.username)
                ),
                None,
            )
            outcome = Outcome.GONE if back is None else Outcome.RECONNECTED
            if back is not None:
                fields["new_account_id"] = str(back.get("id"))
        findings.outcomes[str(outcome)] += 1
        if outcome is not Outcome.GONE:
            findings.exceptions.append(
                {
                    "account_id": gone.account_id,
                    "tenant": gone.tenant or None,
                    "x_username": gone.username,
                    "x_user_id": gone.x_user_id,
                    "outcome": str(outcome),
                    "new_account_id": fields.get("new_account_id"),
                }
            )
        job = Job(
            source=gone.source,
            account_id=gone.account_id,
            job_id=gone.job_id,
            tenant=gone.tenant or None,
        )
        sink.write(
            Result.for_job(
                job,
                run_id=run_id,
                outcome=outcome,
                op=Op.VERIFY,
                x_username=gone.username,
                x_user_id=gone.x_user_id,
                **session.stamp(),
                **fields,
            )
        )


def _unchecked(gone: Removed, why: str) -> dict[str, Any]:
    return {"account_id": gone.account_id, "tenant": gone.tenant or None, "error": why}


def _show(findings: Findings, results: str, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(findings.as_dict(results)), flush=True)
        return
    counts = findings.outcomes
    lines = [
        f"verified {findings.accounts} accounts that {results} records as done: "
        f"{counts['gone']} gone, {counts['still_connected']} still connected, "
        f"{counts['reconnected']} reconnected"
    ]
    for item in findings.exceptions:
        who = f" (@{item['x_username']})" if item["x_username"] else ""
        if item["outcome"] == Outcome.RECONNECTED:
            lines.append(
                f"  {item['account_id']}{who}: reconnected as {item['new_account_id']} "
                f"(plan --offboarded {results} | run - removes it)"
            )
        else:
            lines.append(f"  {item['account_id']}{who}: still connected")
    for item in findings.unchecked:
        lines.append(f"  {item['account_id']}: not checked: {item['error']}")
    if findings.elsewhere:
        lines.append(
            f"  {findings.elsewhere} done records were made against another API (or the "
            "sandbox): not checked here"
        )
    if findings.rejected:
        lines.append("  the API key was rejected (401)")
    lines.append(f"records appended to {results}; chain head {findings.chain_head}")
    for line in lines:
        print(printable(line), flush=True)


__all__ = ["Findings", "main"]
