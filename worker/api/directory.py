"""Accounts and monitors as listed by the API, fetched once per run (read budget) and looked
up by username, id or X user id. A miss may refresh the list, at most every 30 s. With Redis
(queue consumers, `--budget`), the account listing is shared by every run of the key: a
listing younger than 30 s that another consumer fetched is read from Redis instead of the
API (`SharedListing`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio

from worker.api.call import Call, Caller, Request
from worker.api.client import Answer, XquikClient
from worker.budget.base import Clock
from worker.logs import get_logger
from worker.redis_keys import listing_key

REFRESH_AFTER = 30.0
log = get_logger()


class SharedListing:
    """One key's account listing in Redis, shared by the runs of that key: a hash
    `xquik:listing:<fingerprint>` of `at` (the wall time it was fetched), `accounts` (JSON,
    in the API's order) and `gone:<id>` (the wall time a run disconnected that account), so
    that an account one run removed is not sent again by another that reads an older
    listing. Expires after 2 x REFRESH_AFTER without a new listing. Advisory, like any
    listing: a job for an account it lacks is confirmed with a GET. Redis failing is never
    the run's failure: the API is asked as without it."""

    def __init__(self, redis: Any, fingerprint: str, *, wall: Clock = time.time) -> None:
        self._redis = redis
        self._key = listing_key(fingerprint)
        self._wall = wall
        self._marks = _Marks.of(redis)

    async def get(self, *, newer_than: float) -> tuple[list[dict[str, Any]], float] | None:
        """The listing (without the accounts runs have disconnected since) and when it was
        fetched (wall time), if it was fetched after `newer_than` and less than
        REFRESH_AFTER ago; else None."""
        raw = await self._read()
        if raw is None:
            return None
        try:
            fetched = float(raw[b"at"])
            listed = json.loads(raw[b"accounts"])
        except (KeyError, ValueError):
            return None  # none yet, or not ours
        age = self._wall() - fetched
        if fetched <= newer_than or not 0 <= age < REFRESH_AFTER or not isinstance(listed, list):
            return None
        gone = {f[5:].decode(errors="replace") for f in raw if f.startswith(b"gone:")}
        return [a for a in listed if isinstance(a, dict) and str(a.get("id")) not in gone], fetched

    async def put(self, accounts: list[dict[str, Any]], fetched: float) -> None:
        """A listing fetched from the API at `fetched`; the marks of accounts disconnected
        before it go (the listing no longer has them), later ones stay. One script: the
        listing is not read back to find them, and no mark set meanwhile is lost."""
        from redis.exceptions import RedisError

        try:
            await self._redis.eval(
                _PUT, 1, self._key, repr(fetched), json.dumps(accounts),
                int(2 * REFRESH_AFTER * 1000),
            )  # fmt: skip
        except (RedisError, OSError) as exc:
            log.debug("shared_listing_not_written", error=type(exc).__name__)

    def forget(self, account_id: str) -> None:
        """This run disconnected the account: other runs reading the listing skip it. Sent in
        the background (advisory: a mark lost with the process costs another run a 404, as
        without sharing), with every other mark of the tick (`_Marks`)."""
        self._marks.add(self._key, account_id, repr(self._wall()))

    async def drain(self) -> None:
        """Send the marks not yet sent (the session is closing), for at most 2 s."""
        await self._marks.drain()

    async def _read(self) -> dict[bytes, bytes] | None:
        from redis.exceptions import RedisError

        try:
            raw: dict[bytes, bytes] = await self._redis.hgetall(self._key)
        except (RedisError, OSError) as exc:
            log.debug("shared_listing_unavailable", error=type(exc).__name__)
            return None
        return raw


_MARK = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
"""


class _Marks:
    """The `gone:` marks of every shared listing on one Redis client, not yet sent. The
    marks of one event-loop tick go together: one script call per listing (its marks in
    one HSET), all in the client's next `ScriptBatch` pipeline beside the budget's scripts,
    with no task or round trip of their own. With 1,000 keys nearly every mark is for
    another listing; a call each, in one pipeline, is what keeps the sharing cheap."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._script = redis.register_script(_MARK)
        self._waiting: dict[str, dict[str, str]] = {}  # listing key -> account -> at
        self._scheduled = False
        self._sent: set[asyncio.Future[Any]] = set()

    @classmethod
    def of(cls, redis: Any) -> _Marks:
        """The client's one instance, kept on it (as its script batch)."""
        marks: _Marks | None = getattr(redis, "xquik_listing_marks", None)
        if marks is None:
            marks = cls(redis)
            redis.xquik_listing_marks = marks
        return marks

    def add(self, key: str, account_id: str, at: str) -> None:
        self._waiting.setdefault(key, {})[account_id] = at
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        from worker.redis_conn import script_batch  # only queue consumers share a listing

        self._scheduled = False
        waiting, self._waiting = self._waiting, {}
        batch = script_batch(self._redis)
        for key, gone in waiting.items():
            # Only while the listing lives (it expires 2 x REFRESH_AFTER after it was put):
            # marks never outlive it, nor pile up in a hash of no listing.
            marks = [x for account, at in gone.items() for x in (f"gone:{account}", at)]
            future = batch.submit(self._script, [key], marks)
            self._sent.add(future)
            future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[Any]) -> None:
        self._sent.discard(future)
        if not future.cancelled() and (exc := future.exception()) is not None:
            log.debug("shared_listing_not_written", error=type(exc).__name__)

    async def drain(self) -> None:
        if self._waiting:
            self._send()  # the scheduled call then finds nothing to send
        if self._sent:
            with anyio.move_on_after(2):
                await asyncio.wait(set(self._sent))


