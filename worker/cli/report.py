"""`xquik-disconnect report RESULTS`: what a result log says, across all the runs it holds.

An account counts as done once any record says so; a failure counts as outstanding only while
no later run has done the account. Exit 1 when something is outstanding, for scripts."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from worker.cli.options import fail
from worker.errors import ExitCode
from worker.models import DONE
from worker.settings import Rate

WINDOW = 60.0  # the API's DELETE window: rates are told per window, never extrapolated


@dataclass
class RunInfo:
    run_id: str
    first_ts: str
    last_ts: str
    outcomes: Counter[str] = field(default_factory=Counter)
    deletes: list[float] = field(default_factory=list)  # when each DELETE was answered

    def seconds(self) -> float:
        return (_parse_ts(self.last_ts) - _parse_ts(self.first_ts)).total_seconds()

    def deletes_per_min(self) -> float | None:
        """Over the whole run; None for a run shorter than one window (a few DELETEs in a few
        milliseconds are not a rate: the peak per window says what the budget allowed)."""
        seconds = self.seconds()
        return round(len(self.deletes) / seconds * 60, 2) if seconds >= WINDOW else None

    def peak_per_window(self) -> int:
        """The most DELETEs answered within any WINDOW seconds of this run."""
        times = sorted(self.deletes)
        peak, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= WINDOW:
                start += 1
            peak = max(peak, end - start + 1)
        return peak


@dataclass
class Report:
    records: int = 0
    unreadable_lines: list[int] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)  # of disconnects (and checks)
    monitors: Counter[str] = field(default_factory=Counter)  # of monitor deletions
    checks: Counter[str] = field(default_factory=Counter)  # of dry-run GETs
    runs: dict[str, RunInfo] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    last_failure: dict[str, str] = field(default_factory=dict)  # account -> error
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (source, error)
    not_connected: list[str] = field(default_factory=list)  # seen_connected: false
    tenants: dict[str, Counter[str]] = field(default_factory=dict)  # "" for the default key

    def outstanding(self) -> dict[str, list[str]]:
        """Accounts whose latest failure no later record has made done, grouped by error."""
        groups: dict[str, list[str]] = defaultdict(list)
        for account, error in self.last_failure.items():
            if account not in self.done:
                groups[error].append(account)
        return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "outcomes": dict(sorted(self.outcomes.items())),
            "monitors": dict(sorted(self.monitors.items())),
            "checks": dict(sorted(self.checks.items())),
            "accounts_done": len(self.done),
            "failed_outstanding": self.outstanding(),
            "invalid_lines": [{"source": s, "error": e} for s, e in self.invalid],
            "not_connected_at_start": self.not_connected,
            **({"tenants": self.tenant_table()} if self.has_tenants() else {}),
            "runs": [
                {
                    "run_id": r.run_id,
                    "first_ts": r.first_ts,
                    "last_ts": r.last_ts,
                    "outcomes": dict(sorted(r.outcomes.items())),
                    "deletes_per_min": r.deletes_per_min(),
                    "peak_deletes_per_60s": r.peak_per_window(),
                }
                for r in self.runs.values()
            ],
            "unreadable_lines": self.unreadable_lines,
        }

    def has_tenants(self) -> bool:
        return any(self.tenants)

    def tenant_table(self) -> dict[str, dict[str, int]]:
        return {
            name or "(default)": dict(sorted(counts.items()))
            for name, counts in sorted(self.tenants.items())
        }


def spent_delete(record: dict[str, Any]) -> bool:
    """The record stands for a DELETE the server answered (a dry run's check, an invalid
    line, a duplicate and a checked already_gone spent none)."""
    if record.get("op", "disconnect") == "check" or record.get("checked"):
        return False
    done = record.get("outcome") in DONE or record.get("outcome") == "failed"
    return done and bool(record.get("http_status"))


def _parse_ts(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def read_record(line: bytes) -> dict[str, Any] | None:
    """One line of a result log as a record, or None when it is not one (torn by a crash,
    edited by hand): an object whose outcome and run_id are text and whose ts is a time."""
    try:
        record = json.loads(line)
        if not isinstance(record, dict):
            return None
        if not isinstance(record["outcome"], str) or not isinstance(record["run_id"], str):
            return None
        _parse_ts(record["ts"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return record


def build(path: Path) -> Report:
    report = Report()
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            record = read_record(line)
            if record is None:
                report.unreadable_lines.append(number)
                continue
            outcome, run_id, ts = record["outcome"], record["run_id"], record["ts"]
            report.records += 1
            run = report.runs.setdefault(run_id, RunInfo(run_id, ts, ts))
            run.last_ts = max(run.last_ts, ts)
            op = record.get("op", "disconnect")
            if op == "check":  # a dry run's GET: never a deletion
                report.checks[outcome] += 1
                continue
            if spent_delete(record):  # monitor DELETEs share the tier
                run.deletes.append(_parse_ts(ts).timestamp())
            if op != "disconnect":
                report.monitors[outcome] += 1
                continue
            report.outcomes[outcome] += 1
            run.outcomes[outcome] += 1
            tenant = str(record["tenant"]) if isinstance(record.get("tenant"), str) else ""
            report.tenants.setdefault(tenant, Counter())[outcome] += 1
            account = record.get("account_id") or ("@" + str(record.get("username")))
            if tenant:  # one tenant's account is not another's
                account = f"{tenant}/{account}"
            if record.get("seen_connected") is False:
                report.not_connected.append(account)
            if outcome in DONE:
                report.done.add(account)
            elif outcome == "failed":
                report.last_failure[account] = str(record.get("error"))
            elif outcome == "invalid":
                report.invalid.append((record.get("source", "?"), str(record.get("error"))))
    return report


def render(report: Report, out: TextIO) -> None:
    w = out.write
    w(f"{report.records} records, {len(report.done)} accounts done\n\noutcomes:\n")
    for outcome, count in sorted(report.outcomes.items()):
        w(f"  {outcome:<14} {count}\n")
    for title, counts in (("monitors", report.monitors), ("dry-run checks", report.checks)):
        if counts:
            w(f"\n{title}:\n")
            for outcome, count in sorted(counts.items()):
                w(f"  {outcome:<14} {count}\n")
    if report.has_tenants():
        w("\nby tenant:\n")
        for name, per in report.tenant_table().items():
            shown = ", ".join(f"{k} {v}" for k, v in per.items())
            w(f"  {name:<14} {shown}\n")
    w(f"\nruns ({len(report.runs)}):\n")
    for run in report.runs.values():
        rate = run.deletes_per_min()
        shown = ", ".join(f"{k} {v}" for k, v in sorted(run.outcomes.items()))
        pace = f"peak {run.peak_per_window()} DELETEs in any {WINDOW:g} s" if run.deletes else ""
        if rate is not None and run.deletes:
            pace += f", {rate:g} per minute over {run.seconds() / 60:.1f} min"
        pace = f"  ({pace})" if pace else ""
        w(f"  {run.run_id}  {run.first_ts} .. {run.last_ts}  {shown}{pace}\n")
    outstanding = report.outstanding()
    if outstanding:
        w("\nfailed, not done since:\n")
        for error, accounts in outstanding.items():
            shown = ", ".join(accounts[:20]) + (" …" if len(accounts) > 20 else "")
            w(f"  {len(accounts)} x {error}\n      {shown}\n")
    if report.not_connected:
        shown = ", ".join(report.not_connected[:20]) + (
            " …" if len(report.not_connected) > 20 else ""
        )
        w(
            f"\nnot connected when the run began: {len(report.not_connected)} — already removed, "
            f"or a mistyped id\n      {shown}\n"
        )
    if report.invalid:
        w(f"\ninvalid lines ({len(report.invalid)}):\n")
        for source, error in report.invalid[:50]:
            w(f"  {source}: {error}\n")
    if report.unreadable_lines:
        w(f"\nunreadable lines (torn by a crash?): {report.unreadable_lines[:20]}\n")


def main(path: str, *, as_json: bool, html: str | None = None, rate: Rate | None = None) -> int:
    stdin_copy = None
    try:
        if path == "-":  # read once, into a temporary file both readers can open
            stdin_copy = tempfile.NamedTemporaryFile(prefix="xquik-report-", suffix=".jsonl")  # noqa: SIM115
            shutil.copyfileobj(sys.stdin.buffer, stdin_copy)
            stdin_copy.flush()
            source = Path(stdin_copy.name)
        else:
            source = Path(path)
        report = build(source)
        if html:
            from worker.cli.html_report import write

            write(source, Path(html), rate=rate or Rate(15, 60.0), label=path)
    except OSError as exc:
        return fail("report", f"{exc.filename or path}: {exc.strerror}")
    finally:
        if stdin_copy is not None:
            stdin_copy.close()
    if as_json:
        json.dump(report.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(report, sys.stdout)
    return ExitCode.FAILED if report.outstanding() else ExitCode.OK
