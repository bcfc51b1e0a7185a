"""The listings: one GET per run, a refresh on a miss at most every 30 s (fake clock), one
matching rule for monitors, and each monitor handed out once."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from tests.fakes import FakeClock
from worker.api.call import Call, Caller, Fatal
from worker.api.client import XquikClient
from worker.api.directory import Directory, SharedListing, tracks
from worker.errors import AuthError
from worker.redis_keys import listing_key
from worker.sandbox import Sandbox


def account_lists(sandbox: Sandbox) -> int:
    return sum(
        1
        for _, m, path, _ in sandbox.state.stats.log
        if m == "GET" and path.endswith("/x/accounts")
    )


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[XquikClient]:
    async with XquikClient(base_url=sandbox.base_url, api_key=sandbox.api_key) as c:
        yield c


def directory(client: XquikClient, clock: FakeClock) -> Directory:
    rejected: list[Fatal] = []
    return Directory(client, Caller(max_attempts=2, on_fatal=rejected.append), clock=clock)


async def test_hits_are_served_from_one_listing(
    sandbox: Sandbox, client: XquikClient, clock: FakeClock
) -> None:
    """Ten lookups of listed accounts, by id and by any-case username: one GET."""
    d = directory(client, clock)
    for i in range(1, 6):
        found = await d.find(account_id=str(i))
        assert isinstance(found, dict)
        assert found["id"] == str(i)
        by_name = await d.find(username=f"USER{i}")
        assert isinstance(by_name, dict)
        assert by_name["id"] == str(i)
    assert account_lists(sandbox) == 1


async def test_a_miss_refreshes_at_most_every_30_seconds(
    sandbox: Sandbox, client: XquikClient, clock: FakeClock
) -> None:
    """Misses within 30 s of the last listing use it; the first miss after 30 s lists again,
    and then finds an account connected meanwhile."""
    d = directory(client, clock)
    assert await d.find(account_id="999") is None
    assert account_lists(sandbox) == 1
    sandbox.state.store.add_account("999", "newcomer")
    clock.now += 29.0
    assert await d.find(account_id="999") is None
    assert await d.find(username="nobody") is None
    assert account_lists(sandbox) == 1
    clock.now += 1.5
    found = await d.find(account_id="999")
    assert isinstance(found, dict)
    assert found["xUsername"] == "newcomer"
    assert account_lists(sandbox) == 2


async def test_a_listing_that_fails_is_a_failed_call(sandbox: Sandbox, clock: FakeClock) -> None:
    """A rejected key: the lookup answers with the failed Call, never with 'not found'."""
    async with XquikClient(base_url=sandbox.base_url, api_key="xq_" + "0" * 64) as bad:
        found = await directory(bad, clock).find(account_id="1")
    assert isinstance(found, Call)
    assert isinstance(found.error, AuthError)


async def test_each_monitor_is_taken_once(sandbox: Sandbox, client: XquikClient) -> None:
    """Two jobs for one user: the first takes its monitors, the second finds none left."""
    store = sandbox.state.store
    account = store.accounts["1"]
    store.add_monitor("user1", account["xUserId"])
    store.add_monitor("User1")  # no X user id: matched by name
    d = directory(client, FakeClock())
    first = await d.take_monitors(x_user_id=account["xUserId"], username="user1")
    assert isinstance(first, list)
    assert len(first) >= 2
    assert await d.take_monitors(x_user_id=account["xUserId"], username="user1") == []


@pytest.mark.parametrize(
    ("monitor", "x_user_id", "username", "expected"),
    [
        ({"xUserId": "42", "username": "other"}, "42", "acme", True),
        ({"xUserId": "43", "username": "acme"}, "42", "acme", True),
        ({"xUserId": None, "username": "ACME"}, None, "@acme", True),
        ({"xUserId": "43", "username": "acme2"}, "42", "acme", False),
        ({"xUserId": "", "username": ""}, None, None, False),
        ({"username": "acme"}, None, "", False),
    ],
)
def test_one_rule_matches_monitors_to_an_account(
    monitor: dict[str, object], x_user_id: str | None, username: str | None, expected: bool
) -> None:
    """Same X user id, else the same username in any case with or without @."""
    assert tracks(monitor, x_user_id=x_user_id, username=username) is expected


async def test_runs_of_one_key_share_the_account_listing_through_redis(
    sandbox: Sandbox, redis_server: Any
) -> None:
    """Two runs of one key on one Redis (two consumers): the second takes the listing the
    first fetched (one GET between them) while it is younger than 30 s; a refresh takes a
    newer one from Redis, else asks the API; an older one, or Redis gone, means the API."""
    from worker.api.session import Session
    from worker.budget.rate import UNLIMITED
    from worker.redis_conn import connect
    from worker.settings import ApiSettings, Secret

    def listings() -> int:
        return sum(1 for _, m, p, _ in sandbox.state.stats.log if m == "GET" and "/x/accounts" in p)

    api = ApiSettings(
        sandbox.base_url, Secret(sandbox.api_key), rate=UNLIMITED, read_rate=UNLIMITED
    )
    redis = connect(redis_server.url)
    try:
        async with (
            Session(api, on_fatal=lambda exc: None, redis=redis, share_listing=True) as a,
            Session(api, on_fatal=lambda exc: None, redis=redis, share_listing=True) as b,
        ):
            first = await a.directory.accounts()
            assert isinstance(first, list)
            assert len(first) == 50
            assert listings() == 1
            assert await b.directory.accounts() == first  # from Redis, in the API's order
            assert (listings(), b.directory.shared_reads) == (1, 1)
            # Connected since: a miss refreshes once the copy is 30 s old. Redis holds none
            # newer than b's (b's is Redis's): the API is asked, and Redis gets the new one,
            # which a's refresh then takes from Redis.
            sandbox.state.store.accounts["777"] = {**first[0], "id": "777"}
            b.directory._accounts_at -= 31
            assert await b.directory.find(account_id="777") is not None
            assert listings() == 2
            a.directory._accounts_at -= 31
            assert await a.directory.find(account_id="777") is not None
            assert (listings(), a.directory.shared_reads) == (2, 1)
            # A run disconnects an account: a run reading the shared listing skips it.
            a.directory.forget("12")
            await anyio.sleep(0.2)  # the mark is sent in the background
            other = Directory(a.client, a.call, shared=SharedListing(redis, a.fingerprint))
            taken = await other.accounts()
            assert isinstance(taken, list)
            assert "12" not in {str(x["id"]) for x in taken}
            assert len(taken) == 50  # 777 listed since, 12 gone
        name = listing_key(Session(api, on_fatal=lambda exc: None).fingerprint)
        assert await redis.hexists(name, "accounts")
        assert 0 < await redis.pttl(name) <= 60_000
        # A listing older than 30 s is not taken; nor is a run hurt when Redis is gone.
        stale = SharedListing(redis, "x", wall=lambda: time.time() + 31)
        fresh = SharedListing(redis, "x")
        fresh.forget("1")  # no listing held: no mark (marks never outlive a listing)
        await anyio.sleep(0.2)
        assert not await redis.exists(listing_key("x"))
        await fresh.put([{"id": "1"}, {"id": "2"}], time.time())
        fresh.forget("1")  # before the listing below was fetched: its mark goes with it
        await anyio.sleep(0.2)
        await fresh.put([{"id": "2"}], time.time())
        fresh.forget("2")  # after: it stays
        await anyio.sleep(0.2)
        assert await stale.get(newer_than=float("-inf")) is None
        assert await fresh.get(newer_than=float("-inf")) is not None
        assert sorted(await redis.hkeys(listing_key("x"))) == [b"accounts", b"at", b"gone:2"]
        redis_server.stop()
        async with Session(api, on_fatal=lambda exc: None, redis=redis, share_listing=True) as c:
            assert isinstance(await c.directory.accounts(), list)
            assert listings() == 3
    finally:
        await redis.aclose()
