"""The budget shared by every worker on every machine: the held slots and the 429 cooldown live
in Redis, decided atomically by Lua scripts on the Redis server's clock (TIME), so workers whose
clocks disagree still never let a server window count N+1. The rule is the local budget's
(`worker.budget.local`): a slot is held from just before its send until a span after its
answer; the acquiring script stamps it held until the attempt's bound + a span (a worker that
dies mid-request blocks nobody longer), the releasing script re-stamps it when the answer came."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import random
import socket
import time
from typing import Any

import anyio

from worker.budget.base import Clock, FifoLock, Naps, Sleep, cooldown_seconds
from worker.budget.local import RATE_LIMITED
from worker.errors import BudgetClosed, NoSlot
from worker.logs import get_logger
from worker.redis_conn import redis_retrying, script_batch
from worker.redis_keys import BudgetKeys

# KEYS: slots (zset: member -> held until, ms), cooldown (ms, until), learned (hash: limit,
# at, cap). ARGV: in-flight hold ms, limit (the ceiling with auto), auto, relearn ms, max
# cooldown ms (this worker's --max-cooldown: a longer cooldown in force is cut to it), then
# the members wanted (one per request waiting in this process: as many as are free are taken,
# in order). Returns {ms to wait (0: slots were taken), the limit in force, learned (0/1),
# slots taken}.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local bound, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local learned = 0
if ARGV[3] == '1' then
  local l = redis.call('HMGET', KEYS[3], 'limit', 'at')
  if l[1] and l[2] and now - tonumber(l[2]) < tonumber(ARGV[4]) then
    limit = math.min(limit, tonumber(l[1]))
    learned = 1
  end
end
local cooldown = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local cap = now + tonumber(ARGV[5])
if cooldown > cap then
  redis.call('SET', KEYS[2], tostring(cap), 'PX', math.ceil(cap - now) + 1000)
  cooldown = cap
end
if cooldown > now then return {tostring(cooldown - now), limit, learned, 0} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n < limit then
  local take = math.min(limit - n, #ARGV - 5)
  for i = 6, 5 + take do redis.call('ZADD', KEYS[1], now + bound, ARGV[i]) end
  redis.call('PEXPIRE', KEYS[1], math.ceil(bound) + 1000)
  return {'0', limit, learned, take}
end
local first = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
return {tostring(tonumber(first[2]) - now), limit, learned, 0}
"""

# KEYS: slots, accepted (zset: member -> held until, ms), cooldown, learned. ARGV: span ms,
# auto, relearn ms, then per answer: member, answer ("a" accepted, "r" a 429, "u" none), the
# limit the slot was taken under; the answers of one event-loop tick, taken in order. An
# answer came: its slot is held one span from now (if still held). With auto, a 429 sets
# the limit to the accepted slots held (at most the limit it was sent under - 1), and an
# accepted answer during the cooldown (a request that was in flight at the 429) raises it.
# Returns the new limit when it changed, else -1.
RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local span = tonumber(ARGV[1])
local function learn(answer, under)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local accepted = redis.call('ZCARD', KEYS[2])
  local l = redis.call('HMGET', KEYS[4], 'limit', 'cap')
  local old = tonumber(l[1] or '-1')
  local new
  if answer == 'r' then
    local cap = math.max(1, under - 1)
    new = math.max(1, math.min(accepted, cap))
    redis.call('HSET', KEYS[4], 'limit', new, 'at', now, 'cap', cap)
  else
    local cooldown = tonumber(redis.call('GET', KEYS[3]) or '0')
    if old < 0 or cooldown <= now or accepted <= old or old >= tonumber(l[2]) then return -1 end
    new = math.min(accepted, tonumber(l[2]))
    redis.call('HSET', KEYS[4], 'limit', new)
  end
  redis.call('PEXPIRE', KEYS[4], math.ceil(tonumber(ARGV[3])) + 1000)
  if new == old then return -1 end
  return new
end
local changed = -1
for i = 4, #ARGV, 3 do
  local member, answer = ARGV[i], ARGV[i + 1]
  redis.call('ZADD', KEYS[1], 'XX', now + span, member)
  if answer == 'a' then
    redis.call('ZADD', KEYS[2], now + span, member)
    redis.call('PEXPIRE', KEYS[2], math.ceil(span) + 1000)
  end
  if ARGV[2] == '1' and answer ~= 'u' then
    local new = learn(answer, tonumber(ARGV[i + 2]))
    if new > 0 then changed = new end
  end
