"""Look before you leap: on a terminal, a run that would DELETE more than --confirm-over
accounts first says what it will do and asks. Nothing is sent before the answer; --yes answers
for scripts, and without a terminal (cron, a queue consumer, a pipe) it never asks."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from worker.budget.base import Budget
from worker.models import Invalid, Job
from worker.run.summary import limit_words
from worker.settings import RunSettings
from worker.sources.file import CHUNK, LineParser, format_for


@dataclass
class Preview:
    """What a run over a jobs file would do, read from the file alone (no request)."""

    accounts: int = 0  # distinct accounts to disconnect, done ones skipped
    skipped_done: int = 0
    duplicates: int = 0
    invalid: list[str] = field(default_factory=list)  # "source: error"
    with_monitors: int = 0  # accounts whose monitors go too


def preview(
    source: str | Path, done: frozenset[str], *, delete_monitors: bool, limit: int | None
) -> Preview:
    """One pass over the file with the run's own parser, as the run will see it."""
    path = Path(source)
    out = Preview()
    seen: set[str] = set()
    parser = LineParser(str(path), format_for(path))
    with path.open("rb") as f:
        chunks = iter(lambda: f.read(CHUNK), b"")
        for items in (*(parser.feed(c) for c in chunks), parser.finish()):
            for item in items:
                if (
                    limit is not None
                    and out.accounts + out.skipped_done + out.duplicates + len(out.invalid) >= limit
                ):
                    return out
                if isinstance(item, Invalid):
                    out.invalid.append(f"{item.source}: {item.error}")
                    continue
                assert isinstance(item, Job)
                key = item.key
                if key in done:
                    out.skipped_done += 1
                elif key in seen:
                    out.duplicates += 1
                else:
                    seen.add(key)
                    out.accounts += 1
                    out.with_monitors += item.delete_monitors or delete_monitors
    return out


def should_ask(settings: RunSettings, *, stdin: TextIO | None = None) -> bool:
    """Only a person at a terminal is asked, and only for a file of jobs that deletes."""
    stdin = stdin or sys.stdin
    return (
        not settings.yes
        and not settings.dry_run
        and settings.queue is None
        and settings.source != "-"
        and stdin is not None
        and stdin.isatty()
        and sys.stderr is not None
        and sys.stderr.isatty()
    )


def confirm(
    p: Preview,
    *,
    over: int,
    budget: Budget,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stderr,
) -> bool:
    """Show the preview and ask when it deletes more than `over` accounts; True: go on."""
    if p.accounts <= over:
        return True
    w = out.write
    w(f"\nThis run will disconnect {p.accounts:,} accounts from Xquik (irreversible).\n")
    if p.with_monitors:
        w(f"  with the account monitors tracking {p.with_monitors:,} of them\n")
    if p.skipped_done:
        w(f"  skipped, done by an earlier run: {p.skipped_done:,}\n")
    if p.duplicates:
        w(f"  listed twice (one DELETE each): {p.duplicates:,}\n")
    if p.invalid:
        w(f"  invalid lines, recorded and skipped: {len(p.invalid):,}\n")
        for line in p.invalid[:5]:
            w(f"    {line}\n")
    eta = budget.eta(p.accounts)
    limit = limit_words(budget.describe())
    w(f"  DELETE limit: {limit}")
    w(f"; at best {_duration(eta)}\n" if eta is not None else "\n")
    w(f"Disconnect {p.accounts:,} accounts? [y/N] ")
    out.flush()
    answer = stdin.readline().strip().lower()
    return answer in {"y", "yes"}


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
