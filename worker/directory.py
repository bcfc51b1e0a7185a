"""Accounts and monitors as listed by the API, fetched once per run (read budget) and looked
up by username, id or X user id. A miss may refresh the list, at most every 30 s."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from worker.calls import Call
from worker.client import Answer, XquikClient

Caller = Callable[[Callable[[], Awaitable[Answer]]], Awaitable[Call]]
REFRESH_AFTER = 30.0


def listing(
    fetch: Callable[[], Awaitable[list[dict[str, Any]]]],
) -> Callable[[], Awaitable[Answer]]:
    """A list endpoint as a retryable operation whose answer body is the list."""

    async def op() -> Answer:
        return Answer(200, await fetch())

    return op


class Directory:
    def __init__(self, client: XquikClient, call: Caller) -> None:
        self._client = client
        self._call = call
        self._lock = anyio.Lock()
        self._accounts: list[dict[str, Any]] | None = None
        self._accounts_at = 0.0
        self._monitors: dict[str, dict[str, Any]] | None = None

    async def _list(self, fetch: Callable[[], Awaitable[list[dict[str, Any]]]]) -> Call:
        return await self._call(listing(fetch))

    async def accounts(self, *, refresh: bool = False) -> list[dict[str, Any]] | Call:
        """The connected accounts, or the failed Call when they cannot be listed."""
        async with self._lock:
            stale = time.monotonic() - self._accounts_at > REFRESH_AFTER
            if self._accounts is None or (refresh and stale):
                call = await self._list(self._client.list_accounts)
                if call.answer is None:
                    return call
                self._accounts = call.answer.body
                self._accounts_at = time.monotonic()
            return self._accounts

    async def find(
        self, *, username: str | None = None, account_id: str | None = None
    ) -> dict[str, Any] | Call | None:
        """The account with this id or (case-insensitive) username; None if there is none."""
        for refresh in (False, True):
            listed = await self.accounts(refresh=refresh)
            if isinstance(listed, Call):
                return listed
            for account in listed:
                if account_id is not None and str(account.get("id")) == account_id:
                    return account
                name = str(account.get("xUsername", "")).lower()
                if username is not None and name == username.lower():
                    return account
        return None

    async def take_monitors(
        self, *, x_user_id: str | None, username: str | None
    ) -> list[dict[str, Any]] | Call:
        """The monitors tracking this user (by X user id, else username), removed from the
        cache so that no two jobs delete the same monitor."""
        async with self._lock:
            if self._monitors is None:
                call = await self._list(self._client.list_monitors)
                if call.answer is None:
                    return call
                self._monitors = {str(m.get("id")): m for m in call.answer.body if m.get("id")}
            name = (username or "").lower().removeprefix("@")
            taken = [
                m
                for m in self._monitors.values()
                if (x_user_id and str(m.get("xUserId") or "") == x_user_id)
                or (name and str(m.get("username") or "").lower() == name)
            ]
            for monitor in taken:
                del self._monitors[str(monitor["id"])]
            return taken
