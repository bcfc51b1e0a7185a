"""Classification of API answers is a pure table; so is reading Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from worker.api.classify import Decision, decide, error_body, parse_json, retry_after_seconds


@pytest.mark.parametrize(
    ("status", "decision"),
    [
        (200, Decision.SUCCESS),
        (204, Decision.SUCCESS),
        (404, Decision.GONE),
        (401, Decision.AUTH),
        (429, Decision.RATE_LIMITED),
        (408, Decision.RETRY),
        (424, Decision.RETRY),
        (425, Decision.RETRY),
        (500, Decision.RETRY),
        (502, Decision.RETRY),
        (503, Decision.RETRY),
        (504, Decision.RETRY),
        (400, Decision.FAIL),
        (402, Decision.FAIL),
        (403, Decision.FAIL),
        (409, Decision.FAIL),
        (422, Decision.FAIL),
        (418, Decision.FAIL),
    ],
)
def test_decide(status: int, decision: Decision) -> None:
    """Every documented status maps to the documented action."""
    assert decide(status) is decision


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({"error": "not_found", "message": "Account not found"}, "not_found", "Account not found"),
        ({"error": "unauthenticated"}, "unauthenticated", None),
        (
            {"error": {"type": "invalid_request", "code": "invalid_id", "message": "Bad id"}},
            "invalid_id",
            "Bad id",
        ),
        ({"error": {"type": "rate_limit"}}, "rate_limit", None),
        (None, "http_502", None),  # an HTML page: not JSON at all
        ([1, 2], "http_502", None),
        ({"error": 7}, "http_502", None),
    ],
)
def test_error_body_both_shapes(body: Any, code: str, message: str | None) -> None:
    """Both documented error shapes parse; anything else falls back to the status."""
    parsed = error_body(502, body)
    assert (parsed.code, parsed.message) == (code, message)


def test_parse_json_survives_html() -> None:
    """A proxy's HTML error page is not JSON, and that is not a crash."""
    assert parse_json("<html>502 Bad Gateway</html>") is None
    assert parse_json('{"success": true}') == {"success": True}


NOW = datetime(2026, 11, 28, 17, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"Retry-After": "60"}, {"retryAfter": 5}, 60.0),
        ({"Retry-After": " 2 "}, None, 2.0),
        ({"Retry-After": "Sat, 28 Nov 2026 17:00:30 GMT"}, None, 30.0),
        # A time already past, or a negative number, says nothing: as if absent (waiting
        # 0 s met the server's 429s over and over).
        ({"Retry-After": "Sat, 28 Nov 2026 16:59:00 GMT"}, None, None),
        ({"Retry-After": "soon"}, {"retryAfter": 7}, 7.0),
        ({}, {"error": "rate_limit_exceeded", "retryAfter": 60}, 60.0),
        ({}, {"retryAfterMs": 1500}, 1.5),
        ({}, {"error": {"code": "rate_limit_exceeded", "retryAfter": 9}}, 9.0),
        ({}, {"retryAfter": True}, None),
        ({}, {"retryAfter": "60"}, None),
        ({}, None, None),
        ({"Retry-After": "-5"}, None, None),
        ({"Retry-After": "-5"}, {"retryAfterMs": 2000}, 2.0),
    ],
)
def test_retry_after(headers: dict[str, str], body: Any, expected: float | None) -> None:
    """Header (seconds or HTTP date) first, then retryAfter, then retryAfterMs."""
    assert retry_after_seconds(headers, body, now=NOW) == expected
