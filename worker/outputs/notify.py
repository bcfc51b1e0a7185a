"""`--notify URL`: when the run ends, however it ends (done, a signal, a rejected key, an
unwritable log), one POST of its summary: a `text` ready for a Slack-style incoming webhook and
the `summary` object. Retried on network errors and 5xx/429 within 10 s in all; a failure is
logged and never changes the run's exit code. The URL is a secret (webhook URLs carry their
token in the path): it is masked wherever it could appear, and only its origin is logged."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import aiohttp
import anyio
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from worker._version import __version__
from worker.logs import get_logger
from worker.run.summary import STOPPED_WORDS, Summary, limit_words

log = get_logger()

TOTAL_S = 10.0


class _Retry(Exception):
    """A 5xx or a 429 from the receiver: worth another try."""


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def text(summary: Summary, results: str) -> str:
    """One paragraph a person reads in a chat channel."""
    event: dict[str, Any] = summary.as_event()
    parts = [f"{n} {o.replace('_', ' ')}" for o, n in sorted(summary.outcomes.items())]
    monitors = sum(summary.monitors.values())
    if monitors:
        parts.append(f"{monitors} monitor records")
    if summary.skipped_done:
        parts.append(f"{summary.skipped_done} skipped (done earlier)")
    if summary.not_finished:
        parts.append(f"{summary.not_finished} read and not finished (rerun to resume)")
    if summary.unread_remain:
        parts.append("jobs not read yet remain (rerun to resume)")
    how = STOPPED_WORDS[summary.stopped]
    line = (
        f"xquik-disconnect run {summary.run_id} {how} in {event['elapsed_s']} s, "
        f"exit code {event['exit_code']}: {', '.join(parts) or 'no records'}."
    )
    if summary.not_connected:
        line += (
            f" Not connected when the run began: {summary.not_connected} (removed or mistyped?)."
        )
    if summary.rate:
        line += f" DELETE limit: {limit_words(summary.rate)}."
    if summary.chain_head:
        line += f" Chain head: {summary.chain_head}."
    return f"{line} Results: {results}"


async def notify(url: str, summary: Summary, results: str) -> bool:
    """POST the summary; True when the receiver took it (2xx)."""
    payload = {"text": text(summary, results), "summary": summary.as_event()}
    where = origin(url)
    try:
        with anyio.fail_after(TOTAL_S):
            async with aiohttp.ClientSession(
                headers={"User-Agent": f"xquik-disconnect/{__version__}"},
                timeout=aiohttp.ClientTimeout(total=TOTAL_S / 2),
            ) as session:
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type((aiohttp.ClientError, OSError, _Retry)),
                    wait=wait_exponential(multiplier=0.5, max=2.0),
                    stop=stop_after_attempt(4),
                    reraise=True,
                ):
                    with attempt:
                        async with session.post(url, json=payload, allow_redirects=False) as r:
                            if r.status >= 500 or r.status == 429:
                                raise _Retry(f"HTTP {r.status}")
                            if not 200 <= r.status < 300:
                                log.warning("notify_failed", receiver=where, http_status=r.status)
                                return False
    except (TimeoutError, aiohttp.ClientError, OSError, _Retry) as exc:
        log.warning("notify_failed", receiver=where, error=type(exc).__name__, detail=str(exc))
        return False
    log.info("notified", receiver=where)
    return True
