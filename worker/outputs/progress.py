"""What a person watching sees: a rich progress bar on a TTY, periodic `progress` log events off
one, and a summary table at the end. Both read the runner's summary on a timer, so the job path
pays nothing for them; rich is imported only when a TTY is there to draw on."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import anyio

from worker.budget.base import Budget
from worker.logs import get_logger
from worker.run.summary import STOPPED_WORDS, Summary, limit_words

if TYPE_CHECKING:
    from worker.run.runner import Runner

log = get_logger()


def handled(summary: Summary) -> int:
    return summary.records + summary.skipped_done + summary.not_finished


def eta_seconds(
    summary: Summary, total: int | None, budget: Budget, elapsed: float
) -> float | None:
    """Time left: from the budget when it is the bottleneck, else from the pace so far."""
    if total is None:
        return None
    remaining = max(total - handled(summary), 0)
    from_budget = budget.eta(remaining)
    if from_budget is not None:
        return from_budget
    done = handled(summary)
    # At the pace so far, after any cooldown in force (nothing is sent until it is over).
    return elapsed / done * remaining + budget.cooldown_remaining() if done else None


def _status_line(summary: Summary, budget: Budget) -> str:
    parts = [f"{k} {v}" for k, v in sorted(summary.outcomes.items())]
    if summary.skipped_done:
        parts.append(f"skipped {summary.skipped_done}")
    cooling = budget.cooldown_remaining()
    if cooling > 0:
        parts.append(f"cooldown {cooling:.0f}s")
    parts.append(f"limit {limit_words(budget.describe())}")
    return ", ".join(parts)


async def watch(
    runner: Runner, *, total: int | None, budget: Budget, tty: bool, every: float = 10.0
) -> None:
    """Runs until cancelled: a progress bar on a TTY, else a `progress` event every `every`
    seconds (10)."""
    started = time.monotonic()
    if not tty:
        while True:
            await anyio.sleep(every)
            s = runner.summary
            eta = eta_seconds(s, total, budget, time.monotonic() - started)
            log.info(
                "progress",
                handled=handled(s),
                total=total,
                outcomes=dict(s.outcomes),
                cooldown_s=round(budget.cooldown_remaining(), 1),
                rate=budget.describe(),
                eta_s=None if eta is None else round(eta),
            )
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TextColumn("ETA {task.fields[eta]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("disconnecting", total=total, status="", eta="?")
        try:
            while True:
                s = runner.summary
                eta = eta_seconds(s, total, budget, time.monotonic() - started)
                bar.update(
                    task,
                    completed=handled(s),
                    status=_status_line(s, budget),
                    eta="?" if eta is None else _clock(eta),
                )
                await anyio.sleep(0.25)
        finally:
            bar.update(
                task,
                completed=handled(runner.summary),
                status=_status_line(runner.summary, budget),
                eta="0:00:00",
            )


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def print_summary(summary: Summary, results: str) -> None:
    """A short table on stderr, for a person at a terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {summary.run_id}", title_justify="left")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    for outcome, count in sorted(summary.outcomes.items()):
        table.add_row(outcome, str(count))
    for outcome, count in sorted(summary.monitors.items()):
        table.add_row(f"monitor {outcome}", str(count))
    table.add_row("[dim]skipped (done earlier)", f"[dim]{summary.skipped_done}")
    if summary.not_connected:
        table.add_row(
            "[yellow]not connected when the run began",
            f"[yellow]{summary.not_connected}",
        )
    if summary.not_finished:
        table.add_row("[yellow]read, not finished (rerun)", f"[yellow]{summary.not_finished}")
    if summary.unread_remain:
        table.add_row("[yellow]jobs not read yet (rerun)", "[yellow]remain")
    event: dict[str, Any] = summary.as_event()
    requests = ", ".join(f"{n} {method}" for method, n in sorted(summary.sent.items())) or "none"
    stopped = "" if summary.stopped is None else f"; {STOPPED_WORDS[summary.stopped]}"
    console = Console(file=sys.stderr)
    console.print(table)
    console.print(
        f"{event['records']} records in {event['elapsed_s']} s; requests: {requests}; "
        f"retries: {event['retries']}; exit code {event['exit_code']}{stopped}; "
        f"results: {results}"
    )
    if summary.by_tenant:
        tenants = Table(title="by tenant", title_justify="left")
        tenants.add_column("tenant")
        tenants.add_column("outcomes")
        tenants.add_column("DELETE limit in force")
        for name, per in sorted(summary.by_tenant.items()):
            tenants.add_row(
                name or "(default)",
                ", ".join(f"{k} {v}" for k, v in sorted(per.items())),
                limit_words(summary.tenant_rates.get(name, {})) or "-",
            )
        console.print(tenants)
    elif summary.rate:
        console.print(f"DELETE limit in force: {limit_words(summary.rate)}")
    if summary.chain_head:
        console.print(f"result log chain head: {summary.chain_head} (report --check --head)")
    if summary.not_connected:
        console.print(
            f"not connected when the run began: {summary.not_connected} — already removed, or "
            "a mistyped id (records with seen_connected: false; --strict-missing fails them)"
        )
