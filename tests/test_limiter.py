"""The budget, on a fake clock: never N+1 starts in any W + δ span, no slot wasted, cooldowns
hold everyone, and the state survives a restart."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes import FakeClock
from worker.budget import SlidingWindowBudget, StateFile, Unlimited
from worker.errors import BudgetClosed, ConfigError


def budget(
    clock: FakeClock, limit: int = 3, window: float = 10.0, **kw: float
) -> SlidingWindowBudget:
    return SlidingWindowBudget(limit, window, clock=clock, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


def assert_never_over(starts: list[float], limit: int, span: float) -> None:
    starts = sorted(starts)
    for i in range(len(starts) - limit):
        assert starts[i + limit] - starts[i] >= span - 1e-9, (i, starts[i : i + limit + 1])


@settings(max_examples=150, deadline=None)
@given(
    limit=st.integers(1, 8),
    window=st.floats(0.5, 60),
    margin=st.floats(0, 1),
    gaps=st.lists(st.floats(0, 30), min_size=1, max_size=60),
)
def test_never_more_than_n_in_any_span_and_no_slot_wasted(
    limit: int, window: float, margin: float, gaps: list[float]
) -> None:
    """Random arrivals: every start is as early as the rule allows, and never earlier."""

    async def scenario() -> None:
        clock = FakeClock()
        b = budget(clock, limit, window, margin=margin)
        starts: list[float] = []
        arrival = clock.now
        for gap in gaps:
            arrival += gap
            clock.now = max(clock.now, arrival)
            await b.acquire()
            starts.append(clock.now)
            # Work-conserving: the earliest time the sliding-window rule permits.
            earliest = max(arrival, starts[-2] if len(starts) > 1 else arrival)
            if len(starts) > limit:
                earliest = max(earliest, starts[-limit - 1] + window + margin)
            assert starts[-1] == pytest.approx(earliest)
        assert_never_over(starts, limit, window + margin)

    anyio.run(scenario)


async def test_burst_of_n_when_empty_then_wait_a_full_span(clock: FakeClock) -> None:
    """An empty log gives N starts at once; the N+1st waits until the first leaves the span."""
    b = budget(clock, limit=3, window=10.0, margin=0.5)
    t0 = clock.now
    for _ in range(3):
        await b.acquire()
    assert clock.now == t0
    await b.acquire()
    assert clock.now == pytest.approx(t0 + 10.5)


async def test_concurrent_waiters_are_served_in_order_within_the_limit(clock: FakeClock) -> None:
    """Twenty tasks at once: starts come in groups of N, one span apart, in arrival order."""
    b = budget(clock, limit=5, window=2.0)
    order: list[tuple[int, float]] = []

    async def take(i: int) -> None:
        await b.acquire()
        order.append((i, clock.now))

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(take, i)
    assert [i for i, _ in order] == list(range(20))
    t0 = order[0][1]
    assert [round(t - t0, 6) for _, t in order] == [2.0 * (i // 5) for i in range(20)]


async def test_retries_consume_slots(clock: FakeClock) -> None:
    """A retry is just another acquire: it takes a slot like a first attempt."""
    b = budget(clock, limit=2, window=10.0)
    await b.acquire()  # first attempt of job A
    await b.acquire()  # retry of job A
    assert b.delay() == pytest.approx(10.0)


async def test_cooldown_blocks_every_waiter_until_it_ends(clock: FakeClock) -> None:
    """After hold(30), nobody starts before 30 s have passed, even with slots free."""
    b = budget(clock, limit=100, window=1.0)
    t0 = clock.now
    applied = await b.hold(30.0)
    assert applied == 30.0
    starts: list[float] = []

    async def take() -> None:
        await b.acquire()
        starts.append(clock.now)

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(take)
    assert len(starts) == 5
    assert min(starts) >= t0 + 30.0
    assert b.cooldown_remaining() == 0.0


async def test_cooldown_is_capped_and_jittered(clock: FakeClock) -> None:
    """Retry-After beyond --max-cooldown is capped; jitter only ever adds."""
    b = budget(clock, limit=1, window=1.0, max_cooldown=60.0, jitter=0.5)
    applied = await b.hold(3600.0)
    assert 60.0 <= applied <= 60.5
    assert b.cooldown_remaining() == pytest.approx(applied)


async def test_close_wakes_a_sleeping_waiter_at_once() -> None:
    """Stopping the run does not wait out a 60 s window: waiters get BudgetClosed now."""
    b = SlidingWindowBudget(1, 60.0)
    await b.acquire()
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:

            async def waiter() -> None:
                with pytest.raises(BudgetClosed):
                    await b.acquire()

            tg.start_soon(waiter)
            await anyio.sleep(0.05)
            b.close()
    with pytest.raises(BudgetClosed):
        await b.acquire()


async def test_unlimited_never_waits_and_can_be_closed(clock: FakeClock) -> None:
    """--rate unlimited: acquire returns at once until closed."""
    u = Unlimited(clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        await u.acquire()
    assert clock.slept == []
    u.close()
    with pytest.raises(BudgetClosed):
        await u.acquire()


async def test_unlimited_still_honours_a_429(clock: FakeClock) -> None:
    """Unlimited lifts our limit, never the server's: a 429 holds every send until
    Retry-After, and one without it waits the tier's window."""
    u = Unlimited(window=1.0, max_cooldown=900.0, clock=clock, sleep=clock.sleep)
    assert await u.hold(60) == 60
    started = clock.now
    await u.acquire()
    assert clock.now - started == pytest.approx(60)
    assert await u.hold(None) == 1.0
    assert u.cooldown_remaining() == pytest.approx(1.0)


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    """A new budget loaded from the state file knows the sends of the previous process."""
    state = StateFile(tmp_path, "abc", "delete")
    first = SlidingWindowBudget(3, 60.0, state=state)
    for _ in range(3):
        await first.acquire()
    await first.hold(5.0)
    second = SlidingWindowBudget(3, 60.0)
    assert state.load_into(second) == 3
    assert 59.0 < second.delay() <= 60.0
    assert second.cooldown_remaining() > 4.0
    other = StateFile(tmp_path, "def", "delete")  # another key shares nothing
    assert other.load_into(SlidingWindowBudget(3, 60.0)) == 0


