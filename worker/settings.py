"""Frozen settings and the value types they hold. Values only: options (flags, environment,
keywords of `worker.run`) are read and validated in `worker.run.options`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from worker.budget.rate import AUTO_CEILING, Rate


class Secret(str):
    """A string whose repr never shows its value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"


READ_RATE = Rate(60, 1.0)


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """How one command speaks with the API with one key (`run`, `plan`, `monitors`): where,
    with which key, under which budgets, with which patience. `api.session.Session` is built
    from this, in one place."""

    base_url: str
    api_key: Secret = field(repr=False)
    rate: Rate = AUTO_CEILING  # DELETEs
    read_rate: Rate = READ_RATE  # GETs
    margin: float = 0.0  # extra seconds per slot (the budget is exact without it)
    relearn: float = 86400.0  # with an auto rate: try the ceiling again after this long
    max_cooldown: float = 900.0
    timeout: float = 30.0
    max_attempts: int = 5
    concurrency: int = 4
    state_dir: Path | None = None  # the budget's state files; None: none at all
    budget_url: str | None = field(default=None, repr=False)  # the budget in this Redis
    budget_connect_timeout: float = 30.0
    sandbox: bool = False  # the built-in sandbox, started in-process (its URL and key then)
    # Backoff between retries (full jitter, exponential); not options: tests shorten them.
    backoff_base: float = 0.5
    backoff_cap: float = 30.0


@dataclass(frozen=True, slots=True)
class QueueConfig:
    url: str = field(repr=False)
    stream: str = "xquik:disconnect"
    group: str = "xquik-disconnect"
    consumer: str = ""
    claim_idle: float = 60.0
    retain: float | None = 7 * 86400.0  # trim streams older than this (None: never)
    max_deliveries: int = 5
    drain: bool = False
    batch: int = 16
    dead_letter_rejected: bool = False  # --keys: a 401 dead-letters its job (one key of many)
    block_ms: int = 1000
    connect_timeout: float | None = None  # None: wait for Redis for ever (a k8s consumer)
    min_replicas: int = 0  # WAIT for this many replicas before a settle counts


@dataclass(frozen=True, slots=True)
class Intervals:
    """How often the run does what it does on a timer. Not options: tests shorten them, so
    that none waits a fixed time for a timer to fire."""

    sync: float = 1.0  # fsync the result log
    key_poll: float = 5.0  # read the --keys directory again
    progress: float = 10.0  # a `progress` event, off a terminal
    textfile: float = 10.0  # --metrics-textfile
    backoff_base: float = 0.5  # between retries: full jitter, exponential from this
    backoff_cap: float = 30.0  # and at most this


@dataclass(frozen=True, slots=True)
class RunSettings:
    source: str
    results: Path
    api: ApiSettings
    grace: float = 30.0
    fresh: bool = False
    dry_run: bool = False
    delete_monitors: bool = False
    keyword_monitors: bool = False  # --delete-monitors=all: keyword monitors naming the user too
    wait_monitors: float | None = None  # seconds to wait for a monitor's background deletion
    limit: int | None = None
    progress: bool = False
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 for a scrape from elsewhere (Kubernetes)
    metrics_textfile: Path | None = None  # node_exporter textfile, every 10 s and at the end
    pushgateway: str | None = field(default=None, repr=False)  # pushed at the end
    wait_lock: bool = False
    precheck: bool = True  # confirm an unlisted id with a GET before spending a DELETE on it
    strict_missing: bool = False  # an id not connected at the start fails (a typo?)
    notify_url: Secret | None = field(default=None, repr=False)  # POST the summary here
    yes: bool = False  # --yes: never ask before deleting
    confirm_over: int = 10  # on a terminal, ask before deleting more accounts than this
    queue: QueueConfig | None = None  # set when SOURCE is a redis:// URL
    keys_dir: Path | None = None  # --keys: one key per file, the file name the tenant's
    # The keys read from keys_dir at start, by tenant: (key, account or None).
    keys: dict[str, tuple[str, str | None]] = field(default_factory=dict, repr=False)
    read_ahead: int = 10_000
    intervals: Intervals = Intervals()


__all__ = ["READ_RATE", "ApiSettings", "Intervals", "QueueConfig", "RunSettings", "Secret"]
