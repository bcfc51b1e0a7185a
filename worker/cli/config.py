"""From flags and environment to one frozen RunSettings: everything that can be checked
before a request is sent is checked here (a failure exits 2)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from worker.cli.options import is_loopback
from worker.errors import ConfigError
from worker.redact import register
from worker.settings import DEFAULT_BASE_URL, QueueConfig, RunSettings, Secret
from worker.sources.file import FileSource


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """Validate everything that can be validated before a request is sent."""
    source = args.source
    queue = None
    if urlsplit(source).scheme in {"redis", "rediss"}:
        queue = QueueConfig(
            url=source,
            stream=args.stream,
            group=args.group,
            consumer=args.consumer or "",
            claim_idle=args.claim_idle,
            max_deliveries=args.max_deliveries,
            drain=args.drain,
        )
    elif source != "-":
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"jobs file {source!r} not found")
        FileSource(path).check()
    results = Path(args.results) if args.results else _default_results(source)
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
        concurrency=args.concurrency,
        max_attempts=args.max_attempts,
        timeout=args.timeout,
        max_cooldown=args.max_cooldown,
        grace=args.grace,
        state_dir=Path(args.state_dir) if args.state_dir else None,
        fresh=args.fresh,
        dry_run=args.dry_run,
        delete_monitors=args.delete_monitors,
        limit=args.limit,
        sandbox=args.sandbox,
        progress=is_tty if args.progress is None else args.progress,
        queue=queue,
        metrics_port=args.metrics_port,
    )


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


def api_access(args: argparse.Namespace) -> tuple[str, str]:
    """Base URL and API key from flags and environment; ("", "") stands for --sandbox."""
    if args.sandbox:
        return "http://127.0.0.1", ""
    try:
        base_url = check_base_url(args.base_url or DEFAULT_BASE_URL)
    except ValueError as exc:
        raise ConfigError(f"--base-url: {exc}") from None
    if args.api_key_file:
        key = read_key_file(Path(args.api_key_file))
    else:
        key = os.environ.get("XQUIK_API_KEY", "").strip()
    if not key:
        raise ConfigError(
            "no API key: set XQUIK_API_KEY or pass --api-key-file PATH "
            "(or try --sandbox to run against the built-in sandbox)"
        )
    register(key)
    return base_url, key


def _default_results(source: str) -> Path:
    if source == "-" or "://" in source:
        return Path("results.jsonl")
    return Path(f"{source}.results.jsonl")
