"""Connecting to Redis, and waiting out its absences: every failed connect or command is
logged (`redis_unavailable`: the address without any password, the error, the next retry),
with capped backoff. A deadline, where one is given, ends the wait with a ConfigError."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

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
from worker.redis_keys import REPLICATION_MARK, is_cluster
from worker.secret_file import read_secret

log = get_logger()


SENTINEL_SCHEMES = {"redis+sentinel", "rediss+sentinel"}
SCHEMES = {"redis", "rediss", "unix", *SENTINEL_SCHEMES}


def is_redis_url(url: str) -> bool:
    """redis://, rediss://, unix:// (a socket) or redis+sentinel:// / rediss+sentinel://
    (a Sentinel-managed primary): what we connect to (a malformed one too: `check_url` says
    what is wrong with it)."""
    return url.split("://", 1)[0].lower() in SCHEMES and "://" in url


def is_sentinel(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


@dataclass(frozen=True)
class SentinelUrl:
    """`redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT…]/SERVICE[/DB][?OPTIONS]`, the
    form Celery and kombu use: the sentinels to ask, the service (master) name, the database.
    USER and PASSWORD are the primary's; `sentinel_password` (an option) the sentinels' own,
    if they require one. `rediss+sentinel://` speaks TLS to both (`ssl_ca_certs`,
    `ssl_cert_reqs`, `ssl_check_hostname` as for rediss://)."""

    tls: bool
    username: str | None = field(repr=False)
    password: str | None = field(repr=False)
    hosts: tuple[tuple[str, int], ...]
    service: str
    db: int
    query: Mapping[str, str] = field(repr=False)


def parse_sentinel(url: str) -> SentinelUrl:
    """ValueError saying what is wrong (never the password)."""
    scheme, _, rest = url.partition("://")
    rest, _, query_text = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    if not at:
        userinfo, hostlist = "", netloc
    username, _, password = userinfo.partition(":")
    hosts = []
    for part in hostlist.split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon:
            host, port = part.strip(), "26379"
        host = host.strip("[]")
        if not host:
            raise ValueError("a sentinel address names no host")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"sentinel {host}: bad port {port!r}")
        hosts.append((host, int(port)))
    names = [unquote(p) for p in path.split("/") if p]
    if not names:
        raise ValueError("no service name: redis+sentinel://HOST:PORT,…/SERVICE[/DB]")
    if len(names) > 2 or (len(names) == 2 and not names[1].isdigit()):
        raise ValueError("the path is /SERVICE[/DB]")
    query = {k: v[-1] for k, v in parse_qs(query_text).items()}
    return SentinelUrl(
        tls=scheme.lower() == "rediss+sentinel",
        username=unquote(username) or None,
        password=unquote(password) or None,
        hosts=tuple(hosts),
        service=names[0],
        db=int(names[1]) if len(names) == 2 else int(query.get("db", 0)),
        query=query,
    )


def _passwords(url: str) -> list[str]:
    """Every password a Redis URL holds."""
    if is_sentinel(url):
        try:
            parsed = parse_sentinel(url)
        except ValueError:
            return []
        raw = url.partition("://")[2].split("/", 1)[0].rpartition("@")[0].partition(":")[2]
        given = (parsed.password, raw, parsed.query.get("sentinel_password"))
        return [p for p in given if p]
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password] if password else []


def check_url(url: str, option: str, *, insecure: bool = False) -> str:
    """A Redis URL redis-py can use: OptionError naming the option (never the password) for
    one that cannot be parsed (a bad port, an unclosed IPv6 bracket), and for a rediss:// URL
    that turns certificate or host name checks off, unless `insecure` (--insecure-redis-tls)
    says so: whoever can answer in Redis's place could then feed the queue."""
    try:
        if is_sentinel(url):
            parse_sentinel(url)
            query_text = url.partition("?")[2]
        else:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (validates it)
            query_text = parts.query
            if parts.scheme != "unix" and not parts.hostname:
                raise ValueError("it names no host")
    except ValueError as exc:
        raise OptionError(option, f"{flag_of(option)}: not a valid Redis URL ({exc})") from None
    query = {k.lower(): v[-1].lower() for k, v in parse_qs(query_text).items()}
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
    return bool(_passwords(url))


