"""Queue mode on a real redis-server: at-least-once delivery, reclaiming a dead consumer's
jobs, dead letters, one budget shared by processes, clean stops and Redis restarts."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
import redis

from tests.conftest import (
    ROOT,
    SandboxProcess,
    cli_env,
    read_results,
    run_argv,
    run_cli,
    write_jobs,
)
from tests.redis_server import RedisServer
from worker.budget.shared import RedisBudget
from worker.redis_keys import BudgetKeys

STREAM = "xquik:disconnect"


def client(server: RedisServer) -> Any:  # redis-py's sync types are unions of awaitables
    return redis.Redis(port=server.port, decode_responses=True)


def enqueue_ids(server: RedisServer, ids: list[str], stream: str = STREAM) -> None:
    r = client(server)
    for i in ids:
        r.xadd(stream, {"account_id": i})
    r.close()


def worker(
    server: RedisServer,
    sb: SandboxProcess,
    tmp: Path,
    name: str,
    *args: str,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[str]:
    with (log or tmp / f"{name}.log").open("a") as err:
        return subprocess.Popen(
            run_argv(
                server.url,
                sb,
                "--consumer",
                name,
                "--results",
                str(tmp / f"{name}.results.jsonl"),
                *args,
            ),
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
            cwd=ROOT,
            env={**(env or cli_env()), "XQUIK_API_KEY": sb.api_key},
            preexec_fn=preexec_fn,
        )


def results_stream(server: RedisServer) -> list[dict[str, Any]]:
    r = client(server)
    entries = r.xrange(f"{STREAM}:results")
    r.close()
    return [json.loads(fields["record"]) for _, fields in entries]


def pending(server: RedisServer) -> int:
    r = client(server)
    info = r.xpending(STREAM, "xquik-disconnect")
    r.close()
    return int(info["pending"])


def test_enqueue_validates_and_reports(redis_server: RedisServer, tmp_path: Path) -> None:
    """enqueue adds the valid jobs only; invalid lines are named on stderr; exit 1."""
    jobs = write_jobs(
        tmp_path / "jobs.jsonl",
        ['{"account_id": "1"}', '{"username": "@bob"}', '{"account_id": "../x"}', "nope"],
    )
    proc = run_cli("enqueue", str(jobs), "--redis", redis_server.url)
    assert proc.returncode == 1
    assert "enqueued 2 jobs" in proc.stdout
    assert "jobs.jsonl:3" in proc.stderr
    assert "jobs.jsonl:4" in proc.stderr
    r = client(redis_server)
    assert [f for _, f in r.xrange(STREAM)] == [
        {"account_id": "1", "delete_monitors": "false"},
        {"username": "bob", "delete_monitors": "false"},
    ]
    r.close()
    assert run_cli("enqueue", str(jobs), "--redis", "http://x").returncode == 2


def test_drain_consumer_acks_everything_and_dead_letters_invalid(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """--drain: every message gets one record in <stream>:results, is acked, and the invalid
    one lands in <stream>:dead with its reason; the consumer exits when the stream is empty."""
    sb = sandbox_process("--delete-limit", "unlimited")
    enqueue_ids(redis_server, [str(i) for i in range(1, 31)] + ["a/b"])
    proc = worker(
        redis_server,
        sb,
        tmp_path,
        "w1",
        "--drain",
        "--rate",
        "unlimited",
        "--state-dir",
        str(tmp_path),
    )
    assert proc.wait(timeout=60) == 1  # the invalid message
    records = results_stream(redis_server)
    assert Counter(r["outcome"] for r in records) == {"disconnected": 30, "invalid": 1}
    assert pending(redis_server) == 0
    r = client(redis_server)
    [(_, dead)] = r.xrange(f"{STREAM}:dead")
    r.close()
    assert dead["account_id"] == "a/b"
    assert "invalid account_id" in dead["reason"]
    assert sb.stats()["accounts"] == 20


def test_three_workers_share_one_budget_and_one_kill_loses_nothing(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """Three processes, 300 jobs, a fixed window of 20 per 1 s: zero 429s and one done record
    per job; one worker is killed with SIGKILL and its jobs are reclaimed. (The pace is
    measured in bench/queue_mode.py; δ is 0.3 s here so a loaded machine cannot flake it.)"""
    sb = sandbox_process("--accounts", "300", "--delete-limit", "20/1s")
    enqueue_ids(redis_server, [str(i) for i in range(1, 301)])
    args = (
        "--rate",
        "20/1s",
        "--rate-margin",
        "0.3",
        "--concurrency",
        "4",
        "--claim-idle",
        "1",
        "--drain",
    )
    procs = [worker(redis_server, sb, tmp_path, f"w{i}", *args) for i in range(3)]
    deadline = time.monotonic() + 30
    while len(results_stream(redis_server)) < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    procs[0].kill()
    assert procs[0].wait(timeout=10) == -signal.SIGKILL
    for proc in procs[1:]:
        assert proc.wait(timeout=90) == 0
    records = results_stream(redis_server)
    done = Counter(
        r["account_id"] for r in records if r["outcome"] in {"disconnected", "already_gone"}
    )
    assert done == Counter({str(i): 1 for i in range(1, 301)})
    assert sb.stats()["rate_limited"] == 0
    assert sb.stats()["accounts"] == 0
    assert pending(redis_server) == 0
    r = client(redis_server)
    assert r.xlen(f"{STREAM}:dead") == 0
    r.close()


def test_sigterm_acks_what_finished_and_leaves_the_rest_pending(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """SIGTERM: stop reading, finish in-flight jobs, ack them, exit 0; nothing unacked is lost."""
    sb = sandbox_process(
        "--accounts", "40", "--delete-limit", "unlimited", "--slow", "1", "--slow-seconds", "0.2"
    )
    enqueue_ids(redis_server, [str(i) for i in range(1, 41)])
    proc = worker(
        redis_server,
        sb,
        tmp_path,
        "w1",
        "--rate",
        "unlimited",
        "--concurrency",
        "2",
        "--state-dir",
        str(tmp_path),
    )
    deadline = time.monotonic() + 20
    while len(results_stream(redis_server)) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    records = results_stream(redis_server)
    assert set(sb.stats()["deleted_accounts"]) == {r["account_id"] for r in records}
    r = client(redis_server)
    last = r.xinfo_groups(STREAM)[0]["last-delivered-id"]
    delivered = len(r.xrange(STREAM, "-", last))
    r.close()
    assert pending(redis_server) == delivered - len(records)
    assert pending(redis_server) > 0
    # Another consumer takes over what was left and finishes.
    rest = worker(
        redis_server,
        sb,
        tmp_path,
        "w2",
        "--rate",
        "unlimited",
        "--claim-idle",
        "0",
        "--drain",
        "--state-dir",
        str(tmp_path),
    )
    assert rest.wait(timeout=60) == 0
    assert sb.stats()["accounts"] == 0
    assert pending(redis_server) == 0


def test_over_delivered_message_goes_to_dead_letters(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """A message delivered more than --max-deliveries times is dead-lettered, recorded
    failed and acked, and no DELETE is sent for it."""
    sb = sandbox_process("--delete-limit", "unlimited")
    r = client(redis_server)
    r.xgroup_create(STREAM, "xquik-disconnect", id="0", mkstream=True)
    mid = r.xadd(STREAM, {"account_id": "7"})
    r.xreadgroup("xquik-disconnect", "ghost", {STREAM: ">"})
    for _ in range(3):
        r.xclaim(STREAM, "xquik-disconnect", "ghost", 0, [mid])
    proc = worker(
        redis_server,
        sb,
        tmp_path,
        "w1",
        "--max-deliveries",
        "3",
        "--claim-idle",
        "0",
        "--drain",
        "--state-dir",
        str(tmp_path),
    )
    assert proc.wait(timeout=30) == 1
    [(_, dead)] = r.xrange(f"{STREAM}:dead")
    assert dead["message_id"] == str(mid)
    assert "delivered 5 times" in dead["reason"]
    r.close()
    [record] = results_stream(redis_server)
    assert (record["outcome"], record["account_id"]) == ("failed", "7")
    assert sb.stats()["requests"] == 0
    assert pending(redis_server) == 0


def test_redis_restart_mid_run_workers_reconnect_and_finish(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """Redis (with persistence) restarts mid-run: the worker waits it out and finishes."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, persist=True)
    server.start()
    try:
        sb = sandbox_process("--accounts", "60", "--delete-limit", "20/1s")
        enqueue_ids(server, [str(i) for i in range(1, 61)])
        proc = worker(server, sb, tmp_path, "w1", "--rate", "20/1s", "--drain")
        deadline = time.monotonic() + 20
        while len(results_stream(server)) < 15 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.stop()
        time.sleep(1.0)
        server.start()
        assert proc.wait(timeout=60) == 0
        records = results_stream(server)
        # One record per message, none doubled across the restart, every one done.
        assert Counter(r["account_id"] for r in records) == Counter(str(i) for i in range(1, 61))
        assert {r["outcome"] for r in records} <= {"disconnected", "already_gone"}
        assert Counter(r["account_id"] for r in read_results(tmp_path / "w1.results.jsonl")) == (
            Counter(str(i) for i in range(1, 61))
        )
        assert sb.stats()["accounts"] == 0
        assert "redis_unavailable" in (tmp_path / "w1.log").read_text()
    finally:
        server.stop()


