"""The budget, on a fake clock: never N+1 starts in any W + δ span, no slot wasted, cooldowns
hold everyone, and the state survives a restart."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes import FakeClock
from worker.budget.base import Unlimited
from worker.budget.local import LocalBudget
from worker.budget.state import StateFile
from worker.errors import BudgetClosed, ConfigError


def budget(clock: FakeClock, limit: int = 3, window: float = 10.0, **kw: float) -> LocalBudget:
    return LocalBudget(limit, window, clock=clock, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


def assert_never_over(starts: list[float], limit: int, span: float) -> None:
    starts = sorted(starts)
    for i in range(len(starts) - limit):
        assert starts[i + limit] - starts[i] >= span - 1e-9, (i, starts[i : i + limit + 1])


async def send(b: LocalBudget) -> object:
    """A request whose answer comes at once: acquire, then release."""
    slot = await b.acquire()
    await b.release(slot)
    return slot


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 5),
    window=st.floats(0.5, 10),
    workers=st.integers(1, 6),
    requests=st.lists(
        st.tuples(st.floats(0, 3), st.floats(0, 1), st.floats(0, 2)), min_size=1, max_size=30
    ),
)
def test_no_server_window_ever_counts_n_plus_1_and_no_start_is_late(
    limit: int, window: float, workers: int, requests: list[tuple[float, float, float]]
) -> None:
    """Adversarial latencies: each request takes any time to answer and reaches the server at
    any moment between its send and its answer. Against a fixed-window server whose window may
    open at any arrival, no window ever counts N+1 of ours; and no start comes later than the
    rule allows (a free worker waits only while N slots are held)."""

    async def scenario() -> None:
        clock = FakeClock()
        b = budget(clock, limit, window)
        # (latency, where in it the request arrives, think time before the worker is free)
        todo = list(requests)
        free_at = [clock.now] * workers
        in_flight: list[tuple[float, object]] = []  # (answer time, slot)
        arrivals: list[float] = []
        held: list[tuple[float, float]] = []  # (start, end + window) of every slot
        while todo or in_flight:
            ready = [w for w in range(workers) if free_at[w] <= clock.now]
            if todo and ready and b.delay() <= 0:
                latency, where, think = todo.pop(0)
                worker = ready[0]
                start = clock.now
                # Tight: with a free worker waiting since free_at, N slots were held until now.
                waited_from = max(free_at[worker], held[-1][0] if held else start)
                if start > waited_from + 1e-9:
                    just_before = start - 1e-7
                    assert sum(s <= just_before < u for s, u in held) >= limit
                slot = await b.acquire()
                assert clock.now == start  # no sleep: delay() said now
                arrivals.append(start + where * latency)
                in_flight.append((start + latency, slot))
                held.append((start, float("inf")))
                free_at[worker] = start + latency + think
                continue
            events = [t for t, _ in in_flight] + [t for t in free_at if t > clock.now]
            wait = b.delay()
            if todo and ready and wait < float("inf"):
                events.append(clock.now + wait)
            clock.now = max(clock.now, min(events))
            for answered, slot in [x for x in in_flight if x[0] <= clock.now]:
                in_flight.remove((answered, slot))
                await b.release(slot)
                index = next(i for i, (s, u) in enumerate(held) if u == float("inf"))
                held[index] = (held[index][0], answered + window)
        arrivals.sort()
        for first in arrivals:  # a server window opening at any of our arrivals
            assert sum(first <= a < first + window for a in arrivals) <= limit

    anyio.run(scenario)


async def test_burst_of_n_when_empty_then_wait_a_full_span_after_the_answers(
    clock: FakeClock,
) -> None:
    """Nothing held: N start at once; the N+1st waits a span after the first answer."""
    b = budget(clock, limit=3, window=10.0, margin=0.5)
    t0 = clock.now
    slots = [await b.acquire() for _ in range(3)]
    assert clock.now == t0
    clock.now += 2.0  # the answers take 2 s
    for slot in slots:
        await b.release(slot)
    await b.acquire()
    assert clock.now == pytest.approx(t0 + 2.0 + 10.5)


async def test_a_slot_in_flight_is_held_until_its_answer(clock: FakeClock) -> None:
    """With N requests in flight, the next one waits for an answer, however long it takes;
    then for one span after it."""
    b = budget(clock, limit=1, window=5.0)
    slot = await b.acquire()
    t0 = clock.now

    async def answer_late() -> None:
        await clock.sleep(30.0)
        await b.release(slot)

    async with anyio.create_task_group() as tg:
        tg.start_soon(answer_late)
        await b.acquire()
    assert clock.now >= t0 + 30.0 + 5.0 - 1e-6


async def test_concurrent_waiters_are_served_in_order_within_the_limit(clock: FakeClock) -> None:
    """Twenty tasks at once, answers at once: starts come in groups of N, one span apart,
    in arrival order."""
    b = budget(clock, limit=5, window=2.0)
    order: list[tuple[int, float]] = []

    async def take(i: int) -> None:
        slot = await b.acquire()
        order.append((i, clock.now))
        await b.release(slot)

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(take, i)
    assert [i for i, _ in order] == list(range(20))
    t0 = order[0][1]
    assert [round(t - t0, 6) for _, t in order] == [2.0 * (i // 5) for i in range(20)]


async def test_retries_consume_slots(clock: FakeClock) -> None:
    """A retry is just another acquire: it takes a slot like a first attempt."""
    b = budget(clock, limit=2, window=10.0)
    await send(b)  # first attempt of job A
    await send(b)  # retry of job A
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
    b = LocalBudget(1, 60.0)
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
    first = LocalBudget(3, 60.0, state=state)
    for _ in range(3):
        await send(first)
    await first.hold(5.0)
    second = LocalBudget(3, 60.0)
    assert state.load_into(second) == 3
    assert 59.0 < second.delay() <= 60.0
    assert second.cooldown_remaining() > 4.0
    other = StateFile(tmp_path, "def", "delete")  # another key shares nothing
    assert other.load_into(LocalBudget(3, 60.0)) == 0


async def test_a_release_reaches_the_state_file_by_the_next_decision_or_close(
    tmp_path: Path,
) -> None:
    """A plain release is not written at once: until then other runs see the slot as in
    flight (held until its attempt's bound + a span: longer, never shorter). The budget's
    next acquire, or its close, writes it: then they see it held a span after its answer."""

    def seen() -> list[int]:
        """Seconds each slot stays held, as another run reads the file."""
        other = LocalBudget(1, 60.0, attempt_bound=30.0)
        StateFile(tmp_path, "abc", "delete").load_into(other)
        return sorted(round(until - time.time()) for _, until, _ in other.entries())

    file = StateFile(tmp_path, "abc", "delete")
    first = LocalBudget(2, 60.0, attempt_bound=30.0, state=file)
    await send(first)
    assert seen() == [90]  # in flight, as far as the file says
    slot = await first.acquire()  # the next decision writes the release
    assert seen() == [60, 90]
    await first.release(slot)
    assert seen() == [60, 90]
    first.close()
    assert seen() == [60, 60]  # both answered: a span after their answers


def test_corrupt_state_file_is_ignored(tmp_path: Path) -> None:
    """A damaged state file is treated as empty rather than stopping the run."""
    state = StateFile(tmp_path, "abc", "delete")
    state.path.write_text("{not json", encoding="utf-8")
    b = LocalBudget(3, 60.0)
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
    latencies=st.lists(st.floats(0, 0.3), min_size=200, max_size=200),
    where=st.lists(st.floats(0, 1), min_size=200, max_size=200),
    opened_at=st.floats(-2, 0),
)
def test_against_a_fixed_window_server_no_429_and_the_ideal_pace(
    latencies: list[float], where: list[float], opened_at: float
) -> None:
    """20 per 2 s, one request at a time after another, each answered within 0.3 s and
    counted by the server anywhere in between, the server's window opened at any moment: the
    server never rejects one, and each group of 20 starts one span after the last answer of
    the group before (the whole budget used, one round trip per window)."""
    from worker.sandbox.limits import FixedWindow

    async def scenario() -> None:
        clock = FakeClock()
        b = budget(clock, 20, 2.0)
        server = FixedWindow(20, 2.0)
        server.start = clock.now + opened_at  # the server's window began at any phase
        starts: list[float] = []
        answers: list[float] = []
        for latency in latencies:
            slot = await b.acquire()
            starts.append(clock.now)
            clock.now += latency
            answers.append(clock.now)
            await b.release(slot)
        arrivals = sorted(s + w * (a - s) for s, a, w in zip(starts, answers, where, strict=True))
        assert [server.hit(t) for t in arrivals] == [None] * 200
        for k in range(20, 200):
            assert starts[k] == pytest.approx(max(answers[k - 1], answers[k - 20] + 2.0))

    anyio.run(scenario)


async def test_two_budgets_on_one_state_file_share_the_window(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Two runs at once on one key (two budgets, one state dir): together at most N in a
    span, and a slot one gives back is free for the other."""

    def run() -> LocalBudget:
        state = StateFile(tmp_path, "k", "delete")
        return LocalBudget(
            4, 60.0, clock=clock, sleep=clock.sleep, state=state, wall=lambda: clock() + 1e9
        )

    a, b = run(), run()
    for budget in (a, b, a):
        await send(budget)
    last = await b.acquire()
    assert clock.slept == []
    await b.refund(last)  # b's request never left: a sees the slot free through the file
    await send(a)
    assert clock.slept == []
    await send(b)  # the fifth: waits for the first answer's span to pass
    assert sum(clock.slept) == pytest.approx(60.0, abs=0.01)


def test_an_unusable_state_dir_is_refused(tmp_path: Path) -> None:
    """A state dir under a file: a ConfigError naming it and the way out, before any send."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="--state-dir none"):
        StateFile(tmp_path / "file" / "state", "k", "delete")
