"""`queue status` against a real redis-server with known numbers: entries, undelivered,
pending per consumer, the oldest pending age, dead letters by code, results, budgets; exit 1
while dead letters exist."""

from __future__ import annotations

import json
from pathlib import Path

import redis

from tests.conftest import cli_env, run_cli, write_jobs
from tests.redis_server import RedisServer


def test_queue_status_numbers(redis_server: RedisServer, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.txt", [str(i) for i in range(1, 11)])
    assert run_cli("enqueue", str(jobs), "--redis", redis_server.url).returncode == 0
    r = redis.Redis.from_url(redis_server.url)
    stream = "xquik:disconnect"
    r.xgroup_create(stream, "xquik-disconnect", id="0")
    r.xreadgroup("xquik-disconnect", "c1", {stream: ">"}, count=4)  # 4 pending with c1
    r.xadd(f"{stream}:dead", {"account_id": "3", "reason": "forbidden: Injected fault."})
    r.xadd(f"{stream}:dead", {"account_id": "4", "reason": "forbidden: again"})
    r.xadd(f"{stream}:dead", {"account_id": "5", "reason": "retries_exhausted after 5 attempts"})
    r.xadd(f"{stream}:results", {"message_id": "1-0", "record": "{}"})
    now_s, now_us = r.time()
    future = now_s * 1000 + now_us / 1000 + 60_000
    r.zadd("xquik:budget:abc123:delete:slots", {"a": future, "b": future, "old": 1})
    r.hset("xquik:budget:abc123:delete:learned", mapping={"limit": 12, "at": 1, "cap": 39})

    proc = run_cli("queue", "status", "--redis", redis_server.url, "--json", env=cli_env())
    assert proc.returncode == 1, proc.stderr  # dead letters exist
    s = json.loads(proc.stdout)
    assert (s["length"], s["undelivered"], s["pending"]) == (10, 6, 4)
    [consumer] = s["consumers"]
    assert (consumer["name"], consumer["pending"]) == ("c1", 4)
    assert 0 <= consumer["idle_s"] < 60  # it read a moment ago
    assert 0 <= s["oldest_pending_age_s"] < 60
    assert s["dead_letters"] == {"failed:forbidden": 2, "failed:retries_exhausted": 1}
    assert s["results"] == 1
    assert s["budgets"] == [
        {"key": "abc123", "slots_held": 2, "cooldown_s": 0.0, "learned_limit": 12}
    ]
    from worker.cli.queue import render

    table = render(s)  # what a terminal shows
    assert "10 entries, 6 not yet delivered, 4 pending" in table
    assert "consumer c1: 4 pending" in table
    assert "dead letters: 3 (failed:forbidden 2, failed:retries_exhausted 1)" in table
    assert "budget of key abc123: 2 slots held, limit 12" in table
    r.delete(f"{stream}:dead")
    text = run_cli(
        "queue", "status", env=cli_env(XQUIK_REDIS_URL=redis_server.url)
    )  # not a TTY: JSON too
    assert text.returncode == 0
    assert json.loads(text.stdout)["dead_total"] == 0
    bad = run_cli("queue", "status", "--redis", "http://127.0.0.1:1", env=cli_env())
    assert bad.returncode == 2
    r.close()
