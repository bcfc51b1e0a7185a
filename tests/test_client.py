"""The client against the sandbox: safe URLs, both error shapes, non-JSON bodies, translated
network errors, and a budget that counts every real send."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import SandboxFactory
from worker.api.client import XquikClient
from worker.budget.local import LocalBudget
from worker.errors import (
    AuthError,
    NetworkError,
    PermanentApiError,
    RateLimited,
    RequestTimeout,
    TransientApiError,
)
from worker.sandbox import Sandbox


def client_for(sandbox: Sandbox, **kw: object) -> XquikClient:
    return XquikClient(base_url=sandbox.base_url, api_key=sandbox.api_key, **kw)  # type: ignore[arg-type]


async def test_delete_then_404(sandbox: Sandbox) -> None:
    """200 on the first delete, 404 on the second: ids are gone for good."""
    async with client_for(sandbox) as client:
        assert (await client.delete_account("1")).status == 200
        assert (await client.delete_account("1")).status == 404
    assert "1" not in sandbox.state.store.accounts


def test_ids_are_one_encoded_path_segment() -> None:
    """Whatever an id holds, it stays one segment under /x/accounts/."""
    client = XquikClient(base_url="https://xquik.com/api/v1/", api_key="k")
    assert str(client.url("x", "accounts", "../monitors/7")) == (
        "https://xquik.com/api/v1/x/accounts/..%2Fmonitors%2F7"
    )
    assert client.url("x", "accounts", "a b?c#d").raw_path == "/api/v1/x/accounts/a%20b%3Fc%23d"


async def test_wrong_key_is_an_auth_error(sandbox: Sandbox) -> None:
    """401 raises AuthError with the API's code."""
    async with XquikClient(base_url=sandbox.base_url, api_key="xq_" + "0" * 64) as client:
        with pytest.raises(AuthError) as info:
            await client.delete_account("1")
    assert info.value.code == "unauthenticated"
    assert info.value.status == 401


@pytest.mark.parametrize(
    ("fault", "error", "code"),
    [
        ("fail_503", TransientApiError, "internal_error"),
        ("html_502", TransientApiError, "http_502"),
        ("reset", NetworkError, "network_error"),
    ],
)
async def test_faults_translate_to_transient_errors(
    sandbox_factory: SandboxFactory, fault: str, error: type[Exception], code: str
) -> None:
    """5xx (JSON or HTML) and dropped connections become retryable errors, not crashes."""
    sandbox = await sandbox_factory(faults={fault: 1.0})
    async with client_for(sandbox) as client:
        with pytest.raises(error) as info:
            await client.delete_account("1")
    assert info.value.code == code  # type: ignore[attr-defined]


async def test_slow_answer_times_out(sandbox_factory: SandboxFactory) -> None:
    """No answer within --timeout is a RequestTimeout."""
    sandbox = await sandbox_factory(faults={"slow": 1.0, "slow_seconds": 2.0})
    async with client_for(sandbox, timeout=0.2) as client:
        with pytest.raises(RequestTimeout):
            await client.delete_account("1")


async def test_refused_connection_is_a_network_error() -> None:
    """Nobody listening: NetworkError, no aiohttp exception leaks out."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with XquikClient(base_url=f"http://127.0.0.1:{port}/api/v1", api_key="k") as client:
        with pytest.raises(NetworkError):
            await client.delete_account("1")


async def test_permanent_errors_carry_the_code(sandbox: Sandbox) -> None:
    """A 4xx other than 401/404/429 is permanent."""
    async with client_for(sandbox) as client:
        with pytest.raises(PermanentApiError) as info:
            await client.request("POST", "x", "accounts")  # not served: 405
    assert info.value.status == 405


async def test_429_holds_the_budget_for_retry_after(sandbox_factory: SandboxFactory) -> None:
    """A 429 raises RateLimited and closes the DELETE budget for Retry-After seconds."""
    sandbox = await sandbox_factory(delete_limit=(1, 30.0))
    budget = LocalBudget(100, 1.0)
    async with client_for(sandbox, delete_budget=budget) as client:
        await client.delete_account("1")
        with pytest.raises(RateLimited) as info:
            await client.delete_account("2")
    assert info.value.retry_after == 30.0
    assert 29.0 < budget.cooldown_remaining() <= 30.0


async def test_budget_counts_aiohttp_hidden_resend(sandbox_factory: SandboxFactory) -> None:
    """When a reused connection drops, aiohttp resends the DELETE by itself; that resend goes
    through the budget too, so the budget's count equals what the server saw."""
    sandbox = await sandbox_factory(delete_limit=(None, 60.0), faults={"reset": 0.5, "seed": 3})
    budget = LocalBudget(1000, 60.0)
    outcomes = []
    async with client_for(sandbox, delete_budget=budget, concurrency=1) as client:
        for i in range(1, 31):
            try:
                outcomes.append((await client.delete_account(str(i))).status)
            except NetworkError:
                outcomes.append(0)
    seen = sum(1 for _, method, _, _ in sandbox.state.stats.log if method == "DELETE")
    assert seen > len(outcomes), "the fault plan should have caused hidden resends"
    assert client.sent["DELETE"] == seen
    assert budget.sends_in_span() == seen


async def test_a_read_429_without_retry_after_waits_the_read_window() -> None:
    """A 429 that names no wait: each tier's budget falls back to its own window (a read
    waits 1 s, not the DELETE tier's 60 s)."""
    from aiohttp import web

    from tests.hostile_servers import Server

    async def bare_429(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": "rate_limit_exceeded"}, status=429)

    reads = LocalBudget(100, 1.0)
    deletes = LocalBudget(15, 60.0)
    async with Server(bare_429) as server:
        base = f"{server.url}/api/v1"
        async with XquikClient(
            base_url=base, api_key="k", read_budget=reads, delete_budget=deletes
        ) as client:
            with pytest.raises(RateLimited):
                await client.get_account("1")
            assert 0.9 <= reads.cooldown_remaining() <= 1.1
            assert deletes.cooldown_remaining() == 0
            with pytest.raises(RateLimited):
                await client.delete_account("1")
    assert 59 <= deletes.cooldown_remaining() <= 61.3


async def test_a_refused_connection_gives_its_slot_back() -> None:
    """Nothing listening: the request never left, so the budget does not count it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    budget = LocalBudget(3, 60.0)
    base = f"http://127.0.0.1:{port}/api/v1"
    async with XquikClient(base_url=base, api_key="k", delete_budget=budget) as client:
        for _ in range(5):
            with pytest.raises(NetworkError):
                await client.delete_account("1")
        assert client.sent["DELETE"] == 0
        assert client.refunded == 5
    assert budget.sends_in_span() == 0
