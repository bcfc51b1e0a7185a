"""From flags and environment to one frozen RunSettings: everything that can be checked
before a request is sent is checked here (a failure exits 2)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from worker.cli.options import is_loopback, redis_url
from worker.errors import ConfigError
from worker.redact import register
from worker.redis_conn import is_redis_url
from worker.settings import DEFAULT_BASE_URL, QueueConfig, RunSettings, Secret
from worker.sources.file import FileSource


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """Validate everything that can be validated before a request is sent."""
    source = args.source
    if source is None or args.redis_url_file:
        try:
            source = redis_url(args, source)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if source is None:
            raise ConfigError(
                "SOURCE missing: a jobs file, - for stdin, or redis://… (or the queue's URL "
                "in --redis-url-file or XQUIK_REDIS_URL)"
            )
        if not is_redis_url(source):
            raise ConfigError("the Redis URL (--redis-url-file / XQUIK_REDIS_URL) is not redis://…")
    queue = None
    if urlsplit(source).scheme in {"redis", "rediss", "unix"}:
        queue = QueueConfig(
            url=source,
            stream=args.stream,
            group=args.group,
            consumer=args.consumer or "",
            claim_idle=args.claim_idle,
            retain=args.retain,
            max_deliveries=args.max_deliveries,
            drain=args.drain,
            connect_timeout=_connect_timeout(args.redis_connect_timeout, args.drain),
            # Read 4 jobs per worker at a time (16 to 256): a read round trip per 64 jobs at
            # --concurrency 16, and never more read ahead than a moment's work.
            batch=min(max(16, 4 * args.concurrency), 256),
        )
    elif source != "-":
        path = Path(source)
        if not path.exists():
            raise ConfigError(f"jobs file {source!r} not found")
        FileSource(path).check()
    results = Path(args.results) if args.results else _default_results(source)
    keys: dict[str, tuple[str, str | None]] = {}
    if args.keys:
        from worker.cli.keys import tenant_keys

        if args.sandbox:
            raise ConfigError(
                "--keys with --sandbox: start `xquik-disconnect sandbox --tenants K --keys-out "
                "DIR` and give its --base-url and --keys DIR"
            )
        keys = tenant_keys(Path(args.keys))
        if queue is not None:
            # Several keys: a 401 dead-letters its job; read up to 256 jobs at a time into
            # the tenants' queues (enough to meet new tenants quickly; small enough that
            # consumers reading as they need take turns, and none takes the whole stream).
            batch = max(queue.batch, min(256, args.read_ahead))
            queue = replace(queue, dead_letter_rejected=True, batch=batch)
        try:
            base_url, key = api_access(args)
        except ConfigError as exc:
            if not str(exc).startswith("no API key"):
                raise
            base_url, key = check_base_url(args.base_url or DEFAULT_BASE_URL), ""
    else:
        base_url, key = api_access(args)
    is_tty = sys.stderr.isatty()
    return RunSettings(
        source=source,
        results=results,
        base_url=base_url,
        api_key=Secret(key),
        rate=args.rate,
        read_rate=args.read_rate,
        rate_margin=args.rate_margin,
        relearn=args.relearn,
        concurrency=args.concurrency,
        max_attempts=args.max_attempts,
        timeout=args.timeout,
        max_cooldown=args.max_cooldown,
        grace=args.grace,
        state_dir=Path(args.state_dir) if args.state_dir and args.state_dir != "none" else None,
        persist_budget=args.state_dir != "none",
        fresh=args.fresh,
        dry_run=args.dry_run,
        delete_monitors=args.delete_monitors is not None,
        keyword_monitors=args.delete_monitors == "all",
        wait_monitors=args.wait_monitors,
        limit=args.limit,
        sandbox=args.sandbox,
        progress=is_tty if args.progress is None else args.progress,
        queue=queue,
        metrics_port=args.metrics_port,
        metrics_textfile=Path(args.metrics_textfile) if args.metrics_textfile else None,
        pushgateway=_pushgateway(args.pushgateway),
        wait_lock=args.wait_lock,
        precheck=not args.no_precheck,
        strict_missing=args.strict_missing,
        yes=args.yes,
        notify_url=_notify_url(args.notify),
        confirm_over=args.confirm_over,
        budget_url=_budget_url(args.budget, queue),
        budget_connect_timeout=args.redis_connect_timeout or 30.0,
        keys_dir=Path(args.keys) if args.keys else None,
        keys=keys,
        read_ahead=args.read_ahead,
    )


def _pushgateway(url: str | None) -> str | None:
    if not url:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (validates it)
    except ValueError:
        raise ConfigError(f"--pushgateway {url!r} has a bad port") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"--pushgateway {url!r} is not an http(s) URL")
    return url


def _notify_url(url: str | None) -> Secret | None:
    """--notify: https (plain http only to loopback), masked from here on."""
    if not url:
        return None
    from worker.cli.notify import protect

    protect(url)
    try:
        check_base_url(url)
    except ValueError as exc:
        message = str(exc).replace(repr(url), "the URL").replace("base URL", "URL")
        raise ConfigError(f"--notify: {message}") from None
    return Secret(url)


def check_base_url(url: str) -> str:
    """An http(s) URL with a host and a valid port; plain http only to loopback hosts."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r} has a port that is not a number within 0..65535") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError(f"{url!r}: plain http:// is allowed only for loopback hosts; use https://")
    if parts.username or parts.password:
        raise ValueError("the base URL must not carry credentials")
    if port == 0:
        raise ValueError(f"{url!r}: port 0 cannot be reached")
    return url.rstrip("/")