def test_shared_budget_ignores_skewed_local_clocks(redis_server: RedisServer) -> None:
    """Two budgets whose local clocks are 1000 s apart still hold every slot a whole span after
    its answer, because the rule is decided on the Redis server's clock: the moments the slots
    stop being held (answer + span, on the Redis clock) are never closer than a span for N+1."""

    async def scenario() -> list[float]:
        import redis.asyncio

        r = redis.asyncio.from_url(redis_server.url)
        until: dict[str, float] = {}  # member -> held until (s, Redis clock)

        def skewed(offset: float) -> Callable[[], float]:
            return lambda: time.monotonic() + offset

        budgets = [
            RedisBudget(
                r, BudgetKeys.at("xquik:budget:test"), 5, 0.5, margin=0.05, clock=skewed(offset)
            )
            for offset in (-1000.0, 1000.0)
        ]

        async def take(budget: RedisBudget) -> None:
            for _ in range(10):
                await budget.release(await budget.acquire())
                # As the scripts stamped them: nothing leaves before it stops being held. A
                # slot seen in flight stands later than its final stamp, so keep the least.
                log = await r.zrange("xquik:budget:test:slots", 0, -1, withscores=True)
                for entry in log:
                    member, score = str(entry[0]), float(entry[1]) / 1000
                    until[member] = min(until.get(member, float("inf")), score)

        async with anyio.create_task_group() as tg:
            for budget in budgets:
                tg.start_soon(take, budget)
        await r.aclose()
        return sorted(until.values())

    ends = anyio.run(scenario)
    assert len(ends) == 20
    for i in range(len(ends) - 5):
        assert ends[i + 5] - ends[i] >= 0.55 - 0.002  # the script's ms rounding only


