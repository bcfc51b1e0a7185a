"""Connecting to Redis, and waiting out its absences: every failed connect or command is
logged (`redis_unavailable`: the address without any password, the error, the next retry),
with capped backoff. A deadline, where one is given, ends the wait with a ConfigError."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    stop_never,
    wait_exponential,
)

from worker.errors import ConfigError, OptionError
from worker.logs import get_logger
from worker.redact import register
from worker.secret_file import read_secret

log = get_logger()


def is_redis_url(url: str) -> bool:
    """redis://, rediss:// or unix:// (a socket): what redis-py connects to (a malformed one
    too: `check_url` says what is wrong with it)."""
    return url.split("://", 1)[0].lower() in {"redis", "rediss", "unix"} and "://" in url


def check_url(url: str, option: str, *, insecure: bool = False) -> str:
    """A Redis URL redis-py can use: OptionError naming the option (never the password) for
    one that cannot be parsed (a bad port, an unclosed IPv6 bracket), and for a rediss:// URL
    that turns certificate or host name checks off, unless `insecure` (--insecure-redis-tls)
    says so: whoever can answer in Redis's place could then feed the queue."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (validates it)
    except ValueError as exc:
        raise OptionError(option, f"{flag_of(option)}: not a valid Redis URL ({exc})") from None
    if parts.scheme != "unix" and not parts.hostname:
        raise OptionError(option, f"{flag_of(option)}: the Redis URL names no host")
    query = {k.lower(): v[-1].lower() for k, v in parse_qs(parts.query).items()}
    unchecked = query.get("ssl_cert_reqs") in ("none", "optional") or query.get(
        "ssl_check_hostname"
    ) in ("false", "0", "no")
    if unchecked and not insecure:
        raise OptionError(
            option,
            f"{flag_of(option)}: the Redis URL turns TLS certificate checks off "
            "(ssl_cert_reqs / ssl_check_hostname): pass --insecure-redis-tls if you mean it",
        )
    return url


def visible_password(url: str) -> bool:
    """The URL holds a password: given as a flag or an argument, `ps` shows it to anyone on
    the machine (the environment or a file do not)."""
    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return False


def flag_of(option: str) -> str:
    return "SOURCE" if option == "source" else "--" + option.replace("_", "-")


def protect(url: str) -> str:
    """Register the password of a Redis (or any) URL as a secret; returns the URL."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return url
    if password:
        register(password)
    return url


def url_from(
    given: str | None,
    url_file: str | os.PathLike[str] | None,
    env: Mapping[str, str],
    *,
    insecure: bool = False,
) -> str | None:
    """A Redis URL: `given` (a flag or an argument), else read from `url_file` (a mounted
    Secret), else XQUIK_REDIS_URL; None when there is none. Its password is registered as a
    secret. OptionError naming the option for a file that cannot be read, an empty one, a URL
    given twice, or one that is not redis://…"""
    if url_file:
        if given and not getattr(given, "var", None):  # a flag, not XQUIK_REDIS_URL
            raise OptionError(
                "redis_url_file", "give the Redis URL once: as an argument or in --redis-url-file"
            )
        given = read_secret(url_file, "--redis-url-file")
        if not given:
            raise OptionError("redis_url_file", "--redis-url-file: the file is empty")
    if given is None:
        given = env.get("XQUIK_REDIS_URL", "").strip() or None
    if given is None:
        return None
    protect(given)
    if not is_redis_url(given):
        raise OptionError("redis_url_file", "the Redis URL is not redis://, rediss:// or unix://")
    return check_url(given, "redis_url_file" if url_file else "redis", insecure=insecure)


def address(url: str) -> str:
    """host:port/db of a Redis URL, never its password."""
    parts = urlsplit(url)
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    return f"{parts.hostname or parts.path}:{port}{parts.path if parts.hostname else ''}"


def need_url(
    given: str | None, url_file: str | None, env: Mapping[str, str], *, insecure: bool = False
) -> str:
    """`url_from` for the commands that only talk to a queue (enqueue, queue, dead)."""
    url = url_from(given, url_file, env, insecure=insecure)
    if url is None:
        raise OptionError(
            "redis", "no Redis: give --redis URL, --redis-url-file PATH or XQUIK_REDIS_URL"
        )
    return url


def connect(url: str, *, once: float | None = None, pool_size: int | None = None) -> Any:
    """A client for `url`. `once`: for a command that talks to Redis once (enqueue, queue
    status, dead): no retries inside redis-py and connections given up after `once` seconds,
    so an unreachable Redis fails in one line instead of a long wait."""
    import redis.asyncio

    options: dict[str, Any] = {"socket_timeout": 30, "socket_connect_timeout": 5}
    if once is not None:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        options.update(socket_connect_timeout=once, retry=Retry(NoBackoff(), 0))
    if pool_size is not None:
        options["max_connections"] = pool_size
    client = redis.asyncio.from_url(url, health_check_interval=15, **options)
    client.xquik_address = address(url)  # type: ignore[attr-defined]
    return client


def wrong_type(exc: BaseException) -> bool:
    """Redis said a key holds another type than the command needs (a stream name taken),
    itself or from inside a script."""
    return "WRONGTYPE" in str(exc)


@contextlib.asynccontextmanager
async def command_client(url: str, *, within: float) -> AsyncIterator[Any]:
    """The client of a command that talks to Redis once: connected (PING) within `within`
    seconds, else ConfigError in one line; a key of the wrong type is a ConfigError naming
    it; closed at the end."""
    import redis.exceptions

    client = connect(url, once=within)
    try:
        async for attempt in redis_retrying(client, deadline=within, quiet=True):
            with attempt:
                await client.ping()
        yield client
    except redis.exceptions.ResponseError as exc:
        if wrong_type(exc):
            raise ConfigError(f"a key of this stream holds another Redis type: {exc}") from None
        raise
    finally:
        await client.aclose()


