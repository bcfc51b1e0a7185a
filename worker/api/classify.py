"""Pure classification of API answers: (status, body, headers) to a decision. No I/O."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any


class Decision(Enum):
    SUCCESS = "success"  # 2xx
    GONE = "gone"  # 404: for a delete, already done
    RETRY = "retry"  # transient: try again after a backoff
    RATE_LIMITED = "rate_limited"  # 429: cool the whole key down, then retry
    FAIL = "fail"  # permanent: record failed
    AUTH = "auth"  # 401: stop the run
    REDIRECT = "redirect"  # 3xx: never followed (the key must not go elsewhere): failed


RETRYABLE = frozenset({408, 424, 425})


def decide(status: int) -> Decision:
    """Map an HTTP status to what the worker does next."""
    if 200 <= status < 300:
        return Decision.SUCCESS
    if 300 <= status < 400:
        return Decision.REDIRECT
    if status == 404:
        return Decision.GONE
    if status == 401:
        return Decision.AUTH
    if status == 429:
        return Decision.RATE_LIMITED
    if status in RETRYABLE or status >= 500:
        return Decision.RETRY
    # 400, 402, 403, 409, 422 and anything else unexpected: retrying will not help.
    return Decision.FAIL


@dataclass(frozen=True, slots=True)
class ErrorBody:
    code: str
    message: str | None


def parse_json(text: str) -> Any:
    """The body as JSON, or None when it is not JSON (an HTML page from a proxy)."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def error_body(status: int, body: Any) -> ErrorBody:
    """The error code and message, from either documented shape, or a fallback code.

    Default shape: {"error": "not_found", "message": "…"}.
    Contract 2026-04-29: {"error": {"type": …, "code": "not_found", "message": "…"}}.
    """
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code, message = err.get("code") or err.get("type"), err.get("message")
        else:
            code, message = err, body.get("message")
        if isinstance(code, str) and code:
            return ErrorBody(code, message if isinstance(message, str) else None)
    return ErrorBody(f"http_{status}", None)


def retry_after_seconds(
    headers: Mapping[str, str], body: Any, *, now: datetime | None = None
) -> float | None:
    """How long a 429 asks us to wait: Retry-After header (seconds or HTTP date), else the body's
    `retryAfter` (s), else `retryAfterMs`; None when the answer does not say."""
    value = headers.get("Retry-After")
    if value is not None:
        value = value.strip()
        seconds: float | None
        try:
            seconds = float(value)
        except ValueError:
            seconds = _http_date_delta(value, now)
        # A negative or non-finite value says nothing: as if absent (waiting 0 s met 429s).
        if seconds is not None and math.isfinite(seconds) and seconds >= 0:
            return seconds
    if isinstance(body, dict):
        if isinstance(body.get("error"), dict):
            body = {**body, **body["error"]}
        for key, scale in (("retryAfter", 1.0), ("retryAfterMs", 0.001)):
            raw = body.get(key)
            number = isinstance(raw, int | float) and not isinstance(raw, bool)
            if number and math.isfinite(raw) and raw >= 0:
                return float(raw) * scale
    return None


def _http_date_delta(value: str, now: datetime | None) -> float | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - (now or datetime.now(UTC))).total_seconds()