def test_many_budgets_share_round_trips_and_survive_a_script_flush(
    redis_server: RedisServer,
) -> None:
    """300 keys' budgets (one slot per window each) on one Redis client, acquiring and
    releasing at once: every acquire gets its own key's slot and its own answer, a second
    acquire of a key finds the slot taken, and their scripts travel together (far fewer
    pipelines than calls). After SCRIPT FLUSH (as after a Redis restart) they go on."""
    from worker.errors import NoSlot

    async def scenario() -> tuple[int, int]:
        import redis.asyncio

        r = redis.asyncio.from_url(redis_server.url)
        pipelines = 0
        make = r.pipeline

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal pipelines
            pipelines += 1
            return make(*args, **kwargs)

        r.pipeline = counted  # type: ignore[method-assign]
        alone = Counter[str]()  # commands sent one round trip each
        execute: Any = r.execute_command

        async def single(*args: Any, **kwargs: Any) -> Any:
            alone[str(args[0])] += 1
            return await execute(*args, **kwargs)

        r.execute_command = single  # type: ignore[method-assign]
        budgets = [RedisBudget(r, BudgetKeys.at(f"xquik:budget:k{i}"), 1, 60.0) for i in range(300)]
        slots: list[object] = [None] * len(budgets)

        async def take(i: int) -> None:
            slots[i] = await budgets[i].acquire(block=False)

        async with anyio.create_task_group() as tg:
            for i in range(len(budgets)):
                tg.start_soon(take, i)
        assert len(set(map(str, slots))) == 300  # each its own slot
        for i in range(300):
            assert await r.zscore(f"xquik:budget:k{i}:slots", str(slots[i])) is not None
        for budget in budgets[:20]:
            with pytest.raises(NoSlot) as refused:
                await budget.acquire(block=False)
            assert 59.0 < refused.value.seconds <= 60.0 + 60.0
        await r.script_flush()
        async with anyio.create_task_group() as tg:
            for budget, slot in zip(budgets, slots, strict=True):
                tg.start_soon(budget.release, slot, 200)
        held = await r.zscore("xquik:budget:k7:slots", str(slots[7]))
        seconds, micros = await r.time()
        assert held is not None
        assert 59_000 < held - (seconds * 1000 + micros / 1000) <= 60_000  # answer + a span
        await r.aclose()
        assert not any(name.startswith(("EVAL", "FCALL")) for name in alone), alone
        return pipelines, 300 + 20 + 300

    pipelines, calls = anyio.run(scenario)
    assert 1 <= pipelines <= calls // 5, (pipelines, calls)


