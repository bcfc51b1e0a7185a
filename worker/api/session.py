"""One API key and everything that speaks with it: its client, its two budgets (DELETE and
read), the retry caller and the directory of its accounts and monitors. Built once, for `run`,
`plan` and `monitors`; the seam that a run with several keys builds once per key."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from types import TracebackType
from typing import Any

from worker.api.call import Caller, Fatal
from worker.api.client import XquikClient
from worker.api.directory import Directory, SharedListing
from worker.api.keys import fingerprint, key_id
from worker.api.urls import origin_of
from worker.budget.base import Budget
from worker.budget.make import make_budget
from worker.budget.rate import Rate
from worker.settings import ApiSettings, Secret


class Session:
    """`async with Session(api, ...) as session:` opens the client; closing it closes the
    budgets. Built from a command's ApiSettings, here only (run, plan, monitors)."""

    def __init__(
        self,
        api: ApiSettings,
        *,
        on_fatal: Callable[[Fatal], None],
        api_key: str | None = None,
        redis: Any | None = None,
        http: Any | None = None,
        account: str | None = None,
        budgets: dict[str, tuple[Budget, Budget]] | None = None,
        share_listing: bool = False,
    ) -> None:
        """`api_key`: this session's key, when not `api.api_key` (a tenant's). `redis`: where
        the budgets live (None: local, in `api.state_dir`). `http`: an aiohttp session shared
        with other keys' sessions. `account`: the Xquik account the key belongs to, when
        several keys share it (their budgets are one: the limits are per account); None: the
        key's own. `budgets`: where sessions of one run find the budgets an earlier session
        of the same account built. `share_listing` (runs): the account listing is shared
        with the key's other runs through `redis` (a command that prints a listing, such as
        `plan`, asks the API)."""
        key = api.api_key if api_key is None else api_key
        base_url = api.base_url
        self.fingerprint = (
            fingerprint(f"account:{account}", base_url) if account else fingerprint(key, base_url)
        )
        self.key_id = key_id(key)
        self.account = account
        self.origin = origin_of(base_url)
        self.sandbox = api.sandbox

        def budget(r: Rate, tier: str) -> Budget:
            return make_budget(
                r,
                tier=tier,
                fingerprint=self.fingerprint,
                margin=api.margin,
                attempt_bound=api.timeout,
                max_cooldown=api.max_cooldown,
                relearn=api.relearn,
                redis=redis,
                state_dir=api.state_dir,
            )

        self.rate = api.rate
        shared = budgets.get(self.fingerprint) if budgets is not None else None
        if shared is None:
            shared = (budget(api.rate, "delete"), budget(api.read_rate, "read"))
            if budgets is not None:
                budgets[self.fingerprint] = shared
        self.delete_budget, self.read_budget = shared
        self.client = XquikClient(
            base_url=base_url,
            api_key=key,
            timeout=api.timeout,
            concurrency=api.concurrency,
            delete_budget=self.delete_budget,
            read_budget=self.read_budget,
            http=http,
        )
        self.call = Caller(
            max_attempts=api.max_attempts,
            on_fatal=on_fatal,
            backoff_base=api.backoff_base,
            backoff_cap=api.backoff_cap,
        )
        sharing = share_listing and redis is not None
        listing = SharedListing(redis, self.fingerprint) if sharing else None
        self.directory = Directory(self.client, self.call, shared=listing)

    async def __aenter__(self) -> Session:
        await self.client.__aenter__()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        await self.directory.drain()
        await self.client.__aexit__(et, e, tb)

    def stamp(self) -> dict[str, object]:
        """What every record made with this session says of it: the key (by id), the API (its
        origin, a sandbox or not) and the Xquik account of a key group."""
        return {
            "key_id": self.key_id,
            "origin": self.origin,
            "sandbox": self.sandbox,
            "key_group": self.account,
        }

    def rotate(self, api_key: str) -> None:
        """The key file changed: send with the new key from now on (same budgets: the same
        account)."""
        self.client.api_key = api_key
        self.key_id = key_id(api_key)
        self.directory.forget_failure()

    def close(self) -> None:
        """Send nothing more: waiting and future requests get BudgetClosed."""
        self.delete_budget.close()
        self.read_budget.close()

    @property
    def sent(self) -> Counter[str]:
        return self.client.sent

    @property
    def retries(self) -> int:
        return self.call.retries


async def open_session(
    api: ApiSettings,
    stack: AsyncExitStack,
    *,
    on_fatal: Callable[[Fatal], None],
    account: str | None = None,
) -> Session:
    """A command's one session (plan, monitors), opened on `stack`: against the built-in
    sandbox if asked (started here), its budgets in --budget's Redis if given (connected
    here, within `api.budget_connect_timeout`)."""
    if api.sandbox:
        from worker.sandbox import Sandbox

        sandbox = await stack.enter_async_context(Sandbox())
        api = replace(api, base_url=sandbox.base_url, api_key=Secret(sandbox.api_key))
    redis = None
    if api.budget_url is not None:
        from worker.redis_conn import connected

        redis = await connected(api.budget_url, deadline=api.budget_connect_timeout)
        stack.push_async_callback(redis.aclose)
    session = Session(api, on_fatal=on_fatal, redis=redis, account=account)
    return await stack.enter_async_context(session)