def flag_of(option: str) -> str:
    return "SOURCE" if option == "source" else "--" + option.replace("_", "-")


def protect(url: str) -> str:
    """Register the passwords of a Redis (or any) URL as secrets; returns the URL."""
    for password in _passwords(url):
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
        raise OptionError(
            "redis_url_file",
            "the Redis URL is not redis://, rediss://, unix:// or redis+sentinel://",
        )
    return check_url(given, "redis_url_file" if url_file else "redis", insecure=insecure)


def address(url: str) -> str:
    """host:port/db of a Redis URL (for Sentinel: the service and the sentinels), never its
    password."""
    if is_sentinel(url):
        try:
            parsed = parse_sentinel(url)
        except ValueError:
            return "sentinel"
        hosts = ",".join(f"{h}:{p}" for h, p in parsed.hosts)
        return f"sentinel {parsed.service}@{hosts}/{parsed.db}"
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


def _options(once: float | None, pool_size: int | None) -> dict[str, Any]:
    options: dict[str, Any] = {"socket_timeout": 30, "socket_connect_timeout": 5}
    if once is not None:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        options.update(socket_connect_timeout=once, retry=Retry(NoBackoff(), 0))
    if pool_size is not None:
        options["max_connections"] = pool_size
    return options


def connect(url: str, *, once: float | None = None, pool_size: int | None = None) -> Any:
    """A client for `url` (one server, or the primary a Sentinel names: asked again on every
    new connection, so a failover is followed by reconnecting). `once`: for a command that
    talks to Redis once (enqueue, queue status, dead): no retries inside redis-py and
    connections given up after `once` seconds, so an unreachable Redis fails in one line
    instead of a long wait. Not a cluster's client: `open_client` finds out."""
    import redis.asyncio

    options = _options(once, pool_size)
    if is_sentinel(url):
        client = _sentinel_client(parse_sentinel(url), options)
    else:
        client = redis.asyncio.from_url(url, health_check_interval=15, **options)
    client.xquik_address = address(url)
    return client


def _sentinel_client(parsed: SentinelUrl, options: dict[str, Any]) -> Any:
    from redis.asyncio import Redis
    from redis.asyncio.sentinel import Sentinel

    tls: dict[str, Any] = {}
    if parsed.tls:
        tls["ssl"] = True
        q = {k.lower(): v for k, v in parsed.query.items()}
        if "ssl_ca_certs" in q:
            tls["ssl_ca_certs"] = q["ssl_ca_certs"]
        if q.get("ssl_cert_reqs", "").lower() in ("none", "optional"):
            tls["ssl_cert_reqs"] = q["ssl_cert_reqs"].lower()
        if q.get("ssl_check_hostname", "").lower() in ("false", "0", "no"):
            tls["ssl_check_hostname"] = False
    common = {**options, **tls}
    common.pop("max_connections", None)
    sentinel_auth = {"password": parsed.query.get("sentinel_password")}
    sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2
        list(parsed.hosts),
        sentinel_kwargs={**common, **sentinel_auth},
        **common,
    )

    class SentinelRedis(Redis):
        """The primary's client; closing it closes the sentinels' connections too."""

        async def aclose(self, close_connection_pool: bool | None = None) -> None:
            await super().aclose(close_connection_pool)
            for s in sentinel.sentinels:
                await s.aclose()

    extra = {"max_connections": options["max_connections"]} if "max_connections" in options else {}
    return sentinel.master_for(
        parsed.service,
        redis_class=SentinelRedis,
        username=parsed.username,
        password=parsed.password,
        db=parsed.db,
        health_check_interval=15,
        **extra,
    )


