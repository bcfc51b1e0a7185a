"""`xquik-disconnect report RESULTS`: what a result log says (`results.report`), as text for a
person, JSON for scripts, and with --html one self-contained page. Exit 1 when something is
outstanding, for scripts."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from worker.budget.rate import Rate, parse_rate
from worker.cli.say import fail
from worker.errors import ExitCode
from worker.redact import printable
from worker.results import records
from worker.results.report import Report, build, exception_words, verification_line


def render(report: Report, out: TextIO, *, window: float) -> None:
    """The report for a person. Every text comes from the log, and a log's text can hold
    anything (a server's error message): each line is made printable."""

    def w(text: str) -> None:
        out.write(printable(text))

    for line in report.chain.lines():
        w(line + "\n")
    if (verified := report.verification()) is not None:
        w(verification_line(verified) + "\n")
        for item in verified["exceptions"][:50]:
            w(f"  {exception_words(item)}\n")
    w(f"\n{report.records} records, {len(report.done)} accounts done\n\noutcomes:\n")
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
        shown = ", ".join(f"{k} {v}" for k, v in sorted(run.outcomes.items()))
        pace = ""
        if run.deletes:
            pace = f"peak {records.peak(run.deletes, window)} DELETEs in one {window:g} s window"
            if run.seconds() >= window:
                rate = len(run.deletes) / run.seconds() * 60
                pace += f", {rate:.4g} per minute over {run.seconds() / 60:.1f} min"
            pace = f"  ({pace})"
        w(f"  {run.run_id}  {run.first_ts} .. {run.last_ts}  {shown}{pace}\n")
    outstanding = report.outstanding()
    if outstanding:
        w("\nfailed, not done since:\n")
        for error, accounts in outstanding.items():
            shown = ", ".join(accounts[:20]) + (" …" if len(accounts) > 20 else "")
            w(f"  {len(accounts)} x {error}\n      {shown}\n")
    if report.not_connected:
        shown = ", ".join(report.not_connected[:20])
        shown += " …" if len(report.not_connected) > 20 else ""
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


def _rate_of(report: Report) -> Rate:
    """The limit the log's latest record says was in force, else the docs' 15/60s."""
    if report.delete_limit is not None:
        try:
            return parse_rate(report.delete_limit)
        except ValueError:
            pass
    return Rate(15, 60.0)


def main(args: argparse.Namespace) -> int:
    path: str = args.results
    stdin_copy = None
    try:
        if path == "-":  # read once, into a temporary file the page can read again
            stdin_copy = tempfile.NamedTemporaryFile(prefix="xquik-report-", suffix=".jsonl")  # noqa: SIM115
            shutil.copyfileobj(sys.stdin.buffer, stdin_copy)
            stdin_copy.flush()
            source = Path(stdin_copy.name)
        else:
            source = Path(path)
        report = build(source, head=args.head)
        rate = args.rate or _rate_of(report)
        if args.html:
            from worker.cli.html_report import write

            write(report, Path(args.html), rate=rate, label=path)
    except OSError as exc:
        return fail("report", f"{exc.filename or path}: {exc.strerror}")
    finally:
        if stdin_copy is not None:
            stdin_copy.close()
    if args.json:
        json.dump(report.as_dict(rate.period), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(report, sys.stdout, window=rate.period)
    if args.check or args.head:
        # --check: the chain alone decides (a log with failures can be intact)
        return ExitCode.OK if report.chain.intact else ExitCode.FAILED
    return ExitCode.FAILED if report.outstanding() else ExitCode.OK


__all__ = ["main", "render"]
