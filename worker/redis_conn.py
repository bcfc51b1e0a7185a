"""Connecting to Redis, and waiting out its absences: every failed connect or command is
logged (`redis_unavailable`: the address without any password, the error, the next retry),
with capped backoff. A deadline, where one is given, ends the wait with a ConfigError."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    stop_never,
    wait_exponential,
)

from worker.errors import ConfigError
from worker.logs import get_logger

log = get_logger()


def is_redis_url(url: str) -> bool:
    """redis://, rediss:// or unix:// (a socket): what redis-py connects to."""
    return urlsplit(url).scheme in {"redis", "rediss", "unix"}


def address(url: str) -> str:
    """host:port/db of a Redis URL, never its password."""
    parts = urlsplit(url)
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    return f"{parts.hostname or parts.path}:{port}{parts.path if parts.hostname else ''}"


def connect(url: str) -> Any:
    import redis.asyncio

    client = redis.asyncio.from_url(
        url, socket_timeout=30, socket_connect_timeout=5, health_check_interval=15
    )
    client.xquik_address = address(url)  # type: ignore[attr-defined]
    return client


def redis_errors() -> tuple[type[BaseException], ...]:
    """What a Redis that went away raises."""
    import redis.exceptions

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def redis_retrying(client: Any = None, *, deadline: float | None = None) -> AsyncRetrying:
    """Redis going away is waited out (capped exponential backoff), logged at each failure;
    with `deadline` (seconds) it is given up after that long (ConfigError: exit 2)."""
    where = getattr(client, "xquik_address", "redis")

    def warn(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "redis_unavailable",
            address=where,
            error=f"{type(exc).__name__}: {exc}",
            attempt=state.attempt_number,
            retry_in_s=round(wait, 2),
        )

    def give_up(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        raise ConfigError(
            f"Redis at {where} unreachable for {math.ceil(state.seconds_since_start or 0)} s "
            f"(--redis-connect-timeout): {exc}"
        )

    return AsyncRetrying(
        retry=retry_if_exception_type(redis_errors()),
        wait=wait_exponential(multiplier=0.2, max=5.0),
        stop=stop_never if deadline is None else stop_after_delay(deadline),
        before_sleep=warn,
        retry_error_callback=give_up,
        reraise=False,
    )


async def connected(url: str, *, deadline: float) -> Any:
    """A client that has answered PING, Redis being waited for at most `deadline` seconds
    (ConfigError: exit 2). The caller closes it (`aclose`)."""
    client = connect(url)
    try:
        async for attempt in redis_retrying(client, deadline=deadline):
            with attempt:
                await client.ping()
    except BaseException:
        await client.aclose()
        raise
    return client