def test_jobs_of_one_key_try_for_slots_side_by_side_but_a_waiter_goes_first(
    redis_server: RedisServer,
) -> None:
    """Two jobs of one key trying at once (block=False) both get a slot when two are free
    (one deciding does not turn the other away); the third finds none. A request already
    waiting for a slot (a monitor's DELETE) goes first: a try meanwhile is turned away."""
    from worker.errors import NoSlot

    async def scenario() -> None:
        import redis.asyncio

        r = redis.asyncio.from_url(redis_server.url)
        budget = RedisBudget(r, BudgetKeys.at("xquik:budget:side"), 2, 1.0)
        slots: list[object] = []

        async def take() -> None:
            slots.append(await budget.acquire(block=False))

        async with anyio.create_task_group() as tg:
            tg.start_soon(take)
            tg.start_soon(take)
        assert len(set(map(str, slots))) == 2
        with pytest.raises(NoSlot):
            await budget.acquire(block=False)
        await r.aclose()

    async def waiter_first() -> None:
        import redis.asyncio

        r = redis.asyncio.from_url(redis_server.url)
        # A long window: the waiter polls about once a second, so a slot freed between two of
        # its polls is free for a try to take, unless the waiter goes first.
        ours = RedisBudget(r, BudgetKeys.at("xquik:budget:first"), 2, 60.0)
        other = RedisBudget(
            r, BudgetKeys.at("xquik:budget:first"), 2, 60.0
        )  # another process on the key
        held = [await other.acquire(block=False) for _ in range(2)]
        got: list[object] = []

        async def wait() -> None:
            got.append(await ours.acquire())

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.3)  # the waiter found the window full and naps
            assert got == []
            assert await r.zrem("xquik:budget:first:slots", str(held[0])) == 1  # one frees
            with pytest.raises(NoSlot):  # free, but the waiter was there first
                await ours.acquire(block=False)
        assert len(got) == 1
        assert str(got[0]) not in map(str, held)
        assert await r.zcard("xquik:budget:first:slots") == 2
        await r.aclose()

    anyio.run(scenario)
    anyio.run(waiter_first)


