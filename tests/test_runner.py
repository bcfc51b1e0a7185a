"""The runner alone: scheduling, the canary limit, skips, duplicates and stopping, with a list
source, a list sink and a job handler that sends nothing."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from tests.fakes import FakeOps, ListSink, ListSource
from worker.models import Invalid, Job, Outcome, Result
from worker.run.runner import Runner
from worker.sources.base import Item


def jobs(*ids: str) -> list[Item]:
    return [Job(f"list:{n}", account_id=i) for n, i in enumerate(ids, 1)]


async def run(
    items: list[Item], ops: FakeOps | None = None, *, limit: int | None = None
) -> tuple[Runner, FakeOps, ListSource, ListSink]:
    ops = ops or FakeOps()
    source, sink = ListSource(items), ListSink()
    runner = Runner(ops, source=source, sink=sink, limit=limit)
    with anyio.fail_after(10):
        await runner.run()
    return runner, ops, source, sink


async def test_every_item_gets_exactly_one_record_in_order_of_settling() -> None:
    """Jobs, an invalid line and a duplicate: one record each, and each item settled once."""
    items = [*jobs("1", "2"), Invalid("list:3", "bad"), *jobs("2", "4")]
    runner, ops, source, sink = await run(items)
    assert sorted(ops.handled) == ["1", "2", "4"]
    assert [r.outcome for r in sink.results].count(Outcome.DUPLICATE) == 1
    assert [r.outcome for r in sink.results].count(Outcome.INVALID) == 1
    assert len(sink.results) == 5
    assert len(source.settled) == 5
    assert {id(item) for item, _ in source.settled} == {id(item) for item in items}
    assert runner.summary.records == 5
    assert runner.summary.exit_code == 1  # the invalid line


@pytest.mark.parametrize("concurrency", [1, 3, 8])
async def test_no_more_jobs_in_flight_than_the_concurrency(concurrency: int) -> None:
    """The fixed pool: at most `concurrency` jobs are handled at once, and all are handled."""
    ops = FakeOps(hold=True)
    source, sink = ListSource(jobs(*map(str, range(20)))), ListSink()
    runner = Runner(ops, source=source, sink=sink, concurrency=concurrency)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            while ops.in_flight < min(concurrency, 20):
                await anyio.sleep(0)
            for _ in range(5):
                await anyio.sleep(0)
            assert ops.in_flight == concurrency
            assert ops.release is not None
            ops.release.set()
    assert ops.most_in_flight == concurrency
    assert len(ops.handled) == 20


async def test_reading_stays_close_to_the_workers() -> None:
    """Back-pressure: with every worker busy, the source is read at most one batch ahead."""
    ops = FakeOps(hold=True)
    source, sink = ListSource(jobs(*map(str, range(100))), batch=3), ListSink()
    runner = Runner(ops, source=source, sink=sink, concurrency=2)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            while ops.in_flight < 2:
                await anyio.sleep(0)
            for _ in range(10):
                await anyio.sleep(0)
            assert source.read <= 2 + 3
            assert ops.release is not None
            ops.release.set()
    assert source.read == 100


async def test_limit_hands_out_at_most_n_jobs_and_stops_reading() -> None:
    """--limit 3: three jobs are sent; invalid lines met on the way still get their record."""
    items = [Invalid("list:0", "bad"), *jobs("1", "2", "3", "4", "5")]
    runner, ops, _, sink = await run(items, limit=3)
    assert len(ops.handled) == 3
    assert len([r for r in sink.results if r.outcome is Outcome.DISCONNECTED]) == 3
    assert runner.summary.outcomes["invalid"] == 1


async def test_accounts_done_earlier_are_skipped_without_a_record() -> None:
    """A rerun: done accounts are settled with no record and counted as skipped."""
    ops = FakeOps(done_before=frozenset({"1", "3"}))
    runner, ops, source, sink = await run(jobs("1", "2", "3"), ops)
    assert ops.handled == ["2"]
    assert [r.account_id for r in sink.results] == ["2"]
    assert runner.summary.skipped_done == 2
    assert sum(result is None for _, result in source.settled) == 2
    assert runner.summary.exit_code == 0


async def test_stop_ends_the_run_within_the_grace_and_counts_unfinished_jobs() -> None:
    """A signal with grace 0: in-flight jobs are cancelled, get no record, and are counted."""
    ops = FakeOps(hold=True)
    source, sink = ListSource(jobs(*map(str, range(10)))), ListSink()
    runner = Runner(ops, source=source, sink=sink, concurrency=4)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            while ops.in_flight < 4:
                await anyio.sleep(0)
            runner.stop(0.0)
    assert ops.closed
    assert sink.results == []
    assert runner.summary.not_finished == 4
    assert runner.summary.stopped == "signal"
    assert runner.summary.exit_code == 130
    assert sink.syncs >= 1  # flushed on the way out


async def test_a_job_stopped_by_a_closed_budget_has_no_record() -> None:
    """Jobs that meet the closed budget after a stop are not finished, never failed."""
    ops = FakeOps()
    ops.close()
    runner, _, _, sink = await run(jobs("1", "2"), ops)
    assert sink.results == []
    assert runner.summary.not_finished == 2


async def test_a_bug_in_one_job_is_that_jobs_failed_record() -> None:
    """An unexpected exception while handling a job: that job is failed with
    internal_error and its type; every other job goes on."""
    ops = FakeOps(broken=frozenset({"2"}))
    runner, ops, _, sink = await run(jobs("1", "2", "3"), ops)
    by_id = {r.account_id: r for r in sink.results}
    assert by_id["2"].outcome is Outcome.FAILED
    assert by_id["2"].error == "internal_error: KeyError"
    assert by_id["1"].outcome is by_id["3"].outcome is Outcome.DISCONNECTED
    assert runner.summary.exit_code == 1


async def test_group_commit_acks_nothing_before_an_fsync_that_covers_it() -> None:
    """Queue mode: every item is settled (acked) only after an fsync that began after its
    record was written has ended; fsyncs run in a worker thread and, under concurrency, one
    covers many records (fewer fsyncs than items)."""
    import threading
    import time

    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    class SlowSyncSink(ListSink):
        def write(self, result: object) -> None:
            super().write(result)  # type: ignore[arg-type]
            with lock:
                events.append(("write", str(result.account_id)))  # type: ignore[attr-defined]

        def sync(self) -> None:
            on_loop = threading.current_thread() is threading.main_thread()
            with lock:
                events.append(("sync_start", "loop" if on_loop else "thread"))
            time.sleep(0.01)
            with lock:
                events.append(("sync_end", ""))
            super().sync()

    class RecordingSource(ListSource):
        async def settle(self, done: Sequence[tuple[Item, Result | None]]) -> None:
            with lock:
                events.extend(("settle", str(item.account_id)) for item, _ in done)
            await super().settle(done)

    ids = [str(i) for i in range(60)]
    source, sink = RecordingSource(jobs(*ids), batch=20), SlowSyncSink()
    runner = Runner(FakeOps(), source=source, sink=sink, concurrency=16, sync_before_settle=True)
    runner._sync_every_second = _never  # type: ignore[method-assign]  # the ticker aside
    with anyio.fail_after(20):
        await runner.run()
    assert sorted(a for kind, a in events if kind == "settle") == sorted(ids)
    for account in ids:
        written = events.index(("write", account))
        settled = events.index(("settle", account))
        starts = [i for i, e in enumerate(events) if e[0] == "sync_start" and i > written]
        assert starts, account
        assert events[starts[0]][1] == "thread", account  # never on the event loop
        end = next(i for i in range(starts[0], len(events)) if events[i][0] == "sync_end")
        assert end < settled, account
    fsyncs = sum(1 for kind, _ in events if kind == "sync_start")
    assert fsyncs < len(ids) / 2  # grouped: one fsync serves many acks


async def _never() -> None:
    await anyio.sleep_forever()


class _LosingRunner(Runner):
    """A runner with a bug: the third item it settles is dropped without a record."""

    dropped = 0

    async def _settle(self, item: Item, results: list[Result]) -> bool:
        self.dropped += 1
        if self.dropped == 3:
            return True
        return await super()._settle(item, results)


async def test_a_job_read_but_never_recorded_is_never_a_success() -> None:
    """A run never exits 0 with fewer records than jobs it read: the accounting catches a
    job that vanished (here, a deliberately broken settle) and the run exits 70."""
    source, sink = ListSource(jobs("1", "2", "3", "4")), ListSink()
    runner = _LosingRunner(FakeOps(), source=source, sink=sink)
    with anyio.fail_after(10):
        await runner.run()
    assert len(sink.results) == 3
    assert runner.summary.read == 4
    assert runner.summary.stopped == "internal"
    assert runner.summary.exit_code == 70
    intact = Runner(FakeOps(), source=ListSource(jobs("1", "2", "3", "4")), sink=ListSink())
    await intact.run()
    assert (intact.summary.read, intact.summary.exit_code) == (4, 0)
