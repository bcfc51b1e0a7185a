"""`--rate auto`: the server's live limit learned from its 429s under a ceiling, on a fake
clock against a model fixed-window server, persisted for the next run, tried again after
--relearn; and the same in the Redis budget."""

from __future__ import annotations

import heapq
import math
import os
import random
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes import FakeClock
from tests.redis_server import RedisServer
from worker.budget.local import Learner, LocalBudget
from worker.budget.state import StateFile
from worker.sandbox.limits import FixedWindow


def auto_budget(
    clock: FakeClock, ceiling: int, window: float, *, relearn: float = 86400.0, **kw: object
) -> LocalBudget:
    return LocalBudget(
        ceiling,
        window,
        clock=clock,
        sleep=clock.sleep,
        wall=lambda: clock() + 1e9,
        learner=Learner(ceiling, relearn, wall=lambda: clock() + 1e9),
        **kw,  # type: ignore[arg-type]
    )


async def simulate(
    b: LocalBudget,
    clock: FakeClock,
    server: FixedWindow,
    *,
    jobs: int,
    workers: int,
    rng: random.Random,
    max_latency: float,
) -> list[tuple[float, int]]:
    """`workers` requests in flight at most, each reaching the server at a random moment
    between its send and its answer; a 429 is retried (it holds the key for Retry-After).
    Returns (arrival, status) of every request, in arrival order."""
    events: list[tuple[float, int, str, object]] = []  # (time, seq, kind, payload)
    seq = 0
    left = jobs
    busy = 0
    seen: list[tuple[float, int]] = []
    answers: dict[object, int] = {}
    while left > 0 or busy:
        # Start what the budget allows now.
        while left > 0 and busy < workers and b.delay() <= 0:
            slot = await b.acquire()
            latency = rng.uniform(0.001, max_latency)
            arrival = clock.now + rng.uniform(0, 1) * latency
            heapq.heappush(events, (arrival, seq, "arrive", slot))
            heapq.heappush(events, (clock.now + latency, seq + 1, "answer", slot))
            seq += 2
            left -= 1
            busy += 1
        wait = b.delay()
        next_event = events[0][0] if events else math.inf
        if left > 0 and busy < workers and 0 < wait < math.inf:
            next_event = min(next_event, clock.now + wait)
        assert next_event < math.inf, "stuck"
        clock.now = max(clock.now, next_event)
        while events and events[0][0] <= clock.now:
            _, _, kind, slot = heapq.heappop(events)
            if kind == "arrive":
                retry = server.hit(clock.now)
                answers[slot] = 200 if retry is None else 429
                seen.append((clock.now, answers[slot]))
            else:
                status = answers.pop(slot)
                await b.release(slot, status)
                busy -= 1
                if status == 429:
                    left += 1  # retried after the cooldown
                    await b.hold(server.start + server.window - clock.now if server.start else None)
    return seen


@settings(max_examples=int(os.environ.get("LEARN_EXAMPLES", "60")), deadline=None)  # 1,500: 12 s
@given(
    seed=st.integers(0, 2**32),
    workers=st.integers(1, 8),
    # Round trips up to a tenth of the window (6 s against the live 60 s window). Longer ones
    # can put our trace of the server's window out of phase (a request sent in one window
    # arrives in the next): 0.45-0.75 s here found a learned limit above the true one, which
    # the next 429 lowers again. Stated in the README.
    max_latency=st.floats(0.01, 0.4),
    true_limit=st.integers(1, 30),
)
def test_the_limit_is_learned_in_one_burst(
    seed: int, workers: int, max_latency: float, true_limit: int
) -> None:
    """Ceiling 40/4s, the server's true limit 1..30 per 4 s, any latency and concurrency, each
    request counted anywhere between its send and its answer: all the 429s of the run come in
    one burst, within one window, at most `workers` of them; the limit learned is never above
    the true one, and exactly it when the burst comes in the run's first window (the server's
    window then opened with our first request) before its last round trip. No window after the
    burst is tripped."""

    async def scenario() -> None:
        clock = FakeClock()
        b = auto_budget(clock, 40, 4.0)
        server = FixedWindow(true_limit, 4.0)
        seen = await simulate(
            b, clock, server, jobs=200, workers=workers, rng=random.Random(seed),
            max_latency=max_latency,
        )  # fmt: skip
        rejected = [t for t, status in seen if status == 429]
        assert len([t for t, status in seen if status == 200]) == 200
        if not rejected:  # the latency kept us under the limit: nothing to learn
            assert b.limit == 40
            return
        assert len(rejected) <= workers
        assert rejected[-1] - rejected[0] < 4.0
        assert 1 <= b.limit <= true_limit
        if rejected[0] < seen[0][0] + 4.0 - max_latency:
            # In the run's first window, early enough for every request in flight at the 429
            # to be answered within the window: exact.
            assert b.limit == true_limit
            assert b.describe() == {
                "limit": true_limit, "window_s": 4.0, "mode": "auto", "learned": True,
                "ceiling": 40,
            }  # fmt: skip

    anyio.run(scenario)