def test_rejected_key_stops_the_consumer_and_leaves_jobs_pending(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """401 in queue mode: exit 3, nothing acked, nothing in results or dead letters."""
    sb = sandbox_process("--delete-limit", "unlimited")
    enqueue_ids(redis_server, [str(i) for i in range(1, 11)])
    with (tmp_path / "w.log").open("a") as err:
        proc = subprocess.Popen(
            run_argv(
                redis_server.url,
                sb,
                "--results",
                str(tmp_path / "r.jsonl"),
                "--drain",
                "--state-dir",
                str(tmp_path),
            ),
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=ROOT,
            env=cli_env(XQUIK_API_KEY="xq_" + "e" * 64),
        )
    assert proc.wait(timeout=30) == 3
    r = client(redis_server)
    assert r.xlen(f"{STREAM}:results") == 0
    assert r.xlen(f"{STREAM}:dead") == 0
    r.close()
    assert pending(redis_server) >= 1
    assert sb.stats()["accounts"] == 50


def test_redelivered_message_gets_its_record_even_if_the_local_log_has_one(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """A consumer's local log says account 3 is done (written before a crash stopped the
    ack); the redelivered message still gets a record in <stream>:results."""
    sb = sandbox_process("--delete-limit", "unlimited")
    enqueue_ids(redis_server, ["3"])
    local = tmp_path / "w1.results.jsonl"
    local.write_text(
        json.dumps(
            {
                "ts": "2026-11-28T17:00:00.000Z",
                "run_id": "old",
                "source": "s",
                "account_id": "3",
                "op": "disconnect",
                "outcome": "disconnected",
            }
        )
        + "\n"
    )
    proc = worker(redis_server, sb, tmp_path, "w1", "--drain", "--state-dir", str(tmp_path))
    assert proc.wait(timeout=30) == 0
    [record] = results_stream(redis_server)
    assert (record["account_id"], record["outcome"]) == ("3", "disconnected")
    assert pending(redis_server) == 0


def test_consumers_share_the_read_budget_too(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """Two consumers in a dry run (GETs) at a read limit of 10 per 1 s: zero 429s."""
    sb = sandbox_process("--read-limit", "10/1s")
    enqueue_ids(redis_server, [str(i) for i in range(1, 31)])
    args = ("--dry-run", "--read-rate", "10/1s", "--drain", "--concurrency", "4")
    procs = [worker(redis_server, sb, tmp_path, f"w{i}", *args) for i in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert sb.stats()["rate_limited"] == 0
    assert Counter(r["outcome"] for r in results_stream(redis_server)) == {"exists": 30}
    assert sb.stats()["accounts"] == 50


def test_redis_url_file_keeps_the_password_out_of_ps_and_logs(
    sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """A consumer started with --redis-url-file (no SOURCE) reads the queue behind a password;
    the password is in no argument (`ps`), no log line and no record. enqueue, queue status
    and dead list take the same file; a missing file is exit 2 naming the flag."""
    password = "s3cret-redis-pass"
    server = RedisServer(tmp_path, password=password)
    server.start()
    try:
        url_file = tmp_path / "redis-url"
        url_file.write_text(server.url + "\n")
        ids = write_jobs(tmp_path / "ids.txt", ["1", "2", "3"])
        enq = run_cli("enqueue", str(ids), "--redis-url-file", str(url_file))
        assert enq.returncode == 0, enq.stderr
        # Answers a second late: the process is surely running when `ps` looks.
        sb = sandbox_process("--delete-limit", "unlimited", "--slow", "1", "--slow-seconds", "1")
        argv = [a for a in run_argv("-", sb) if a != "-"]
        argv += ["--redis-url-file", str(url_file), "--drain", "--rate", "unlimited"]
        argv += ["--results", str(tmp_path / "r.jsonl"), "--state-dir", str(tmp_path)]
        argv += ["--log-level", "debug"]
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=cli_env(XQUIK_API_KEY=sb.api_key),
        )
        # What `ps` shows: the process's arguments, once exec has set them (bounded).
        ps, deadline = "", time.monotonic() + 5
        while not ps and time.monotonic() < deadline:
            ps = Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert str(url_file) in ps  # what `ps` shows is this process's, not an empty line
        assert password not in ps
        assert password not in out + err
        records = read_results(tmp_path / "r.jsonl")
        assert Counter(r["outcome"] for r in records) == {"disconnected": 3}
        assert password not in (tmp_path / "r.jsonl").read_text()
        status = run_cli("queue", "status", "--redis-url-file", str(url_file), "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["pending"] == 0
        dead = run_cli("dead", "list", "--redis-url-file", str(url_file), "--json")
        assert dead.returncode == 0
        assert dead.stdout == ""
        missing = run_cli("queue", "status", "--redis-url-file", str(tmp_path / "nope"))
        assert missing.returncode == 2
        assert "--redis-url-file: cannot read it" in missing.stderr
        both = run_cli("run", server.url, "--redis-url-file", str(url_file), "--sandbox")
        assert both.returncode == 2
        assert "give the Redis URL once" in both.stderr
        assert password not in both.stderr
        none = run_cli("run", "--sandbox")
        assert none.returncode == 2
        assert "SOURCE missing" in none.stderr
    finally:
        server.stop()


def test_a_second_consumer_takes_the_first_ones_account_listing(
    redis_server: RedisServer, sandbox_process: Callable[..., SandboxProcess], tmp_path: Path
) -> None:
    """Two consumers of one key, one after the other within 30 s: the account listing is
    asked of the API once (the second reads it from Redis), and each job still gets its
    record; a job for an account gone before (not in the listing) is confirmed with a GET."""
    sb = sandbox_process("--accounts", "20", "--delete-limit", "unlimited")
    enqueue_ids(redis_server, [str(i) for i in range(1, 11)])
    args = ("--rate", "unlimited", "--drain", "--log-format", "json")
    assert worker(redis_server, sb, tmp_path, "w0", *args).wait(timeout=60) == 0
    enqueue_ids(redis_server, [*(str(i) for i in range(11, 21)), "99"])
    assert worker(redis_server, sb, tmp_path, "w1", *args).wait(timeout=60) == 0
    listings = [p for m, p, _, _ in sb.requests() if m == "GET" and p.startswith("/api/v1/x/acc")]
    assert sum(p.split("?")[0] == "/api/v1/x/accounts" for p in listings) == 1, listings
    assert "accounts_listing_shared" in (tmp_path / "w1.log").read_text()
    outcomes = Counter(r["outcome"] for r in results_stream(redis_server))
    assert outcomes == {"disconnected": 20, "already_gone": 1}
    deletes = [p for m, p, _, _ in sb.requests() if m == "DELETE"]
    assert len(deletes) == 20  # none for 99, which no listing held


def test_one_script_call_takes_slots_for_every_waiting_request_and_settles_a_tick_of_answers(
    redis_server: RedisServer,
) -> None:
    """Several slots of one key per script call. 12 requests of one key waiting in one
    process, 10 slots a window: a call takes a slot for each request waiting behind it, so
    10 are sent after 2 calls, not 10, and never more than the limit (2 wait). The 10 answers
    of one tick go in one call, each slot then held one window from its answer. Slots taken
    for requests that went away before taking them go back (the next acquire gives them
    back), and so do those a 429 finds untaken: nothing is sent into a cooldown."""

    async def scenario() -> None:
        import redis.asyncio

        r = redis.asyncio.from_url(redis_server.url)

        async def calls() -> int:
            stats = await r.info("commandstats")
            return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

        key = "xquik:budget:many"
        budget = RedisBudget(r, BudgetKeys.at(key), 10, 60.0)
        await budget.release(await budget.acquire(), 200)  # the scripts are loaded
        await r.delete(f"{key}:slots", f"{key}:accepted")
        before = await calls()
        slots: list[object] = []

        async def take() -> None:
            slots.append(await budget.acquire())

        async with anyio.create_task_group() as tg:
            for _ in range(12):
                tg.start_soon(take)
            with anyio.fail_after(5):
                while len(slots) < 10:
                    await anyio.sleep(0.01)
            assert await calls() - before <= 3  # not one per request
            await anyio.sleep(0.2)
            assert len(slots) == 10  # the limit: two wait
            tg.cancel_scope.cancel()
        assert len(set(map(str, slots))) == 10
        assert await r.zcard(f"{key}:slots") == 10

        before = await calls()
        async with anyio.create_task_group() as tg:
            for slot in slots:
                tg.start_soon(budget.release, slot, 200)
        assert await calls() - before == 1  # one call for the tick's 10 answers
        seconds, micros = await r.time()
        now = seconds * 1000 + micros / 1000
        for slot in slots:
            held = await r.zscore(f"{key}:slots", str(slot))
            assert held is not None
            assert 59_000 < held - now <= 60_000  # one window from the answer
        assert await r.zcard(f"{key}:accepted") == 10
        await r.aclose()

    async def unused() -> None:
        import redis.asyncio

        r = redis.asyncio.from_url(redis_server.url)
        now = [0.0]
        key = "xquik:budget:unused"
        budget = RedisBudget(r, BudgetKeys.at(key), 10, 60.0, clock=lambda: now[0])
        got: list[object] = []
        # a request deciding while three wait behind it
        async with anyio.create_task_group() as tg, budget._lock:
            for _ in range(3):
                tg.start_soon(lambda: budget.acquire())
            await anyio.sleep(0.05)
            got.append(await budget._try(block=True))
            assert await r.zcard(f"{key}:slots") == 4  # its own and one for each waiter
            tg.cancel_scope.cancel()  # the three go away before taking theirs
        now[0] += 5.0  # later: the three are too old to send
        got.append(await budget.acquire())
        with anyio.fail_after(5):
            while await r.zcard(f"{key}:slots") != 2:  # the three went back
                await anyio.sleep(0.01)
        members = {m.decode() for m in cast(list[bytes], await r.zrange(f"{key}:slots", 0, -1))}
        assert members == set(map(str, got))
        await r.aclose()

    async def cooled() -> None:
        import redis.asyncio

        r = redis.asyncio.from_url(redis_server.url)
        key = "xquik:budget:cooled"
        budget = RedisBudget(r, BudgetKeys.at(key), 10, 60.0)
        got: list[object] = []

        async def wait() -> None:
            got.append(await budget.acquire())

        async with anyio.create_task_group() as tg:
            async with budget._lock:  # three wait behind a try; then a 429 closes the budget
                for _ in range(3):
                    tg.start_soon(wait)
                await anyio.sleep(0.05)
                mine = await budget._try(block=True)
                assert await r.zcard(f"{key}:slots") == 4
                await budget.hold(30)
            await anyio.sleep(0.3)
            assert got == []  # nothing is sent into the cooldown
            tg.cancel_scope.cancel()
        with anyio.fail_after(5):
            while await r.zcard(f"{key}:slots") != 1:  # theirs went back; the sent one stays
                await anyio.sleep(0.01)
        assert await r.zscore(f"{key}:slots", str(mine)) is not None
        await r.aclose()

    anyio.run(scenario)
    anyio.run(unused)
    anyio.run(cooled)


def test_enqueue_puts_a_file_grouped_by_tenant_on_the_stream_in_turns(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Consumers take a stream in its order: a file grouped by tenant goes on in turns, one
    job of each tenant per turn, each tenant's jobs in file order (the first tenant named
    first); a line without a tenant is the no-tenant group's; an invalid line is reported
    with its own line number. Enqueued again, the file adds nothing (the idempotency key
    is the line's, whatever its place on the stream)."""
    lines = [json.dumps({"account_id": f"{t}-{i}", "tenant": t}) for t in "abc" for i in (1, 2)]
    lines.insert(3, "nope")
    lines.append('{"account_id": "x-1"}')
    jobs = write_jobs(tmp_path / "grouped.jsonl", lines)
    proc = run_cli("enqueue", str(jobs), "--redis", redis_server.url)
    assert proc.returncode == 1, proc.stderr
    assert "enqueued 7 jobs" in proc.stdout
    assert "grouped.jsonl:4" in proc.stderr
    r = client(redis_server)
    order = [f["account_id"] for _, f in r.xrange(STREAM)]
    assert order == ["a-1", "b-1", "c-1", "x-1", "a-2", "b-2", "c-2"]
    assert run_cli("enqueue", str(jobs), "--redis", redis_server.url).returncode == 1
    assert r.xlen(STREAM) == 7
    r.close()
