"""The sandbox's data: generated X accounts and the monitors that track some of them."""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

HEALTH = ("healthy", "locked", "needsReauth", "recovering", "suspended", "temporaryIssue")
_EPOCH = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Store:
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    monitors: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted_accounts: set[str] = field(default_factory=set)
    removed: dict[str, dict[str, Any]] = field(default_factory=dict)  # deleted: as they were
    deleted_monitors: set[str] = field(default_factory=set)
    keyword_monitors: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleting: dict[str, float] = field(default_factory=dict)  # monitor -> gone at (clock)
    delete_requests: dict[str, int] = field(default_factory=dict)  # monitor -> DELETEs received
    _next_monitor: int = 1

    @classmethod
    def for_tenant(cls, name: str, count: int, *, seed: int = 0) -> Store:
        """Another Xquik account's data (`sandbox --tenants`): accounts `NAME-1`..`NAME-count`
        owned by user `NAME_user1`.., so no id or username is shared between tenants."""
        rng = random.Random(f"{seed}:{name}")
        store = cls()
        for i in range(1, count + 1):
            username = f"{name.replace('-', '_')}_user{i}"
            created = _EPOCH + timedelta(hours=7 * i)
            store.add_account(f"{name}-{i}", username, created=created)
            if rng.random() < 0.3:
                store.add_monitor(username, store.accounts[f"{name}-{i}"]["xUserId"])
        return store

    @classmethod
    def generate(cls, count: int, *, seed: int = 0, monitor_share: float = 0.3) -> Store:
        """Accounts "1".."count" (ids as in the docs' examples), usernames user1.., a seeded mix
        of health states (mostly healthy), and a monitor on about `monitor_share` of them."""
        rng = random.Random(seed)
        store = cls()
        for i in range(1, count + 1):
            health = "healthy" if rng.random() < 0.7 else rng.choice(HEALTH[1:])
            created = _EPOCH + timedelta(hours=7 * i)
            store.add_account(str(i), f"user{i}", health=health, created=created)
            if rng.random() < monitor_share:
                store.add_monitor(f"user{i}", store.accounts[str(i)]["xUserId"])
            if i % 10 == 3:  # a keyword monitor naming some users, as brand teams set them up
                store.add_keyword_monitor(f"from:user{i} OR @user{i} launch")
        return store

    def add_account(
        self,
        account_id: str,
        username: str,
        *,
        health: str = "healthy",
        status: str = "active",
        created: datetime = _EPOCH,
    ) -> dict[str, Any]:
        account = {
            "id": account_id,
            "xUsername": username,
            "xUserId": str(1_000_000 + zlib.crc32(username.lower().encode())),
            "status": status,
            "health": health,
            "connectedAt": _iso(created),
            "createdAt": _iso(created),
            "updatedAt": _iso(created),
        }
        self.accounts[account_id] = account
        return account

    def add_monitor(self, username: str, x_user_id: str | None = None) -> dict[str, Any]:
        monitor_id = str(self._next_monitor)
        self._next_monitor += 1
        monitor = {
            "id": monitor_id,
            "username": username.lower(),
            "xUserId": x_user_id or str(1_000_000 + zlib.crc32(username.lower().encode())),
            "eventTypes": ["tweet.new"],
            "isActive": True,
            "createdAt": _iso(_EPOCH),
            "nextBillingAt": _iso(_EPOCH + timedelta(hours=1)),
        }
        self.monitors[monitor_id] = monitor
        return monitor

    def add_keyword_monitor(self, query: str) -> dict[str, Any]:
        """A keyword monitor (ids "k1", "k2", …: apart from account monitors' ids)."""
        monitor_id = f"k{len(self.keyword_monitors) + 1}"
        monitor = {
            "id": monitor_id,
            "query": query,
            "eventTypes": ["tweet.new"],
            "isActive": True,
            "createdAt": _iso(_EPOCH),
            "nextBillingAt": _iso(_EPOCH + timedelta(hours=1)),
        }
        self.keyword_monitors[monitor_id] = monitor
        return monitor