async def open_client(
    url: str,
    *,
    deadline: float | None = None,
    once: float | None = None,
    pool_size: int | None = None,
    quiet: bool = False,
    min_replicas: int = 0,
) -> Any:
    """A client that has answered, Redis waited for at most `deadline` seconds (ConfigError:
    exit 2; None: for ever): `connect`'s, or redis-py's cluster client for the same URL when
    the server says it is a cluster node (`INFO cluster`). The caller closes it (`aclose`).
    `min_replicas` (--min-replicas): every write it makes through `ScriptBatch` (and
    `enqueue`'s) counts once that many replicas hold it (WAIT); not on a cluster."""
    client = await _open(url, deadline=deadline, once=once, pool_size=pool_size, quiet=quiet)
    if min_replicas:
        if is_cluster(client):
            await client.aclose()
            raise ConfigError(
                "--min-replicas: not on a Redis Cluster (its WAIT counts one node's replicas, "
                "and our writes span nodes); use a Sentinel-managed primary, or leave it out"
            )
        client.xquik_min_replicas = min_replicas
        try:
            info = await client.info("replication")
        except Exception:
            info = {}
        have = int(info.get("connected_slaves", min_replicas) or 0)
        if have < min_replicas:
            log.warning(
                "redis_replicas_short",
                address=client.xquik_address,
                replicas=have,
                min_replicas=min_replicas,
                hint="every write waits until this many replicas hold it",
            )
    return client


async def _open(
    url: str, *, deadline: float | None, once: float | None, pool_size: int | None, quiet: bool
) -> Any:
    import redis.exceptions

    client = connect(url, once=once, pool_size=pool_size)
    info: Mapping[str, Any] = {}
    try:
        async for attempt in redis_retrying(client, deadline=deadline, quiet=quiet):
            with attempt:
                try:
                    info = await client.info("cluster")
                except redis.exceptions.ResponseError as exc:
                    if unavailable(exc):
                        raise
                    await client.ping()  # INFO refused (an ACL): not a cluster node
    except BaseException:
        await client.aclose()
        raise
    if not int(info.get("cluster_enabled", 0) or 0):
        return client
    await client.aclose()
    from redis.asyncio.cluster import RedisCluster

    options = _options(once, pool_size)
    options.pop("retry", None)
    cluster: Any = RedisCluster.from_url(url, health_check_interval=15, **options)
    cluster.xquik_address = f"{address(url)} (cluster)"
    cluster.xquik_cluster = True
    try:
        async for attempt in redis_retrying(cluster, deadline=deadline, quiet=quiet):
            with attempt:
                await cluster.initialize()
    except BaseException:
        await cluster.aclose()
        raise
    return cluster


def wrong_type(exc: BaseException) -> bool:
    """Redis said a key holds another type than the command needs (a stream name taken),
    itself or from inside a script."""
    return "WRONGTYPE" in str(exc)


@contextlib.asynccontextmanager
async def command_client(url: str, *, within: float, min_replicas: int = 0) -> AsyncIterator[Any]:
    """The client of a command that talks to Redis once: connected within `within` seconds,
    else ConfigError in one line; a key of the wrong type is a ConfigError naming it; closed
    at the end."""
    import redis.exceptions

    client = await open_client(
        url, deadline=within, once=within, quiet=True, min_replicas=min_replicas
    )
    try:
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


