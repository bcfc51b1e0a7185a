"""One API key and everything that speaks with it: its client, its two budgets (DELETE and
read), the retry caller and the directory of its accounts and monitors. Built once, for `run`
and for `plan`; the seam that a run with several keys builds once per key."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from worker.api.call import Caller, Fatal
from worker.api.client import XquikClient
from worker.api.directory import Directory
from worker.budget import Budget, make_budget
from worker.settings import Rate


def key_id(api_key: str) -> str:
    """Which key did it, for the records: the first 12 hex digits of its SHA-256. Safe to
    show: it cannot be turned back into the key, and it is the same on every machine."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


def fingerprint(api_key: str, base_url: str) -> str:
    """Names the state of one key on one API without revealing the key."""
    return hashlib.sha256(f"{api_key}\0{base_url}".encode()).hexdigest()[:16]


class Session:
    """`async with Session(...) as session:` opens the client; closing it closes the budgets."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        rate: Rate,
        read_rate: Rate,
        on_fatal: Callable[[Fatal], None],
        concurrency: int = 4,
        timeout: float = 30.0,
        max_attempts: int = 5,
        margin: float = 0.0,
        max_cooldown: float = 900.0,
        relearn: float = 86400.0,
        state_dir: Path | None = None,
        redis: Any | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        http: Any | None = None,
        account: str | None = None,
        budgets: dict[str, tuple[Budget, Budget]] | None = None,
    ) -> None:
        """`http`: an aiohttp session shared with other keys' sessions. `account`: the Xquik
        account the key belongs to, when several keys share it (their budgets are one: the
        limits are per account); None: the key's own. `budgets`: where sessions of one run
        find the budgets an earlier session of the same account built."""
        self.fingerprint = (
            fingerprint(f"account:{account}", base_url)
            if account
            else fingerprint(api_key, base_url)
        )
        self.key_id = key_id(api_key)
        self.account = account

        def budget(r: Rate, tier: str) -> Budget:
            return make_budget(
                r,
                tier=tier,
                fingerprint=self.fingerprint,
                margin=margin,
                attempt_bound=timeout,
                max_cooldown=max_cooldown,
                relearn=relearn,
                redis=redis,
                state_dir=state_dir,
            )

        self.rate = rate
        shared = budgets.get(self.fingerprint) if budgets is not None else None
        if shared is None:
            shared = (budget(rate, "delete"), budget(read_rate, "read"))
            if budgets is not None:
                budgets[self.fingerprint] = shared
        self.delete_budget, self.read_budget = shared
        self.client = XquikClient(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            concurrency=concurrency,
            delete_budget=self.delete_budget,
            read_budget=self.read_budget,
            http=http,
        )
        self.call = Caller(
            max_attempts=max_attempts,
            on_fatal=on_fatal,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
        )
        self.directory = Directory(self.client, self.call)

    async def __aenter__(self) -> Session:
        await self.client.__aenter__()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        await self.client.__aexit__(et, e, tb)

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
