"""One frozen settings object for a run, and the parsers that validate each value."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from worker.errors import ConfigError

DEFAULT_BASE_URL = "https://xquik.com/api/v1"
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, None: 1.0}


@dataclass(frozen=True, slots=True)
class Rate:
    """N requests per `period` seconds; `limit` None means unlimited."""

    limit: int | None
    period: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        if text.strip().lower() == "unlimited":
            return cls(None, 1.0)
        match = _RATE.fullmatch(text)
        if not match:
            raise ValueError(f"{text!r} is not N/PERIOD, e.g. 15/60s, 60/1m, 200/1s or unlimited")
        count, amount, unit = match.groups()
        if not amount and unit is None:
            raise ValueError(f"{text!r} has no PERIOD, e.g. 15/60s")
        period = float(amount or 1) * _UNITS[unit]
        if int(count) < 1 or period <= 0:
            raise ValueError(f"{text!r}: both N and PERIOD must be positive")
        return cls(int(count), period)

    def default_margin(self) -> float:
        """δ for latency jitter: 0.5 s for a 60 s window, 50 ms for windows of 6 s or less."""
        return min(1.0, max(0.05, self.period / 120))

    def __str__(self) -> str:
        return "unlimited" if self.limit is None else f"{self.limit}/{self.period:g}s"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(f"{url!r}: plain http:// is allowed only for loopback hosts; use https://")
    if parts.username or parts.password:
        raise ValueError("the base URL must not carry credentials")
    return url.rstrip("/")


def read_key_file(path: Path) -> str:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"--api-key-file {path}: {exc.strerror}") from exc
    if not key or any(c.isspace() for c in key):
        raise ConfigError(f"--api-key-file {path}: expected one API key (xq_…) on one line")
    return key


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
    max_deliveries: int = 5
    drain: bool = False
    batch: int = 16
    block_ms: int = 1000


@dataclass(frozen=True, slots=True)
class RunSettings:
    source: str
    results: Path
    base_url: str
    api_key: Secret = field(repr=False)
    rate: Rate
    read_rate: Rate
    rate_margin: float | None
    concurrency: int = 4
    max_attempts: int = 5
    timeout: float = 30.0
    max_cooldown: float = 900.0
    grace: float = 30.0
    state_dir: Path | None = None
    fresh: bool = False
    dry_run: bool = False
    delete_monitors: bool = False
    limit: int | None = None
    sandbox: bool = False
    progress: bool = False
    metrics_port: int | None = None
    queue: QueueConfig | None = None  # set when SOURCE is a redis:// URL
    # Backoff between retries (full jitter, exponential); not flags, tests shorten them.
    backoff_base: float = 0.5
    backoff_cap: float = 30.0

    def margin_for(self, rate: Rate) -> float:
        return self.rate_margin if self.rate_margin is not None else rate.default_margin()

    def key_fingerprint(self) -> str:
        """Names the state of one key on one API without revealing the key."""
        digest = hashlib.sha256(f"{self.api_key}\0{self.base_url}".encode())
        return digest.hexdigest()[:16]
