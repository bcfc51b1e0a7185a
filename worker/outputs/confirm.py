"""Look before you leap: on a terminal, a run that would DELETE more than --confirm-over
accounts first says what it will do and asks. Nothing is sent before the answer; --yes answers
for scripts, and without a terminal (cron, a queue consumer, a pipe) it never asks.

The preview reads the jobs file once more, so it must be a file that can be read twice: a
pipe, a FIFO or a process substitution (`run <(seq 21 40)`) would hand the run nothing after
the preview read it all. Such a source is refused (exit 2, nothing sent) unless --yes says
not to ask. The count is of the accounts still connected (the key's listing, which the run
reads anyway), with those already gone said apart: they cost no DELETE."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from worker.budget.base import Budget
from worker.errors import ConfigError
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
    ids: set[str] = field(default_factory=set)  # the accounts' ids, and handles as "@name"
    gone: int | None = None  # of `accounts`, not in the key's listing (None: not listed)

    def connected(self, listing: Iterable[Mapping[str, Any]]) -> None:
        """Count, from the key's listing, how many of the accounts are gone already."""
        ids = {str(a.get("id")) for a in listing}
        names = {"@" + str(a.get("xUsername", "")).lower() for a in listing}
        self.gone = sum(1 for key in self.ids if key not in ids and key not in names)

    @property
    def to_delete(self) -> int:
        """The accounts a DELETE will be sent for."""
        return self.accounts - (self.gone or 0)


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
                    out.ids.add(key)
                    out.accounts += 1
                    out.with_monitors += item.delete_monitors or delete_monitors
    return out


def should_ask(settings: RunSettings, *, stdin: TextIO | None = None) -> bool:
    """Only a person at a terminal is asked, and only for a file of jobs that deletes. A jobs
    source that cannot be read twice is refused rather than previewed (ConfigError)."""
    stdin = stdin or sys.stdin
    ask = (
        not settings.yes
        and not settings.dry_run
        and settings.queue is None
        and settings.source != "-"
        and stdin is not None
        and stdin.isatty()
        and sys.stderr is not None
        and sys.stderr.isatty()
    )
    if ask and not _readable_twice(settings.source):
        raise ConfigError(
            f"{settings.source} is a pipe or a FIFO, not a file: the confirmation would read "
            "the jobs the run needs. Pass --yes to run without asking, or a regular file"
        )
    return ask


def _readable_twice(source: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(source).st_mode)
    except OSError:
        return False


def confirm(
    p: Preview,
    *,
    over: int,
    budget: Budget,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stderr,
) -> bool:
    """Show the preview and ask when it deletes more than `over` accounts; True: go on."""
    if p.to_delete <= over:
        return True
    w = out.write
    w(f"\nThis run will disconnect {p.to_delete:,} accounts from Xquik (irreversible).\n")
    if p.gone:
        w(
            f"  of the {p.accounts:,} accounts in the jobs, {p.gone:,} are no longer "
            "connected: recorded already_gone, no DELETE spent\n"
        )
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
    eta = budget.eta(p.to_delete)
    limit = limit_words(budget.describe())
    w(f"  DELETE limit: {limit}")
    w(f"; at best {_duration(eta)}\n" if eta is not None else "\n")
    w(f"Disconnect {p.to_delete:,} accounts? [y/N] ")
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