def test_corrupt_state_file_is_ignored(tmp_path: Path) -> None:
    """A damaged state file is treated as empty rather than stopping the run."""
    state = StateFile(tmp_path, "abc", "delete")
    state.path.write_text("{not json", encoding="utf-8")
    b = SlidingWindowBudget(3, 60.0)
    assert state.load_into(b) == 0
    assert b.delay() <= 0


def test_eta_counts_whole_windows(clock: FakeClock) -> None:
    """The ETA for K jobs is the windows they need after the free slots."""
    b = budget(clock, limit=10, window=60.0)
    assert b.eta(0) == 0.0
    assert b.eta(10) == 0.0
    assert b.eta(25) == pytest.approx(120.0)


@settings(max_examples=60, deadline=None)
@given(
    latencies=st.lists(st.floats(0, 0.05), min_size=200, max_size=200),
    opened_at=st.floats(-2, 0),
)
def test_against_a_fixed_window_server_no_429_and_the_ideal_pace(
    latencies: list[float], opened_at: float
) -> None:
    """20 per 2 s with δ = 50 ms, 200 sends reaching the server up to δ late, the server's
    window opened at any moment: the server never rejects one, and the last send starts
    exactly 9 spans after the first (the whole budget used, nothing more)."""
    from worker.sandbox.limits import FixedWindow

    async def scenario() -> None:
        clock = FakeClock()
        b = budget(clock, 20, 2.0, margin=0.05)
        server = FixedWindow(20, 2.0)
        server.start = clock.now + opened_at  # the server's window began at any phase
        starts: list[float] = []
        for _ in range(200):
            await b.acquire()
            starts.append(clock.now)
        arrivals = sorted(t + lag for t, lag in zip(starts, latencies, strict=True))
        assert [server.hit(t) for t in arrivals] == [None] * 200
        assert starts[-1] - starts[0] == pytest.approx(9 * 2.05)

    anyio.run(scenario)


async def test_two_budgets_on_one_state_file_share_the_window(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Two runs at once on one key (two budgets, one state dir): together at most N in a
    span, and a slot one gives back is free for the other."""

    def run() -> SlidingWindowBudget:
        state = StateFile(tmp_path, "k", "delete")
        return SlidingWindowBudget(
            4, 60.0, clock=clock, sleep=clock.sleep, state=state, wall=lambda: clock() + 1e9
        )

    a, b = run(), run()
    for budget in (a, b, a):
        await budget.acquire()
    last = await b.acquire()
    assert clock.slept == []
    a.refund(last)
    await a.acquire()  # the refunded slot
    assert clock.slept == []
    await b.acquire()  # the fifth: waits for the first to leave the span
    assert sum(clock.slept) == pytest.approx(60.0, abs=0.01)


def test_an_unusable_state_dir_is_refused(tmp_path: Path) -> None:
    """A state dir under a file: a ConfigError naming it and the way out, before any send."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="--state-dir none"):
        StateFile(tmp_path / "file" / "state", "k", "delete")
