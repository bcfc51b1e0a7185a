"""The listings: one GET per run, a refresh on a miss at most every 30 s (fake clock), one
matching rule for monitors, and each monitor handed out once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes import FakeClock
from worker.api.call import Call, Caller, Fatal
from worker.api.client import XquikClient
from worker.api.directory import Directory, tracks
from worker.errors import AuthError
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