end
return changed
"""

# KEYS: slots. ARGV: the member taken and never used.
ZREM = "redis.call('ZREM', KEYS[1], ARGV[1])"

# How long a slot taken for a request waiting in this process stays its to take (s): the
# waiter runs as soon as the lock passes to it; one that is not there by then went away.
SPARE_FOR = 0.25

log = get_logger()


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # advisory: a lost give-back only holds a slot until its bound


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
    """Same contract as LocalBudget, with its state in Redis under `keys`. With
    `auto`, `limit` is the ceiling and the limit in force is learned, shared by every worker."""

    remote = True

    def __init__(
        self,
        redis: Any,
        keys: BudgetKeys,
        limit: int,
        window: float,
        *,
        margin: float = 0.0,
        max_cooldown: float = 900.0,
        jitter: float = 0.0,
        attempt_bound: float = 60.0,
        auto: bool = False,
        relearn: float = 86400.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self._redis = redis
        self._keys = [keys.slots, keys.cooldown, keys.learned]
        self._accepted_key = keys.accepted
        self.ceiling = limit
        self.limit = limit  # in force, as last seen
        self.learned = False
        self.auto = auto
        self.relearn = relearn
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
        self._zrem = redis.register_script(ZREM)
        self._lock = FifoLock()
        # Taken for requests waiting behind a try: member, when, the limit then.
        self._spare: collections.deque[tuple[str, float, int]] = collections.deque()
        self._answers: list[object] = []  # of this tick: member, answer, limit, ...
        self._answered: asyncio.Future[None] | None = None
        self._closed = False
        self._cooldown_until = float("-inf")
        self._ids = itertools.count()
        self._under: dict[str, int] = {}  # auto: our slot -> the limit it was taken under
        self._me = f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"
        # Another worker's release wakes nobody here: poll at least this often while waiting.
        self._poll = max(0.05, min(1.0, self.span / 20))

    async def acquire(self, block: bool = True) -> object:
        if not block:
            # One try, beside any other request of this key deciding now (the script
            # arbitrates); but a request already waiting for a slot goes first.
            if self._lock.locked():
                raise NoSlot(max(self.cooldown_remaining(), self._poll))
            return await self._try(block=False)
        async with self._lock:  # one poller per process; the script arbitrates between them
            while True:
                member = self._spare_slot() or await self._try(block=True)
                if member is not None:
                    return member

    def _spare_slot(self) -> str | None:
        """A slot the last script took for a request that was waiting behind it, if it was
        taken just now, under the limit still in force, and no cooldown came since. Else
        it goes back: its hold counts from when it was taken, so it is sent at once or not
        at all, as a request in flight at a 429 would have been."""
        while self._spare:
            member, taken, limit = self._spare.popleft()
            if (
                self._clock() - taken < SPARE_FOR
                and self.limit >= limit
                and self.cooldown_remaining() <= 0
            ):
                return member
            self._give_back(member)
        return None

    def _give_back_spares(self) -> None:
        while self._spare:
            self._give_back(self._spare.popleft()[0])

    async def _try(self, *, block: bool) -> str | None:
        """Take a slot if one is free now: its member. Else NoSlot (`block` False), or None
        after a nap until one may be. A blocking try takes a slot for every request waiting
        behind it too, as many as are free, in one call: they find theirs in `_spare`."""
        if self._closed:
            raise BudgetClosed
        bound_ms = (self.attempt_bound + self.span) * 1000
        wanted = 1 + (self._lock.waiting if block else 0)
        members = [f"{self._me}:{next(self._ids)}" for _ in range(wanted)]
        wait, limit, learned, taken = await self._script(
            self._acquire,
            keys=self._keys,
            args=[
                bound_ms,
                self.ceiling,
                "1" if self.auto else "0",
                self.relearn * 1000,
                self._max_cooldown * 1000,
                *members,
            ],
        )
        self.limit, self.learned = int(limit), bool(int(learned))
        wait_ms = float(wait)
        if wait_ms <= 0:
            granted = members[: int(taken)]
            if self.auto:
                self._under.update(dict.fromkeys(granted, self.limit))
            now = self._clock()
            self._spare.extend((member, now, self.limit) for member in granted[1:])
            return granted[0]
        cooling = wait_ms > bound_ms  # only a cooldown is that long
        if not block:  # a cooldown whole, a full window at most a span at a time
            raise NoSlot(wait_ms / 1000 if cooling else min(wait_ms / 1000, self.span))
        if cooling:
            self._cooldown_until = self._clock() + wait_ms / 1000
            await self._naps(wait_ms / 1000)
        else:
            await self._naps(min(wait_ms / 1000, self._poll))
        return None

    async def release(self, slot: object, status: int | None = None) -> None:
        """The answers of one event-loop tick go in one script call (`_send_answers`)."""
        under = self._under.pop(str(slot), self.limit)
        answer = "u" if status is None else "r" if status == RATE_LIMITED else "a"
        self._answers += (slot, answer, under)
        if self._answered is None:
            self._answered = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._send_answers)
        # shielded: one caller giving up does not take the others' answer with it
        await asyncio.shield(self._answered)

    def _send_answers(self) -> None:
        answers, self._answers = self._answers, []
        done, self._answered = self._answered, None
        assert done is not None
        sent = script_batch(self._redis).submit(
            self._release,
            [self._keys[0], self._accepted_key, self._keys[1], self._keys[2]],
            [self.span * 1000, "1" if self.auto else "0", self.relearn * 1000, *answers],
        )
        sent.add_done_callback(lambda sent: self._answers_sent(sent, done))

    def _answers_sent(self, sent: asyncio.Future[Any], done: asyncio.Future[None]) -> None:
        if sent.cancelled():
            done.cancel()
        elif (exc := sent.exception()) is not None:
            done.set_exception(exc)
            done.exception()  # retrieved: every caller may have given up
        else:
            new = int(sent.result())
            if new > 0:
                log.info(
                    "rate_learned",
                    limit=new,
                    window_s=self.window,
                    ceiling=self.ceiling,
                    was=self.limit,
                )
                self.limit, self.learned = new, True
            done.set_result(None)
        self._naps.wake_all()

    def _give_back(self, member: str) -> None:
        """A slot taken but never used leaves the shared slots, in the background."""
        self._under.pop(member, None)
        script_batch(self._redis).submit(self._zrem, [self._keys[0]], [member]).add_done_callback(
            _retrieved
        )

    async def refund(self, slot: object) -> None:
        """The request never left: its member leaves the shared slots."""
        self._under.pop(str(slot), None)
        async for attempt in redis_retrying(self._redis):
            with attempt:
                await self._redis.zrem(self._keys[0], str(slot))
        self._naps.wake_all()

    async def hold(self, seconds: float | None) -> float:
        seconds = cooldown_seconds(
            seconds, window=self.window, cap=self._max_cooldown, jitter=self._jitter
        )
        self._give_back_spares()  # not sent into the cooldown
        left_ms = float(await self._script(self._hold, keys=[self._keys[1]], args=[seconds]))
        self._cooldown_until = self._clock() + left_ms / 1000
        return seconds

    async def _script(self, script: Any, *, keys: list[str], args: list[Any]) -> Any:
        """One of the budget's scripts, batched with every other key's (`ScriptBatch`). Redis
        going away holds the budget closed (nothing is sent) until it is back."""
        return await script_batch(self._redis).call(script, keys, args)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(RuntimeError):  # no loop running: they expire at their bound
            self._give_back_spares()
        self._naps.wake_all()

    def cooldown_remaining(self) -> float:
        """The cooldown as last seen from this process (the shared one may be longer)."""
        return max(0.0, self._cooldown_until - self._clock())

    def describe(self) -> dict[str, object]:
        return {
            "limit": self.limit,
            "window_s": self.window,
            "mode": "auto" if self.auto else "fixed",
            "learned": self.learned,
            "ceiling": self.ceiling if self.auto else None,
        }

    def eta(self, jobs: int) -> float | None:
        """At best: the cooldown, then `limit` starts per span (other consumers may take some)."""
        if jobs <= 0:
            return 0.0
        return self.cooldown_remaining() + (jobs - 1) // self.limit * self.span