# ARGV: the fetch time, the accounts (JSON), the expiry in ms. Marks that are no time, or
# a time at or before the fetch, go with the listing that no longer has their accounts.
_PUT = """
local fetched = tonumber(ARGV[1])
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 5) == 'gone:' then
    local at = tonumber(redis.call('HGET', KEYS[1], f))
    if at == nil or at <= fetched then redis.call('HDEL', KEYS[1], f) end
  end
end
redis.call('HSET', KEYS[1], 'at', ARGV[1], 'accounts', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
"""


def listing(fetch: Callable[[], Awaitable[list[dict[str, Any]]]]) -> Request:
    """A list endpoint as a retryable request whose answer body is the list."""

    async def request() -> Answer:
        return Answer(200, await fetch())

    return request


def tracks(monitor: dict[str, Any], *, x_user_id: str | None, username: str | None) -> bool:
    """The one rule for "this monitor tracks that account": the same X user id, else the same
    username (case-insensitive, `@` optional). X user ids never change; usernames can."""
    if x_user_id and str(monitor.get("xUserId") or "") == x_user_id:
        return True
    name = (username or "").lower().removeprefix("@")
    return bool(name) and str(monitor.get("username") or "").lower() == name


def same_user(account: dict[str, Any], *, x_user_id: str | None, username: str | None) -> bool:
    """The one rule for "this listed account is that X user": the same X user id when both
    are known, else the same handle (case-insensitive, `@` optional)."""
    listed = str(account.get("xUserId") or "")
    if x_user_id and listed:
        return listed == x_user_id
    name = (username or "").lower().removeprefix("@")
    return bool(name) and str(account.get("xUsername") or "").lower() == name


_EDGES = "()[]{},;\"'"


def names(query: str, username: str | None) -> bool:
    """The one rule for "this keyword monitor's query names that user": a whole token
    `from:user`, `to:user` or `@user`, any case (`-from:user` excludes the user: no). A keyword
    query is free text, so this is a heuristic by design; a bare `user` never matches."""
    name = (username or "").lower().removeprefix("@")
    if not name:
        return False
    wanted = {f"from:{name}", f"to:{name}", f"@{name}"}
    return any(token.strip(_EDGES).lower() in wanted for token in query.split())


def tracking(monitors: Iterable[dict[str, Any]], account: dict[str, Any]) -> list[dict[str, Any]]:
    """The monitors that track a listed account."""
    x_user_id = str(account.get("xUserId") or "") or None
    username = str(account.get("xUsername") or "") or None
    return [m for m in monitors if tracks(m, x_user_id=x_user_id, username=username)]