def redis_errors() -> tuple[type[BaseException], ...]:
    """What a Redis that went away raises."""
    import redis.exceptions

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


# Errors a Redis that is there answers while it cannot serve for a moment: out of memory
# (maxmemory with noeviction), loading its data after a restart, a replica promoted or not
# yet (a Sentinel failover), a script running too long, a cluster re-sharding.
# A script's error embeds the command's: "Error running script (…): @user_script:5: -OOM …".
_BUSY = re.compile(
    r"(?:^|[:\s]-?)(OOM|LOADING|READONLY|MASTERDOWN|BUSY|TRYAGAIN|CLUSTERDOWN|NOREPLICAS)\b"
)


def unavailable(exc: BaseException) -> bool:
    """Redis cannot serve now (gone, or answering one of _BUSY): wait it out, as for an outage.
    A broken pipe of our own stdout is not Redis."""
    import redis.exceptions

    if isinstance(exc, BrokenPipeError):
        return False
    if isinstance(exc, redis_errors()):
        return True
    return isinstance(exc, redis.exceptions.ResponseError) and bool(_BUSY.search(str(exc)))


def redis_retrying(
    client: Any = None, *, deadline: float | None = None, quiet: bool = False
) -> AsyncRetrying:
    """Redis going away is waited out (capped exponential backoff), logged at each failure
    (unless `quiet`); with `deadline` (seconds) it is given up after that long (ConfigError:
    exit 2)."""
    where = getattr(client, "xquik_address", "redis")

    def warn(state: RetryCallState) -> None:
        if quiet:
            return
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
            f"(--redis-connect-timeout): {type(exc).__name__}: {exc}"
        )

    return AsyncRetrying(
        retry=retry_if_exception(unavailable),
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


class ScriptBatch:
    """The Lua scripts run on one Redis client, sent together: the calls made while one
    pipeline is on its way go in the next. With 1,000 keys each send costs a budget acquire
    and a release, and each finished job a settle; one round trip for whatever is waiting
    instead of one each (and one pass through redis-py's per-command machinery) is what
    keeps Redis off the send path. Not redis-py's Script in a pipeline: that asks SCRIPT
    EXISTS first, one more round trip per pipeline.

    Each call is its own EVALSHA, atomic on its own; a pipeline is not a transaction. A
    script Redis lost (a restart) is loaded again; Redis going away is waited out as for
    any command. A caller that gives up (cancelled) before its call is sent is left out; one
    sent already is decided by Redis all the same (an acquire then holds its slot until its
    bound: safe, only slower)."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._waiting: list[tuple[Any, list[str], list[Any], asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """`script` (from `register_script`) run with `keys` and `args`: its reply."""
        return await self._submit(script, keys, args)

    async def call_many(self, script: Any, keys: list[str], calls: list[list[Any]]) -> list[Any]:
        """`script` run once per args in `calls`, in one pipeline if nothing else waits: the
        replies in order; the first error is raised once every call is decided."""
        futures = [self._submit(script, keys, args) for args in calls]
        replies = await asyncio.gather(*futures, return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies

    def _submit(self, script: Any, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((script, keys, args, future))
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._send())
        return future

    async def _send(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            batch = [call for call in batch if not call[3].done()]
            if not batch:
                continue
            try:
                replies = await self._execute(batch)
            except BaseException as exc:
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (*_, future), reply in zip(batch, replies, strict=True):
                if not future.done():
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)

    async def _execute(self, batch: list[tuple[Any, list[str], list[Any], Any]]) -> list[Any]:
        """Every call's reply. A script Redis lost is loaded and its calls sent again; calls
        Redis could not serve for a moment (out of memory, loading, read-only during a
        failover) are sent again after a pause, logged as an outage: never an error to the
        caller, and a call Redis did run is never sent twice."""
        from redis.exceptions import NoScriptError

        replies: list[Any] = [None] * len(batch)
        todo = list(range(len(batch)))
        reloads, pause = 0, 0.2
        while todo:
            out: list[Any] = []
            async for attempt in redis_retrying(self._redis):
                with attempt:
                    pipe = self._redis.pipeline(transaction=False)
                    for i in todo:
                        script, keys, args, _ = batch[i]
                        pipe.evalsha(script.sha, len(keys), *keys, *args)
                    out = await pipe.execute(raise_on_error=False)
            lost, busy = [], []
            for i, reply in zip(todo, out, strict=True):
                if isinstance(reply, NoScriptError):
                    lost.append(i)
                elif isinstance(reply, Exception) and unavailable(reply):
                    busy.append((i, reply))
                else:
                    replies[i] = reply
            if lost:
                reloads += 1
                if reloads > 3:
                    raise AssertionError("SCRIPT LOAD did not take")  # pragma: no cover
                for script in {id(batch[i][0]): batch[i][0] for i in lost}.values():
                    async for attempt in redis_retrying(self._redis):
                        with attempt:
                            await self._redis.script_load(script.script)
            if busy:
                log.warning(
                    "redis_unavailable",
                    address=getattr(self._redis, "xquik_address", "redis"),
                    error=f"{type(busy[0][1]).__name__}: {busy[0][1]}",
                    calls=len(busy),
                    retry_in_s=pause,
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
            todo = lost + [i for i, _ in busy]
        return replies


def script_batch(redis: Any) -> ScriptBatch:
    """The one batch of a Redis client (every script run on it goes through it), kept on
    the client: it goes when the client goes."""
    batch: ScriptBatch | None = getattr(redis, "xquik_script_batch", None)
    if batch is None:
        batch = ScriptBatch(redis)
        redis.xquik_script_batch = batch
    return batch