_KEY = re.compile(r"[\x21-\x7e]{8,512}")  # printable ASCII, no spaces, one line


def check_key(key: str, where: str) -> str:
    """One API key on one line; the message never shows the key or any part of it."""
    if not _KEY.fullmatch(key):
        raise ConfigError(
            f"{where}: expected one API key (xq_…) on one line, in printable ASCII without spaces"
        )
    return key


def read_key_file(name: str) -> str:
    """The key in a file, or on stdin for `-`. The message never echoes the path (it was
    given to a key option: it may be the key itself, typed in the wrong place)."""
    try:
        raw = sys.stdin.buffer.read(4096) if name == "-" else Path(name).read_bytes()[:4096]
    except OSError as exc:
        raise ConfigError(f"--api-key-file: cannot read it ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError("--api-key-file: not a text file") from None
    return check_key(text, "--api-key-file")


def api_access(args: argparse.Namespace) -> tuple[str, str]:
    """Base URL and API key from flags and environment; ("", "") stands for --sandbox."""
    if getattr(args, "api_key", None) is not None:
        raise ConfigError(
            "the key is never a flag (it would show in `ps` and the shell history): "
            "use XQUIK_API_KEY or --api-key-file PATH (- for stdin)"
        )
    if args.sandbox:
        return "http://127.0.0.1", ""
    where = getattr(args.base_url, "var", "--base-url")
    where += " (environment)" if where != "--base-url" else ""
    try:
        base_url = check_base_url(args.base_url or DEFAULT_BASE_URL)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if args.api_key_file:
        if args.api_key_file == "-" and getattr(args, "source", None) == "-":
            raise ConfigError("--api-key-file - reads stdin, which is already the jobs source")
        key = read_key_file(args.api_key_file)
    else:
        key = os.environ.get("XQUIK_API_KEY", "").strip()
        if key:
            check_key(key, "XQUIK_API_KEY (environment)")
    if not key:
        raise ConfigError(
            "no API key: set XQUIK_API_KEY or pass --api-key-file PATH "
            "(or try --sandbox to run against the built-in sandbox)"
        )
    register(key)
    return base_url, key


def _budget_url(url: str | None, queue: QueueConfig | None) -> str | None:
    """--budget: a Redis URL; in queue mode the queue's own Redis already keeps the budget."""
    if not url:
        return None
    if not is_redis_url(url):
        raise ConfigError(f"--budget {url!r} is not a redis:// URL")
    if queue is not None:
        raise ConfigError(
            "--budget is for file-mode runs: a queue consumer's budget is in its Redis"
        )
    return url


def _connect_timeout(given: float | None, drain: bool) -> float | None:
    """--redis-connect-timeout: a consumer waits for Redis for ever unless told otherwise;
    a --drain run (a batch job) gives up after 30 s."""
    if given is not None:
        return given
    return 30.0 if drain else None


def _default_results(source: str) -> Path:
    if source == "-" or "://" in source:
        return Path("results.jsonl")
    return Path(f"{source}.results.jsonl")
