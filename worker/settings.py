"""One frozen settings object for a run, and the value types it holds. Values only: flags and
environment are read and validated in `worker.cli.config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_BASE_URL = "https://xquik.com/api/v1"


@dataclass(frozen=True, slots=True)
class Rate:
    """N requests per `period` seconds; `limit` None means unlimited. With `auto`, `limit` is
    the ceiling and the limit in force is learned from the server's 429s."""

    limit: int | None
    period: float
    auto: bool = False

    def __str__(self) -> str:
        if self.limit is None:
            return "unlimited"
        fixed = f"{self.limit}/{self.period:g}s"
        return f"auto:{fixed}" if self.auto else fixed


class Secret(str):
    """A string whose repr never shows its value."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"


@dataclass(frozen=True, slots=True)
class QueueConfig:
    url: str
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


@dataclass(frozen=True, slots=True)
class RunSettings:
    source: str
    results: Path
    base_url: str
    api_key: Secret = field(repr=False)
    rate: Rate
    read_rate: Rate
    rate_margin: float | None  # extra seconds per slot; None: 0 (the budget is exact)
    relearn: float = 86400.0  # with an auto rate: try the ceiling again after this long
    concurrency: int = 4
    max_attempts: int = 5
    timeout: float = 30.0
    max_cooldown: float = 900.0
    grace: float = 30.0
    state_dir: Path | None = None  # None: the user cache dir (unless persist_budget is off)
    persist_budget: bool = True  # --state-dir none: no state file at all
    fresh: bool = False
    dry_run: bool = False
    delete_monitors: bool = False
    keyword_monitors: bool = False  # --delete-monitors=all: keyword monitors naming the user too
    wait_monitors: float | None = None  # seconds to wait for a monitor's background deletion
    limit: int | None = None
    sandbox: bool = False
    progress: bool = False
    metrics_port: int | None = None
    metrics_textfile: Path | None = None  # node_exporter textfile, every 10 s and at the end
    pushgateway: str | None = None  # pushed at the end
    wait_lock: bool = False
    precheck: bool = True  # confirm an unlisted id with a GET before spending a DELETE on it
    strict_missing: bool = False  # an id not connected at the start fails (a typo?)
    notify_url: Secret | None = field(default=None, repr=False)  # POST the summary here
    yes: bool = False  # --yes: never ask before deleting
    confirm_over: int = 10  # on a terminal, ask before deleting more accounts than this
    budget_url: str | None = None  # file mode: keep the budget in this Redis, as queue mode does
    budget_connect_timeout: float = 30.0
    queue: QueueConfig | None = None  # set when SOURCE is a redis:// URL
    keys_dir: Path | None = None  # --keys: one key per file, the file name the tenant's
    # The keys read from keys_dir at start, by tenant: (key, account or None).
    keys: dict[str, tuple[str, str | None]] = field(default_factory=dict, repr=False)
    read_ahead: int = 10_000
    # Backoff between retries (full jitter, exponential); not flags, tests shorten them.
    backoff_base: float = 0.5
    backoff_cap: float = 30.0

    @property
    def margin(self) -> float:
        return self.rate_margin or 0.0
