"""The budget shared by every worker on every machine: the held slots and the 429 cooldown live
in Redis, decided atomically by Lua scripts on the Redis server's clock (TIME), so workers whose
clocks disagree still never let a server window count N+1. The rule is the local budget's
(`worker.budget.window`): a slot is held from just before its send until a span after its
answer; the acquiring script stamps it held until the attempt's bound + a span (a worker that
dies mid-request blocks nobody longer), the releasing script re-stamps it when the answer came."""

from __future__ import annotations

import itertools
import os
import random
import socket
import time
from typing import Any

import anyio

from worker.budget.base import Clock, Naps, Sleep, cooldown_seconds
from worker.errors import BudgetClosed
from worker.redis_conn import redis_retrying

# KEYS: slots (zset: member -> held until, ms), cooldown (ms, until). ARGV: in-flight hold ms,
# limit, member. Returns 0 when a slot was taken, else the ms to wait.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local bound, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local cooldown = tonumber(redis.call('GET', KEYS[2]) or '0')
if cooldown > now then return tostring(cooldown - now) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n < limit then
  redis.call('ZADD', KEYS[1], now + bound, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(bound) + 1000)
  return '0'
end
local first = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
return tostring(tonumber(first[2]) - now)
"""

# KEYS: slots. ARGV: span ms, member. The answer came: held one span from now (if still held).
RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
return 1
"""

# KEYS: cooldown. ARGV: seconds. Extends, never shortens. Returns the ms left.
HOLD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local untilms = now + tonumber(ARGV[1]) * 1000
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if untilms > current then
  redis.call('SET', KEYS[1], tostring(untilms), 'PX', math.ceil(untilms - now) + 1000)
  current = untilms
end
return tostring(current - now)
"""


class RedisBudget:
    """Same contract as SlidingWindowBudget, with its state in Redis under `prefix`."""

    def __init__(
        self,
        redis: Any,
        prefix: str,
        limit: int,
        window: float,
        *,
        margin: float = 0.0,
        max_cooldown: float = 900.0,
        jitter: float = 0.0,
        attempt_bound: float = 60.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self._redis = redis
        self._keys = [f"{prefix}:slots", f"{prefix}:cooldown"]
        self.limit = limit
        self.window = window
        self.span = window + margin
        self.attempt_bound = attempt_bound
        self._max_cooldown = max_cooldown
        self._jitter = jitter
        self._clock = clock  # local, used only to know when our own cached view expires
        self._naps = Naps(sleep)
        self._acquire = redis.register_script(ACQUIRE)
        self._release = redis.register_script(RELEASE)
        self._hold = redis.register_script(HOLD)
        self._lock = anyio.Lock()
        self._closed = False
        self._cooldown_until = float("-inf")
        self._ids = itertools.count()
        self._me = f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"
        # Another worker's release wakes nobody here: poll at least this often while waiting.
        self._poll = max(0.05, min(1.0, self.span / 20))

    async def acquire(self) -> object:
        async with self._lock:  # one poller per process; the script arbitrates between them
            bound_ms = (self.attempt_bound + self.span) * 1000
            while True:
                if self._closed:
                    raise BudgetClosed
                member = f"{self._me}:{next(self._ids)}"
                wait_ms = float(
                    await self._script(
                        self._acquire, keys=self._keys, args=[bound_ms, self.limit, member]
                    )
                )
                if wait_ms <= 0:
                    return member
                if wait_ms > bound_ms:  # only a cooldown is that long
                    self._cooldown_until = self._clock() + wait_ms / 1000
                    await self._naps(wait_ms / 1000)
                else:
                    await self._naps(min(wait_ms / 1000, self._poll))

    async def release(self, slot: object) -> None:
        await self._script(self._release, keys=self._keys[:1], args=[self.span * 1000, slot])
        self._naps.wake_all()

    async def refund(self, slot: object) -> None:
        """The request never left: its member leaves the shared slots."""
        await self._script(self._redis.zrem, self._keys[0], str(slot))
        self._naps.wake_all()

    async def hold(self, seconds: float | None) -> float:
        seconds = cooldown_seconds(
            seconds, window=self.window, cap=self._max_cooldown, jitter=self._jitter
        )
        left_ms = float(await self._script(self._hold, keys=self._keys[1:], args=[seconds]))
        self._cooldown_until = self._clock() + left_ms / 1000
        return seconds

    async def _script(self, script: Any, *args: Any, **kwargs: Any) -> Any:
        """Redis going away holds the budget closed (nothing is sent) until it is back."""
        async for attempt in redis_retrying(self._redis):
            with attempt:
                return await script(*args, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self._closed = True
        self._naps.wake_all()

    def cooldown_remaining(self) -> float:
        """The cooldown as last seen from this process (the shared one may be longer)."""
        return max(0.0, self._cooldown_until - self._clock())

    def eta(self, jobs: int) -> float | None:
        """At best: the cooldown, then `limit` starts per span (other consumers may take some)."""
        if jobs <= 0:
            return 0.0
        return self.cooldown_remaining() + (jobs - 1) // self.limit * self.span
