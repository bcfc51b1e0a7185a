"""The sandbox as the official SDK sees it: `x-twitter-scraper` (generated from Xquik's API
description) with strict response validation drives every endpoint the worker uses, the error
classes it must tell apart, and listings across pages. Where the sandbox and the SDK's models
disagree, the SDK wins: this test is how we know."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import x_twitter_scraper as sdk

from tests.conftest import SandboxProcess


def client(sb: SandboxProcess, **kw: object) -> sdk.XTwitterScraper:
    kw.setdefault("api_key", sb.api_key)
    return sdk.XTwitterScraper(
        base_url=sb.base_url,
        _strict_response_validation=True,
        max_retries=0,
        **kw,  # type: ignore[arg-type]
    )


def test_accounts_listing_retrieve_delete_and_errors(
    sandbox_process: Callable[..., SandboxProcess],
) -> None:
    sb = sandbox_process("--accounts", "7", "--accounts-page-cap", "5", "--delete-limit", "2/60s")
    c = client(sb)
    # Without pagination parameters, up to the cap; past it, cursor pages (hasMore, nextCursor).
    first = c.x.accounts.list()
    assert len(first.accounts) == 5
    assert first.has_more is True
    assert first.next_cursor
    ids = [a.id for a in first.accounts]
    page = c.x.accounts.list(limit=3)
    pages = [page]
    while page.has_more:
        assert page.next_cursor
        page = c.x.accounts.list(limit=3, cursor=page.next_cursor)
        pages.append(page)
    assert [len(p.accounts) for p in pages] == [3, 3, 1]
    assert [a.id for p in pages for a in p.accounts][:5] == ids
    account = c.x.accounts.retrieve("1")
    assert account.id == "1"
    assert account.x_username == "user1"
    assert c.x.accounts.delete("1").success is True
    with pytest.raises(sdk.NotFoundError):
        c.x.accounts.delete("1")
    with pytest.raises(sdk.NotFoundError):
        c.x.accounts.retrieve("1")
    # The DELETE tier's window (2 per 60 s) is spent: a 429 with Retry-After and retryAfter.
    with pytest.raises(sdk.RateLimitError) as limited:
        c.x.accounts.delete("2")
    assert int(limited.value.response.headers["Retry-After"]) > 0
    assert limited.value.body["retryAfter"] > 0  # type: ignore[index]
    with pytest.raises(sdk.AuthenticationError):
        client(sb, api_key="xq_" + "0" * 32).x.accounts.list()
    # Bearer, as the newer docs and the SDK allow.
    bearer = sdk.XTwitterScraper(
        base_url=sb.base_url, bearer_token=sb.api_key, api_key=None,
        _strict_response_validation=True, max_retries=0,
    )  # fmt: skip
    assert bearer.x.accounts.retrieve("3").id == "3"
    # Every error is the JSON envelope, even on routes that do not exist; a bad id is 400.
    raw = httpx.get(f"{sb.base_url}/no/such/route", headers={"x-api-key": sb.api_key})
    assert raw.status_code == 404
    assert raw.json()["error"] == "not_found"
    raw = httpx.get(f"{sb.base_url}/x/accounts/bad%20id", headers={"x-api-key": sb.api_key})
    assert raw.status_code == 400
    assert raw.json()["error"] == "invalid_id"
    # The opt-in error contract: {"error": {"type": a category, "code", "message"}}.
    contract = {"xquik-api-contract": "2026-04-29"}
    for headers, path, status, kind, code in [
        ({"x-api-key": "xq_" + "0" * 32}, "/x/accounts", 401, "authentication_error",
         "unauthenticated"),
        ({"x-api-key": sb.api_key}, "/x/accounts/1", 404, "invalid_request_error", "not_found"),
        ({"x-api-key": sb.api_key}, "/x/accounts/bad%20id", 400, "invalid_request_error",
         "invalid_id"),
    ]:  # fmt: skip
        plain = httpx.get(f"{sb.base_url}{path}", headers=headers).json()
        raw = httpx.get(f"{sb.base_url}{path}", headers={**headers, **contract})
        assert raw.status_code == status
        error = raw.json()["error"]
        assert (error["type"], error["code"]) == (kind, code)
        assert error["message"] == plain["message"]  # the same words as without the contract
        assert error["message"]
        assert set(error) == {"type", "code", "message"}


def test_monitors_pages_and_background_deletion(
    sandbox_process: Callable[..., SandboxProcess],
) -> None:
    sb = sandbox_process(
        "--accounts", "30", "--delete-limit", "unlimited", "--monitor-deletion-s", "1"
    )
    c = client(sb)
    every = c.monitors.list()
    assert every.has_more is False
    total = len(every.monitors)
    assert total >= 5
    page = c.monitors.list(limit=2)
    seen = [m.id for m in page.monitors]
    pages = 1
    while page.has_more:
        assert page.next_cursor
        page = c.monitors.list(limit=2, cursor=page.next_cursor)
        seen += [m.id for m in page.monitors]
        pages += 1
    assert pages >= 3
    assert seen == [m.id for m in every.monitors]
    target = every.monitors[0].id
    gone = c.monitors.deactivate(target)
    assert gone.deletion_status == "deleting"
    assert gone.success is True
    assert gone.status_url.endswith(f"/monitors/{target}")
    # Deleted in the background: still listed (and retrievable) a moment, then 404.
    assert target in [m.id for m in c.monitors.list().monitors]
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            c.monitors.retrieve(target)
        except sdk.NotFoundError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the monitor never went")
    assert target not in [m.id for m in c.monitors.list().monitors]
    # Keyword monitors: their own listing and deletion, in the same shapes.
    keywords = c.monitors.keywords.list()
    assert keywords.has_more is False
    assert keywords.monitors
    first_kw = keywords.monitors[0]
    assert "from:user" in first_kw.query
    kw_gone = c.monitors.keywords.deactivate(first_kw.id)
    assert kw_gone.deletion_status == "deleting"
    assert kw_gone.status_url.endswith(f"/monitors/keywords/{first_kw.id}")