async def test_at_the_ceiling_nothing_is_learned_and_nothing_is_rejected() -> None:
    """A true limit equal to the ceiling: no 429, the limit stays the ceiling, unlearned."""
    clock = FakeClock()
    b = auto_budget(clock, 12, 4.0)
    seen = await simulate(
        b, clock, FixedWindow(12, 4.0), jobs=120, workers=4, rng=random.Random(7), max_latency=0.3
    )
    assert [s for _, s in seen].count(429) == 0
    assert b.describe()["learned"] is False
    assert b.limit == 12


async def test_a_fixed_rate_learns_nothing() -> None:
    """`--rate 40/4s` against a server at 12: it keeps its 40 (today's behaviour)."""
    clock = FakeClock()
    b = LocalBudget(40, 4.0, clock=clock, sleep=clock.sleep)
    slot = await b.acquire()
    await b.release(slot, 429)
    assert b.limit == 40
    assert b.describe()["mode"] == "fixed"


async def test_a_429_teaches_what_was_accepted_and_late_answers_raise_it() -> None:
    """The rule, step by step: a 429 sets the limit to the accepted slots held; an accepted
    answer arriving during the cooldown (a request in flight at the 429) raises it; never
    above the limit the rejected request was sent under, minus one; at least 1."""
    clock = FakeClock()
    b = auto_budget(clock, 10, 60.0)
    slots = [await b.acquire() for _ in range(6)]
    for slot in slots[:3]:
        await b.release(slot, 200)
    await b.release(slots[3], 429)
    await b.hold(60)
    assert b.limit == 3
    await b.release(slots[4], 404)  # a 404 was counted by the server too
    assert b.limit == 4
    await b.release(slots[5], None)  # failed: unknown, teaches nothing
    assert b.limit == 4
    clock.now += 61  # the cooldown is over: a late acceptance says nothing about that window
    assert b.limit == 4
    lone = LocalBudget(
        5, 60.0, clock=clock, sleep=clock.sleep, learner=Learner(5, 86400.0, wall=clock)
    )
    await lone.release(await lone.acquire(), 429)  # rejected with nothing accepted
    assert lone.limit == 1


async def test_relearn_tries_the_ceiling_again() -> None:
    """After --relearn without a 429 the ceiling is in force again (a plan upgrade)."""
    clock = FakeClock()
    b = auto_budget(clock, 60, 60.0, relearn=3600.0)
    await b.release(await b.acquire(), 429)
    assert b.limit == 1
    clock.now += 3599
    assert b.limit == 1
    clock.now += 1
    assert b.limit == 60
    assert b.describe()["learned"] is False


async def test_the_learned_limit_survives_a_restart_and_expires(tmp_path: Path) -> None:
    """A second run on the same state dir starts at the learned limit; after --relearn it
    starts at the ceiling; another key learns nothing from it."""
    clock = FakeClock()

    def run(fingerprint: str = "k") -> LocalBudget:
        b = auto_budget(
            clock, 40, 4.0, relearn=600.0, state=StateFile(tmp_path, fingerprint, "delete")
        )
        assert b._state is not None
        b._state.load_into(b)  # type: ignore[attr-defined]
        return b

    first = run()
    slots = [await first.acquire() for _ in range(13)]
    for slot in slots[:12]:
        await first.release(slot, 200)
    await first.release(slots[12], 429)
    assert first.limit == 12
    clock.now += 10
    second = run()
    assert second.limit == 12
    assert second.describe()["learned"] is True
    assert run("other").limit == 40
    clock.now += 600
    assert run().limit == 40


@pytest.mark.parametrize("workers", [1, 4])
async def test_redis_budget_learns_and_shares_the_limit(
    redis_server: RedisServer, workers: int
) -> None:
    """Queue mode: a 429 in one consumer teaches every consumer of the key (the learned limit
    lives in Redis), an accepted answer in the cooldown raises it, a fixed rate ignores it."""
    import redis.asyncio as aioredis

    from worker.budget.shared import RedisBudget
    from worker.redis_keys import BudgetKeys

    client = aioredis.Redis.from_url(redis_server.url)
    prefix = f"xquik:budget:learn{workers}"
    await client.delete(*(f"{prefix}:{k}" for k in ("slots", "cooldown", "learned", "accepted")))
    try:
        one = RedisBudget(client, BudgetKeys.at(prefix), 40, 4.0, auto=True)
        two = RedisBudget(client, BudgetKeys.at(prefix), 40, 4.0, auto=True)
        fixed = RedisBudget(client, BudgetKeys.at(prefix), 40, 4.0)
        slots = [await one.acquire() for _ in range(5 + workers)]
        for slot in slots[:5]:
            await one.release(slot, 200)
        await one.release(slots[5], 429)
        await one.hold(4.0)
        assert one.limit == 5
        for slot in slots[6:]:
            await one.release(slot, 200)  # in flight at the 429, counted in that window
        assert one.limit == 5 + workers - 1
        assert await client.hget(f"{prefix}:learned", "limit") == str(5 + workers - 1).encode()
        await client.delete(f"{prefix}:cooldown", f"{prefix}:slots")
        with anyio.fail_after(5):
            await two.release(await two.acquire(), 200)
        assert two.describe()["limit"] == 5 + workers - 1
        assert two.describe()["learned"] is True
        with anyio.fail_after(5):
            await fixed.release(await fixed.acquire(), 200)
        assert fixed.describe() == {
            "limit": 40,
            "window_s": 4.0,
            "mode": "fixed",
            "learned": False,
            "ceiling": None,
        }
    finally:
        await client.aclose()
