"""--retain on a real redis-server: old entries go, but never one that is pending (with any
consumer of any group) or not yet delivered, however old; results and dead letters go by age."""

from __future__ import annotations

from typing import Any

import anyio
import redis
import redis.asyncio

from tests.redis_server import RedisServer
from worker.sources.stream import trim

STREAM = "xquik:disconnect"


def ids(r: Any, key: str) -> list[str]:
    return [e.decode() for e, _ in r.xrange(key)]


def test_pending_and_undelivered_entries_are_never_trimmed(redis_server: RedisServer) -> None:
    r: Any = redis.Redis.from_url(redis_server.url)  # sync types: unions of awaitables
    for n in range(10):  # entries from 1970: far older than any retention
        r.xadd(STREAM, {"account_id": str(n)}, id=f"{1000 + n}-0")
    r.xgroup_create(STREAM, "g1", id="0")
    r.xreadgroup("g1", "a", {STREAM: ">"}, count=3)  # 1000..1002 pending with a
    r.xack(STREAM, "g1", "1000-0")
    r.xreadgroup("g1", "b", {STREAM: ">"}, count=2)  # 1003, 1004 pending with b
    r.xgroup_create(STREAM, "g2", id="1001-0")  # another group: delivered up to 1001
    for key in (f"{STREAM}:results", f"{STREAM}:dead"):
        r.xadd(key, {"x": "old"}, id="1000-0")
        r.xadd(key, {"x": "new"})

    async def go() -> dict[str, int]:
        client = redis.asyncio.Redis.from_url(redis_server.url)
        try:
            return await trim(client, STREAM, retain=1.0)
        finally:
            await client.aclose()

    dropped = anyio.run(go)
    assert dropped == {STREAM: 1, f"{STREAM}:results": 1, f"{STREAM}:dead": 1}
    left = ids(r, STREAM)
    assert left == [f"{1000 + n}-0" for n in range(1, 10)]  # 1001/1002 pending, 1002+ undelivered
    assert len(ids(r, f"{STREAM}:results")) == 1

    # Everything delivered and acked in both groups: now only age decides, and all are old.
    r.xreadgroup("g1", "a", {STREAM: ">"})
    r.xreadgroup("g2", "c", {STREAM: ">"})
    for group in ("g1", "g2"):
        pending = r.xpending_range(STREAM, group, min="-", max="+", count=100)
        r.xack(STREAM, group, *[p["message_id"] for p in pending])
    anyio.run(go)
    assert ids(r, STREAM) == []
    r.close()


def test_retain_option() -> None:
    from worker.values import retention

    assert retention("7d") == 7 * 86400
    assert retention("forever") is None
