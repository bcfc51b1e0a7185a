"""What a run did, in numbers: the summary event, the exit code, the metrics' source."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from worker.errors import ExitCode
from worker.models import Outcome
from worker.results.records import tenant_table


class Stop(StrEnum):
    """Why a run stopped before its source was exhausted."""

    AUTH = "auth"  # the API key was rejected (every key, with several)
    TLS = "tls"  # the server's certificate could not be verified
    WRITE = "write"  # the result log could not be written
    INTERNAL = "internal"  # an internal error
    SIGNAL = "signal"  # SIGINT, SIGTERM or SIGHUP
    DECLINED = "declined"  # the person at the terminal said no: nothing sent


# How each stop is told to a person (the summary table, --notify).
STOPPED_WORDS = {
    None: "finished",
    Stop.SIGNAL: "stopped by a signal (rerun to resume)",
    Stop.DECLINED: "not confirmed: nothing was sent",
    Stop.AUTH: "stopped: the API key was rejected",
    Stop.TLS: "stopped: the server's certificate could not be verified",
    Stop.WRITE: "stopped: the result log could not be written",
    Stop.INTERNAL: "stopped by an internal error",
}


def limit_words(rate: dict[str, object]) -> str:
    """The DELETE limit in force, for a person: `12/60s learned (ceiling 60/60s)`,
    `60/60s (auto, the ceiling)`, `15/60s fixed`, `unlimited`."""
    if not rate:
        return ""
    limit, window = rate.get("limit"), rate.get("window_s")
    if limit is None:
        return "unlimited"
    per = f"{limit}/{window:g}s" if isinstance(window, (int, float)) else str(limit)
    if rate.get("mode") != "auto":
        return f"{per} fixed"
    ceiling = f"{rate.get('ceiling')}/{window:g}s" if isinstance(window, (int, float)) else "?"
    if rate.get("learned"):
        return f"{per} learned (ceiling {ceiling})"
    return f"{per} (auto: the ceiling, nothing learned)"


@dataclass(slots=True)
class Summary:
    run_id: str
    outcomes: Counter[str] = field(default_factory=Counter)  # of the jobs' disconnects
    monitors: Counter[str] = field(default_factory=Counter)  # of monitor deletions
    skipped_done: int = 0
    read: int = 0  # jobs (and invalid lines) taken from the source
    unread_remain: bool = False  # stopped before the end of the jobs file: a rerun sends them
    not_connected: int = 0  # ids not connected when the run began: removed earlier, or typos
    not_finished: int = 0
    stopped: Stop | None = None
    consumer: bool = False  # queue mode: a signal is the normal way to stop
    elapsed_s: float = 0.0
    sent: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    attempts: int = 0
    # The DELETE limit in force at the end: of the default key (with --keys and no default
    # key, of the first tenant's; each tenant's own in tenant_rates).
    rate: dict[str, object] = field(default_factory=dict)
    # Several keys: each tenant's outcomes ("" for the default key's jobs), and the DELETE
    # limit in force for it at the end (each Xquik account learns its own).
    by_tenant: dict[str, Counter[str]] = field(default_factory=dict)
    tenant_rates: dict[str, dict[str, object]] = field(default_factory=dict)
    chain_head: str | None = None  # the result log's hash chain head when the run ended

    @property
    def records(self) -> int:
        return sum(self.outcomes.values()) + sum(self.monitors.values())

    @property
    def exit_code(self) -> ExitCode:
        """The command line's exit code for this run."""
        stopped = self.stopped
        if stopped is Stop.SIGNAL:
            return ExitCode.OK if self.consumer else ExitCode.INTERRUPTED
        if stopped is not None:
            return _EXIT[stopped]
        failed = self.outcomes[Outcome.FAILED] + self.monitors[Outcome.FAILED]
        if failed or self.outcomes[Outcome.INVALID]:
            return ExitCode.FAILED
        return ExitCode.OK

    def _window(self) -> float:
        window = self.rate.get("window_s")
        return float(window) if isinstance(window, (int, float)) else 60.0

    def as_event(self) -> dict[str, object]:
        deletes = self.sent.get("DELETE", 0)
        return {
            "run_id": self.run_id,
            "outcomes": dict(sorted(self.outcomes.items())),
            "monitors": dict(sorted(self.monitors.items())),
            "records": self.records,
            "read": self.read,
            "skipped_done": self.skipped_done,
            "not_connected_at_start": self.not_connected,
            "not_finished": self.not_finished,
            "unread_jobs_remain": self.unread_remain,
            "stopped": None if self.stopped is None else str(self.stopped),
            "elapsed_s": round(self.elapsed_s, 3),
            "requests": dict(sorted(self.sent.items())),
            "retries": self.retries,
            # Per minute only over at least one window: a few DELETEs in a few milliseconds
            # are not a rate (they read like a violation of the budget).
            "deletes_per_min": round(60 * deletes / self.elapsed_s, 1)
            if self.elapsed_s >= self._window()
            else None,
            "rate": self.rate,
            **({"tenants": self.tenant_table()} if self.by_tenant else {}),
            **(
                {
                    "tenant_limits": {
                        n or "(default)": r for n, r in sorted(self.tenant_rates.items())
                    }
                }
                if self.tenant_rates
                else {}
            ),
            "chain_head": self.chain_head,
            "exit_code": int(self.exit_code),
        }

    def tenant_table(self) -> dict[str, dict[str, int]]:
        return tenant_table(self.by_tenant)


_EXIT = {
    Stop.AUTH: ExitCode.AUTH,
    Stop.TLS: ExitCode.USAGE,
    Stop.WRITE: ExitCode.WRITE,
    Stop.INTERNAL: ExitCode.SOFTWARE,
    Stop.DECLINED: ExitCode.INTERRUPTED,  # the person at the terminal said no: nothing sent
}
