"""A run's options, from keywords to one frozen RunSettings: the one place they are checked,
for the command line (which passes what it parsed) and for Python callers of `worker.run`.
Keyword names are `run`'s long options with `_` for `-`. Everything that can be checked before
a request is sent is checked here; a bad value raises OptionError naming the option.

Values may be given as text (as on the command line: `rate="15/60s"`, `relearn="24h"`) or as
values (`rate=Rate(15, 60.0)`, `relearn=3600.0`). Of the environment, only what holds a secret
is read here (XQUIK_API_KEY, XQUIK_REDIS_URL); every other XQUIK_ variable is the command
line's (its flags' defaults)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, cast
from urllib.parse import urlsplit

from worker import values
from worker.api.keys import api_key, tenant_keys
from worker.api.urls import DEFAULT_BASE_URL, check_base_url, is_loopback
from worker.budget.rate import AUTO_CEILING, Rate, parse_rate
from worker.errors import OptionError
from worker.redact import register
from worker.redis_conn import check_url, is_redis_url, protect, url_from, visible_password
from worker.secret_file import read_secret
from worker.settings import READ_RATE, ApiSettings, Intervals, QueueConfig, RunSettings, Secret

if TYPE_CHECKING:
    from typing_extensions import Unpack

T = TypeVar("T")
PathLike = str | os.PathLike[str]
MAX_CONCURRENCY = 1024  # requests in flight at most; more only costs memory (and stopping)


class ApiOptions(TypedDict, total=False):
    """The options of every command that speaks with the API."""

    base_url: str
    api_key: str  # Python only: the key itself (from a secret store); never a flag
    api_key_file: PathLike
    read_rate: str | Rate
    timeout: float | str
    max_attempts: int | str
    sandbox: bool
    budget: str  # a Redis URL: the key's budget kept there
    budget_file: PathLike | None  # the same, read from a file (a mounted Secret)
    state_dir: PathLike  # "none": no state file
    insecure_redis_tls: bool  # a rediss:// URL may turn certificate checks off
    rate: str | Rate
    relearn: float | str
    rate_margin: float | str | None
    max_cooldown: float | str
    concurrency: int | str


class RunOptions(ApiOptions, total=False):
    """The keywords of `worker.run` / `worker.run_async`: `run`'s long options."""

    results: PathLike
    fresh: bool
    keys: PathLike
    read_ahead: int | str
    grace: float | str
    delete_monitors: bool | str | None  # True or "account", "all"
    wait_monitors: float | str | None
    dry_run: bool
    yes: bool
    confirm_over: int | str
    strict_missing: bool
    no_precheck: bool
    limit: int | str | None
    notify: str
    notify_file: PathLike | None
    wait_lock: bool
    progress: bool | None
    log_format: str | None
    log_level: str
    metrics_port: int | str | None
    metrics_host: str
    metrics_textfile: PathLike | None
    pushgateway: str | None
    redis_url_file: PathLike | None
    stream: str
    group: str
    consumer: str | None
    retain: float | str | None
    claim_idle: float | str
    max_deliveries: int | str
    redis_connect_timeout: float | str | None
    drain: bool
    min_replicas: int | str
    intervals: Intervals  # not an option of the command line: how often timers fire


def flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def _value(option: str, value: Any, parse: Callable[[str], T]) -> T:
    """`value` as text parsed by `parse`, or a number checked by it (a bool is no number)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise OptionError(option, f"{flag(option)}: {value!r} is not a valid value")
    try:
        return parse(value if isinstance(value, str) else repr(value))
    except ValueError as exc:
        raise OptionError(option, f"{flag(option)}: {exc}") from None


def _rate(option: str, value: Any, *, auto: bool) -> Rate:
    if isinstance(value, Rate):
        if value.limit is not None and (value.limit < 1 or not value.period > 0):
            raise OptionError(option, f"{flag(option)}: {value} is not a rate")
        return value
    if not isinstance(value, str):
        raise OptionError(option, f"{flag(option)}: {value!r} is not a rate, e.g. 15/60s")
    try:
        return parse_rate(value, allow_auto=auto)
    except ValueError as exc:
        raise OptionError(option, f"{flag(option)}: {exc}") from None


def _bool(option: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionError(option, f"{flag(option)}: {value!r} is not True or False")
    return value


def _concurrency(value: Any) -> int:
    return _value("concurrency", value, lambda t: values.whole(t, least=1, most=MAX_CONCURRENCY))


def _count(option: str, value: Any) -> int:
    return _value(option, value, lambda t: values.whole(t, least=1))


def api_settings(*, env: Mapping[str, str] | None = None, **o: Unpack[ApiOptions]) -> ApiSettings:
    """The API options of any command: base URL, key, budgets, patience. The key is required
    unless the run uses the sandbox (and, with several keys, unless every job names a tenant:
    the caller says so by catching NoKey)."""
    env = os.environ if env is None else env
    if o.get("api_key") is not None and o.get("api_key_file") is not None:
        raise OptionError("api_key", "give the key once: api_key or --api-key-file")
    sandbox = _bool("sandbox", o.get("sandbox", False))
    margin = o.get("rate_margin")
    state = o.get("state_dir")
    budget = o.get("budget") or None
    budget_file = o.get("budget_file")
    if budget_file:
        if budget is not None and not getattr(budget, "var", None):
            raise OptionError(
                "budget_file", "give the budget's URL once: --budget or --budget-file"
            )
        budget = read_secret(budget_file, "--budget-file") or None
        if budget is None:
            raise OptionError("budget_file", "--budget-file: the file is empty")
        budget = _FromFile(budget)
    if budget is not None:
        protect(budget)
        if not is_redis_url(budget):
            raise OptionError(
                "budget", "--budget: not a redis://, rediss:// or redis+sentinel:// URL"
            )
        check_url(
            budget,
            "budget",
            insecure=_bool("insecure_redis_tls", o.get("insecure_redis_tls", False)),
        )
        if visible_password(budget) and not getattr(budget, "var", None):
            _warn_visible("--budget")
    if sandbox:
        base_url, key = "http://127.0.0.1", ""
    else:
        base_url = _base_url(o.get("base_url"))
        found = api_key(given=o.get("api_key"), key_file=o.get("api_key_file"), env=env)
        key = found or ""
    return ApiSettings(
        base_url=base_url,
        api_key=Secret(key),
        rate=_rate("rate", o.get("rate", AUTO_CEILING), auto=True),
        read_rate=_rate("read_rate", o.get("read_rate", READ_RATE), auto=False),
        margin=0.0 if margin is None else _value("rate_margin", margin, values.seconds),
        relearn=_value("relearn", o.get("relearn", 86400.0), values.duration),
        max_cooldown=_value("max_cooldown", o.get("max_cooldown", 900.0), values.seconds),
        timeout=_value("timeout", o.get("timeout", 30.0), values.positive_seconds),
        max_attempts=_count("max_attempts", o.get("max_attempts", 5)),
        concurrency=_concurrency(o.get("concurrency", 4)),
        state_dir=_state_dir(state, sandbox=sandbox),
        budget_url=budget,
        sandbox=sandbox,
    )


def _base_url(given: str | None) -> str:
    where = getattr(given, "var", None) or "--base-url"  # a value from XQUIK_BASE_URL says so
    where += " (environment)" if where != "--base-url" else ""
    try:
        return check_base_url(given or DEFAULT_BASE_URL)
    except ValueError as exc:
        raise OptionError("base_url", f"{where}: {exc}") from None


def _state_dir(given: PathLike | None, *, sandbox: bool) -> Path | None:
    """Where the budget's state files go: given, `none` (nowhere), else the user cache dir
    (a sandbox run keeps none: its windows are not the API's)."""
    if given is not None and str(given) == "none":
        return None
    if given is not None:
        return Path(given)
    if sandbox:
        return None
    from worker.budget.state import default_state_dir

    return default_state_dir()


class _FromFile(str):
    """A value read from a file: `ps` never showed it."""

    var = "--budget-file"


def need_key(api: ApiSettings) -> None:
    """OptionError unless the settings hold a key (or run against the sandbox)."""
    if not api.api_key and not api.sandbox:
        raise OptionError(
            "api_key",
            "no API key: set XQUIK_API_KEY or pass --api-key-file PATH "
            "(or try --sandbox to run against the built-in sandbox)",
        )


def settings(
    source: PathLike | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **o: Unpack[RunOptions],
) -> RunSettings:
    """Validate everything that can be validated before a request is sent."""
    env = os.environ if env is None else env
    unknown = set(o) - set(RunOptions.__annotations__)
    if unknown:
        name = sorted(unknown)[0]
        raise OptionError(name, f"unknown option {name!r} (see `xquik-disconnect run --help`)")
    insecure = _bool("insecure_redis_tls", o.get("insecure_redis_tls", False))
    text = _source(None if source is None else str(source), o.get("redis_url_file"), env, insecure)
    if str(o.get("api_key_file")) == "-" and text == "-":
        raise OptionError(
            "api_key_file", "--api-key-file - reads stdin, which is already the jobs source"
        )
    queue = _queue(text, o)
    if queue is None and text != "-":
        _check_jobs_file(text)
    if queue is None and o.get("min_replicas") not in (None, 0, "0"):
        raise OptionError(
            "min_replicas", "--min-replicas is for queue mode (SOURCE redis://…) and enqueue"
        )
    api = _run_api(o, env, queue)
    keys_dir = Path(o["keys"]) if o.get("keys") else None
    keys: dict[str, tuple[str, str | None]] = {}
    if keys_dir is not None:
        keys = tenant_keys(keys_dir)
        if queue is not None:
            # Several keys: a 401 dead-letters its job; read up to 256 jobs at a time into
            # the tenants' queues (enough to meet new tenants quickly; small enough that
            # consumers reading as they need take turns, and none takes the whole stream).
            read_ahead = _count("read_ahead", o.get("read_ahead", 10_000))
            batch = max(queue.batch, min(256, read_ahead))
            queue = replace(queue, dead_letter_rejected=True, batch=batch)
    return RunSettings(
        source=text,
        results=Path(o["results"]) if o.get("results") else _default_results(text, api.sandbox),
        api=api,
        queue=queue,
        keys_dir=keys_dir,
        keys=keys,
        intervals=o.get("intervals", Intervals()),
        **_run_values(o),
    )


def _warn_visible(option: str) -> None:
    from worker.logs import get_logger

    get_logger().warning(
        "secret_in_arguments",
        option=option,
        advice="a Redis password given as an argument shows in `ps` to anyone on this "
        "machine: give the URL in XQUIK_REDIS_URL (XQUIK_BUDGET for --budget) or "
        "--redis-url-file",
    )


def _check_jobs_file(text: str) -> None:
    from worker.sources.file import FileSource

    path = Path(text)
    if not path.exists():
        raise OptionError("source", f"jobs file {text!r} not found")
    FileSource(path).check()


def _run_api(o: RunOptions, env: Mapping[str, str], queue: QueueConfig | None) -> ApiSettings:
    """The run's API settings: a key is needed unless the run has several (--keys) or uses the
    sandbox; the retries' backoff comes from the intervals."""
    api_options = cast(ApiOptions, {k: v for k, v in o.items() if k in ApiOptions.__annotations__})
    api = api_settings(env=env, **api_options)
    if o.get("keys") and api.sandbox:
        raise OptionError(
            "keys",
            "--keys with --sandbox: start `xquik-disconnect sandbox --tenants K --keys-out "
            "DIR` and give its --base-url and --keys DIR",
        )
    if not o.get("keys"):
        need_key(api)
    if api.budget_url is not None and queue is not None:
        raise OptionError(
            "budget", "--budget is for file-mode runs: a queue consumer's budget is in its Redis"
        )
    intervals = o.get("intervals", Intervals())
    api = replace(api, backoff_base=intervals.backoff_base, backoff_cap=intervals.backoff_cap)
    connect = o.get("redis_connect_timeout")
    if connect is not None:
        seconds = _value("redis_connect_timeout", connect, values.positive_seconds)
        api = replace(api, budget_connect_timeout=seconds)
    return api


def _run_values(o: RunOptions) -> dict[str, Any]:
    """The run's other options, each checked."""
    monitors = o.get("delete_monitors")
    if monitors not in (None, False, True, "account", "all"):
        raise OptionError(
            "delete_monitors", f"--delete-monitors: {monitors!r} is not account or all"
        )
    wait, limit, port = o.get("wait_monitors"), o.get("limit"), o.get("metrics_port")
    progress, textfile = o.get("progress"), o.get("metrics_textfile")
    return {
        "grace": _value("grace", o.get("grace", 30.0), values.seconds),
        "fresh": _bool("fresh", o.get("fresh", False)),
        "dry_run": _bool("dry_run", o.get("dry_run", False)),
        "delete_monitors": monitors not in (None, False),
        "keyword_monitors": monitors == "all",
        "wait_monitors": None
        if wait is None
        else _value("wait_monitors", wait, values.positive_seconds),
        "limit": None if limit is None else _count("limit", limit),
        "progress": _isatty() if progress is None else _bool("progress", progress),
        "metrics_port": None if port is None else _value("metrics_port", port, values.port),
        "metrics_host": _host(o.get("metrics_host", "127.0.0.1")),
        "metrics_textfile": Path(textfile) if textfile else None,
        "pushgateway": _pushgateway(o.get("pushgateway")),
        "wait_lock": _bool("wait_lock", o.get("wait_lock", False)),
        "precheck": not _bool("no_precheck", o.get("no_precheck", False)),
        "strict_missing": _bool("strict_missing", o.get("strict_missing", False)),
        "yes": _bool("yes", o.get("yes", False)),
        "notify_url": _notify_url(o.get("notify"), o.get("notify_file")),
        "confirm_over": _value(
            "confirm_over", o.get("confirm_over", 10), lambda t: values.whole(t, least=0)
        ),
        "read_ahead": _count("read_ahead", o.get("read_ahead", 10_000)),
    }


def _host(text: str) -> str:
    """An address to listen on: an IP address (0.0.0.0, ::, 127.0.0.1) or a host name."""
    import ipaddress
    import re

    try:
        ipaddress.ip_address(text)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", text):
            raise OptionError(
                "metrics_host", f"--metrics-host: {text!r} is not an address"
            ) from None
    return text


def _isatty() -> bool:
    """A progress bar by default only on a terminal (stderr may be closed: `2>&-`)."""
    return sys.stderr is not None and sys.stderr.isatty()


def _source(
    given: str | None, url_file: PathLike | None, env: Mapping[str, str], insecure: bool
) -> str:
    """SOURCE: a jobs file, `-`, a Redis URL; or the queue's URL from --redis-url-file or
    XQUIK_REDIS_URL when none is given."""
    if given is not None and not url_file:
        if not is_redis_url(given):
            return given
        url = check_url(protect(given), "source", insecure=insecure)
        if visible_password(url) and not getattr(given, "var", None):
            _warn_visible("SOURCE")
        return url
    found = url_from(given, url_file, env, insecure=insecure)
    if found is None:
        raise OptionError(
            "source",
            "SOURCE missing: a jobs file, - for stdin, or redis://… (or the queue's URL "
            "in --redis-url-file or XQUIK_REDIS_URL)",
        )
    return found


def _queue(source: str, o: RunOptions) -> QueueConfig | None:
    if not is_redis_url(source):
        return None
    concurrency = _concurrency(o.get("concurrency", 4))
    drain = _bool("drain", o.get("drain", False))
    given = o.get("redis_connect_timeout")
    connect = (
        _value("redis_connect_timeout", given, values.positive_seconds)
        if given is not None
        else 30.0
        if drain
        else None  # a consumer waits for Redis for ever unless told otherwise
    )
    retain = o.get("retain", 7 * 86400.0)
    return QueueConfig(
        url=source,
        stream=str(o.get("stream") or "xquik:disconnect"),
        group=str(o.get("group") or "xquik-disconnect"),
        consumer=str(o.get("consumer") or ""),
        claim_idle=_value("claim_idle", o.get("claim_idle", 60.0), values.seconds),
        retain=None if retain is None else _value("retain", retain, values.retention),
        max_deliveries=_count("max_deliveries", o.get("max_deliveries", 5)),
        drain=drain,
        connect_timeout=connect,
        min_replicas=_value("min_replicas", o.get("min_replicas", 0), values.replica_count),
        # Read 4 jobs per worker at a time (16 to 256): a read round trip per 64 jobs at
        # --concurrency 16, and never more read ahead than a moment's work.
        batch=min(max(16, 4 * concurrency), 256),
    )


def _pushgateway(url: str | None) -> str | None:
    if not url:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (validates it)
    except ValueError:
        raise OptionError("pushgateway", f"--pushgateway {url!r} has a bad port") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise OptionError("pushgateway", f"--pushgateway {url!r} is not an http(s) URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise OptionError(
            "pushgateway", "--pushgateway: plain http:// only to a loopback host; use https://"
        )
    protect(url)
    return url


def _notify_url(url: str | None, url_file: PathLike | None = None) -> Secret | None:
    """--notify URL (or XQUIK_NOTIFY), or --notify-file PATH: https (plain http only to
    loopback), masked from here on. A webhook URL is a secret: from a file or the
    environment it never shows in `ps`."""
    where = getattr(url, "var", None) or "--notify"  # XQUIK_NOTIFY says so
    if url_file:
        if url and where == "--notify":
            raise OptionError("notify_file", "give the URL once: --notify or --notify-file")
        url, where = read_secret(url_file, "--notify-file"), "--notify-file"
        if not url:
            raise OptionError("notify_file", "--notify-file: the file is empty")
    if not url:
        return None
    register(url)
    try:
        path = urlsplit(url).path
        if len(path) >= 8:  # webhook tokens live in the path
            register(path)
        check_base_url(url)
    except ValueError as exc:
        message = str(exc).replace(repr(url), "the URL").replace("base URL", "URL")
        option = "notify_file" if where == "--notify-file" else "notify"
        raise OptionError(option, f"{where}: {message}") from None
    return Secret(url)


def _default_results(source: str, sandbox: bool) -> Path:
    """<jobs>.results.jsonl (results.jsonl for stdin and queues); a sandbox rehearsal's
    records go to a file of their own, `<jobs>.sandbox.results.jsonl`."""
    kind = "sandbox.results.jsonl" if sandbox else "results.jsonl"
    if source == "-" or "://" in source:
        return Path(kind)
    return Path(f"{source}.{kind}")


__all__ = [
    "MAX_CONCURRENCY",
    "ApiOptions",
    "RunOptions",
    "api_settings",
    "flag",
    "need_key",
    "settings",
]
