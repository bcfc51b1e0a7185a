"""What a result log says, across all the runs it holds, gathered in one pass: for `report`
(text and JSON) and its HTML page alike, so the two can never disagree. Every rule comes from
`records`: which account a record is about, what is done, what spent a DELETE, and how DELETEs
fall into the server's windows.

An account counts as done once any record says so; a failure counts as outstanding only while
no later record has done the account."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.models import DONE, Op, Outcome
from worker.results import records
from worker.results.chain import Checker, Verdict
from worker.results.records import Record

MAX_ROWS = 20_000  # records kept for the HTML page's audit table; the log keeps them all


@dataclass(slots=True)
class RunInfo:
    run_id: str
    first: float  # Unix seconds of its first and last records
    last: float
    first_ts: str
    last_ts: str
    outcomes: Counter[str] = field(default_factory=Counter)
    deletes: list[float] = field(default_factory=list)  # when each DELETE was answered

    def seconds(self) -> float:
        return self.last - self.first


@dataclass(slots=True)
class Report:
    records: int = 0
    unreadable_lines: list[int] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)  # of disconnects
    monitors: Counter[str] = field(default_factory=Counter)  # of monitor deletions
    checks: Counter[str] = field(default_factory=Counter)  # of dry-run GETs
    runs: dict[str, RunInfo] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)  # account keys (records.account_key)
    last_failure: dict[str, str] = field(default_factory=dict)  # account -> error
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (source, error)
    not_connected: list[str] = field(default_factory=list)  # seen_connected: false
    tenants: dict[str, Counter[str]] = field(default_factory=dict)  # "" for the default key
    deletes: dict[str, list[float]] = field(default_factory=dict)  # by tenant: answer times
    key_ids: set[str] = field(default_factory=set)
    delete_limit: str | None = None  # the DELETE limit the latest record says was in force
    latest: float = float("-inf")
    rows: list[Record] = field(default_factory=list)  # the first MAX_ROWS disconnects
    rows_total: int = 0
    chain: Verdict = field(default_factory=Verdict)
    # `verify`: each account's latest finding: (when, outcome, new id, ts)
    verified: dict[str, tuple[float, str, str | None, str]] = field(default_factory=dict)

    def add(self, record: Record) -> None:
        """One readable record into the report."""
        outcome, run_id = record["outcome"], record["run_id"]
        when = records.when(record)
        assert when is not None  # records.parse checked it
        self.records += 1
        run = self.runs.get(run_id)
        if run is None:
            run = self.runs[run_id] = RunInfo(run_id, when, when, record["ts"], record["ts"])
        if when < run.first:
            run.first, run.first_ts = when, record["ts"]
        if when > run.last:
            run.last, run.last_ts = when, record["ts"]
        if key_id := records.text(record, "key_id"):
            self.key_ids.add(key_id)
        if (limit := records.text(record, "delete_limit")) is not None and when >= self.latest:
            self.delete_limit, self.latest = limit, when
        op = records.op(record)
        if op == Op.VERIFY:  # what became of an account later: never a run's outcome
            account = records.account_key(record)
            if when >= self.verified.get(account, (float("-inf"),))[0]:
                new_id = records.text(record, "new_account_id")
                self.verified[account] = (when, str(outcome), new_id, record["ts"])
            run.outcomes[f"verify:{outcome}"] += 1
            return
        if op == Op.CHECK:  # a dry run's GET: never a deletion
            self.checks[outcome] += 1
            return
        tenant = records.tenant(record)
        if records.spent_delete(record):  # monitor DELETEs share the tier
            run.deletes.append(when)
            self.deletes.setdefault(tenant, []).append(when)
        if op != Op.DISCONNECT:
            self.monitors[outcome] += 1
            return
        self.outcomes[outcome] += 1
        run.outcomes[outcome] += 1
        self.tenants.setdefault(tenant, Counter())[outcome] += 1
        account = records.account_key(record)
        if record.get("seen_connected") is False:
            self.not_connected.append(account)
        if outcome in DONE:
            self.done.add(account)
        elif outcome == Outcome.FAILED:
            self.last_failure[account] = str(record.get("error"))
        elif outcome == Outcome.INVALID:
            self.invalid.append((str(record.get("source", "?")), str(record.get("error"))))
        self.rows_total += 1
        if len(self.rows) < MAX_ROWS:
            self.rows.append(record)

    def outstanding(self) -> dict[str, list[str]]:
        """Accounts whose latest failure no later record has made done, grouped by error,
        the largest group first."""
        groups: dict[str, list[str]] = {}
        for account, error in self.last_failure.items():
            if account not in self.done:
                groups.setdefault(error, []).append(account)
        return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))

    def verification(self) -> dict[str, Any] | None:
        """The latest `verify` finding of each account it checked: when the last one was,
        the counts, and each account not gone (with the id it is back under)."""
        if not self.verified:
            return None
        counts: Counter[str] = Counter(outcome for _, outcome, _, _ in self.verified.values())
        latest = max(self.verified.values())
        exceptions = [
            {"account": account, "outcome": outcome, "new_account_id": new_id}
            for account, (_, outcome, new_id, _) in sorted(self.verified.items())
            if outcome != Outcome.GONE
        ]
        return {
            "at": latest[3],
            "accounts": len(self.verified),
            "outcomes": {
                o: counts[o] for o in (Outcome.GONE, Outcome.STILL_CONNECTED, Outcome.RECONNECTED)
            },
            "exceptions": exceptions,
        }

    def all_deletes(self) -> list[float]:
        return [t for times in self.deletes.values() for t in times]

    def peak(self, window: float) -> int:
        """The most DELETEs of one key in one of the server's windows (`records.windows`)."""
        return max((records.peak(times, window) for times in self.deletes.values()), default=0)

    def has_tenants(self) -> bool:
        return any(self.tenants)

    def tenant_table(self) -> dict[str, dict[str, int]]:
        return records.tenant_table(self.tenants)

    def as_dict(self, window: float) -> dict[str, Any]:
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
            "window_s": window,
            "peak_deletes_per_window": self.peak(window),
            "runs": [
                {
                    "run_id": r.run_id,
                    "first_ts": r.first_ts,
                    "last_ts": r.last_ts,
                    "outcomes": dict(sorted(r.outcomes.items())),
                    "deletes": len(r.deletes),
                    # per minute only over at least one window: a few DELETEs in a few
                    # milliseconds are not a rate (the peak says what the budget allowed)
                    "deletes_per_min": round(len(r.deletes) / r.seconds() * 60, 2)
                    if r.seconds() >= window
                    else None,
                    "peak_deletes_per_window": records.peak(r.deletes, window),
                }
                for r in self.runs.values()
            ],
            "unreadable_lines": self.unreadable_lines,
            "verification": self.verification(),
            "chain": self.chain.as_dict(),
        }


def verification_line(verified: dict[str, Any]) -> str:
    """`verify`'s latest findings in one line (the text report and the HTML page)."""
    counts = verified["outcomes"]
    return (
        f"verified {verified['at']}: {verified['accounts']} accounts, {counts['gone']} gone, "
        f"{counts['still_connected']} still connected, {counts['reconnected']} reconnected"
    )


def exception_words(item: dict[str, Any]) -> str:
    if item["outcome"] == "reconnected":
        return f"{item['account']}: reconnected as {item['new_account_id']}"
    return f"{item['account']}: {item['outcome'].replace('_', ' ')}"


def build(path: Path, *, head: str | None = None) -> Report:
    """The report of a whole log, in one pass, its chain checked on the way (`head`: a chain
    the log must hold, see `chain.check`)."""
    report = Report()
    checker = Checker(head=head)
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            blank = not line.strip()
            record = None if blank else records.parse(line)
            checker.feed(number, record, blank=blank)
            if record is None:
                report.unreadable_lines.append(number)
            else:
                report.add(record)
    report.chain = checker.done()
    return report


__all__ = ["MAX_ROWS", "Report", "RunInfo", "build", "exception_words", "verification_line"]