class Directory:
    def __init__(
        self,
        client: XquikClient,
        call: Caller,
        *,
        clock: Clock = time.monotonic,
        shared: SharedListing | None = None,
        wall: Clock = time.time,
    ) -> None:
        self._client = client
        self._call = call
        self._clock = clock
        self._wall = wall
        self._shared = shared
        self._lock = anyio.Lock()
        self._accounts: list[dict[str, Any]] | None = None
        self._accounts_at = float("-inf")
        self._fetched = float("-inf")  # the wall time the listing held was fetched
        self.shared_reads = 0  # listings taken from Redis instead of the API
        self._monitors: dict[str, dict[str, Any]] | None = None
        self._keyword_monitors: dict[str, dict[str, Any]] | None = None
        self._failed: tuple[Call, float] | None = None
        self._by_id: dict[str, dict[str, Any]] = {}
        self._by_name: dict[str, dict[str, Any]] = {}

    async def accounts(self, *, refresh: bool = False) -> list[dict[str, Any]] | Call:
        """The connected accounts, or the failed Call when they cannot be listed. `refresh`
        lists them again if the copy held is older than REFRESH_AFTER seconds."""
        async with self._lock:
            stale = self._clock() - self._accounts_at > REFRESH_AFTER
            if self._accounts is None or (refresh and stale):
                shared = None
                if self._shared is not None:
                    shared = await self._shared.get(newer_than=self._fetched)
                if shared is not None:
                    accounts, fetched = shared
                    self.shared_reads += 1
                    log.info(
                        "accounts_listing_shared",
                        accounts=len(accounts),
                        age_s=round(self._wall() - fetched, 1),
                    )
                else:
                    fetched = self._wall()
                    call = await self._call(listing(self._client.list_accounts))
                    if call.answer is None:
                        return call
                    accounts = call.answer.body
                    if self._shared is not None:
                        await self._shared.put(accounts, fetched)
                self._accounts, self._fetched = accounts, fetched
                self._accounts_at = self._clock()
                # Indexed once per listing: a lookup per job must not scan 10,000 accounts.
                self._by_id = {str(a.get("id")): a for a in accounts}
                self._by_name = {str(a.get("xUsername", "")).lower(): a for a in accounts}
            return self._accounts

    def forget(self, account_id: str) -> None:
        """The account was just disconnected: no longer listed as connected, so a later job
        for it (a queue consumer runs for months) is confirmed gone with a GET, never a
        DELETE. Its username still resolves to it (a later job by name: already_gone). With a
        shared listing, the other runs of the key learn it too."""
        self._by_id.pop(account_id, None)
        if self._shared is not None:
            self._shared.forget(account_id)

    async def drain(self) -> None:
        """What is left to tell the key's other runs, told (the session is closing)."""
        if self._shared is not None:
            await self._shared.drain()

    def forget_failure(self) -> None:
        """The key changed: a listing that failed with the old one may be asked again now."""
        self._failed = None

    @property
    def has_listing(self) -> bool:
        """An account listing has been read in this run."""
        return self._accounts is not None

    def known(self, account_id: str) -> dict[str, Any] | None:
        """The account with this id in the listing already held; never asks the API."""
        return self._by_id.get(account_id)

    async def listed(self, account_id: str) -> dict[str, Any] | Call | None:
        """The listed account with this id, None when the listing lacks it (listed again on a
        miss at most every REFRESH_AFTER s), or the failed Call; a failed listing is not asked
        again for REFRESH_AFTER s (every job would wait for its retries)."""
        if self._failed is None and (known := self._by_id.get(account_id)) is not None:
            return known  # the common case, without a lock: listed, nothing to refresh
        async with self._lock:
            if self._failed is not None and self._clock() - self._failed[1] < REFRESH_AFTER:
                return self._failed[0]
        found = await self.find(account_id=account_id)
        if isinstance(found, Call):
            async with self._lock:
                self._failed = (found, self._clock())
        return found

    async def find(
        self, *, username: str | None = None, account_id: str | None = None
    ) -> dict[str, Any] | Call | None:
        """The account with this id or (case-insensitive) username; None if there is none."""
        for refresh in (False, True):
            listed = await self.accounts(refresh=refresh)
            if isinstance(listed, Call):
                return listed
            if account_id is not None and account_id in self._by_id:
                return self._by_id[account_id]
            if username is not None and username.lower() in self._by_name:
                return self._by_name[username.lower()]
        return None

    async def monitors(self) -> list[dict[str, Any]] | Call:
        """Every account monitor, or the failed Call."""
        call = await self._call(listing(self._client.list_monitors))
        return call if call.answer is None else list(call.answer.body)

    async def keyword_monitors(self) -> list[dict[str, Any]] | Call:
        """Every keyword monitor, or the failed Call."""
        call = await self._call(listing(self._client.list_keyword_monitors))
        return call if call.answer is None else list(call.answer.body)

    async def take_monitors(
        self, *, x_user_id: str | None, username: str | None
    ) -> list[dict[str, Any]] | Call:
        """The monitors tracking this user, removed from the cache so that no two jobs delete
        the same monitor."""
        async with self._lock:
            if self._monitors is None:
                listed = await self.monitors()
                if isinstance(listed, Call):
                    return listed
                self._monitors = {str(m.get("id")): m for m in listed if m.get("id")}
            taken = [
                m
                for m in self._monitors.values()
                if tracks(m, x_user_id=x_user_id, username=username)
            ]
            for monitor in taken:
                del self._monitors[str(monitor["id"])]
            return taken

    async def take_keyword_monitors(self, *, username: str | None) -> list[dict[str, Any]] | Call:
        """The keyword monitors whose query names this user, removed from the cache (one
        listing per run, every page) so that no two jobs delete the same monitor."""
        async with self._lock:
            if self._keyword_monitors is None:
                call = await self._call(listing(self._client.list_keyword_monitors))
                if call.answer is None:
                    return call
                listed = list(call.answer.body)
                self._keyword_monitors = {str(m.get("id")): m for m in listed if m.get("id")}
            taken = [
                m
                for m in self._keyword_monitors.values()
                if names(str(m.get("query") or ""), username)
            ]
            for monitor in taken:
                del self._keyword_monitors[str(monitor["id"])]
            return taken