def describe(exc: BaseException | None) -> str:
    """An error of Redis's for a log line: its type and message, without the client's repr
    that redis-py's Sentinel errors append (" : <redis.asyncio.client.Redis(…)>")."""
    text = str(exc).split(" : <", 1)[0]
    return f"{type(exc).__name__}: {text}"


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
            error=describe(exc),
            attempt=state.attempt_number,
            retry_in_s=round(wait, 2),
        )

    def give_up(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        raise ConfigError(
            f"Redis at {where} unreachable for {math.ceil(state.seconds_since_start or 0)} s "
            f"(--redis-connect-timeout): {describe(exc)}"
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
    """A client that has answered, Redis being waited for at most `deadline` seconds
    (ConfigError: exit 2); a cluster's when it is one. The caller closes it (`aclose`)."""
    return await open_client(url, deadline=deadline)


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

    def __init__(self, redis: Any, *, patience: float | None = None) -> None:
        self._redis = redis
        self._patience = patience  # how long Redis may be away or busy (None: for ever)
        self._waiting: list[tuple[Any, list[str], list[Any], asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """`script` (from `register_script`) run with `keys` and `args`: its reply."""
        return await self.submit(script, keys, args)

    async def call_many(self, script: Any, keys: list[str], calls: list[list[Any]]) -> list[Any]:
        """`script` run once per args in `calls`, in one pipeline if nothing else waits: the
        replies in order; the first error is raised once every call is decided."""
        futures = [self.submit(script, keys, args) for args in calls]
        replies = await asyncio.gather(*futures, return_exceptions=True)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies

    def submit(self, script: Any, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """`call` without waiting: the future of its reply (the caller retrieves its error)."""
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
        caller, and a call Redis did run is never sent twice. With a patience, an outage
        longer than that is a ConfigError and a busy answer the call's error."""
        from redis.exceptions import NoScriptError

        replies: list[Any] = [None] * len(batch)
        todo = list(range(len(batch)))
        reloads, pause, busy_since = 0, 0.2, None
        while todo:
            out: list[Any] = []
            async for attempt in redis_retrying(self._redis, deadline=self._patience):
                with attempt:
                    pipe = self._redis.pipeline(transaction=False)
                    for i in todo:
                        script, keys, args, _ = batch[i]
                        # not pipe.evalsha: a cluster's pipeline refuses it by name
                        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                    add_wait(pipe, self._redis)
                    out = await pipe.execute(raise_on_error=False)
            await replicated(self._redis, out)
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
                    async for attempt in redis_retrying(self._redis, deadline=self._patience):
                        with attempt:
                            await self._redis.script_load(script.script)
            if busy:
                busy_since = busy_since if busy_since is not None else time.monotonic()
                if self._patience is not None and time.monotonic() - busy_since > self._patience:
                    raise busy[0][1]
                log.warning(
                    "redis_unavailable",
                    address=getattr(self._redis, "xquik_address", "redis"),
                    error=describe(busy[0][1]),
                    calls=len(busy),
                    retry_in_s=pause,
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
            todo = lost + [i for i, _ in busy]
        return replies


WAIT_MS = 1000  # one WAIT's timeout; a shortfall is waited out, said every few seconds


def min_replicas(redis: Any) -> int:
    return int(getattr(redis, "xquik_min_replicas", 0))


def add_wait(pipe: Any, redis: Any) -> None:
    """--min-replicas: a WAIT after the writes of a pipeline of `redis` (its reply, the last,
    goes to `replicated`)."""
    if wanted := min_replicas(redis):
        pipe.execute_command("WAIT", wanted, WAIT_MS)


async def replicated(redis: Any, replies: list[Any]) -> None:
    """--min-replicas: takes the WAIT's reply off `replies` (from a pipeline given
    `add_wait`) and returns once enough replicas hold its writes."""
    if wanted := min_replicas(redis):
        acked = replies.pop()
        await wait_replicas(redis, wanted, acked if isinstance(acked, int) else 0)


async def wait_replicas(redis: Any, wanted: int, acked: int) -> None:
    """Returns once `wanted` replicas hold every write this client made so far; `acked` is
    what the WAIT sent with those writes answered. WAIT counts the writes of its own
    connection, and the pool may hand out another one: a write of ours on it (a marker key)
    puts the replication offset past every earlier write, so its WAIT covers them too."""
    since = time.monotonic()
    said = since
    while acked < wanted:
        if time.monotonic() - said >= 5:
            said = time.monotonic()
            log.warning(
                "redis_replicas_behind",
                address=getattr(redis, "xquik_address", "redis"),
                replicas=acked,
                min_replicas=wanted,
                waited_s=round(said - since, 1),
            )
        async for attempt in redis_retrying(redis):
            with attempt:
                pipe = redis.pipeline(transaction=False)
                pipe.set(REPLICATION_MARK, "1", px=60_000)
                pipe.execute_command("WAIT", wanted, WAIT_MS)
                _, acked = await pipe.execute()


def script_batch(redis: Any) -> ScriptBatch:
    """The one batch of a Redis client (every script run on it goes through it), kept on
    the client: it goes when the client goes."""
    batch: ScriptBatch | None = getattr(redis, "xquik_script_batch", None)
    if batch is None:
        batch = ScriptBatch(redis)
        redis.xquik_script_batch = batch
    return batch
