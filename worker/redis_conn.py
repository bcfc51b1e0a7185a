"""Connecting to Redis, and waiting out its absences."""

from __future__ import annotations

from typing import Any

from tenacity import AsyncRetrying, retry_if_exception_type, stop_never, wait_exponential

from worker.logs import get_logger

log = get_logger()


def connect(url: str) -> Any:
    import redis.asyncio

    return redis.asyncio.from_url(
        url, socket_timeout=30, socket_connect_timeout=5, health_check_interval=15
    )


def redis_retrying() -> AsyncRetrying:
    """Redis going away is waited out (capped exponential backoff), never fatal."""
    import redis.exceptions

    def warn(state: Any) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("redis_unavailable", error=str(exc), attempt=state.attempt_number)

    return AsyncRetrying(
        retry=retry_if_exception_type((redis.exceptions.ConnectionError, OSError)),
        wait=wait_exponential(multiplier=0.2, max=5.0),
        stop=stop_never,
        before_sleep=warn,
        reraise=True,
    )
